package sledliveness_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/bgtasks/sledliveness"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus/datastore"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type sled struct {
	serial, policy, state string
	silent                time.Duration
}

func TestMarksSilentSledsUnreachableAndBack(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	sleds := map[string]sled{
		"gone":        {"S-gone", "in_service", "active", 200 * time.Second},
		"fresh":       {"S-fresh", "in_service", "active", 10 * time.Second},
		"back":        {"S-back", "in_service", "unreachable", 5 * time.Second},
		"still-gone":  {"S-still", "in_service", "unreachable", 300 * time.Second},
		"expunged":    {"S-exp", "expunged", "active", 500 * time.Second},
		"expunged-un": {"S-exp2", "expunged", "unreachable", time.Second},
		"decomm":      {"S-dec", "in_service", "decommissioned", 500 * time.Second},
	}
	ids := map[string]uuid.UUID{}
	for name, s := range sleds {
		ids[name] = uuid.New()
		// time_last_seen is set from the database's clock, as
		// registration does.
		_, err := db.Pool.Exec(ctx, `
			INSERT INTO sled (id, time_created, time_modified, time_last_seen, part_number, serial_number,
				sled_agent_address, policy, state)
			VALUES ($1, now(), now(), now() - $2::FLOAT8 * INTERVAL '1 second', 'p', $3, 'h:1',
				$4::sled_policy, $5::sled_state)`,
			ids[name], s.silent.Seconds(), s.serial, s.policy, s.state)
		if err != nil {
			t.Fatal(err)
		}
	}
	task := &sledliveness.Task{DS: datastore.New(db.Pool, zerolog.Nop(), datastore.Options{}), Threshold: 90 * time.Second}
	act := bgtasks.NewActivation(1, bgtasks.ReasonPeriodic, "", "run-1", time.Now())
	raw, err := task.Activate(ctx, act)
	if err != nil {
		t.Fatal(err)
	}
	st := raw.(sledliveness.Status)
	if !act.Changed() {
		t.Error("activation that flipped sleds did not mark itself changed")
	}

	want := map[string]string{"gone": "unreachable", "fresh": "active", "back": "active", "still-gone": "unreachable",
		"expunged": "active", "expunged-un": "unreachable", "decomm": "decommissioned"}
	for name, state := range want {
		var got string
		if err := db.Pool.QueryRow(ctx, `SELECT state::TEXT FROM sled WHERE id = $1`, ids[name]).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != state {
			t.Errorf("sled %s is %s, want %s", name, got, state)
		}
	}
	if len(st.MarkedUnreachable) != 1 || st.MarkedUnreachable[0].ID != ids["gone"] ||
		st.MarkedUnreachable[0].Serial != "S-gone" || st.MarkedUnreachable[0].SilentSeconds < 199 {
		t.Errorf("marked unreachable: %+v", st.MarkedUnreachable)
	}
	if len(st.MarkedActive) != 1 || st.MarkedActive[0].ID != ids["back"] {
		t.Errorf("marked active: %+v", st.MarkedActive)
	}
	if st.Active != 2 || st.Unreachable != 2 || st.Decommissioned != 1 || st.Expunged != 2 || st.ThresholdSeconds != 90 {
		t.Errorf("counts: %+v", st)
	}
	if b, err := json.Marshal(st); err != nil || len(b) == 0 {
		t.Errorf("status does not marshal: %v", err)
	}

	// Nothing left to change: the next activation changes nothing and
	// says so.
	act2 := bgtasks.NewActivation(2, bgtasks.ReasonPeriodic, "", "run-2", time.Now())
	raw, err = task.Activate(ctx, act2)
	if err != nil {
		t.Fatal(err)
	}
	st = raw.(sledliveness.Status)
	if act2.Changed() || len(st.MarkedUnreachable) != 0 || len(st.MarkedActive) != 0 || st.Active != 2 {
		t.Errorf("second activation: changed %v, %+v", act2.Changed(), st)
	}
}

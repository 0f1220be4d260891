package datastore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/nexus/model"
)

func tqMembers(n int, state model.TQMemberState) []model.TQMember {
	var out []model.TQMember
	for i := range n {
		m := model.TQMember{Baseboard: model.Baseboard{Part: "p", Serial: fmt.Sprintf("S%02d", i)}, State: state}
		if state == model.TQMemberCommitted {
			m.ShareDigest, m.X = make([]byte, 32), i+1
			m.ShareDigest[0] = byte(i)
		}
		out = append(out, m)
	}
	return out
}

func tqConfigAt(rack uuid.UUID, epoch uint64, state model.TQState, members []model.TQMember) model.TQConfiguration {
	return model.TQConfiguration{RackID: rack, Epoch: epoch, LastCommittedEpoch: epoch - 1, State: state, Threshold: 3,
		CommitCrashTolerance: 1, Coordinator: members[0].Baseboard, Recorded: state.Committed(), ChangeID: uuid.New(),
		Attempt: 1, Members: members}
}

// The schema holds the rules the application layer relies on, whatever
// writes: one configuration in progress per rack, states with their
// times, and members that fit their configuration.
func TestTrustQuorumSchemaRules(t *testing.T) {
	ctx := context.Background()
	ds := newStore(t)
	rack := uuid.New()
	set := func(v *TQView) ([]TQOp, error) {
		return []TQOp{TQInsertRack{Rack: model.Rack{ID: rack, Setup: model.RackSetupTrustQuorum}},
			TQInsertConfig{Config: tqConfigAt(rack, 1, model.TQCommitted, tqMembers(5, model.TQMemberCommitted))}}, nil
	}
	if err := ds.TQChange(ctx, "setup", TQViewNeeds{}, set); err != nil {
		t.Fatal(err)
	}
	insert := func(c model.TQConfiguration) error {
		return ds.TQChange(ctx, "insert", TQViewNeeds{}, func(*TQView) ([]TQOp, error) {
			return []TQOp{TQInsertConfig{Config: c}}, nil
		})
	}
	if err := insert(tqConfigAt(rack, 2, model.TQPreparing, tqMembers(5, model.TQMemberUnacked))); err != nil {
		t.Fatal(err)
	}
	// A second configuration in progress: the partial unique index.
	err := insert(tqConfigAt(rack, 3, model.TQPreparing, tqMembers(5, model.TQMemberUnacked)))
	if SQLState(err) != "23505" {
		t.Fatalf("a second preparing epoch: %v", err)
	}
	// A second rack: one row only.
	err = ds.TQChange(ctx, "rack", TQViewNeeds{}, func(*TQView) ([]TQOp, error) {
		return []TQOp{TQInsertRack{Rack: model.Rack{ID: uuid.New(), Setup: model.RackSetupLrtq}}}, nil
	})
	if SQLState(err) != "23505" {
		t.Fatalf("a second rack: %v", err)
	}
	// Threshold K+Z above N, and too few members: CHECKs.
	bad := tqConfigAt(rack, 3, model.TQAborted, tqMembers(3, model.TQMemberUnacked))
	bad.AbortReason, bad.CommitCrashTolerance = "x", 1
	if err := insert(bad); SQLState(err) != "23514" {
		t.Fatalf("K+Z above N: %v", err)
	}
	tiny := tqConfigAt(rack, 3, model.TQAborted, tqMembers(2, model.TQMemberUnacked))
	tiny.AbortReason, tiny.Threshold, tiny.CommitCrashTolerance = "x", 1, 0
	if err := insert(tiny); SQLState(err) != "23514" {
		t.Fatalf("two members: %v", err)
	}
	// A state without its time: aborted needs a reason.
	if _, err := ds.pool.Exec(ctx, `UPDATE trust_quorum_configuration SET state = 'aborted' WHERE epoch = 2`); SQLState(err) != "23514" {
		t.Fatalf("aborted without time and reason: %v", err)
	}
	// Committing before the configuration is recorded.
	if _, err := ds.pool.Exec(ctx, `UPDATE trust_quorum_configuration SET state = 'committing', time_committing = now()
		WHERE epoch = 2`); SQLState(err) != "23514" {
		t.Fatalf("committing unrecorded: %v", err)
	}
	// A fenced write fails once its configuration moved on, and changes
	// nothing.
	move := func(from, to model.TQState) error {
		return ds.TQChange(ctx, "move", TQViewNeeds{}, func(*TQView) ([]TQOp, error) {
			return []TQOp{TQSetState{Epoch: 2, From: from, To: to, Reason: "test"}}, nil
		})
	}
	if err := move(model.TQPreparing, model.TQAborted); err != nil {
		t.Fatal(err)
	}
	if err := move(model.TQPreparing, model.TQAborted); !errors.Is(err, ErrTQFenced) {
		t.Fatalf("aborting twice: %v", err)
	}
	c, err := ds.TQConfigurationGet(ctx, 2)
	if err != nil || c.State != model.TQAborted || c.AbortReason != "test" || c.TimeAborted == nil {
		t.Fatalf("epoch 2: %+v %v", c, err)
	}
	v, err := ds.TQViewRead(ctx, TQViewNeeds{Former: true})
	if err != nil || v.Active != nil || v.Latest.Epoch != 2 || v.LatestCommitted.Epoch != 1 || v.Epoch1.Epoch != 1 ||
		len(v.Former) != 5 || len(v.LatestCommitted.Members) != 5 {
		t.Fatalf("view: %+v %v", v, err)
	}
}

// Two changes that each start the next epoch when none is in progress,
// racing: exactly one wins, the other sees it in its retried view.
func TestTrustQuorumChangesRace(t *testing.T) {
	ctx := context.Background()
	ds := newStore(t)
	rack := uuid.New()
	if err := ds.TQChange(ctx, "setup", TQViewNeeds{}, func(*TQView) ([]TQOp, error) {
		return []TQOp{TQInsertRack{Rack: model.Rack{ID: rack, Setup: model.RackSetupTrustQuorum}},
			TQInsertConfig{Config: tqConfigAt(rack, 1, model.TQCommitted, tqMembers(5, model.TQMemberCommitted))}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	errInProgress := errors.New("in progress")
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = ds.TQChange(ctx, "start", TQViewNeeds{}, func(v *TQView) ([]TQOp, error) {
				if v.Active != nil {
					return nil, errInProgress
				}
				return []TQOp{TQInsertConfig{Config: tqConfigAt(rack, v.Latest.Epoch+1, model.TQPreparing,
					tqMembers(5, model.TQMemberUnacked))}}, nil
			})
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case errors.Is(err, errInProgress), SQLState(err) == "23505":
		default:
			t.Errorf("a racing change: %v", err)
		}
	}
	var n int
	if err := ds.pool.QueryRow(ctx, `SELECT count(*) FROM trust_quorum_configuration`).Scan(&n); err != nil || won != 1 || n != 2 {
		t.Fatalf("%d changes won, %d configurations (%v)", won, n, err)
	}
}

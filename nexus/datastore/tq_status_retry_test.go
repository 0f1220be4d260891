package datastore

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus/model"
)

// Two Nexus record a node's status at once: the one that waited for the
// other's row gets a serialization failure, and InTx runs it again. The
// second attempt must not reuse the first's batch, whose prepared
// statements pgx deallocated after the failure (it failed with SQLSTATE
// 26000, prepared statement does not exist, in the rack chaos test).
func TestTQNodeStatusRecordSurvivesARetry(t *testing.T) {
	ctx := context.Background()
	db := testdb.New(t)
	testdb.PostgresOnly(t, "blocks on a row lock held by another transaction, then expects PostgreSQL's serialization failure")
	// One connection, so the retry runs where the failed attempt ran.
	cfg, err := PoolConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ds := New(pool, zerolog.Nop(), Options{Rand: rand.New(rand.NewPCG(1, 2))})
	node := model.Baseboard{Part: "p", Serial: "S01"}
	nexusA, nexusB := uuid.New(), uuid.New()
	record := func(errText string) error {
		return ds.TQNodeStatusRecord(ctx, nexusB, []model.TQNodeStatus{{Baseboard: node, Via: "direct", Error: errText}})
	}
	if err := record("first"); err != nil {
		t.Fatal(err)
	}

	// The other Nexus updates the row and holds its transaction open.
	other, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	tx, err := other.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE trust_quorum_node_status SET error = 'other', observed_by = $1
		WHERE part_number = 'p' AND serial_number = 'S01'`, nexusA); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- record("second") }()
	// Once this one waits for the row, the other commits under it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second recording never waited for the row")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("recording after a serialization failure: %v", err)
	}
	var got string
	var by uuid.UUID
	if err := db.Pool.QueryRow(ctx, `SELECT error, observed_by FROM trust_quorum_node_status
		WHERE part_number = 'p' AND serial_number = 'S01'`).Scan(&got, &by); err != nil {
		t.Fatal(err)
	}
	if got != "second" || by != nexusB {
		t.Fatalf("the row holds %q by %s, want the retried recording's %q by %s", got, by, "second", nexusB)
	}
}

package datastore

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/testdb"
)

// A transaction that keeps failing with a real serialization failure
// waits, between attempts, a fully jittered delay under a ceiling that
// doubles from Base to Max; two Nexus processes with their own random
// sources wait differently.
func TestInTxWaitsJitteredDelaysUnderTheCeiling(t *testing.T) {
	db := testdb.New(t)
	policy := RetryPolicy{MaxAttempts: 10, Base: time.Millisecond, Max: 16 * time.Millisecond}
	var schedules [2][]time.Duration
	for i := range schedules {
		var waits []time.Duration
		ds := New(db.Pool, zerolog.Nop(), Options{Retry: policy, Rand: rand.New(rand.NewPCG(uint64(i), 9)),
			Sleep: func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil }})
		err := ds.InTx(context.Background(), "always_conflicts", func(ctx context.Context, tx pgx.Tx) error {
			return testdb.ForceSerializationFailure(ctx, tx)
		})
		if SQLState(err) != "40001" || len(waits) != policy.MaxAttempts-1 {
			t.Fatalf("got %v after %d waits; want a 40001 after %d", err, len(waits), policy.MaxAttempts-1)
		}
		for n, d := range waits {
			ceiling := min(policy.Base<<n, policy.Max)
			if d < 0 || d > ceiling {
				t.Fatalf("wait %d is %s, outside [0, %s] (all: %v)", n+1, d, ceiling, waits)
			}
		}
		schedules[i] = waits
	}
	if slices.Equal(schedules[0], schedules[1]) {
		t.Fatalf("two sources gave the same waits %v: not jittered", schedules[0])
	}
}

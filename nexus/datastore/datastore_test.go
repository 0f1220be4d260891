package datastore

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus/model"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func newStore(t *testing.T) *Datastore {
	db := testdb.New(t)
	return New(db.Pool, zerolog.Nop(), Options{Rand: rand.New(rand.NewPCG(1, 2))})
}

// Two transactions read the same row and then both write it. Under
// SERIALIZABLE one of them must fail with 40001; InTx must re-run it so
// that both increments land.
func TestInTxRetriesConflictingTransactions(t *testing.T) {
	ctx := context.Background()
	ds := newStore(t)
	if _, err := ds.pool.Exec(ctx, `CREATE TABLE counter (id INT8 PRIMARY KEY, n INT8 NOT NULL);
		INSERT INTO counter VALUES (1, 0)`); err != nil {
		t.Fatal(err)
	}
	var retries atomic.Int32
	var retryErr atomic.Value
	ds.onRetry = func(_ int, err error) { retries.Add(1); retryErr.Store(err) }

	var attempts atomic.Int32
	var bothRead sync.WaitGroup
	bothRead.Add(2)
	var firstAttempt [2]atomic.Bool
	increment := func(i int) error {
		return ds.InTx(ctx, "increment", func(ctx context.Context, tx pgx.Tx) error {
			attempts.Add(1)
			var n int64
			if err := tx.QueryRow(ctx, "SELECT n FROM counter WHERE id = 1").Scan(&n); err != nil {
				return err
			}
			// Only the first attempt of each waits, so the two first
			// attempts overlap for certain; retries run alone.
			if firstAttempt[i].CompareAndSwap(false, true) {
				bothRead.Done()
				bothRead.Wait()
			}
			_, err := tx.Exec(ctx, "UPDATE counter SET n = $1 WHERE id = 1", n+1)
			return err
		})
	}
	errs := make(chan error, 2)
	for i := range 2 {
		go func() { errs <- increment(i) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("InTx: %v", err)
		}
	}
	var n int64
	if err := ds.pool.QueryRow(ctx, "SELECT n FROM counter WHERE id = 1").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("counter = %d, want 2: an increment was lost", n)
	}
	if retries.Load() < 1 || attempts.Load() < 3 {
		t.Fatalf("retries = %d, attempts = %d: the conflict was not retried", retries.Load(), attempts.Load())
	}
	if err, _ := retryErr.Load().(error); !IsRetryable(err) {
		t.Fatalf("retried error %v is not a serialization failure", err)
	}
}

func TestInTxDoesNotRetryOtherErrors(t *testing.T) {
	ds := newStore(t)
	boom := errors.New("boom")
	calls := 0
	err := ds.InTx(context.Background(), "fail", func(ctx context.Context, tx pgx.Tx) error {
		calls++
		return boom
	})
	if !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("err %v after %d calls, want boom after 1", err, calls)
	}
}

func TestInTxGivesUpAfterMaxAttempts(t *testing.T) {
	ds := newStore(t)
	ds.retry = RetryPolicy{MaxAttempts: 3, Base: time.Microsecond, Max: time.Microsecond}
	calls := 0
	err := ds.InTx(context.Background(), "always_conflicts", func(ctx context.Context, tx pgx.Tx) error {
		calls++
		// A real serialization failure from the server.
		return testdb.ForceSerializationFailure(ctx, tx)
	})
	if calls != 3 || !IsRetryable(err) || SQLState(err) != "40001" {
		t.Fatalf("after %d calls got %v; want 3 calls and a wrapped 40001", calls, err)
	}
}

func TestInTxRollsBackOnError(t *testing.T) {
	ctx := context.Background()
	ds := newStore(t)
	id := uuid.New()
	err := ds.InTx(ctx, "half", func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO sled (id, time_created, time_modified, time_last_seen,
			part_number, serial_number, sled_agent_address) VALUES ($1, now(), now(), now(), 'p', 's', 'h:1')`, id); err != nil {
			return err
		}
		return errors.New("changed my mind")
	})
	if err == nil {
		t.Fatal("want the function's error")
	}
	if _, err := ds.SledGet(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("row survived a rolled-back transaction: %v", err)
	}
}

func TestBackoffIsBoundedAndJittered(t *testing.T) {
	ds := &Datastore{retry: RetryPolicy{Base: 10 * time.Millisecond, Max: 80 * time.Millisecond}, rng: backoff.NewRand(rand.NewPCG(3, 4))}
	wait := ds.retrySchedule()
	seen := map[time.Duration]bool{}
	for attempt := 1; attempt < 40; attempt++ {
		d := wait.NextBackOff()
		ceiling := min(ds.retry.Base<<min(attempt-1, 30), ds.retry.Max)
		if d < 0 || d > ceiling {
			t.Fatalf("attempt %d: back-off %s outside [0, %s]", attempt, d, ceiling)
		}
		seen[d] = true
	}
	if len(seen) < 20 {
		t.Fatalf("back-off barely varies (%d distinct values): not jittered", len(seen))
	}
}

func TestUnreachableDatabaseIsUnavailable(t *testing.T) {
	cfg, err := PoolConfig("postgres://postgres@/rackplane?host=/nonexistent-socket-dir&sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ds := New(pool, zerolog.Nop(), Options{})
	start := time.Now()
	_, err = ds.SledList(context.Background(), uuid.Nil, 10)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	if err := ds.Ping(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ping: got %v, want ErrUnavailable", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("took %s to notice the database is unreachable", time.Since(start))
	}
}

func reg(serial, addr string, port int) model.SledRegistration {
	return model.SledRegistration{Baseboard: model.Baseboard{Part: "p", Serial: serial}, SledAgentAddress: addr, RepoDepotPort: port}
}

func TestSledUpsert(t *testing.T) {
	ctx := context.Background()
	ds := newStore(t)
	id := uuid.New()

	res, err := ds.SledUpsert(ctx, id, reg("s1", "10.0.0.1:12345", 12348))
	if err != nil || !res.Created || !res.Changed {
		t.Fatalf("first upsert: %+v, %v", res, err)
	}
	first := res.Sled
	if first.Policy != model.SledPolicyInService || first.State != model.SledStateActive || first.RepoDepotPort != 12348 {
		t.Fatalf("new sled: %+v", first)
	}

	res, err = ds.SledUpsert(ctx, id, reg("s1", "10.0.0.1:12345", 12348))
	if err != nil || res.Created || res.Changed {
		t.Fatalf("refresh: %+v, %v", res, err)
	}
	if !res.Sled.TimeLastSeen.After(first.TimeLastSeen) || !res.Sled.TimeModified.Equal(first.TimeModified) {
		t.Fatalf("refresh must move last-seen only: before %+v after %+v", first, res.Sled)
	}

	res, err = ds.SledUpsert(ctx, id, reg("s1", "10.0.0.2:12345", 4000))
	if err != nil || res.Created || !res.Changed || res.Sled.SledAgentAddress != "10.0.0.2:12345" || res.Sled.RepoDepotPort != 4000 {
		t.Fatalf("address change: %+v, %v", res, err)
	}

	// Another sled id claiming the same baseboard is refused.
	if _, err := ds.SledUpsert(ctx, uuid.New(), reg("s1", "10.0.0.3:12345", 12348)); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate baseboard: got %v, want ErrConflict", err)
	}

	// An unreachable sled that registers again is active again.
	if _, err := ds.pool.Exec(ctx, "UPDATE sled SET state = 'unreachable' WHERE id = $1", id); err != nil {
		t.Fatal(err)
	}
	res, err = ds.SledUpsert(ctx, id, reg("s1", "10.0.0.2:12345", 4000))
	if err != nil || res.Sled.State != model.SledStateActive {
		t.Fatalf("unreachable sled re-registering: %+v, %v", res, err)
	}

	// An expunged sled stays expunged.
	if _, err := ds.pool.Exec(ctx, "UPDATE sled SET policy = 'expunged' WHERE id = $1", id); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.SledUpsert(ctx, id, reg("s1", "10.0.0.2:12345", 4000)); !errors.Is(err, ErrExpunged) {
		t.Fatalf("expunged sled: got %v, want ErrExpunged", err)
	}
	got, err := ds.SledGet(ctx, id)
	if err != nil || got.Policy != model.SledPolicyExpunged {
		t.Fatalf("expunged sled after refused registration: %+v, %v", got, err)
	}
}

func TestSledListPages(t *testing.T) {
	ctx := context.Background()
	ds := newStore(t)
	want := map[uuid.UUID]bool{}
	for i := range 7 {
		id := uuid.New()
		want[id] = true
		if _, err := ds.SledUpsert(ctx, id, reg(string(rune('a'+i)), "h:1", 1)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uuid.UUID]bool{}
	after := uuid.Nil
	for pages := 0; ; pages++ {
		page, err := ds.SledList(ctx, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			if pages != 3 {
				t.Fatalf("7 sleds in pages of 3 took %d pages", pages)
			}
			break
		}
		for _, s := range page {
			if seen[s.ID] {
				t.Fatalf("sled %s listed twice", s.ID)
			}
			seen[s.ID] = true
		}
		after = page[len(page)-1].ID
	}
	if len(seen) != len(want) {
		t.Fatalf("listed %d sleds, want %d", len(seen), len(want))
	}
}

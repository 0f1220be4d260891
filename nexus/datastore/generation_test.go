package datastore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
)

func repoInsert(i int) TufRepoInsert {
	v := fmt.Sprintf("%d.0.0", i)
	return TufRepoInsert{
		NexusID: uuid.New(), SystemVersion: v, FileName: v + ".zip", SHA256: fmt.Sprintf("%064x", i),
		TrustRootID: uuid.New(), Versions: TufVersions{Root: 1, Timestamp: 1, Snapshot: 1, Targets: 1},
		TargetsSHA256: "t", ManifestFormat: 1, LineageKey: "lineage",
		Artifacts: []TufArtifactInsert{{Name: "os", Version: v, Kind: "host", TargetName: "os.bin",
			SHA256: fmt.Sprintf("%064x", 1000+i), Length: 10}},
	}
}

// Writers of the wanted set take the generation row before anything else,
// even when they turn out not to change it (a re-upload of a live repo):
// an upload waits while another transaction holds the row, and goes on
// when it is let go.
func TestUploadsLockTheGenerationRow(t *testing.T) {
	ctx := context.Background()
	ds := newStore(t)
	if _, err := ds.TufRepoInsert(ctx, repoInsert(1)); err != nil {
		t.Fatal(err)
	}
	holder, err := ds.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, `SELECT generation FROM tuf_generation WHERE singleton FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := ds.TufRepoInsert(ctx, repoInsert(1)); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("the upload finished while the generation row was locked: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("upload after the lock was let go: %v", err)
	}
	// The re-upload changed nothing sleds want.
	if g, err := ds.TufGeneration(ctx); err != nil || g != 2 {
		t.Fatalf("generation %d, %v; want 2", g, err)
	}
}

// Concurrent uploads and prunes, each changing the wanted set, all land,
// and the generation counts every change exactly once.
func TestConcurrentWantedSetChangesCountOnce(t *testing.T) {
	ctx := context.Background()
	ds := newStore(t)
	const n = 6
	for i := 1; i <= n; i++ {
		if _, err := ds.TufRepoInsert(ctx, repoInsert(i)); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, 2*n)
	for i := 1; i <= n; i++ {
		go func() { _, err := ds.TufRepoInsert(ctx, repoInsert(n+i)); errs <- err }()
		go func() { _, err := ds.TufRepoPrune(ctx, fmt.Sprintf("%d.0.0", i), "operator", nil); errs <- err }()
	}
	for range 2 * n {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent change: %v", err)
		}
	}
	g, err := ds.TufGeneration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 1, then n inserts, then n more inserts and n prunes.
	if g != int64(1+3*n) {
		t.Fatalf("generation %d, want %d", g, 1+3*n)
	}
	live, err := ds.TufReposLive(ctx)
	if err != nil || len(live) != n {
		t.Fatalf("%d live repos (%v), want %d", len(live), err, n)
	}
}

func TestPoolConnectionsLiveMinutesWithJitter(t *testing.T) {
	cfg, err := PoolConfig("postgres://u@h:5432/db")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxConnLifetime != DefaultConnLifetime || cfg.MaxConnLifetimeJitter != DefaultConnLifetimeJitter ||
		DefaultConnLifetimeJitter <= 0 {
		t.Fatalf("lifetime %s jitter %s", cfg.MaxConnLifetime, cfg.MaxConnLifetimeJitter)
	}
	cfg, err = PoolConfig("postgres://u@h:5432/db?pool_max_conn_lifetime=1m&pool_max_conn_lifetime_jitter=5s")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxConnLifetime != time.Minute || cfg.MaxConnLifetimeJitter != 5*time.Second {
		t.Fatalf("the URL's lifetime was overridden: %s jitter %s", cfg.MaxConnLifetime, cfg.MaxConnLifetimeJitter)
	}
}

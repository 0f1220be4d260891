package tufreplication_test

// Sleds ahead of the database: a database restored from a backup holds an
// older generation than its sleds, which Nexus must recognise and repair;
// a Nexus whose own snapshot is behind its database must not.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/bgtasks/taskdb"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/pgtemp"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/depot"
)

func dbGeneration(t *testing.T, r *rack) int64 {
	t.Helper()
	var g int64
	if err := r.DB.Pool.QueryRow(context.Background(), `SELECT generation FROM tuf_generation`).Scan(&g); err != nil {
		t.Fatal(err)
	}
	return g
}

// pgTool runs one of PostgreSQL's client programs (pg_dump, pg_restore)
// from the server's installation.
func pgTool(t *testing.T, name string, args ...string) {
	t.Helper()
	dir, err := pgtemp.FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, name)
	if _, err := os.Stat(bin); err != nil {
		// The server's directory may be a few links on PATH; the client
		// programs come with the same package.
		matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
		if bin, err = exec.LookPath(name); err != nil && len(matches) == 0 {
			t.Fatalf("%s not found beside %s nor on PATH", name, dir)
		} else if err != nil {
			bin = matches[len(matches)-1]
		}
	}
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// sledConfigs returns every sled's artifact config.
func sledConfigs(t *testing.T, sleds []*racktest.Sled) []api.ArtifactConfig {
	t.Helper()
	out := make([]api.ArtifactConfig, len(sleds))
	for i, s := range sleds {
		cfg, err := s.AsNexus(t).ArtifactConfigGet(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out[i] = cfg
	}
	return out
}

// A database restored from a backup is behind its sleds: they hold a
// generation it never reached. Nexus fast-forwards the database's
// generation past theirs (audited as the replication task, recorded in its
// status), and the rack converges to what the restored database wants:
// the repo uploaded after the backup is gone from every M.2.
func TestRestoredDatabaseIsFastForwarded(t *testing.T) {
	t.Parallel()
	r := newRack(t, 4)
	ctx := context.Background()
	a := r.upload(r.Nexus, tufgen.Demo("1.0.0"))
	r.waitHeld(r.Sleds, hashes(a), 30*time.Second)
	waitConverged(t, r.Nexus, 30*time.Second)
	backup := filepath.Join(t.TempDir(), "backup.dump")
	pgTool(t, "pg_dump", "--format=custom", "--file="+backup, r.DB.URL)
	backedUp := dbGeneration(t, r)

	b := r.upload(r.Nexus, tufgen.Sized("2.0.0", 1<<20, 2, 3))
	r.waitHeld(r.Sleds, hashes(a, b), 30*time.Second)
	waitConverged(t, r.Nexus, 30*time.Second)
	held := dbGeneration(t, r)
	if held <= backedUp {
		t.Fatalf("generation %d after the second upload, %d at the backup", held, backedUp)
	}

	// Nexus stops; the database is restored from the backup; Nexus starts
	// again on it (same id, same data dir, same internal address).
	id, dataDir, internal := r.Nexus.ID(), r.Nexus.Depot().Dir(), r.Nexus.InternalURL()
	r.Nexus.Stop()
	r.DB.Pool.Reset()
	pgTool(t, "pg_restore", "--clean", "--if-exists", "--no-owner", "--dbname="+r.DB.URL, backup)
	if g := dbGeneration(t, r); g != backedUp {
		t.Fatalf("restored database holds generation %d, the backup %d", g, backedUp)
	}
	for i, c := range sledConfigs(t, r.Sleds) {
		if int64(c.Generation) != held {
			t.Fatalf("sled %d holds generation %d before the restart, want %d", i, c.Generation, held)
		}
	}
	cfg := nexusConfig()
	cfg.ID, cfg.DataDir = id, filepath.Dir(dataDir)
	cfg.InternalAddr = strings.TrimPrefix(internal, "https://")
	r.Nexus = racktest.StartNexus(t, r.DB.URL, cfg)

	want := hashes(a)
	racktest.WaitFor(t, 30*time.Second, "every sled to hold the restored database's set, and only it", func() error {
		for i, s := range r.Sleds {
			var expect []string
			for _, m2 := range s.Config.M2Dirs {
				for _, h := range want {
					expect = append(expect, filepath.Base(m2)+":"+h)
				}
			}
			slices.Sort(expect)
			if got := stored(s); !slices.Equal(got, expect) {
				return fmt.Errorf("sled %d holds %v", i, got)
			}
		}
		return nil
	})
	r.waitHeld(r.Sleds, want, 5*time.Second)
	st := waitConverged(t, r.Nexus, 30*time.Second)
	ff := st.FastForward
	if ff == nil || ff.From != backedUp || ff.SledGeneration != held || ff.To != held+1 || ff.Sled == uuid.Nil {
		t.Fatalf("status records the fast-forward as %+v; want from %d past %d", ff, backedUp, held)
	}
	if g := dbGeneration(t, r); g != held+1 || st.Generation != held+1 {
		t.Fatalf("database at generation %d, status at %d; want %d", g, st.Generation, held+1)
	}
	for i, c := range sledConfigs(t, r.Sleds) {
		if int64(c.Generation) != held+1 || !slices.Equal(c.Artifacts, want) {
			t.Fatalf("sled %d config %+v, want generation %d with %v", i, c, held+1, want)
		}
	}
	if n := r.DB.Count(t, `SELECT count(*) FROM audit_log WHERE action = 'tuf_generation.fast_forward'
		AND actor_kind = 'task' AND actor = $1 AND outcome = 'ok'`, tufreplication.Name); n != 1 {
		t.Fatalf("%d audit rows for the fast-forward, want 1", n)
	}
	// The replication page says so.
	resp, err := http.DefaultClient.Do(r.Nexus.Request(t, http.MethodGet, "/ui/replication", nil))
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "Generation fast-forwarded") ||
		!strings.Contains(string(page), fmt.Sprintf("from %d to %d", backedUp, held+1)) {
		t.Fatalf("replication page (%d) does not show the fast-forward:\n%s", resp.StatusCode, page)
	}
	// Converged, the task no longer reruns on its own (no storm).
	quiesce(t, r.Nexus)
	before, err := r.Nexus.Client.BackgroundTaskGet(ctx, tufreplication.Name)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	after, err := r.Nexus.Client.BackgroundTaskGet(ctx, tufreplication.Name)
	if err != nil || after.Activations != before.Activations {
		t.Fatalf("converged task still running: %d then %d activations (%v)", before.Activations, after.Activations, err)
	}
}

// snapshotHook runs fn once, right after a replication snapshot commits on
// a pool it traces: the moment between a Nexus reading the database and
// asking its sleds, when another Nexus may move everything on.
type snapshotHook struct {
	next interface {
		pgx.QueryTracer
		pgx.BatchTracer
	}
	mu      sync.Mutex
	fn      func()
	read    map[*pgx.Conn]bool // a snapshot was read in the open transaction
	closing map[*pgx.Conn]bool // ... and its commit is on its way
}

func (h *snapshotHook) TraceBatchStart(ctx context.Context, c *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	return h.next.TraceBatchStart(ctx, c, d)
}

func (h *snapshotHook) TraceBatchQuery(ctx context.Context, c *pgx.Conn, d pgx.TraceBatchQueryData) {
	if d.SQL == "SELECT generation FROM tuf_generation" {
		h.mu.Lock()
		h.read[c] = true
		h.mu.Unlock()
	}
	h.next.TraceBatchQuery(ctx, c, d)
}

func (h *snapshotHook) TraceBatchEnd(ctx context.Context, c *pgx.Conn, d pgx.TraceBatchEndData) {
	h.next.TraceBatchEnd(ctx, c, d)
}

func (h *snapshotHook) TraceQueryStart(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	h.mu.Lock()
	if h.read[c] && strings.EqualFold(d.SQL, "commit") {
		h.closing[c] = true
	}
	delete(h.read, c)
	h.mu.Unlock()
	return h.next.TraceQueryStart(ctx, c, d)
}

func (h *snapshotHook) TraceQueryEnd(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryEndData) {
	h.next.TraceQueryEnd(ctx, c, d)
	h.mu.Lock()
	fire := h.closing[c] && d.Err == nil
	delete(h.closing, c)
	fn := h.fn
	if fire {
		h.fn = nil
	}
	h.mu.Unlock()
	if fire && fn != nil {
		fn()
	}
}

// A Nexus whose snapshot is behind its own database (another Nexus moved
// the generation on and pushed it to the sleds in between) stops its run
// as stale: it fast-forwards nothing, changes nothing, and asks to retry
// after the back-off; its next run goes on at the new generation.
func TestStaleNexusStopsWithoutFastForward(t *testing.T) {
	t.Parallel()
	r := newRack(t, 3)
	ctx := context.Background()
	a := r.upload(r.Nexus, tufgen.Demo("1.0.0"))
	r.waitHeld(r.Sleds, hashes(a), 30*time.Second)
	waitConverged(t, r.Nexus, 30*time.Second)
	before := dbGeneration(t, r)

	// A second Nexus's replication task, run by hand on a pool whose
	// snapshot hook lets the rack's Nexus upload a repo (and push its
	// generation to every sled) between this task's read of the database
	// and its questions to the sleds.
	poolCfg, err := datastore.PoolConfig(r.DB.URL)
	if err != nil {
		t.Fatal(err)
	}
	next := poolCfg.ConnConfig.Tracer.(interface {
		pgx.QueryTracer
		pgx.BatchTracer
	})
	var b *tufgen.Built
	hook := &snapshotHook{next: next, read: map[*pgx.Conn]bool{}, closing: map[*pgx.Conn]bool{}, fn: func() {
		b = r.upload(r.Nexus, tufgen.Sized("2.0.0", 1<<20, 2, 9))
		racktest.WaitFor(t, 20*time.Second, "the other Nexus to push its generation to every sled", func() error {
			for i, c := range sledConfigs(t, r.Sleds) {
				if int64(c.Generation) != before+1 {
					return fmt.Errorf("sled %d at generation %d", i, c.Generation)
				}
			}
			return nil
		})
	}}
	poolCfg.ConnConfig.Tracer = hook
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	log := racktest.Logger(t, "stale-nexus")
	ds := datastore.New(pool, log, datastore.Options{})
	d, _, err := depot.Open(filepath.Join(t.TempDir(), "depot"))
	if err != nil {
		t.Fatal(err)
	}
	otherID := uuid.New()
	bundle := sledtest.Bundle(t, rackpki.Nexus(otherID.String()))
	other, err := app.New(app.Config{NexusID: otherID}, app.Deps{DS: ds, Depot: d, TaskDB: taskdb.New(ds), Log: log,
		Identity: bundle})
	if err != nil {
		t.Fatal(err)
	}
	task := tufreplication.New(tufreplication.Config{App: other, DS: ds, Depot: d, NexusID: otherID, Log: log,
		Limits: tufreplication.Limits{MinSledReplication: 3}, TLS: other.SledTLS()})

	act := bgtasks.NewActivation(1, bgtasks.ReasonExplicit, "test", "stale-run", time.Now())
	res, err := task.Activate(ctx, act)
	if err != nil {
		t.Fatal(err)
	}
	if b == nil {
		t.Fatal("the snapshot hook never ran")
	}
	st := res.(tufreplication.Status)
	if !strings.Contains(st.Stopped, "view is stale") || st.Generation != before || !act.Retrying() ||
		st.FastForward != nil || st.Requests != 0 || act.Requeue() != 0 {
		t.Fatalf("stale run: stopped %q at generation %d (retry later %v, follow-up %s), fast-forward %+v, %d requests",
			st.Stopped, st.Generation, act.Retrying(), act.Requeue(), st.FastForward, st.Requests)
	}
	if g := dbGeneration(t, r); g != before+1 {
		t.Fatalf("database at generation %d after the stale run, want %d (the other Nexus's)", g, before+1)
	}
	if n := r.DB.Count(t, `SELECT count(*) FROM audit_log WHERE action = 'tuf_generation.fast_forward'`); n != 0 {
		t.Fatalf("%d fast-forward audit rows after a stale view", n)
	}
	for i, c := range sledConfigs(t, r.Sleds) {
		if int64(c.Generation) != before+1 || !slices.Equal(c.Artifacts, hashes(a, b)) {
			t.Fatalf("sled %d config %+v after the stale run", i, c)
		}
	}

	// The next run reads the new generation and goes on.
	act = bgtasks.NewActivation(2, bgtasks.ReasonRetry, "test", "fresh-run", time.Now())
	res, err = task.Activate(ctx, act)
	if err != nil {
		t.Fatal(err)
	}
	if st := res.(tufreplication.Status); st.Stopped != "" || st.Generation != before+1 || act.Retrying() {
		t.Fatalf("next run: stopped %q at generation %d, retry later %v", st.Stopped, st.Generation, act.Retrying())
	}
	r.waitHeld(r.Sleds, hashes(a, b), 30*time.Second)
}

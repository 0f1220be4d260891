package tufreplication_test

// End-to-end tests: a real Nexus (or two), real sled agents with temp dirs
// as M.2s, a real PostgreSQL, real uploads. They assert on the state of the
// world: files on the sleds' M.2s, rows in the database, status JSON.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/artifacts"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// rack is a test rack with the helpers these tests share.
type rack struct{ *racktest.Rack }

// nexusConfig is what every test Nexus runs with: three sleds must hold an
// artifact before the local copy goes, follow-ups come quickly, and the
// period is an hour, so that everything here converges through the
// task's triggers (uploads, prunes, sled reports, follow-ups), never by
// waiting for its next period.
func nexusConfig() nexus.Config {
	return nexus.Config{
		Tasks:       nexustasks.Registrar(nexustasks.Config{Replication: nexustasks.ReplicationConfig{MinSledReplication: 3, FollowUp: 100 * time.Millisecond}}),
		TaskPeriods: map[string]time.Duration{tufreplication.Name: time.Hour},
	}
}

// sledConfig is every test sled's: it re-registers on its real 30 s
// schedule, so a test converging in seconds shows the sled reported its
// change at once; it notices M.2s coming and going quickly.
func sledConfig() sledagent.Config {
	return sledagent.Config{M2PollInterval: 100 * time.Millisecond}
}

func newRack(t *testing.T, nSleds int) *rack {
	t.Helper()
	return &rack{racktest.StartRack(t, racktest.RackConfig{Sleds: nSleds, Nexus: nexusConfig(), Sled: sledConfig(), Seed: 42})}
}

// upload builds and uploads a repo through nx.
func (r *rack) upload(nx *racktest.Nexus, repo tufgen.Repo) *tufgen.Built {
	r.T.Helper()
	return r.Upload(nx, repo, "repo.zip")
}

func hashes(builts ...*tufgen.Built) []string {
	var out []string
	for _, b := range builts {
		for _, a := range b.Artifacts {
			if !slices.Contains(out, a.SHA256) {
				out = append(out, a.SHA256)
			}
		}
	}
	slices.Sort(out)
	return out
}

// missing returns, per sled, the wanted hashes missing (or corrupt) on any of
// its M.2s.
func (r *rack) missing(sleds []*racktest.Sled, want []string) map[int][]string {
	out := map[int][]string{}
	for i, s := range sleds {
		for _, m2 := range s.Config.M2Dirs {
			for _, h := range want {
				if !racktest.Verified(racktest.ArtifactPath(m2, h), h) {
					out[i] = append(out[i], filepath.Base(m2)+":"+h[:8])
				}
			}
		}
	}
	return out
}

// waitHeld waits until every given sled holds every wanted hash on every
// M.2, checking the files themselves.
func (r *rack) waitHeld(sleds []*racktest.Sled, want []string, timeout time.Duration) {
	r.T.Helper()
	racktest.WaitFor(r.T, timeout, "every sled to hold every artifact on both M.2s", func() error {
		if m := r.missing(sleds, want); len(m) > 0 {
			return fmt.Errorf("missing: %v", m)
		}
		return nil
	})
}

// stored lists the artifact files a sled holds on each M.2.
func stored(s *racktest.Sled) []string {
	var out []string
	for _, m2 := range s.Config.M2Dirs {
		entries, _ := os.ReadDir(filepath.Join(m2, artifacts.UpdateDir))
		for _, e := range entries {
			if e.Type().IsRegular() && api.CheckSHA256(e.Name()) == nil {
				out = append(out, filepath.Base(m2)+":"+e.Name())
			}
		}
	}
	slices.Sort(out)
	return out
}

// waitConverged waits for a replication run that reports convergence.
func waitConverged(t *testing.T, nx *racktest.Nexus, timeout time.Duration) tufreplication.Status {
	t.Helper()
	var st tufreplication.Status
	racktest.WaitFor(t, timeout, "the replication task to report convergence", func() error {
		if _, err := nx.Client.BackgroundTaskActivate(context.Background(), tufreplication.Name); err != nil {
			return err
		}
		st = racktest.ReplicationStatus(t, nx)
		if !st.Converged {
			return fmt.Errorf("not converged: %d requests, %d deferred, %d in flight, unheld %v, stopped %q",
				st.Requests, st.Deferred, st.InFlight, st.Unheld, st.Stopped)
		}
		return nil
	})
	return st
}

// localCopies lists the hashes this Nexus records as local copies.
func localCopies(t *testing.T, db *testdb.DB, nexusID uuid.UUID) []string {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT sha256 FROM nexus_artifact_copy WHERE nexus_id = $1 ORDER BY sha256`, nexusID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
	return out
}

func depotFiles(nx *racktest.Nexus) []string {
	entries, _ := os.ReadDir(nx.Depot().Dir())
	var out []string
	for _, e := range entries {
		if api.CheckSHA256(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// sledMetric reads one counter from a sled's /metrics.
func sledMetric(t *testing.T, s *racktest.Sled, name string) float64 {
	t.Helper()
	resp, err := sledtest.HTTPClient(t, rackpki.Nexus("test")).Get(s.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	total := 0.0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metric line %q", line)
			}
			total += v
		}
	}
	return total
}

// quiesce waits until the replication task has been idle, with nothing
// pending, for a little while (no follow-up left from earlier work).
func quiesce(t *testing.T, nx *racktest.Nexus) {
	t.Helper()
	var last uint64
	var since time.Time
	racktest.WaitFor(t, 20*time.Second, "the replication task to settle", func() error {
		task, err := nx.Client.BackgroundTaskGet(context.Background(), tufreplication.Name)
		if err != nil {
			return err
		}
		if task.Current.State != api.TaskStateIdle || task.Current.Pending != "" || task.Activations != last {
			last, since = task.Activations, time.Now()
			return errors.New("still active")
		}
		if time.Since(since) < 500*time.Millisecond {
			return errors.New("recently active")
		}
		return nil
	})
}

// activatedBy reports whether a replication activation requested by
// requester started after t0.
func activatedBy(t *testing.T, nx *racktest.Nexus, requester string, t0 time.Time) bool {
	t.Helper()
	task, err := nx.Client.BackgroundTaskGet(context.Background(), tufreplication.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range task.History {
		if a.Requester == requester && a.Start.After(t0) {
			return true
		}
	}
	return false
}

// An upload reaches every M.2 of every sled; Nexus sends each artifact to
// one sled, which copies it from Nexus's depot (the rest fan out from
// sleds), and drops its local copies once enough sleds hold them.
func TestUploadReachesEveryM2(t *testing.T) {
	t.Parallel()
	r := newRack(t, 6)
	built := r.upload(r.Nexus, tufgen.Demo("1.0.0"))
	want := hashes(built)
	r.waitHeld(r.Sleds, want, 30*time.Second)
	st := waitConverged(t, r.Nexus, 30*time.Second)

	var total int64
	for _, a := range built.Artifacts {
		total += a.Length
	}
	if st.Lifetime.BytesSeeded != total || st.Lifetime.SeedOK != len(want) {
		t.Errorf("Nexus seeded %d bytes in %d seeds for a %d-byte repo of %d artifacts: want each artifact once",
			st.Lifetime.BytesSeeded, st.Lifetime.SeedOK, total, len(want))
	}
	if st.Lifetime.CopyOK == 0 {
		t.Errorf("expected sled-to-sled copies: %+v", st.Lifetime)
	}
	if st.FullyReplicated != len(want) || st.Artifacts != len(want) || st.Sleds != 6 || len(st.Unheld) != 0 {
		t.Errorf("status after convergence: %+v", st)
	}
	// The run says where its time went: asking six sleds takes some.
	if p := st.Phases; p.Collect <= 0 || p.Plan < 0 || p.Execute < 0 || p.Finish < 0 {
		t.Errorf("phase times of a converged run: %+v", p)
	}
	racktest.WaitFor(t, 10*time.Second, "local copies to be dropped", func() error {
		if l, f := localCopies(t, r.DB, r.Nexus.ID()), depotFiles(r.Nexus); len(l)+len(f) > 0 {
			return fmt.Errorf("still held locally: rows %v, files %v", l, f)
		}
		return nil
	})
	repo, err := r.Nexus.Client.RepoGet(context.Background(), "1.0.0")
	if err != nil || repo.Repo.State != api.RepoStateActive {
		t.Fatalf("repo after replication: %+v, %v", repo.Repo, err)
	}
	// The requests are on record.
	if len(st.Recent) == 0 || st.Recent[0].Sled == uuid.Nil {
		t.Errorf("no recent requests in the status: %+v", st.Recent)
	}
}

// Pruning a repo removes its artifacts from every sled (and keeps the
// others).
func TestPruneRemovesFiles(t *testing.T) {
	t.Parallel()
	r := newRack(t, 5)
	old := r.upload(r.Nexus, tufgen.Demo("1.0.0"))
	cur := r.upload(r.Nexus, tufgen.Demo("2.0.0"))
	r.waitHeld(r.Sleds, hashes(old, cur), 30*time.Second)

	if _, err := r.Nexus.Client.RepoDelete(context.Background(), "1.0.0"); err != nil {
		t.Fatal(err)
	}
	want := hashes(cur)
	racktest.WaitFor(t, 30*time.Second, "the pruned repo's files to disappear", func() error {
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
}

// A sled that joins later catches up, from other sleds.
func TestLateSledCatchesUp(t *testing.T) {
	t.Parallel()
	r := newRack(t, 5)
	built := r.upload(r.Nexus, tufgen.Demo("1.0.0"))
	r.waitHeld(r.Sleds, hashes(built), 30*time.Second)
	waitConverged(t, r.Nexus, 30*time.Second)
	seedsBefore := racktest.ReplicationStatus(t, r.Nexus).Lifetime.SeedOK

	late := r.AddSled(sledConfig())
	racktest.WaitRegistered(t, r.Nexus.Client, late)
	r.waitHeld([]*racktest.Sled{late}, hashes(built), 30*time.Second)
	if st := racktest.ReplicationStatus(t, r.Nexus); st.Lifetime.SeedOK != seedsBefore {
		t.Errorf("the late sled was fed by Nexus (%d seeds, %d before), not by sleds", st.Lifetime.SeedOK, seedsBefore)
	}
}

// Losing artifacts on a sled (a corrupt copy found by scrub on both M.2s,
// or one M.2 emptied) is repaired.
func TestLostCopiesAreRefilled(t *testing.T) {
	t.Parallel()
	r := newRack(t, 5)
	built := r.upload(r.Nexus, tufgen.Demo("1.0.0"))
	want := hashes(built)
	r.waitHeld(r.Sleds, want, 30*time.Second)
	waitConverged(t, r.Nexus, 30*time.Second)

	// Corrupt one artifact on both M.2s of sled 0: scrub finds and removes
	// both copies, and replication brings it back from another sled.
	quiesce(t, r.Nexus)
	corrupted := time.Now()
	victim := r.Sleds[0]
	h := want[0]
	for _, m2 := range victim.Config.M2Dirs {
		p := racktest.ArtifactPath(m2, h)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sc := victim.AsNexus(t)
	if _, err := sc.ArtifactScrubStart(context.Background()); err != nil {
		t.Fatal(err)
	}
	racktest.WaitFor(t, 10*time.Second, "scrub to count the corrupt copies", func() error {
		if n := sledMetric(t, victim, "rackplane_sled_artifact_corrupt_copies_total"); n < 2 {
			return fmt.Errorf("%v corrupt copies counted", n)
		}
		return nil
	})
	// Within seconds: well inside the sled's 30 s re-registration period,
	// so the sled must have reported the loss as it happened.
	r.waitHeld(r.Sleds, want, 10*time.Second)
	// The repair was started by the sled reporting its loss, not by a
	// period (an hour here) or the test.
	if !activatedBy(t, r.Nexus, "sled-registration:"+victim.ID().String(), corrupted) {
		t.Fatalf("no replication run was triggered by sled %s reporting its lost copies", victim.ID())
	}

	// Empty one M.2 of sled 1 entirely (its contents moved away at once,
	// as if the device were swapped for a blank one): it is refilled.
	m2 := r.Sleds[1].Config.M2Dirs[0]
	entries, err := os.ReadDir(m2)
	if err != nil {
		t.Fatal(err)
	}
	gone := t.TempDir()
	for _, e := range entries {
		if err := os.Rename(filepath.Join(m2, e.Name()), filepath.Join(gone, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if moved, _ := os.ReadDir(filepath.Join(gone, artifacts.UpdateDir)); len(moved) < len(want) {
		t.Fatalf("emptying the M.2 moved only %d entries of its update area", len(moved))
	}
	r.waitHeld(r.Sleds, want, 30*time.Second)
}

// An artifact nobody holds marks its repo degraded; a re-upload restores a
// holder and the repo recovers.
func TestDegradedRepoRecoversOnReupload(t *testing.T) {
	t.Parallel()
	r := newRack(t, 4)
	ctx := context.Background()
	// Keep replication off while the only copy (Nexus's) is lost.
	if _, err := r.Nexus.Client.BackgroundTaskSetEnabled(ctx, tufreplication.Name, false); err != nil {
		t.Fatal(err)
	}
	repo := tufgen.Demo("1.0.0")
	archive, built, err := r.Lineage.BuildBytes(repo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Nexus.Client.RepoUpload(ctx, "repo.zip", bytes.NewReader(archive), int64(len(archive)), nil); err != nil {
		t.Fatal(err)
	}
	lost := built.Artifacts[0].SHA256
	if err := os.Remove(filepath.Join(r.Nexus.Depot().Dir(), lost)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.DB.Pool.Exec(ctx, `DELETE FROM nexus_artifact_copy WHERE sha256 = $1`, lost); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Nexus.Client.BackgroundTaskSetEnabled(ctx, tufreplication.Name, true); err != nil {
		t.Fatal(err)
	}
	racktest.WaitFor(t, 20*time.Second, "the repo to be marked degraded", func() error {
		got, err := r.Nexus.Client.RepoGet(ctx, "1.0.0")
		if err != nil {
			return err
		}
		if got.Repo.State != api.RepoStateDegraded || !strings.Contains(got.Repo.StateReason, lost[:12]) {
			return fmt.Errorf("state %s (%s)", got.Repo.State, got.Repo.StateReason)
		}
		// The run records the repo's state in the database as it goes
		// and publishes its status when it ends: wait for that too.
		if st := racktest.ReplicationStatus(t, r.Nexus); !slices.Contains(st.Unheld, lost) {
			return fmt.Errorf("status does not name the unheld artifact: %+v", st.Unheld)
		}
		return nil
	})

	// The operator uploads the release again: Nexus holds it once more,
	// replication spreads it and the repo is active again.
	res, err := r.Nexus.Client.RepoUpload(ctx, "repo.zip", bytes.NewReader(archive), int64(len(archive)), nil)
	if err != nil || res.Status != api.UploadAlreadyExists {
		t.Fatalf("re-upload: %+v, %v", res, err)
	}
	r.waitHeld(r.Sleds, hashes(built), 30*time.Second)
	racktest.WaitFor(t, 20*time.Second, "the repo to be active again", func() error {
		got, err := r.Nexus.Client.RepoGet(ctx, "1.0.0")
		if err != nil {
			return err
		}
		if got.Repo.State != api.RepoStateActive || got.Repo.StateReason != "" {
			return fmt.Errorf("state %s (%s)", got.Repo.State, got.Repo.StateReason)
		}
		return nil
	})
}

// waitCopyRunning waits until some sled is part-way through a copy and
// returns its index.
func (r *rack) waitCopyRunning(timeout time.Duration) int {
	r.T.Helper()
	found := -1
	racktest.WaitFor(r.T, timeout, "a copy part-way through", func() error {
		for i, s := range r.Sleds {
			sc := s.AsNexus(r.T)
			list, err := sc.ArtifactCopies(context.Background())
			if err != nil {
				continue
			}
			for _, c := range list.Copies {
				if c.State == api.CopyRunning && c.BytesDone > 0 && c.BytesDone < c.BytesTotal {
					found = i
					return nil
				}
			}
		}
		return fmt.Errorf("no copy running")
	})
	return found
}

// A sled stopped in the middle of a copy and started again (same disks,
// same identity, a new address) converges with the rest.
func TestSledStoppedMidCopyConverges(t *testing.T) {
	t.Parallel()
	r := newRack(t, 4)
	built := r.upload(r.Nexus, tufgen.Sized("1.0.0", 96<<20, 2, 7))
	want := hashes(built)
	i := r.waitCopyRunning(30 * time.Second)
	victim := r.Sleds[i]
	victim.Stop()
	// Nothing half-copied survives as an artifact.
	for _, m2 := range victim.Config.M2Dirs {
		for _, h := range want {
			p := racktest.ArtifactPath(m2, h)
			if _, err := os.Stat(p); err == nil && !racktest.Verified(p, h) {
				t.Fatalf("a partial copy became artifact %s on %s", h, m2)
			}
		}
	}
	restarted := racktest.StartSled(t, r.Nexus.InternalURL(), sledagent.Config{DataDir: victim.Config.DataDir,
		M2Dirs: victim.Config.M2Dirs, CreateM2Dirs: true, M2PollInterval: sledConfig().M2PollInterval})
	if restarted.ID() != victim.ID() {
		t.Fatalf("restarted sled has a new identity")
	}
	r.Sleds[i] = restarted
	r.waitHeld(r.Sleds, want, 60*time.Second)
	waitConverged(t, r.Nexus, 30*time.Second)
}

// Nexus killed while replication is under way (its local copies not yet
// dropped) comes back with the same id and data dir and finishes the job:
// no artifact is lost.
func TestNexusRestartMidReplication(t *testing.T) {
	t.Parallel()
	r := newRack(t, 5)
	built := r.upload(r.Nexus, tufgen.Sized("1.0.0", 64<<20, 4, 11))
	want := hashes(built)
	r.waitCopyRunning(30 * time.Second)
	id, dataDir, internal := r.Nexus.ID(), r.Nexus.Depot().Dir(), r.Nexus.InternalURL()
	r.Nexus.Stop()
	if m := r.missing(r.Sleds, want); len(m) == 0 {
		t.Log("replication finished before Nexus stopped; the restart is still checked")
	}

	cfg := nexusConfig()
	cfg.ID, cfg.DataDir = id, filepath.Dir(dataDir)
	cfg.InternalAddr = strings.TrimPrefix(internal, "https://")
	r.Nexus = racktest.StartNexus(t, r.DB.URL, cfg)
	r.waitHeld(r.Sleds, want, 60*time.Second)
	st := waitConverged(t, r.Nexus, 30*time.Second)
	if st.FullyReplicated != len(want) {
		t.Fatalf("after restart: %+v", st)
	}
	repo, err := r.Nexus.Client.RepoGet(context.Background(), "1.0.0")
	if err != nil || repo.Repo.State != api.RepoStateActive {
		t.Fatalf("repo after restart: %+v, %v", repo.Repo, err)
	}
}

// Two Nexus instances on one database, each running the task, uploads made
// to either: the rack converges, and no sled ever deletes a wanted
// artifact (no flapping between two views).
func TestTwoNexusConvergeWithoutFlapping(t *testing.T) {
	t.Parallel()
	r := newRack(t, 5)
	other := racktest.StartNexus(t, r.DB.URL, nexusConfig())
	ctx := context.Background()
	a := r.upload(r.Nexus, tufgen.Demo("1.0.0"))
	b := r.upload(other, tufgen.Sized("2.0.0", 4<<20, 3, 5))
	want := hashes(a, b)
	r.waitHeld(r.Sleds, want, 60*time.Second)
	waitConverged(t, r.Nexus, 30*time.Second)
	waitConverged(t, other, 30*time.Second)

	gen := func() uint64 {
		var g int64
		if err := r.DB.Pool.QueryRow(ctx, `SELECT generation FROM tuf_generation`).Scan(&g); err != nil {
			t.Fatal(err)
		}
		return uint64(g)
	}
	before := gen()
	// Both keep running: nothing changes any more.
	for range 5 {
		for _, nx := range []*racktest.Nexus{r.Nexus, other} {
			if _, err := nx.Client.BackgroundTaskActivate(ctx, tufreplication.Name); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitConverged(t, r.Nexus, 30*time.Second)
	waitConverged(t, other, 30*time.Second)
	if gen() != before {
		t.Fatalf("generation moved from %d to %d without any change", before, gen())
	}
	deleted := 0.0
	for _, s := range r.Sleds {
		deleted += sledMetric(t, s, "rackplane_sled_artifact_deleted_total")
		sc := s.AsNexus(t)
		cfg, err := sc.ArtifactConfigGet(ctx)
		if err != nil || cfg.Generation != before || !slices.Equal(cfg.Artifacts, want) {
			t.Fatalf("sled %s config %+v (%v), want generation %d with %v", s.ID(), cfg, err, before, want)
		}
	}
	if deleted != 0 {
		t.Fatalf("sleds deleted %v artifacts although every artifact stayed wanted", deleted)
	}
	r.waitHeld(r.Sleds, want, time.Second)
	// Each Nexus dropped its own local copies once sleds held them.
	for _, nx := range []*racktest.Nexus{r.Nexus, other} {
		racktest.WaitFor(t, 10*time.Second, "local copies to be dropped", func() error {
			if l := localCopies(t, r.DB, nx.ID()); len(l) > 0 {
				return fmt.Errorf("%s still holds %d", nx.ID(), len(l))
			}
			return nil
		})
	}
}

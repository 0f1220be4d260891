package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/tufgen"
)

// lockedBuffer is an io.Writer that a running rackdev writes while the
// test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var externalURL = regexp.MustCompile(`nexus external API\s+(http://\S+)`)

// devRack is a rackdev running in the test until stopped.
type devRack struct {
	out, errOut *lockedBuffer
	stop        context.CancelFunc
	done        chan int
	nexus       client.Nexus
}

func startDevRack(t *testing.T, args ...string) *devRack {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &devRack{out: &lockedBuffer{}, errOut: &lockedBuffer{}, stop: cancel, done: make(chan int, 1)}
	args = append([]string{"--nexus-external-addr", "127.0.0.1:0", "--nexus-internal-addr", "127.0.0.1:0", "--sleds", "3"}, args...)
	go func() { d.done <- runContext(ctx, args, d.out, d.errOut) }()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(d.out.String(), "Press Ctrl-C to stop the rack.") {
		select {
		case code := <-d.done:
			t.Fatalf("rackdev exited %d\nstdout:\n%s\nstderr:\n%s", code, d.out, d.errOut)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("rackdev did not come up\nstdout:\n%s\nstderr:\n%s", d.out, d.errOut)
		}
	}
	m := externalURL.FindStringSubmatch(d.out.String())
	if m == nil {
		t.Fatalf("no external URL in\n%s", d.out)
	}
	nx, err := client.NewNexus(m[1], nil)
	if err != nil {
		t.Fatal(err)
	}
	d.nexus = nx
	return d
}

func (d *devRack) close(t *testing.T) {
	t.Helper()
	d.stop()
	if code := <-d.done; code != 0 {
		t.Fatalf("rackdev exited %d on stop\nstderr:\n%s", code, d.errOut)
	}
}

// A second start on the same data dir resumes the same rack: the same
// database (the repos uploaded, the token made), the same sleds and CA;
// it says it resumed, uploads no demo again, and converges at once at the
// generation the sleds hold, with no stale-generation loop.
func TestSecondStartResumesTheRack(t *testing.T) {
	dataDir := keptDataDir(t)
	first := startDevRack(t, "--data-dir", dataDir)
	if !strings.Contains(first.out.String(), "a fresh rack") {
		t.Fatalf("first start:\n%s", first.out)
	}
	tokenBytes, err := os.ReadFile(filepath.Join(dataDir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokenBytes))
	nx := first.nexus.WithToken(token)
	ctx := context.Background()
	// Upload a release of one's own, signed by the demo's lineage (its
	// root is registered).
	l, err := tufgen.NewLineage(rand.NewChaCha8([32]byte{'r', 'a', 'c', 'k', 'd', 'e', 'v'}), tufgen.LineageOptions{Consistent: true})
	if err != nil {
		t.Fatal(err)
	}
	own := tufgen.Demo("2.0.0")
	own.TimestampVersion, own.SnapshotVersion, own.TargetsVersion = 2, 2, 2
	archive, _, err := l.BuildBytes(own)
	if err != nil {
		t.Fatal(err)
	}
	up, err := nx.RepoUpload(ctx, "own-2.0.0.zip", bytes.NewReader(archive), int64(len(archive)), nil)
	if err != nil {
		t.Fatal(err)
	}
	waitConverged(t, nx, up.Generation)
	// Rack setup recorded epoch 1 with every member acked.
	tq, err := nx.TrustQuorumStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := tq.LatestCommitted; c == nil || c.Epoch != 1 || c.State != "committed" || c.Lrtq || len(c.Members) != 3 ||
		c.Acked != 3 || c.Required != 3 {
		t.Fatalf("epoch 1 after rack setup: %+v", c)
	}
	sledsBefore, err := nx.SledList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gen := replicationStatus(t, nx).Generation
	caBefore, err := os.ReadFile(filepath.Join(dataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	first.close(t)

	second := startDevRack(t, "--data-dir", dataDir)
	defer second.close(t)
	out := second.out.String()
	for _, want := range []string{"resuming the rack kept in " + dataDir, "resumed with 2 live repos, replicated to every sled at generation " + fmt.Sprint(gen)} {
		if !strings.Contains(out, want) {
			t.Errorf("second start lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "demo repo 1.0.0") {
		t.Errorf("the demo was uploaded again:\n%s", out)
	}
	// No second rack setup: the sleds unlocked their disks from each
	// other's shares, and Nexus has the rack already.
	if !strings.Contains(out, "the rack is set up already (trust-quorum epoch 1 committed)") ||
		strings.Contains(out, "over the bootstrap network") {
		t.Errorf("the second start set the rack up again:\n%s", out)
	}
	nx = second.nexus.WithToken(token) // the same token works: the same database
	repos, err := nx.RepoList(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	var versions []string
	for _, r := range repos {
		versions = append(versions, r.SystemVersion)
	}
	slices.Sort(versions)
	if strings.Join(versions, ",") != "1.0.0,2.0.0" {
		t.Fatalf("repos after the restart: %v", versions)
	}
	sledsAfter, err := nx.SledList(ctx)
	if err != nil || len(sledsAfter) != len(sledsBefore) {
		t.Fatalf("sleds after the restart: %v %d", err, len(sledsAfter))
	}
	for i := range sledsBefore {
		if sledsAfter[i].ID != sledsBefore[i].ID || sledsAfter[i].Baseboard != sledsBefore[i].Baseboard {
			t.Errorf("sled %d was %s %s, is %s %s", i, sledsBefore[i].ID, sledsBefore[i].Baseboard, sledsAfter[i].ID,
				sledsAfter[i].Baseboard)
		}
	}
	if caAfter, _ := os.ReadFile(filepath.Join(dataDir, "pki", "ca.crt")); !bytes.Equal(caAfter, caBefore) {
		t.Error("the rack CA changed")
	}
	st := replicationStatus(t, nx)
	if !st.Converged || st.Stopped != "" || st.Generation != gen {
		t.Fatalf("replication after the restart: converged %v, stopped %q, generation %d (was %d)", st.Converged,
			st.Stopped, st.Generation, gen)
	}
	// A stale view makes the task re-run every 100 ms and log a warning
	// each time; a resumed rack has none.
	time.Sleep(time.Second)
	task, err := nx.BackgroundTaskGet(ctx, tufreplication.Name)
	if err != nil {
		t.Fatal(err)
	}
	if task.Activations > 20 {
		t.Errorf("%d replication activations in the resumed rack's first seconds: a re-run loop", task.Activations)
	}
	logs, err := os.ReadFile(filepath.Join(dataDir, "logs", "nexus.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(logs, []byte("view is stale")); n > 0 {
		t.Errorf("nexus.log has %d stale-view lines", n)
	}
}

// --lrtq sets the rack up with LRTQ, recorded as epoch 1 with every
// member acked; the sleds unlock with the LRTQ secret.
func TestLrtqRackSetupIsRecorded(t *testing.T) {
	dataDir := keptDataDir(t)
	d := startDevRack(t, "--data-dir", dataDir, "--no-demo", "--lrtq")
	defer d.close(t)
	nx := d.nexus.WithToken(adminToken(t, dataDir))
	tq, err := nx.TrustQuorumStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c := tq.LatestCommitted; c == nil || c.Epoch != 1 || c.State != "committed" || !c.Lrtq || len(c.Members) != 3 ||
		c.Acked != 3 || c.Required != 3 {
		t.Fatalf("LRTQ after rack setup: %+v", c)
	}
	if !strings.Contains(d.out.String(), "LRTQ set up on 3 sleds") {
		t.Fatalf("output:\n%s", d.out)
	}
}

// --spare-sleds starts sleds that run only their bootstrap agent; Nexus
// lists one as uninitialised, and adding it (what rackctl trust-quorum add
// asks) commits epoch 2 over all four; Nexus then has it start its sled
// agent, which unlocks and registers.
func TestSpareSledIsAdded(t *testing.T) {
	dataDir := keptDataDir(t)
	d := startDevRack(t, "--data-dir", dataDir, "--no-demo", "--spare-sleds", "1")
	defer d.close(t)
	if !strings.Contains(d.out.String(), "spare: bootstrap agent only") ||
		!strings.Contains(d.out.String(), "rackctl trust-quorum add SIM-0004") {
		t.Fatalf("output:\n%s", d.out)
	}
	nx := d.nexus.WithToken(adminToken(t, dataDir))
	ctx := context.Background()
	spare := api.Baseboard{Part: "rackplane-sim", Serial: "SIM-0004"}
	deadline := time.Now().Add(time.Minute)
	for {
		list, err := nx.SledsUninitialized(ctx)
		if err == nil && slices.ContainsFunc(list, func(u api.UninitializedSled) bool { return u.Serial == spare.Serial }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the spare is not listed uninitialised: %+v %v", list, err)
		}
		_, _ = nx.BackgroundTaskActivate(ctx, "trust_quorum_manager")
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := nx.TrustQuorumMembership(ctx, api.TrustQuorumMembership{Add: []api.Baseboard{spare}}); err != nil {
		t.Fatal(err)
	}
	for {
		sleds, err := nx.SledList(ctx)
		if err == nil && slices.ContainsFunc(sleds, func(s api.Sled) bool { return s.Baseboard == spare }) {
			c, err := nx.TrustQuorumEpoch(ctx, 2)
			if err != nil || c.State != "committed" || len(c.Members) != 4 {
				t.Fatalf("epoch 2: %+v %v", c, err)
			}
			return
		}
		if time.Now().After(deadline.Add(time.Minute)) {
			t.Fatalf("the added spare did not register: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func adminToken(t *testing.T, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// A data dir that holds a rack's sleds but no database (made by an older
// rackdev, which threw its database away) is refused, saying why, rather
// than started against a database its sleds are ahead of.
func TestDataDirWithoutItsDatabaseIsRefused(t *testing.T) {
	dataDir := keptDataDir(t)
	if err := os.MkdirAll(filepath.Join(dataDir, "sled-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "sled-0", "sled-id"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run([]string{"--smoke", "--sleds", "1", "--data-dir", dataDir}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "holds a rack's sleds and Nexus but not its database") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postgres")); !os.IsNotExist(err) {
		t.Fatalf("a database was made anyway (%v)", err)
	}
}

// --no-demo leaves the rack without trust roots or repos, the demo
// release and its root on disk for the user.
func TestNoDemo(t *testing.T) {
	dataDir := keptDataDir(t)
	d := startDevRack(t, "--data-dir", dataDir, "--no-demo")
	defer d.close(t)
	token, err := os.ReadFile(filepath.Join(dataDir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	nx := d.nexus.WithToken(strings.TrimSpace(string(token)))
	repos, err := nx.RepoList(context.Background(), true)
	if err != nil || len(repos) != 0 {
		t.Fatalf("repos with --no-demo: %v %+v", err, repos)
	}
	roots, err := nx.TrustRootList(context.Background())
	if err != nil || len(roots) != 0 {
		t.Fatalf("trust roots with --no-demo: %v %d", err, len(roots))
	}
	out := d.out.String()
	if !strings.Contains(out, "--no-demo: no trust root registered, no repo uploaded") ||
		!strings.Contains(out, "trust-root add "+filepath.Join(dataDir, "demo", "root.json")) {
		t.Fatalf("output:\n%s", out)
	}
	for _, f := range []string{"demo/root.json", "demo/demo-repo-1.0.0.zip"} {
		if _, err := os.Stat(filepath.Join(dataDir, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
}

func replicationStatus(t *testing.T, nx client.Nexus) api.ReplicationStatus {
	t.Helper()
	task, err := nx.BackgroundTaskGet(context.Background(), tufreplication.Name)
	if err != nil {
		t.Fatal(err)
	}
	var st api.ReplicationStatus
	if err := json.Unmarshal(task.Status, &st); err != nil {
		t.Fatalf("%s: %v", task.Status, err)
	}
	return st
}

// waitConverged waits for a replication run that converged at gen.
func waitConverged(t *testing.T, nx client.Nexus, gen int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st := replicationStatus(t, nx)
		if st.Converged && st.Generation == gen {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged at generation %d: %+v", gen, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

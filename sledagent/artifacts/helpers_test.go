package artifacts_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/api/gen/sled"
	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/sledagent/artifacts"
	"github.com/rackplane/rackplane/sledagent/m2"
)

func testLogger(t testing.TB) zerolog.Logger { return sledtest.Logger(t, "sled-agent") }

// rig is one sled's artifact store on two temp-dir M.2s, served over real
// HTTP: the sled API and the repo depot, each on its own listener.
type rig struct {
	t        testing.TB
	dirs     []string
	w        *m2.Watcher
	store    *artifacts.Store
	api      client.SledAgent
	depotURL string
	reg      *prometheus.Registry
}

type rigOptions struct {
	// absent lists the M.2s (by index) whose directory does not exist yet.
	absent []int
	// budgets caps the bytes of M.2s by index.
	budgets map[int]int64
	// noRun leaves the background loops stopped (tests drive Reconcile
	// and Scrub themselves).
	noRun bool
	opts  artifacts.Options
}

func newRig(t testing.TB, o rigOptions) *rig {
	t.Helper()
	root := t.TempDir()
	var dirs []string
	for i := range 2 {
		d := filepath.Join(root, "m2-"+string(rune('a'+i)))
		dirs = append(dirs, d)
		if !slices.Contains(o.absent, i) {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	return newRigOn(t, dirs, o)
}

// newRigOn is a rig on M.2 directories that already exist (or, for those
// absent, may appear), as a sled restarted on its disks sees them.
func newRigOn(t testing.TB, dirs []string, o rigOptions) *rig {
	t.Helper()
	r := &rig{t: t, reg: prometheus.NewRegistry(), dirs: dirs}
	budgets := map[string]int64{}
	for i, d := range dirs {
		if b := o.budgets[i]; b > 0 {
			budgets[d] = b
		}
	}
	log := testLogger(t)
	var err error
	r.w, err = m2.NewWatcher(r.dirs, log, m2.Options{Budgets: budgets, Registerer: r.reg, Marker: artifacts.UpdateDir})
	if err != nil {
		t.Fatal(err)
	}
	opts := o.opts
	opts.Registerer, opts.Budgets = r.reg, budgets
	if opts.ReconcileInterval == 0 {
		opts.ReconcileInterval = time.Hour // tests trigger what they need
	}
	if opts.ScrubInterval == 0 {
		opts.ScrubInterval = -1
	}
	r.store, err = artifacts.New(log, opts)
	if err != nil {
		t.Fatal(err)
	}
	r.w.Handle(r.store.DeviceChanged)
	r.w.Poll()

	agent := rigAgent{metrics: promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{})}
	apiRouter := httpx.NewRouter(log)
	r.store.Mount(apiRouter, agent)
	apiSrv := httptest.NewServer(apiRouter)
	depotRouter := httpx.NewRouter(log)
	r.store.MountDepot(depotRouter, agent)
	depotSrv := httptest.NewServer(depotRouter)
	r.depotURL = depotSrv.URL
	if r.api, err = client.NewSledAgent(apiSrv.URL, nil); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	if o.noRun {
		close(done)
	} else {
		go func() { defer close(done); r.store.Run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		<-done
		r.store.Close()
		apiSrv.Close()
		depotSrv.Close()
	})
	return r
}

// rigAgent serves the sled agent's own operations for a rig: the rig's
// metrics, and a health that is always ok (a rig has no Nexus to register
// with). A rig has no trust quorum: those routes answer 501.
type rigAgent struct {
	sled.Unimplemented
	metrics http.Handler
}

func (a rigAgent) Healthz(w http.ResponseWriter, r *http.Request) {
	httpx.WriteJSON(w, http.StatusOK, api.Health{Status: "ok"})
}

func (a rigAgent) Metrics(w http.ResponseWriter, r *http.Request) { a.metrics.ServeHTTP(w, r) }

// artifact is random test content and its hash.
type artifact struct {
	data []byte
	sha  string
}

func newArtifact(t testing.TB, size int) artifact {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return artifact{data: b, sha: hex.EncodeToString(sum[:])}
}

func (r *rig) putConfig(gen uint64, arts ...artifact) {
	r.t.Helper()
	cfg := api.ArtifactConfig{Generation: gen, Artifacts: []string{}}
	for _, a := range arts {
		cfg.Artifacts = append(cfg.Artifacts, a.sha)
	}
	if _, err := r.api.ArtifactConfigPut(context.Background(), cfg); err != nil {
		r.t.Fatalf("put config generation %d: %v", gen, err)
	}
}

func (r *rig) put(gen uint64, a artifact) (api.ArtifactPutResult, error) {
	return r.api.ArtifactPut(context.Background(), a.sha, gen, bytes.NewReader(a.data), int64(len(a.data)))
}

func (r *rig) mustPut(gen uint64, a artifact) api.ArtifactPutResult {
	r.t.Helper()
	res, err := r.put(gen, a)
	if err != nil {
		r.t.Fatalf("put %s: %v", a.sha[:12], err)
	}
	return res
}

func (r *rig) file(dev int, sha string) string {
	return filepath.Join(r.dirs[dev], artifacts.UpdateDir, sha)
}

// holds reports whether M.2 dev holds a copy of a with exactly its bytes.
func (r *rig) holds(dev int, a artifact) bool {
	r.t.Helper()
	b, err := os.ReadFile(r.file(dev, a.sha))
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		r.t.Fatal(err)
	}
	if !bytes.Equal(b, a.data) {
		r.t.Fatalf("M.2 %d holds %s with the wrong contents", dev, a.sha[:12])
	}
	return true
}

// assertNothingKept checks that no M.2 holds sha and no temp file is left.
func (r *rig) assertNothingKept(sha string) {
	r.t.Helper()
	for i, d := range r.dirs {
		if _, err := os.Stat(r.file(i, sha)); !errors.Is(err, os.ErrNotExist) {
			r.t.Fatalf("M.2 %d holds %s, want nothing kept (stat: %v)", i, sha[:12], err)
		}
		entries, err := os.ReadDir(filepath.Join(d, artifacts.UpdateDir, artifacts.TmpDir))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			r.t.Fatal(err)
		}
		if len(entries) != 0 {
			r.t.Fatalf("M.2 %d has %d temp files left", i, len(entries))
		}
	}
}

// ledgerGeneration reads the config ledger on M.2 dev (0, false if none).
func (r *rig) ledgerGeneration(dev int) (uint64, bool) {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dirs[dev], artifacts.UpdateDir, artifacts.ConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, false
	}
	if err != nil {
		r.t.Fatal(err)
	}
	var env struct {
		Generation uint64   `json:"generation"`
		Value      []string `json:"value"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		r.t.Fatal(err)
	}
	return env.Generation, true
}

func (r *rig) counter(name string, labels ...string) float64 {
	r.t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		r.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	r.t.Fatalf("metric %s %v not found", name, labels)
	return 0
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	sledtest.WaitFor(t, timeout, what, cond)
}

func apiErr(t testing.TB, err error, status int, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want HTTP %d %s, got success", status, code)
	}
	if client.StatusCode(err) != status || client.ErrorCode(err) != code {
		t.Fatalf("want HTTP %d %s, got %d %s: %v", status, code, client.StatusCode(err), client.ErrorCode(err), err)
	}
}

func (r *rig) assertNoTemps() {
	r.t.Helper()
	for i, d := range r.dirs {
		entries, err := os.ReadDir(filepath.Join(d, artifacts.UpdateDir, artifacts.TmpDir))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			r.t.Fatal(err)
		}
		if len(entries) != 0 {
			r.t.Fatalf("M.2 %d has %d temp files left", i, len(entries))
		}
	}
}

func mkdir(d string) error { return os.Mkdir(d, 0o755) }

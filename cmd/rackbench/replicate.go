package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/cputime"
	"github.com/rackplane/rackplane/internal/iolimit"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/pgtemp"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/model"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/artifacts"
)

// planTarget is the design's bound on one plan at rack scale.
const planTarget = 200 * time.Millisecond

type replicateOptions struct {
	size int64
	// shapes are artifact counts: the same bytes are replicated once per
	// shape, split into that many artifacts.
	shapes        []int
	sleds         int
	minRepl       int
	workers       int
	planSleds     int
	planArtifacts int
	planRuns      int
	timeout       time.Duration
	followUp      time.Duration
	perSource     int
	timeline      bool
	cpuProfile    string
	logLevel      string
	dir           string
}

func runReplicate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o replicateOptions
	var shapes string
	fs := flag.NewFlagSet("rackbench replicate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("size", "256MiB", "total size of the generated repo's artifacts")
	fs.StringVar(&shapes, "artifacts", "4,64", "artifact counts to split the repo into, one replication each")
	fs.IntVar(&o.sleds, "sleds", 16, "sled agents (two M.2 directories each)")
	fs.IntVar(&o.minRepl, "min-sled-replication", tufreplication.DefaultMinSledReplication,
		"sleds Nexus seeds each artifact to (and that must hold it before Nexus drops its copy)")
	fs.IntVar(&o.workers, "limit-workers", 0, "copies the limit measurement makes at once (default: one per sled)")
	fs.IntVar(&o.planSleds, "plan-sleds", 1000, "sleds in the timed plan")
	fs.IntVar(&o.planArtifacts, "plan-artifacts", 10000, "artifacts in the timed plan")
	fs.IntVar(&o.planRuns, "plan-runs", 5, "plans timed per shape (the worst is reported)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up on a replication that has not converged by then")
	fs.DurationVar(&o.followUp, "follow-up", 0, "the task's follow-up delay while copies run (default: the task's)")
	fs.IntVar(&o.perSource, "max-copies-per-source", 0, "copies one sled serves at once (default: the task's)")
	fs.BoolVar(&o.timeline, "timeline", false, "print every activation of the replication task")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write a CPU profile of each replication (the whole process) to FILE.<artifacts>")
	fs.StringVar(&o.logLevel, "log-level", "info", "level of the rack's log (written to the work dir)")
	fs.StringVar(&o.dir, "dir", "", "work directory (default: a new temp dir, removed afterwards)")
	if code := parseFlags(fs, args, &o.size, stderr); code >= 0 {
		return code
	}
	for _, f := range strings.Split(shapes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || int64(n) > o.size {
			fmt.Fprintf(stderr, "rackbench: --artifacts %q: want a comma-separated list of positive counts, each at most the size in bytes\n", shapes)
			return 2
		}
		o.shapes = append(o.shapes, n)
	}
	if o.workers == 0 {
		o.workers = o.sleds
	}
	if o.sleds < 1 || o.minRepl < 1 || o.workers < 1 || o.planSleds < 1 || o.planArtifacts < 1 || o.planRuns < 1 {
		fmt.Fprintln(stderr, "rackbench: --sleds, --min-sled-replication, --limit-workers and the --plan-* flags must be at least 1")
		return 2
	}
	return report("replicate", stderr, benchReplicate(ctx, o, stdout))
}

func benchReplicate(ctx context.Context, o replicateOptions, w io.Writer) error {
	if err := benchPlanner(o, w); err != nil {
		return err
	}
	dir, cleanup, err := workDir(o.dir)
	if err != nil {
		return err
	}
	defer cleanup()
	// At the peak one shape holds the archive, Nexus's upload spool and
	// depot and every sled copy (the limit's copies are removed before the
	// replication starts, and the replication's before the next limit).
	copies := int64(o.sleds) * 2 * o.size
	if err := checkFree(dir, copies+4*o.size+(512<<20)); err != nil {
		return err
	}

	pg, lineage, err := startBench(ctx, w, "repl")
	if err != nil {
		return err
	}
	defer pg.Close()
	logFile, err := os.Create(filepath.Join(dir, "rack.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	// One process runs Nexus and every sled agent: each names itself as
	// its component.
	log, err := logging.Base(logFile, logging.Options{Level: o.logLevel})
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}

	var results []replication
	for i, n := range o.shapes {
		r, err := replicateShape(ctx, o, shapeEnv{dir: filepath.Join(dir, fmt.Sprintf("shape-%d", i)), pg: pg,
			lineage: lineage, log: log, seed: uint64(1000 * (i + 1))}, n, w)
		if err != nil {
			where := "rack log: " + logFile.Name()
			if o.dir == "" {
				where = "rerun with --dir to keep the rack's log"
			}
			return fmt.Errorf("%d artifacts: %w (%s)", n, err, where)
		}
		r.print(w, o)
		results = append(results, r)
	}
	if len(results) > 1 {
		fmt.Fprintf(w, "\nDatabase round trips per replication run, same bytes split differently (must not grow with artifacts):\n")
		for _, r := range results {
			fmt.Fprintf(w, "  %5d artifacts  %s\n", r.artifacts, r.roundTrips())
		}
	}
	return nil
}

// benchPlanner times the pure planner at rack scale, on this thread's CPU
// clock: the planner is single-threaded, so that is what one plan costs
// however busy the machine is.
func benchPlanner(o replicateOptions, w io.Writer) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	lim := tufreplication.Limits{MinSledReplication: o.minRepl}.WithDefaults()
	fmt.Fprintf(w, "Planner: %d sleds × %d artifacts, task's default limits, worst of %d plans (thread CPU time)\n",
		o.planSleds, o.planArtifacts, o.planRuns)
	for _, shape := range []struct {
		name string
		held uint8
	}{{"steady state (all held)", 2}, {"fresh upload (none held)", 0}} {
		in := tufreplication.SyntheticRack(o.planSleds, o.planArtifacts, shape.held, lim)
		var worst, wall time.Duration
		var requests int
		for range o.planRuns {
			start := time.Now()
			cpu0, err := cputime.Thread()
			if err != nil {
				return err
			}
			plan := tufreplication.Compute(in)
			cpu1, err := cputime.Thread()
			if err != nil {
				return err
			}
			worst, wall = max(worst, cpu1-cpu0), max(wall, time.Since(start))
			requests = len(plan.Requests)
		}
		fmt.Fprintf(w, "  %-26s %7.1f ms CPU (%6.1f ms wall)  ratio %.2f (target < 1)  %d requests\n", shape.name,
			ms(worst), ms(wall), float64(worst)/float64(planTarget), requests)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// checkFree fails unless dir's file system has need bytes available.
func checkFree(dir string, need int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return err
	}
	if free := int64(st.Bavail) * st.Bsize; free < need {
		return fmt.Errorf("%s has %.1f GiB free; this run needs %.1f GiB (use --dir on a bigger file system, or a smaller --size or --sleds)",
			dir, gib(free), gib(need))
	}
	return nil
}

func gib(n int64) float64 { return float64(n) / (1 << 30) }

// sizeString prints a byte count in KiB or MiB.
func sizeString(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// shapeEnv is what every shape's run shares.
type shapeEnv struct {
	dir     string
	pg      *pgtemp.Cluster
	lineage *tufgen.Lineage
	log     zerolog.Logger
	seed    uint64
}

// replication is one shape's figures.
type replication struct {
	artifacts   int
	repoBytes   int64 // the artifacts' bytes: what every M.2 holds
	archive     int64
	sleds       int
	inPlace     time.Duration // every copy renamed into place on every M.2
	reported    time.Duration // end of the first activation reporting convergence
	limitBefore time.Duration
	limitAfter  time.Duration
	workers     int
	runs        []runFigures // activations up to the converged one
	final       tufreplication.Status
	sentPut     int64 // bytes the replication task wrote to sleds
	sentServed  int64 // bytes the internal API (incl. its depot) wrote to sleds
}

// runFigures is one activation.
type runFigures struct {
	start      time.Duration // since the clock started
	duration   time.Duration
	roundTrips int64
	seeds      int
	copies     int
	deferred   int
	inFlight   int
	phases     tufreplication.PhaseTimes
}

func (r replication) limit() time.Duration { return (r.limitBefore + r.limitAfter) / 2 }

func (r replication) roundTrips() string {
	if len(r.runs) == 0 {
		return "no runs"
	}
	lo, hi, sum := r.runs[0].roundTrips, r.runs[0].roundTrips, int64(0)
	for _, f := range r.runs {
		lo, hi, sum = min(lo, f.roundTrips), max(hi, f.roundTrips), sum+f.roundTrips
	}
	return fmt.Sprintf("%d–%d (mean %.1f) over %d runs", lo, hi, float64(sum)/float64(len(r.runs)), len(r.runs))
}

func (r replication) print(w io.Writer, o replicateOptions) {
	stored := int64(r.sleds) * 2 * r.repoBytes
	var longest time.Duration
	for _, f := range r.runs {
		longest = max(longest, f.duration)
	}
	lt := r.final.Lifetime
	fmt.Fprintf(w, "\nReplication of %s in %d artifacts (archive %s) to %d sleds × 2 M.2s (%d copies, %.2f GiB stored)\n",
		sizeString(r.repoBytes), r.artifacts, sizeString(r.archive), r.sleds, r.sleds*2, gib(stored))
	fmt.Fprintf(w, "  converged: every copy in place  %8.2f s  %7.1f MB/s\n", r.inPlace.Seconds(), iolimit.MBps(stored, r.inPlace))
	fmt.Fprintf(w, "  converged: reported by the task %8.2f s  after %d activations (longest %.2f s)\n",
		r.reported.Seconds(), len(r.runs), longest.Seconds())
	fmt.Fprintf(w, "  machine limit (hash+write)      %8.2f s  %7.1f MB/s  (before %.2f s, after %.2f s; %d at once)\n",
		r.limit().Seconds(), iolimit.MBps(stored, r.limit()), r.limitBefore.Seconds(), r.limitAfter.Seconds(), r.workers)
	fmt.Fprintf(w, "  ratio                           %8.2f    (target <= 2.0; %.2f to the task's report)\n",
		r.inPlace.Seconds()/r.limit().Seconds(), r.reported.Seconds()/r.limit().Seconds())
	fmt.Fprintf(w, "  seeds from Nexus's depot        %8.1f MiB = %.2f × repo (%d seeds for %d artifacts; one each)\n",
		float64(lt.BytesSeeded)/(1<<20), float64(lt.BytesSeeded)/float64(r.repoBytes), lt.SeedOK, r.artifacts)
	fmt.Fprintf(w, "  bytes Nexus sent to sleds       %8.1f MiB = %.2f × repo (target <= 1.1; task's requests %s, internal API %s)\n",
		float64(r.sentPut+r.sentServed)/(1<<20), float64(r.sentPut+r.sentServed)/float64(r.repoBytes),
		sizeString(r.sentPut), sizeString(r.sentServed))
	fmt.Fprintf(w, "  sled-to-sled copies             %8d    (%.1f MiB; %d failed, %d seeds failed)\n",
		lt.CopyOK, float64(lt.BytesCopied)/(1<<20), lt.CopyErr, lt.SeedErr)
	fmt.Fprintf(w, "  db round trips per run          %s\n", r.roundTrips())
	if o.timeline {
		fmt.Fprintf(w, "  activations: start, duration (collect+plan+execute+finish ms), requests, copies in flight seen:\n")
		for i, f := range r.runs {
			p := f.phases
			fmt.Fprintf(w, "    %3d  %7.3f s  %6.3f s (%4.0f+%3.0f+%4.0f+%4.0f)  %3d seeds  %4d copies  %4d deferred  %3d in flight\n",
				i+1, f.start.Seconds(), f.duration.Seconds(), p.Collect, p.Plan, p.Execute, p.Finish,
				f.seeds, f.copies, f.deferred, f.inFlight)
		}
	}
}

// replicateShape uploads a repo of o.size bytes in n artifacts to a fresh
// rack (Nexus and o.sleds sled agents in this process, real HTTP on
// loopback, real files), measures the machine's limit for the same copies
// before, times the replication to convergence, tears the rack down and
// measures the limit again.
func replicateShape(ctx context.Context, o replicateOptions, env shapeEnv, n int, w io.Writer) (replication, error) {
	res := replication{artifacts: n, sleds: o.sleds, workers: o.workers}
	if err := os.MkdirAll(env.dir, 0o755); err != nil {
		return res, err
	}
	defer os.RemoveAll(env.dir)
	fmt.Fprintf(w, "\n[%d artifacts] generating a %d MiB repo ...\n", n, o.size>>20)
	zipPath := filepath.Join(env.dir, "repo.zip")
	built, err := env.lineage.BuildFile(zipPath, tufgen.Sized("1.0.0", o.size, n, env.seed))
	if err != nil {
		return res, err
	}
	for _, a := range built.Artifacts {
		res.repoBytes += a.Length
	}
	res.archive = built.Size
	dbURL, err := createDatabase(ctx, env.pg, fmt.Sprintf("rackplane_shape_%d", n))
	if err != nil {
		return res, err
	}

	fmt.Fprintf(w, "[%d artifacts] starting nexus and %d sled agents ...\n", n, o.sleds)
	rk, err := startRack(ctx, filepath.Join(env.dir, "rack"), dbURL, o, env.log.With().Int("shape", n).Logger())
	if err != nil {
		return res, err
	}
	defer rk.stop()
	// Replication waits until the clock starts: the upload's own time is
	// rackbench upload's figure.
	if _, err := rk.client.BackgroundTaskSetEnabled(ctx, tufreplication.Name, false); err != nil {
		return res, err
	}
	if _, _, err := rk.client.TrustRootAdd(ctx, env.lineage.TrustRoot()); err != nil {
		return res, err
	}
	f, err := os.Open(zipPath)
	if err != nil {
		return res, err
	}
	up, err := rk.client.RepoUpload(ctx, "repo.zip", f, built.Size, nil)
	f.Close()
	if err != nil {
		return res, fmt.Errorf("upload: %w", err)
	}
	if up.Repo.ArtifactCount != len(built.Artifacts) {
		return res, fmt.Errorf("uploaded repo has %d artifacts, built %d", up.Repo.ArtifactCount, len(built.Artifacts))
	}

	// The limit copies the same artifacts, read back from Nexus's depot.
	data := make([][]byte, len(built.Artifacts))
	for i, a := range built.Artifacts {
		if data[i], err = os.ReadFile(rk.nexus.Depot().Path(a.SHA256)); err != nil {
			return res, fmt.Errorf("read the uploaded artifact back: %w", err)
		}
	}
	if res.limitBefore, err = measureLimit(env.dir, data, o, w, "before"); err != nil {
		return res, err
	}

	fmt.Fprintf(w, "[%d artifacts] replicating to %d sleds ...\n", n, o.sleds)
	watch := watchCopies(rk.m2s, built.Artifacts)
	stopProfile := func() {}
	if o.cpuProfile != "" {
		if stopProfile, err = startCPUProfile(fmt.Sprintf("%s.%d", o.cpuProfile, n)); err != nil {
			return res, err
		}
	}
	start := time.Now()
	if _, err := rk.client.BackgroundTaskSetEnabled(ctx, tufreplication.Name, true); err != nil {
		return res, err
	}
	if _, err := rk.client.BackgroundTaskActivate(ctx, tufreplication.Name); err != nil {
		return res, err
	}
	runs, convergedAt, err := rk.waitConverged(ctx, start, o.timeout)
	stopProfile()
	if err != nil {
		watch.stop()
		return res, err
	}
	res.runs, res.reported = runs, convergedAt.Sub(start)
	inPlaceAt, err := watch.wait(ctx, 30*time.Second)
	if err != nil {
		return res, fmt.Errorf("the task reported convergence but copies are missing: %w", err)
	}
	res.inPlace = inPlaceAt.Sub(start)
	res.sentPut, res.sentServed = rk.sentByTask.Load(), rk.sentByAPI.Load()

	// The operator's view of the same run, through the external API.
	task, err := rk.client.BackgroundTaskGet(ctx, tufreplication.Name)
	if err != nil {
		return res, err
	}
	if err := json.Unmarshal(task.Status, &res.final); err != nil {
		return res, fmt.Errorf("task status: %w", err)
	}
	if !res.final.Converged || res.final.Artifacts != len(built.Artifacts) || res.final.Sleds != o.sleds {
		return res, fmt.Errorf("last status is not a converged run over %d artifacts and %d sleds: converged %v, %d artifacts, %d sleds",
			len(built.Artifacts), o.sleds, res.final.Converged, res.final.Artifacts, res.final.Sleds)
	}

	rk.stop()
	if err := os.RemoveAll(filepath.Join(env.dir, "rack")); err != nil {
		return res, err
	}
	if res.limitAfter, err = measureLimit(env.dir, data, o, w, "after"); err != nil {
		return res, err
	}
	return res, nil
}

func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// measureLimit stores every copy the replication makes (each artifact on
// every sled's two M.2s) with iolimit.StoreCopies on the same file system,
// then removes them.
func measureLimit(dir string, data [][]byte, o replicateOptions, w io.Writer, when string) (time.Duration, error) {
	root := filepath.Join(dir, "limit")
	defer os.RemoveAll(root)
	var dirs []string
	for s := range o.sleds {
		for _, m2 := range []string{"m2-a", "m2-b"} {
			dirs = append(dirs, filepath.Join(root, fmt.Sprintf("sled-%02d", s), m2))
		}
	}
	// Start from a clean disk: what earlier steps left dirty is flushed
	// first, so it does not compete with what is measured.
	syscall.Sync()
	fmt.Fprintf(w, "  measuring this machine's hash+write of every copy, %s the replication ...\n", when)
	took, err := iolimit.StoreCopies(data, dirs, o.workers)
	if err != nil {
		return 0, err
	}
	if err := os.RemoveAll(root); err != nil {
		return 0, err
	}
	syscall.Sync()
	return took, nil
}

// rack is a Nexus and its sled agents running in this process.
type rack struct {
	nexus  *nexus.Server
	client client.Nexus
	sleds  []*sledagent.Server
	// m2s are every sled's M.2 directories.
	m2s []string
	// sentByTask counts what the replication task wrote to sleds (its
	// requests, PUT bodies included); sentByAPI what Nexus's internal API
	// wrote back to them (registrations, and depot reads when a sled copies
	// from Nexus), counted by a proxy in front of it.
	sentByTask, sentByAPI *atomic.Int64

	cancel context.CancelFunc
	wg     sync.WaitGroup
	proxy  net.Listener
	once   sync.Once
	errs   []error
	errMu  sync.Mutex
}

func startRack(ctx context.Context, dir, dbURL string, o replicateOptions, log zerolog.Logger) (_ *rack, err error) {
	rk := &rack{sentByTask: new(atomic.Int64), sentByAPI: new(atomic.Int64)}
	runCtx, cancel := context.WithCancel(context.Background())
	rk.cancel = cancel
	defer func() {
		if err != nil {
			rk.stop()
		}
	}()
	// Sleds reach Nexus's internal API through a counting proxy, so the
	// bytes Nexus serves them are measured, not inferred.
	if rk.proxy, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	// Every party speaks mutual TLS under a CA made for this run, as in
	// a real rack: what is measured includes its cost.
	ca, err := rackpki.NewCA("rackbench", 0)
	if err != nil {
		return nil, err
	}
	nexusID := uuid.New()
	nexusTLS, err := ca.Issue(rackpki.Nexus(nexusID.String()), rackpki.IssueOptions{})
	if err != nil {
		return nil, err
	}
	proxyURL := "https://" + rk.proxy.Addr().String()
	rk.nexus, err = nexus.New(ctx, nexus.Config{
		ID: nexusID, TLS: nexusTLS, ExternalAddr: "127.0.0.1:0", InternalAddr: "127.0.0.1:0", DatabaseURL: dbURL,
		AutoMigrate: true, DataDir: filepath.Join(dir, "nexus"), ShutdownGrace: 5 * time.Second,
		InternalAdvertiseURL: proxyURL,
		Tasks: nexustasks.Registrar(nexustasks.Config{Replication: nexustasks.ReplicationConfig{
			MinSledReplication: o.minRepl, MaxCopiesPerSource: o.perSource, FollowUp: o.followUp,
			// The task's own dialer, plus counting.
			Dial: countingDialer(&net.Dialer{Timeout: 5 * time.Second}, rk.sentByTask)}}),
	}, log.With().Str("component", "nexus").Logger())
	if err != nil {
		return nil, err
	}
	go serveCountingProxy(rk.proxy, strings.TrimPrefix(rk.nexus.InternalURL(), "https://"), rk.sentByAPI)
	rk.run("nexus", rk.nexus.Run, runCtx)
	if rk.client, err = client.NewNexus(rk.nexus.ExternalURL(), &http.Client{}); err != nil {
		return nil, err
	}
	tok, err := rk.nexus.App().CreateToken(app.WithActor(ctx, app.ConsoleActor()), "rackbench", model.RoleAdmin, 0)
	if err != nil {
		return nil, err
	}
	rk.client = rk.client.WithToken(tok.Secret)
	for i := range o.sleds {
		sd := filepath.Join(dir, fmt.Sprintf("sled-%02d", i))
		m2s := []string{filepath.Join(sd, "m2-a"), filepath.Join(sd, "m2-b")}
		rk.m2s = append(rk.m2s, m2s...)
		sledTLS, err := ca.Issue(rackpki.Sled(sledagent.DefaultBaseboardPart, fmt.Sprintf("BENCH-%04d", i)), rackpki.IssueOptions{})
		if err != nil {
			return nil, err
		}
		// No background scrub: the sleds here share one disk, where a real
		// sled's scrub reads only its own M.2s (copies served are still
		// checked as they stream, as on a rack).
		s, err := sledagent.New(sledagent.Config{DataDir: sd, ListenAddr: "127.0.0.1:0", RepoDepotAddr: "127.0.0.1:0",
			NexusURL: proxyURL, M2Dirs: m2s, CreateM2Dirs: true, ShutdownGrace: 5 * time.Second, TLS: sledTLS,
			ScrubInterval: -1},
			log.With().Str("component", "sled-agent").Int("sled", i).Logger())
		if err != nil {
			return nil, err
		}
		rk.sleds = append(rk.sleds, s)
		rk.run(fmt.Sprintf("sled %d", i), s.Run, runCtx)
	}
	return rk, rk.waitRegistered(ctx, 30*time.Second)
}

func (rk *rack) run(name string, fn func(context.Context) error, ctx context.Context) {
	rk.wg.Add(1)
	go func() {
		defer rk.wg.Done()
		if err := fn(ctx); err != nil {
			rk.errMu.Lock()
			rk.errs = append(rk.errs, fmt.Errorf("%s: %w", name, err))
			rk.errMu.Unlock()
		}
	}()
}

// stop shuts everything down and waits for it (idempotent).
func (rk *rack) stop() {
	rk.once.Do(func() {
		rk.cancel()
		rk.wg.Wait()
		if rk.proxy != nil {
			rk.proxy.Close()
		}
	})
}

func (rk *rack) waitRegistered(ctx context.Context, timeout time.Duration) error {
	want := map[uuid.UUID]bool{}
	for _, s := range rk.sleds {
		want[s.ID()] = true
	}
	deadline := time.Now().Add(timeout)
	for {
		listed, err := rk.client.SledList(ctx)
		have := 0
		for _, s := range listed {
			if want[s.ID] {
				have++
			}
		}
		if err == nil && have == len(want) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d sleds registered after %s (%v)", have, len(want), timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitConverged follows the task's activations in this Nexus (in process:
// decoding each status once, rather than fetching the whole history over
// HTTP while the rack is busy) until one that started after start reports
// convergence. It returns those activations and when the converged one
// finished.
func (rk *rack) waitConverged(ctx context.Context, start time.Time, timeout time.Duration) ([]runFigures, time.Time, error) {
	deadline := time.Now().Add(timeout)
	seen := map[uint64]bool{}
	var runs []runFigures
	for {
		task, err := rk.nexus.Tasks().Task(tufreplication.Name, true)
		if err != nil {
			return nil, time.Time{}, err
		}
		hist := slices.Clone(task.History)
		slices.Reverse(hist) // oldest first
		for _, a := range hist {
			if seen[a.Iteration] || a.Start.Before(start) {
				continue
			}
			seen[a.Iteration] = true
			if a.Outcome == api.TaskOutcomeDisabled {
				continue // raced the switch being turned on; did nothing
			}
			if a.Outcome != api.TaskOutcomeOK || len(a.Status) == 0 {
				return nil, time.Time{}, fmt.Errorf("activation %d: outcome %s: %s", a.Iteration, a.Outcome, a.Error)
			}
			var st tufreplication.Status
			if err := json.Unmarshal(a.Status, &st); err != nil {
				return nil, time.Time{}, err
			}
			took := time.Duration(a.DurationMS * float64(time.Millisecond))
			runs = append(runs, runFigures{start: a.Start.Sub(start), duration: took, roundTrips: st.RoundTrips,
				seeds: st.LastRun.SeedOK + st.LastRun.SeedErr, copies: st.LastRun.CopyOK + st.LastRun.CopyErr,
				deferred: st.Deferred, inFlight: st.InFlight, phases: st.Phases})
			if st.Converged {
				return runs, a.Start.Add(took), nil
			}
		}
		if time.Now().After(deadline) {
			return nil, time.Time{}, fmt.Errorf("not converged after %s (%d activations)", timeout, len(runs))
		}
		select {
		case <-ctx.Done():
			return nil, time.Time{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// copyWatch polls every sled's M.2s for the artifacts' files, noting when
// the last one is in place. It lists each M.2's update area rather than
// stat every file, to stay cheap beside the work it watches: only verified
// copies are ever renamed into that directory (writes in progress live in
// its tmp/ folder).
type copyWatch struct {
	done   chan struct{}
	quit   chan struct{}
	at     time.Time
	left   int
	lastNo string
}

func watchCopies(m2s []string, arts []tufgen.BuiltArtifact) *copyWatch {
	pending := map[string]map[string]bool{} // update dir → hashes not seen yet
	for _, m2 := range m2s {
		want := map[string]bool{}
		for _, a := range arts {
			want[a.SHA256] = true
		}
		pending[filepath.Join(m2, artifacts.UpdateDir)] = want
	}
	cw := &copyWatch{done: make(chan struct{}), quit: make(chan struct{})}
	go func() {
		defer close(cw.done)
		for {
			cw.left = 0
			for dir, want := range pending {
				entries, _ := os.ReadDir(dir)
				for _, e := range entries {
					delete(want, e.Name())
				}
				if len(want) == 0 {
					delete(pending, dir)
				}
				for h := range want {
					cw.left, cw.lastNo = cw.left+len(want), filepath.Join(dir, h)
					break
				}
			}
			if len(pending) == 0 {
				cw.at = time.Now()
				return
			}
			select {
			case <-cw.quit:
				return
			case <-time.After(copyWatchInterval):
			}
		}
	}()
	return cw
}

// copyWatchInterval is how often the watcher lists the M.2 directories, so
// the "in place" time it reports is late by up to this much.
const copyWatchInterval = 50 * time.Millisecond

func (cw *copyWatch) stop() {
	close(cw.quit)
	<-cw.done
}

// wait returns when the last copy was seen in place.
func (cw *copyWatch) wait(ctx context.Context, timeout time.Duration) (time.Time, error) {
	select {
	case <-cw.done:
	case <-time.After(timeout):
		cw.stop()
	case <-ctx.Done():
		cw.stop()
	}
	if cw.at.IsZero() {
		return time.Time{}, fmt.Errorf("%d copies not in place, e.g. %s", cw.left, cw.lastNo)
	}
	return cw.at, nil
}

// countingConn counts the bytes written to it. It passes ReadFrom through,
// so copying a file to it still uses sendfile as the plain connection would.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func (c countingConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(r)
		c.n.Add(n)
		return n, err
	}
	return io.Copy(struct{ io.Writer }{c}, r)
}

func countingDialer(d *net.Dialer, n *atomic.Int64) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, n: n}, nil
	}
}

// serveCountingProxy forwards connections from ln to target, counting the
// bytes target sends back, until ln is closed.
func serveCountingProxy(ln net.Listener, target string, n *atomic.Int64) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			up, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer up.Close()
			go func() {
				io.Copy(up, c)
				up.Close()
			}()
			// Counted as it flows (a Write at a time), not when the copy
			// ends: sleds keep their connections to Nexus open, and the
			// figure is read while they still are.
			io.Copy(struct{ io.Writer }{countingConn{Conn: c, n: n}}, up)
		}()
	}
}

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus/depot"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/artifacts"
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// chaosResult is what a run found.
type chaosResult struct {
	checks []check
	// injected counts the faults by kind; starts counts each process's
	// starts (1 + restarts), by name.
	injected map[string]int
	starts   map[string]int
	converge time.Duration
}

type check struct {
	name     string
	failures []string
}

func (r *chaosResult) ok() bool {
	for _, c := range r.checks {
		if len(c.failures) > 0 {
			return false
		}
	}
	return len(r.checks) > 0
}

// chaos runs the whole test: rack, workload, schedule, convergence,
// invariants.
func chaos(ctx context.Context, o chaosOptions, w io.Writer) (*chaosResult, error) {
	dir, own := o.dir, false
	if dir == "" {
		d, err := os.MkdirTemp("", "rackbench-chaos-")
		if err != nil {
			return nil, err
		}
		dir, own = d, true
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		// PostgreSQL runs as the postgres user and must reach its data.
		if err := os.Chmod(dir, 0o711); err != nil {
			return nil, err
		}
	}
	sched := schedule(o)
	fmt.Fprintf(w, "rackbench chaos: seed %d (replay with --seed %d), %s of faults, %d sleds, %d Nexus, work dir %s\n",
		o.seed, o.seed, o.duration, o.sleds, o.nexuses, dir)
	fmt.Fprintf(w, "schedule (%d faults):\n", len(sched))
	for _, f := range sched {
		fmt.Fprintf(w, "  %s\n", f)
	}

	r, err := startChaosRack(ctx, o, dir, w)
	if err != nil {
		if r != nil {
			r.stop()
		}
		return nil, fmt.Errorf("%w (logs in %s)", err, filepath.Join(dir, "logs"))
	}
	res, err := r.run(ctx, sched, w)
	r.stop()
	if err == nil && res.ok() && own {
		os.RemoveAll(dir)
	} else {
		fmt.Fprintf(w, "work dir and logs kept in %s\n", dir)
	}
	return res, err
}

func (r *chaosRack) run(ctx context.Context, sched []fault, w io.Writer) (*chaosResult, error) {
	if err := r.waitUp(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	if r.o.tq {
		// The last two sleds join later, by membership changes.
		if err := r.setupRack(ctx, len(r.sleds)-2, w); err != nil {
			return nil, fmt.Errorf("rack setup: %w", err)
		}
	}
	if _, _, err := r.nexus[0].api.TrustRootAdd(ctx, r.lineage.TrustRoot()); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(r.o.seed, 0x10ad))
	wl := &workload{r: r, rng: rand.New(rand.NewPCG(r.o.seed, 0x3041)), w: w}
	fr := &faultRun{r: r, w: w, rng: rng, injected: map[string]int{}, tq: &tqWorkload{r: r}}
	wl.fr = fr

	fmt.Fprintln(w, "rack up; workload and faults start")
	start := time.Now()
	wctx, stopWorkload := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	wwg.Add(1)
	go func() { defer wwg.Done(); wl.run(wctx) }()
	for _, f := range sched {
		select {
		case <-ctx.Done():
			stopWorkload()
			wwg.Wait()
			return nil, ctx.Err()
		case <-time.After(time.Until(start.Add(f.At))):
		}
		fr.inject(ctx, f)
	}
	if d := time.Until(start.Add(r.o.duration)); d > 0 {
		time.Sleep(d)
	}
	stopWorkload()
	wwg.Wait()
	fr.wg.Wait()
	lastFault := fr.lastEnd
	if lastFault.IsZero() {
		lastFault = time.Now()
	}
	fmt.Fprintf(w, "faults over (last one undone at %s); workload stopped: %s\n", lastFault.UTC().Format("15:04:05.000"), wl.summary())

	res := &chaosResult{injected: fr.injected, starts: map[string]int{}}
	conv, convErr := r.waitConverged(ctx, lastFault, w)
	if convErr != nil {
		res.checks = append(res.checks, check{name: "converged after the last fault", failures: []string{convErr.Error()}})
	} else {
		res.converge = conv
		fmt.Fprintf(w, "converged %s after the last fault was undone\n", conv.Round(time.Millisecond))
		res.checks = append(res.checks, check{name: fmt.Sprintf("converged after the last fault (%s)", conv.Round(time.Millisecond))})
	}
	res.checks = append(res.checks, r.checkAll(ctx, wl, fr.tq)...)

	fmt.Fprintln(w, "\nfaults injected:")
	var kinds []string
	for k := range fr.injected {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	total := 0
	for _, k := range kinds {
		fmt.Fprintf(w, "  %-20s %d\n", k, fr.injected[k])
		total += fr.injected[k]
	}
	fmt.Fprintf(w, "  %-20s %d\n", "total", total)
	fmt.Fprintln(w, "process starts (1 + restarts):")
	for _, n := range r.nexus {
		res.starts[n.name] = n.child.Starts()
		fmt.Fprintf(w, "  %-8s %d\n", n.name, n.child.Starts())
	}
	for _, s := range r.sleds {
		res.starts[s.name] = s.child.Starts()
		fmt.Fprintf(w, "  %-8s %d\n", s.name, s.child.Starts())
	}
	fmt.Fprintln(w, "\ninvariants:")
	for _, c := range res.checks {
		if len(c.failures) == 0 {
			fmt.Fprintf(w, "  ok    %s\n", c.name)
			continue
		}
		fmt.Fprintf(w, "  FAIL  %s\n", c.name)
		for i, f := range c.failures {
			if i == 20 {
				fmt.Fprintf(w, "          ... and %d more\n", len(c.failures)-20)
				break
			}
			fmt.Fprintf(w, "          %s\n", f)
		}
	}
	fmt.Fprintf(w, "seed %d, %s of faults, %d faults, total run %s\n", r.o.seed, r.o.duration, total, time.Since(start).Round(time.Second))
	return res, nil
}

// workload uploads signed releases, deletes and keeps repos, while the
// pruner prunes (--tuf-repos-kept 3).
type workload struct {
	r   *chaosRack
	fr  *faultRun
	rng *rand.Rand
	w   io.Writer

	mu       sync.Mutex
	next     int
	uploaded map[string][]string // 2xx uploads: version -> its artifacts' hashes
	tried    map[string][]string // every attempted upload, whatever the answer
	failed   int
	deletes  int
	keeps    int
	opErrors int
}

func (wl *workload) summary() string {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	return fmt.Sprintf("%d uploads accepted, %d refused or cut, %d operator deletes, %d keep/unkeep, %d other operator calls failed",
		len(wl.uploaded), wl.failed, wl.deletes, wl.keeps, wl.opErrors)
}

func (wl *workload) run(ctx context.Context) {
	wl.uploaded, wl.tried = map[string][]string{}, map[string][]string{}
	gap := max(wl.r.o.gap, 2*time.Second)
	for ctx.Err() == nil {
		wl.upload(ctx)
		switch wl.rng.IntN(4) {
		case 0:
			wl.deleteOne(ctx)
		case 1:
			wl.keepOne(ctx)
		}
		select {
		case <-ctx.Done():
		case <-time.After(gap):
		}
	}
}

func (wl *workload) nexus() int { return wl.rng.IntN(len(wl.r.nexus)) }

func (wl *workload) upload(ctx context.Context) {
	wl.mu.Lock()
	wl.next++
	version := fmt.Sprintf("1.0.%d", wl.next)
	wl.mu.Unlock()
	repo := tufgen.Demo(version)
	if wl.next%3 == 0 {
		repo.Artifacts = append(repo.Artifacts, tufgen.Composites(version).Artifacts...)
	}
	zip, built, err := wl.r.lineage.BuildBytes(repo)
	if err != nil {
		wl.fr.logf("workload: build %s: %v", version, err)
		return
	}
	var hashes []string
	for _, a := range built.Artifacts {
		hashes = append(hashes, a.SHA256)
	}
	n := wl.nexus()
	uctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := wl.r.nexus[n].api.RepoUpload(uctx, "repo-"+version+".zip", bytes.NewReader(zip), int64(len(zip)), nil)
	wl.mu.Lock()
	defer wl.mu.Unlock()
	wl.tried[version] = hashes
	if err != nil {
		wl.failed++
		wl.fr.logf("workload: upload %s to nexus-%d: %v", version, n, err)
		return
	}
	wl.uploaded[version] = hashes
	wl.fr.logf("workload: upload %s to nexus-%d: %s, generation %d", version, n, res.Status, res.Generation)
}

// liveRepos lists live repos through one Nexus, or nil.
func (wl *workload) liveRepos(ctx context.Context) []api.TufRepo {
	repos, err := wl.r.nexus[wl.nexus()].api.RepoList(ctx, false)
	if err != nil {
		wl.opErrors++
		return nil
	}
	return repos
}

func (wl *workload) deleteOne(ctx context.Context) {
	repos := wl.liveRepos(ctx)
	var cands []string
	for _, r := range repos {
		if !r.Kept {
			cands = append(cands, r.SystemVersion)
		}
	}
	if len(cands) < 2 {
		return
	}
	v := cands[wl.rng.IntN(len(cands))]
	n := wl.nexus()
	_, err := wl.r.nexus[n].api.RepoDelete(ctx, v)
	wl.mu.Lock()
	defer wl.mu.Unlock()
	if err != nil {
		wl.opErrors++
		wl.fr.logf("workload: delete %s on nexus-%d: %v", v, n, err)
		return
	}
	wl.deletes++
	wl.fr.logf("workload: deleted %s on nexus-%d", v, n)
}

func (wl *workload) keepOne(ctx context.Context) {
	repos := wl.liveRepos(ctx)
	if len(repos) == 0 {
		return
	}
	rp := repos[wl.rng.IntN(len(repos))]
	n := wl.nexus()
	_, err := wl.r.nexus[n].api.RepoSetKept(ctx, rp.SystemVersion, !rp.Kept)
	wl.mu.Lock()
	defer wl.mu.Unlock()
	if err != nil {
		wl.opErrors++
		wl.fr.logf("workload: keep=%v %s on nexus-%d: %v", !rp.Kept, rp.SystemVersion, n, err)
		return
	}
	wl.keeps++
	wl.fr.logf("workload: keep=%v %s on nexus-%d", !rp.Kept, rp.SystemVersion, n)
}

// tqWorkload makes the trust-quorum membership changes of the schedule
// through the operator API.
type tqWorkload struct {
	r       *chaosRack
	mu      sync.Mutex
	asked   int
	failed  []string
	members map[string]bool // the membership the changes asked for, by serial
	removed map[string]bool // sleds a change removed (and so expunged)
}

func (t *tqWorkload) change(ctx context.Context, f fault, fr *faultRun) {
	t.mu.Lock()
	if t.members == nil {
		t.members = map[string]bool{}
		for _, s := range t.r.sleds[:len(t.r.sleds)-2] {
			t.members[s.serial] = true
		}
	}
	t.mu.Unlock()
	s := t.r.sleds[f.Target]
	b := api.Baseboard{Part: sledagent.DefaultBaseboardPart, Serial: s.serial}
	req := api.TrustQuorumMembership{}
	if f.Kind == faultTQAdd {
		req.Add = []api.Baseboard{b}
	} else {
		req.Remove = []api.Baseboard{b}
	}
	// Asked on a goroutine: the change waits for the one before it to
	// commit, and is retried while faults refuse it.
	fr.wg.Add(1)
	go func() {
		defer fr.wg.Done()
		deadline := time.Now().Add(10 * time.Minute)
		var last error
		for time.Now().Before(deadline) && ctx.Err() == nil {
			n := t.r.nexus[int(time.Now().UnixNano()%int64(len(t.r.nexus)))]
			st, err := n.api.TrustQuorumStatus(ctx)
			if err == nil && st.Latest != nil && (st.Latest.State == "committed" || st.Latest.State == "aborted") {
				var cfg api.TrustQuorumConfig
				if cfg, err = n.api.TrustQuorumMembership(ctx, req); err == nil {
					t.mu.Lock()
					t.asked++
					t.members[s.serial] = f.Kind == faultTQAdd
					if f.Kind == faultTQRemove {
						if t.removed == nil {
							t.removed = map[string]bool{}
						}
						t.removed[s.serial] = true
					}
					t.mu.Unlock()
					fr.logf("  trust quorum: %s %s on %s: epoch %d %s", f.Kind, s.name, n.name, cfg.Epoch, cfg.State)
					fr.ended()
					return
				}
			}
			last = err
			time.Sleep(2 * time.Second)
		}
		t.mu.Lock()
		t.failed = append(t.failed, fmt.Sprintf("%s %s not accepted: %v", f.Kind, s.name, last))
		t.mu.Unlock()
	}()
}

// waitConverged waits until every process runs, a Nexus's replication
// task reports convergence, and the disks agree: every live artifact on
// every M.2 of every in-service sled, nothing pruned left.
func (r *chaosRack) waitConverged(ctx context.Context, since time.Time, w io.Writer) (time.Duration, error) {
	deadline := time.Now().Add(r.o.converge)
	var last string
	lastPrint := time.Now()
	for {
		last = r.convergedOnce(ctx)
		if last == "" {
			return time.Since(since), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not converged within %s of the last fault: %s", r.o.converge, last)
		}
		if time.Since(lastPrint) > 30*time.Second {
			fmt.Fprintf(w, "  converging: %s\n", last)
			lastPrint = time.Now()
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (r *chaosRack) convergedOnce(ctx context.Context) string {
	for _, n := range r.nexus {
		if n.child.PID() == 0 {
			return n.name + " not running"
		}
	}
	for _, s := range r.sleds {
		if s.child.PID() == 0 {
			return s.name + " not running"
		}
	}
	converged := false
	var why string
	for _, n := range r.nexus {
		task, err := n.api.BackgroundTaskGet(ctx, tufreplication.Name)
		var st api.ReplicationStatus
		if err == nil && len(task.Status) > 0 {
			err = json.Unmarshal(task.Status, &st)
		}
		if err != nil {
			why = fmt.Sprintf("%s: %v", n.name, err)
			continue
		}
		if st.Converged {
			converged = true
			break
		}
		why = fmt.Sprintf("%s's replication: not converged (%d requests, %d in flight, %d degraded sleds, %s)",
			n.name, st.Requests, st.InFlight, st.DegradedSleds, st.Stopped)
	}
	if !converged {
		return why
	}
	live, pruned, err := r.wantedSets(ctx)
	if err != nil {
		return err.Error()
	}
	inService, err := r.inService(ctx)
	if err != nil {
		return err.Error()
	}
	if f := r.checkDisks(live, pruned, inService); len(f) > 0 {
		return fmt.Sprintf("%d disk differences, first: %s", len(f), f[0])
	}
	return ""
}

// wantedSets reads from the database the hashes sleds must hold (every
// live repo's) and those they must not (pruned repos' that no live repo
// shares).
func (r *chaosRack) wantedSets(ctx context.Context) (live, pruned map[string]bool, err error) {
	conn, err := pgx.Connect(ctx, r.dbURL)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT a.sha256, bool_or(r.time_pruned IS NULL) FROM tuf_artifact a
		JOIN tuf_repo_artifact ra ON ra.artifact_id = a.id JOIN tuf_repo r ON r.id = ra.repo_id GROUP BY a.sha256`)
	if err != nil {
		return nil, nil, err
	}
	live, pruned = map[string]bool{}, map[string]bool{}
	for rows.Next() {
		var sha string
		var isLive bool
		if err := rows.Scan(&sha, &isLive); err != nil {
			return nil, nil, err
		}
		if isLive {
			live[sha] = true
		} else {
			pruned[sha] = true
		}
	}
	return live, pruned, rows.Err()
}

// inService reads which sleds (by serial) Nexus has in service: a sled
// removed from the trust quorum is expunged, and no longer given
// artifacts or cleaned.
func (r *chaosRack) inService(ctx context.Context) (map[string]bool, error) {
	var last error
	for _, n := range r.nexus {
		list, err := n.api.SledList(ctx)
		if err != nil {
			last = err
			continue
		}
		out := map[string]bool{}
		for _, s := range list {
			if s.Policy == api.SledPolicyInService {
				out[s.Baseboard.Serial] = true
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("list sleds: %w", last)
}

// checkDisks compares every in-service sled's M.2 directories with the
// wanted sets.
// Every held file's SHA-256 is computed: a flipped byte counts until the
// sled's scrub has found it and the copy is repaired.
func (r *chaosRack) checkDisks(live, pruned, inService map[string]bool) []string {
	var out []string
	for _, s := range r.sleds {
		if !inService[s.serial] {
			continue
		}
		for _, m2 := range s.m2 {
			dir := filepath.Join(m2, artifacts.UpdateDir)
			held := map[string]bool{}
			entries, err := os.ReadDir(dir)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				out = append(out, fmt.Sprintf("%s: %v", dir, err))
			}
			for _, e := range entries {
				if e.Type().IsRegular() && depot.ValidHash(e.Name()) {
					held[e.Name()] = true
				}
			}
			for sha := range live {
				if !held[sha] {
					out = append(out, fmt.Sprintf("%s %s: live artifact %s missing", s.name, filepath.Base(m2), sha[:12]))
					continue
				}
				if got, err := fileSHA(filepath.Join(dir, sha)); err != nil || got != sha {
					out = append(out, fmt.Sprintf("%s %s: artifact %s holds bytes hashing to %s (%v)", s.name, filepath.Base(m2), sha[:12], got, err))
				}
			}
			for sha := range held {
				if pruned[sha] {
					out = append(out, fmt.Sprintf("%s %s: pruned artifact %s still held", s.name, filepath.Base(m2), sha[:12]))
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func fileSHA(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkAll checks every invariant on the state of the world.
func (r *chaosRack) checkAll(ctx context.Context, wl *workload, tqw *tqWorkload) []check {
	var checks []check
	live, pruned, err := r.wantedSets(ctx)
	if err != nil {
		return []check{{name: "read the database", failures: []string{err.Error()}}}
	}
	inService, err := r.inService(ctx)
	if err != nil {
		return append(checks, check{name: "read the sleds' policies", failures: []string{err.Error()}})
	}
	disk := r.checkDisks(live, pruned, inService)
	// Every sled is in service but those the membership changes removed
	// from the trust quorum, which are expunged.
	tqw.mu.Lock()
	for _, s := range r.sleds {
		removed := tqw.removed[s.serial]
		if inService[s.serial] == removed {
			disk = append(disk, fmt.Sprintf("%s: in service %v, removed from the trust quorum %v", s.name, inService[s.serial], removed))
		}
	}
	tqw.mu.Unlock()
	checks = append(checks, check{name: fmt.Sprintf("every live artifact (%d, SHA-256 verified) on every M.2 of every in-service sled (%d of %d), no pruned one (%d) left",
		len(live), len(inService), len(r.sleds), len(pruned)), failures: disk})
	checks = append(checks, r.checkRepos(ctx, wl))
	checks = append(checks, r.checkDepots(ctx))
	if r.o.tq {
		checks = append(checks, r.checkTrustQuorum(ctx, tqw))
	}
	checks = append(checks, r.checkLogs(ctx))
	return checks
}

// checkRepos: every upload that got a 2xx is recorded with all its
// artifacts; no repo is recorded with some of its artifacts missing; no
// live repo is degraded or failed.
func (r *chaosRack) checkRepos(ctx context.Context, wl *workload) check {
	c := check{}
	conn, err := pgx.Connect(ctx, r.dbURL)
	if err != nil {
		c.failures = append(c.failures, err.Error())
		return c
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT r.system_version, r.state::TEXT, r.time_pruned IS NOT NULL,
		coalesce(array_agg(a.sha256) FILTER (WHERE a.sha256 IS NOT NULL), '{}')
		FROM tuf_repo r LEFT JOIN tuf_repo_artifact ra ON ra.repo_id = r.id LEFT JOIN tuf_artifact a ON a.id = ra.artifact_id
		GROUP BY r.system_version, r.state, r.time_pruned`)
	if err != nil {
		c.failures = append(c.failures, err.Error())
		return c
	}
	type recorded struct {
		state  string
		pruned bool
		hashes []string
	}
	inDB := map[string]recorded{}
	for rows.Next() {
		var v string
		var x recorded
		if err := rows.Scan(&v, &x.state, &x.pruned, &x.hashes); err != nil {
			c.failures = append(c.failures, err.Error())
			return c
		}
		inDB[v] = x
	}
	if err := rows.Err(); err != nil {
		c.failures = append(c.failures, err.Error())
	}
	wl.mu.Lock()
	defer wl.mu.Unlock()
	for v, hashes := range wl.tried {
		x, ok := inDB[v]
		_, accepted := wl.uploaded[v]
		if !ok {
			if accepted {
				c.failures = append(c.failures, fmt.Sprintf("repo %s was accepted (2xx) but is not in the database", v))
			}
			continue
		}
		for _, h := range hashes {
			if !slices.Contains(x.hashes, h) {
				c.failures = append(c.failures, fmt.Sprintf("repo %s is recorded without its artifact %s", v, h[:12]))
			}
		}
		if !x.pruned && x.state != "active" {
			c.failures = append(c.failures, fmt.Sprintf("live repo %s is %s", v, x.state))
		}
	}
	c.name = fmt.Sprintf("no repo lost or half-recorded (%d accepted uploads, %d attempted, %d in the database)",
		len(wl.uploaded), len(wl.tried), len(inDB))
	return c
}

// checkDepots: every file in a Nexus depot is an artifact with a row.
func (r *chaosRack) checkDepots(ctx context.Context) check {
	c := check{}
	conn, err := pgx.Connect(ctx, r.dbURL)
	if err != nil {
		c.failures = append(c.failures, err.Error())
		return c
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT DISTINCT sha256 FROM tuf_artifact`)
	if err != nil {
		c.failures = append(c.failures, err.Error())
		return c
	}
	known := map[string]bool{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			c.failures = append(c.failures, err.Error())
			return c
		}
		known[s] = true
	}
	files := 0
	for _, n := range r.nexus {
		dir := filepath.Join(n.dataDir, "depot")
		entries, err := os.ReadDir(dir)
		if err != nil {
			c.failures = append(c.failures, fmt.Sprintf("%s: %v", dir, err))
			continue
		}
		for _, e := range entries {
			files++
			if !depot.ValidHash(e.Name()) || !known[e.Name()] {
				c.failures = append(c.failures, fmt.Sprintf("%s depot holds %s, which has no artifact row", n.name, e.Name()))
			}
		}
	}
	c.name = fmt.Sprintf("no file in a Nexus depot without an artifact row (%d files in %d depots)", files, len(r.nexus))
	return c
}

// checkTrustQuorum: the changes asked were taken, the latest epoch
// committed, and every member of it has committed that epoch.
func (r *chaosRack) checkTrustQuorum(ctx context.Context, tqw *tqWorkload) check {
	c := check{}
	tqw.mu.Lock()
	c.failures = append(c.failures, tqw.failed...)
	want := maps(tqw.members)
	asked := tqw.asked
	tqw.mu.Unlock()
	// The last change may still be committing when the faults end.
	var st api.TrustQuorumStatus
	var err error
	deadline := time.Now().Add(r.o.converge)
	for {
		st, err = r.nexus[0].api.TrustQuorumStatus(ctx)
		if err == nil && st.Latest != nil && st.LatestCommitted != nil && st.Latest.Epoch == st.LatestCommitted.Epoch &&
			st.Latest.State == "committed" {
			break
		}
		if time.Now().After(deadline) {
			c.failures = append(c.failures, fmt.Sprintf("the latest epoch did not commit within %s (%v)", r.o.converge, describeTQ(st, err)))
			c.name = "trust quorum"
			return c
		}
		time.Sleep(time.Second)
	}
	epoch := st.LatestCommitted.Epoch
	var members []string
	for _, m := range st.LatestCommitted.Members {
		members = append(members, m.Serial)
	}
	sort.Strings(members)
	if want != nil && !slices.Equal(members, want) {
		c.failures = append(c.failures, fmt.Sprintf("epoch %d's members are %v, the changes asked for %v", epoch, members, want))
	}
	for _, s := range r.sleds {
		if !slices.Contains(members, s.serial) {
			continue
		}
		sc, err := r.sledClient(s)
		if err != nil {
			c.failures = append(c.failures, err.Error())
			continue
		}
		var got api.TQStatus
		for range 30 {
			if got, err = sc.TQStatus(ctx, nil); err == nil && got.LatestCommittedEpoch == epoch {
				break
			}
			time.Sleep(time.Second)
		}
		if err != nil || got.LatestCommittedEpoch != epoch {
			c.failures = append(c.failures, fmt.Sprintf("%s (member) has committed epoch %d, Nexus epoch %d (%v)", s.name, got.LatestCommittedEpoch, epoch, err))
		}
	}
	c.name = fmt.Sprintf("every member (%d) has committed the latest epoch (%d), after %d membership changes", len(members), epoch, asked)
	return c
}

func describeTQ(st api.TrustQuorumStatus, err error) string {
	if err != nil {
		return err.Error()
	}
	if st.Latest == nil {
		return "no configuration"
	}
	return fmt.Sprintf("latest epoch %d %s", st.Latest.Epoch, st.Latest.State)
}

// maps lists the serials set in m, sorted (nil for a nil map).
func maps(m map[string]bool) []string {
	if m == nil {
		return nil
	}
	var out []string
	for k, v := range m {
		if v {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// checkLogs: no secret in any process's log: the operator token, any
// token's hash (hex or base64), any private key in PEM.
func (r *chaosRack) checkLogs(ctx context.Context) check {
	c := check{}
	needles := map[string]string{"the admin token": r.token}
	if conn, err := pgx.Connect(ctx, r.dbURL); err == nil {
		rows, err := conn.Query(ctx, `SELECT name, token_sha256 FROM operator_token`)
		if err == nil {
			for rows.Next() {
				var name string
				var sum []byte
				if rows.Scan(&name, &sum) == nil {
					needles["token "+name+"'s hash (hex)"] = hex.EncodeToString(sum)
					needles["token "+name+"'s hash (base64)"] = base64.StdEncoding.EncodeToString(sum)
				}
			}
			rows.Close()
		}
		conn.Close(ctx)
	}
	sum := sha256.Sum256([]byte(r.token))
	needles["the admin token's hash (hex)"] = hex.EncodeToString(sum[:])
	shares, secrets := r.trustQuorumSecrets()
	for i, b := range shares {
		needles[fmt.Sprintf("key share %d (base64)", i)] = base64.StdEncoding.EncodeToString(b)
		needles[fmt.Sprintf("key share %d (hex)", i)] = hex.EncodeToString(b)
	}
	for epoch, b := range secrets {
		needles[fmt.Sprintf("the rack secret of epoch %d (base64)", epoch)] = base64.StdEncoding.EncodeToString(b)
		needles[fmt.Sprintf("the rack secret of epoch %d (hex)", epoch)] = hex.EncodeToString(b)
	}
	needles["a private key"] = "PRIVATE KEY"
	files, _ := filepath.Glob(filepath.Join(r.logDir, "*.log"))
	var size int64
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			c.failures = append(c.failures, err.Error())
			continue
		}
		size += int64(len(b))
		for what, needle := range needles {
			if needle != "" && bytes.Contains(b, []byte(needle)) {
				c.failures = append(c.failures, fmt.Sprintf("%s holds %s", filepath.Base(f), what))
			}
		}
	}
	c.name = fmt.Sprintf("no secret in any log (%d logs, %d MiB, %d needles: admin token, token hashes, PEM private keys, "+
		"%d trust-quorum key shares, %d rack secrets rebuilt from them)", len(files), size>>20, len(needles), len(shares), len(secrets))
	return c
}

// tqLedger is the part of a sled's persisted trust-quorum state (on each
// M.2) that holds secrets: its key shares, and each configuration's
// threshold.
type tqLedger struct {
	Value struct {
		State struct {
			Configs []struct {
				Epoch     uint64 `json:"epoch"`
				Threshold int    `json:"threshold"`
			} `json:"configs"`
			Shares []struct {
				Epoch uint64 `json:"epoch"`
				Share []byte `json:"share"`
			} `json:"shares"`
		} `json:"state"`
	} `json:"value"`
}

// trustQuorumSecrets reads every sled's key shares from its M.2s and
// rebuilds each epoch's rack secret from them: what the logs must never
// hold. A ledger it cannot read adds nothing (the scan is for leaks, and
// its needles are counted in the check's name).
func (r *chaosRack) trustQuorumSecrets() ([][]byte, map[uint64][]byte) {
	byEpoch := map[uint64]map[string][]byte{}
	threshold := map[uint64]int{}
	for _, s := range r.sleds {
		for _, m2 := range s.m2 {
			b, err := os.ReadFile(filepath.Join(m2, "bootstrap", "trust-quorum.json"))
			if err != nil {
				continue
			}
			var l tqLedger
			if json.Unmarshal(b, &l) != nil {
				continue
			}
			for _, c := range l.Value.State.Configs {
				threshold[c.Epoch] = c.Threshold
			}
			for _, sh := range l.Value.State.Shares {
				if byEpoch[sh.Epoch] == nil {
					byEpoch[sh.Epoch] = map[string][]byte{}
				}
				byEpoch[sh.Epoch][s.serial] = sh.Share
			}
		}
	}
	var shares [][]byte
	secrets := map[uint64][]byte{}
	for epoch, bySled := range byEpoch {
		var parsed []tqcrypto.Share
		for _, b := range bySled {
			shares = append(shares, b)
			if sh, err := tqcrypto.ShareFromBytes(b); err == nil {
				parsed = append(parsed, sh)
			}
		}
		if k := threshold[epoch]; k > 0 && len(parsed) >= k {
			if secret, err := tqcrypto.Combine(parsed, k); err == nil {
				secrets[epoch] = bytes.Clone(secret.Expose())
			}
		}
	}
	return shares, secrets
}

package tufreplication

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/depot"
	"github.com/rackplane/rackplane/nexus/model"
)

// Name is the task's name.
const Name = "tuf_artifact_replication"

// Description is the one-line summary operators see.
const Description = "makes every sled hold every live TUF artifact on each M.2, copying sled to sled"

// DefaultPeriod is the periodic safety net; uploads, prunes, sled
// registrations and the task's own follow-ups activate it far more often.
const DefaultPeriod = time.Minute

// Defaults for Config.
const (
	DefaultMinSledReplication = 3
	DefaultMaxCopiesPerSource = 2
	DefaultMaxCopiesPerTarget = 4
	DefaultMaxNexusSends      = 8
	DefaultMaxRequests        = 256
	DefaultConcurrency        = 16
	// DefaultFollowUp is how soon a run that left copies pending is
	// followed by the next. Each run costs a few database round trips and
	// two small requests per sled; waiting longer leaves sleds idle once
	// their copies finish (rackbench replicate, 64 artifacts of 4 MiB to
	// 16 sleds: 21.6-22.0 s at 300 ms, 14-22 s at 100 ms; see
	// docs/PERFORMANCE.md).
	DefaultFollowUp = 100 * time.Millisecond
	// recentRequests is the size of the status's ring buffer.
	recentRequests = 64
	// statusArtifacts bounds the per-artifact list in the status.
	statusArtifacts = 50
)

// Config is the task's wiring and tuning.
type Config struct {
	// App is the application layer the task changes things through, as
	// itself (audited): fast-forwarding a generation the database lost.
	App     *app.App
	DS      *datastore.Datastore
	Depot   *depot.Depot
	NexusID uuid.UUID
	Log     zerolog.Logger
	// Limits bound each run; zero fields take the defaults above.
	Limits Limits
	// Concurrency bounds the sleds talked to at once.
	Concurrency int
	// FollowUp is how soon to run again while copies are in flight and
	// the last run saw something change; FollowUpMax caps the follow-up
	// delay, which doubles (with jitter) from FollowUp while nothing does.
	FollowUp    time.Duration
	FollowUpMax time.Duration
	// SledBackoff is the first wait before a sled whose request failed is
	// asked again (or a failed request re-sent), doubling per failure in a
	// row up to SledBackoffMax (default: DefaultPeriod).
	SledBackoff    time.Duration
	SledBackoffMax time.Duration
	// Rand draws the back-offs' jitter (nil: seeded from the operating
	// system).
	Rand rand.Source
	// TLS is how the task talks to sleds (mutual TLS: this Nexus's
	// certificate, sleds' accepted); required.
	TLS *tls.Config
	// Dial, when set, opens the task's connections to sleds (benchmarks
	// count the bytes Nexus sends); nil: a plain dialer with a timeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Now tells time for the status (nil: time.Now).
	Now func() time.Time
}

// Task is the replication task. It keeps lifetime counters, the recent
// requests and the last collected matrix in memory for status pages.
type Task struct {
	cfg Config
	// http talks to sleds: no whole-request timeout (PUTs stream whole
	// artifacts), a dial and a response-header timeout.
	http *http.Client

	pace *pacer
	// lastForward is the last generation fast-forward this Nexus made
	// (under mu).
	lastForward *api.ReplicationFastForward

	mu       sync.Mutex
	lifetime Counters
	recent   []RequestRecord // ring buffer, oldest first
	matrix   model.ReplicationMatrix
	// last is the last run's status; lastConverged when a run last
	// reported convergence, started when the task was made (for the
	// metrics before the first convergence).
	last          Status
	lastConverged time.Time
	started       time.Time
}

// New returns the task.
func New(cfg Config) *Task {
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.FollowUp <= 0 {
		cfg.FollowUp = DefaultFollowUp
	}
	if cfg.FollowUpMax <= 0 {
		cfg.FollowUpMax = DefaultFollowUpMax
	}
	if cfg.SledBackoff <= 0 {
		cfg.SledBackoff = DefaultSledBackoff
	}
	if cfg.SledBackoffMax <= 0 {
		cfg.SledBackoffMax = DefaultPeriod
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Task{cfg: cfg, started: cfg.Now(), pace: newPacer(cfg), http: &http.Client{Transport: &http.Transport{
		DialContext:           cfg.Dial,
		TLSClientConfig:       cfg.TLS,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConnsPerHost:   4,
	}}}
}

// WithDefaults returns l with its zero fields set to the defaults above.
func (l Limits) WithDefaults() Limits {
	if l.MinSledReplication == 0 {
		l.MinSledReplication = DefaultMinSledReplication
	}
	if l.MaxCopiesPerSource == 0 {
		l.MaxCopiesPerSource = DefaultMaxCopiesPerSource
	}
	if l.MaxCopiesPerTarget == 0 {
		l.MaxCopiesPerTarget = DefaultMaxCopiesPerTarget
	}
	if l.MaxNexusSends == 0 {
		l.MaxNexusSends = DefaultMaxNexusSends
	}
	if l.MaxRequests == 0 {
		l.MaxRequests = DefaultMaxRequests
	}
	return l
}

// The task's status types are wire types: GET
// /v1/system/background-tasks/tuf_artifact_replication returns them, and
// the status pages read them. They live in package api; these names keep
// the task's code short.
type (
	Counters       = api.ReplicationCounters
	RequestRecord  = api.ReplicationRequest
	SledState      = api.ReplicationSled
	ArtifactStatus = api.ReplicationArtifact
	Status         = api.ReplicationStatus
	PhaseTimes     = api.ReplicationPhaseTimes
)

// addCounters adds o's counts to c.
func addCounters(c *Counters, o Counters) {
	c.ConfigPutOK += o.ConfigPutOK
	c.ConfigPutErr += o.ConfigPutErr
	c.ListOK += o.ListOK
	c.ListErr += o.ListErr
	c.SeedOK += o.SeedOK
	c.SeedErr += o.SeedErr
	c.CopyOK += o.CopyOK
	c.CopyErr += o.CopyErr
	c.LocalDropped += o.LocalDropped
	c.BytesSeeded += o.BytesSeeded
	c.BytesCopied += o.BytesCopied
}

// phaseClock measures consecutive phases with the task's clock.
type phaseClock struct {
	now  func() time.Time
	last time.Time
}

// lap returns the milliseconds since the previous lap (or the start).
func (p *phaseClock) lap() float64 {
	t := p.now()
	d := t.Sub(p.last)
	p.last = t
	return float64(d) / float64(time.Millisecond)
}

// Matrix returns the last collected holdings (empty before the first
// run), for the status pages and the repo API.
func (t *Task) Matrix() model.ReplicationMatrix {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.matrix
}

// collected is what the collect phase produced.
type collected struct {
	snap   datastore.ReplicationSnapshot
	input  Input
	states []SledState
	// stale says why the view is stale: a sled (ahead) holds a newer
	// generation (aheadGen) than the snapshot's.
	stale    string
	ahead    uuid.UUID
	aheadGen int64
	run      Counters
	// print fingerprints input, to tell a run that saw change.
	print uint64
	// backingOff counts sleds not asked because they are backing off.
	backingOff int
}

var _ bgtasks.Task = (*Task)(nil)

// Activate runs collect → plan → execute once.
func (t *Task) Activate(ctx context.Context, act bgtasks.Activation) (any, error) {
	ctx, roundTrips := datastore.CountRoundTrips(ctx)
	log := t.cfg.Log.With().Str("task", Name).Str("run_id", act.RunID).Logger()
	ctx = log.WithContext(ctx)
	// What the task changes in the database it changes as itself.
	ctx = app.WithActor(ctx, app.TaskActor(Name))
	clock := phaseClock{now: t.cfg.Now, last: t.cfg.Now()}
	t.pace.forget()

	c, err := t.collect(ctx, log)
	var run Counters
	if err == nil && c.stale != "" {
		// A sled is ahead of this run's snapshot. Either this Nexus read
		// the database before another Nexus moved it on (stop, and look
		// again after the back-off), or the database itself is behind its
		// sleds (restored): move it past them and collect again.
		var forwarded bool
		forwarded, err = t.fastForward(ctx, c)
		if err == nil && forwarded {
			addCounters(&run, c.run)
			c, err = t.collect(ctx, log)
		}
	}
	addCounters(&run, c.run)
	c.run = run
	collectMS := clock.lap()
	if err != nil {
		return t.status(Status{Generation: c.snap.Generation, RoundTrips: roundTrips.Load(),
			Phases: PhaseTimes{Collect: collectMS}}, c.run), err
	}
	st := Status{Generation: c.snap.Generation, Artifacts: len(c.input.Artifacts), Sleds: len(c.states),
		SledStates: c.states, Phases: PhaseTimes{Collect: collectMS}}
	st.BackingOff = c.backingOff
	if c.stale != "" {
		st.Stopped = c.stale
		st.RoundTrips = roundTrips.Load()
		log.Warn().Str("reason", c.stale).Msg("replication run stopped: view is stale")
		act.RetryLater()
		return t.status(st, c.run), nil
	}

	plan := Compute(c.input)
	st.Phases.Plan = clock.lap()
	if plan.Stop != "" {
		st.Stopped = plan.Stop
		st.RoundTrips = roundTrips.Load()
		log.Warn().Str("reason", plan.Stop).Msg("replication run stopped: view is stale")
		act.RetryLater()
		return t.status(st, c.run), nil
	}
	var errs []error
	st.HeldBack = t.execute(ctx, log, c, plan, &c.run)
	st.Phases.Execute = clock.lap()

	// Drop local copies that enough sleds hold (or nobody wants).
	dropped, derr := t.dropLocal(ctx, log, plan.DropLocal)
	if derr != nil {
		errs = append(errs, derr)
	}
	c.run.LocalDropped = len(dropped)
	st.Dropped = dropped

	changes, serr := t.cfg.DS.TufRepoStatesFromHolders(ctx, hashesOf(plan.Unheld))
	if serr != nil {
		errs = append(errs, fmt.Errorf("update repo states: %w", serr))
	}
	for _, ch := range changes {
		log.Warn().Str("system_version", ch.SystemVersion).Str("state", ch.State).Str("reason", ch.Reason).
			Msg("tuf repo state changed")
		st.RepoChanges = append(st.RepoChanges, ch.SystemVersion+": "+ch.State)
	}

	st.Requests, st.Deferred, st.Unheld = len(plan.Requests)-st.HeldBack, plan.Deferred+st.HeldBack, hashesOf(plan.Unheld)
	held := 0
	for _, h := range c.snap.Copies {
		if h.NexusID == t.cfg.NexusID {
			held++
		}
	}
	st.LocalCopies = held - len(dropped)
	for _, a := range plan.Artifacts {
		st.InFlight += a.InFlight
		if a.FullHolders == usableSleds(c.input) && a.FullHolders > 0 {
			st.FullyReplicated++
		}
	}
	st.LeastReplicated = leastReplicated(plan.Artifacts)
	for _, s := range c.states {
		if s.Error == "" && s.M2Present < s.M2Expected {
			st.DegradedSleds++
		}
	}
	// A sled with an M.2 missing holds everything it can, but its
	// artifacts have a copy too few: not converged, and nothing to do
	// but wait for the device (no follow-up run is asked for).
	if st.DegradedSleds > 0 {
		// Every artifact is wanted on every sled, and a degraded sled
		// cannot hold one on an M.2 it lacks.
		st.FullyReplicated = 0
	}
	st.Converged = len(plan.Requests) == 0 && plan.Deferred == 0 && st.InFlight == 0 && len(plan.Unheld) == 0 &&
		len(c.states) == usableSleds(c.input) && st.DegradedSleds == 0
	if !st.Converged && (len(plan.Requests) > 0 || st.InFlight > 0 || plan.Deferred > 0) {
		// Copies are running: look again soon, so that every finished
		// copy becomes a source for the next ones within moments; less
		// and less often while nothing changes (a long copy, or requests
		// that keep failing).
		act.RequeueAfter(t.pace.nextFollowUp(c.print))
	}
	st.RoundTrips = roundTrips.Load()
	st.Phases.Finish = clock.lap()
	log.Info().Int64("generation", st.Generation).Int("requests", st.Requests).Int("deferred", st.Deferred).
		Int("in_flight", st.InFlight).Int("degraded_sleds", st.DegradedSleds).Bool("converged", st.Converged).
		Int64("db_round_trips", st.RoundTrips).
		Msg("replication run finished")
	return t.status(st, c.run), errors.Join(errs...)
}

func hashesOf(hs []Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = string(h)
	}
	return out
}

func usableSleds(in Input) int {
	n := 0
	for _, s := range in.Sleds {
		if s.Reachable && s.Generation == in.Generation {
			n++
		}
	}
	return n
}

func leastReplicated(arts []ArtifactState) []ArtifactStatus {
	idx := make([]int, len(arts))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return arts[a].FullHolders - arts[b].FullHolders })
	out := []ArtifactStatus{}
	for _, i := range idx[:min(len(idx), statusArtifacts)] {
		a := arts[i]
		out = append(out, ArtifactStatus{SHA256: string(a.Artifact.SHA256), Length: a.Artifact.Length,
			Sleds: a.Holders, FullSleds: a.FullHolders, InFlight: a.InFlight, NexusHolders: a.NexusHolders})
	}
	return out
}

// status folds a run's counters into the lifetime ones and attaches them
// and the ring buffer.
func (t *Task) status(st Status, run Counters) Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	addCounters(&t.lifetime, run)
	st.LastRun, st.Lifetime = run, t.lifetime
	if ff := t.lastForward; ff != nil {
		cp := *ff
		st.FastForward = &cp
	}
	st.Recent = slices.Clone(t.recent)
	slices.Reverse(st.Recent) // newest first
	if st.SledStates == nil {
		st.SledStates = []SledState{}
	}
	t.last = st
	if st.Converged {
		t.lastConverged = t.cfg.Now()
	}
	return st
}

func (t *Task) record(r RequestRecord) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.recent) == recentRequests {
		copy(t.recent, t.recent[1:])
		t.recent = t.recent[:recentRequests-1]
	}
	t.recent = append(t.recent, r)
}

func (t *Task) sledClient(s datastore.ReplicationSled) (client.SledAgent, error) {
	return client.NewSledAgent("https://"+s.SledAgentAddress, t.http)
}

func depotURL(s datastore.ReplicationSled) string {
	host, _, err := net.SplitHostPort(s.SledAgentAddress)
	if err != nil {
		host = s.SledAgentAddress
	}
	return "https://" + net.JoinHostPort(host, strconv.Itoa(s.RepoDepotPort))
}

// collect reads the database snapshot, then asks every sled (bounded
// concurrency) what it holds and copies, putting the config first where the
// sled is behind.
func (t *Task) collect(ctx context.Context, log zerolog.Logger) (collected, error) {
	var c collected
	snap, err := t.cfg.DS.ReplicationSnapshot(ctx)
	if err != nil {
		return c, fmt.Errorf("read the wanted set: %w", err)
	}
	c.snap = snap
	gen := uint64(snap.Generation)
	in := Input{Generation: snap.Generation, Self: t.cfg.NexusID, Limits: t.cfg.Limits}
	index := make(map[string]int, len(snap.Wanted))
	config := api.ArtifactConfig{Generation: gen, Artifacts: make([]string, len(snap.Wanted))}
	for i, w := range snap.Wanted {
		in.Artifacts = append(in.Artifacts, Artifact{SHA256: Hash(w.SHA256), Length: w.Length})
		index[w.SHA256] = i
		config.Artifacts[i] = w.SHA256
	}
	for _, cp := range snap.Copies {
		if cp.NexusID == t.cfg.NexusID {
			in.SelfLocal = append(in.SelfLocal, Hash(cp.SHA256))
		}
		a, ok := index[cp.SHA256]
		if !ok || cp.URL == "" {
			continue
		}
		in.NexusCopies = append(in.NexusCopies, NexusCopy{NexusID: cp.NexusID, URL: cp.URL, Artifact: a})
	}

	in.Sleds = make([]Sled, len(snap.Sleds))
	c.states = make([]SledState, len(snap.Sleds))
	runs := make([]Counters, len(snap.Sleds))
	backingOff := make([]bool, len(snap.Sleds))
	var wg sync.WaitGroup
	sem := make(chan struct{}, t.cfg.Concurrency)
	for i, s := range snap.Sleds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			in.Sleds[i], c.states[i] = t.collectSled(ctx, log, s, config, index, &runs[i], &backingOff[i])
		}()
	}
	wg.Wait()
	for i := range runs {
		addCounters(&c.run, runs[i])
		if backingOff[i] {
			c.backingOff++
		}
		if st := c.states[i]; st.Generation > gen && int64(st.Generation) > c.aheadGen {
			c.ahead, c.aheadGen = st.ID, int64(st.Generation)
			c.stale = fmt.Sprintf("sled %s holds artifact generation %d, newer than this Nexus's %d: its view is stale",
				st.ID, st.Generation, gen)
		}
	}
	c.input = in
	c.print = fingerprint(in)
	t.keepMatrix(in, c.states)
	return c, nil
}

// collectSled brings one sled to the config's generation if it is behind,
// and reads what it holds and copies.
func (t *Task) collectSled(ctx context.Context, log zerolog.Logger, s datastore.ReplicationSled,
	config api.ArtifactConfig, index map[string]int, run *Counters, backingOff *bool) (Sled, SledState) {
	out := Sled{ID: s.ID, DepotURL: depotURL(s), Copies: make([]uint8, len(config.Artifacts))}
	st := SledState{ID: s.ID, Address: s.SledAgentAddress}
	slog := log.With().Str("sled_id", s.ID.String()).Uint64("generation", config.Generation).Logger()
	key := sledKey{s.ID, depotURL(s) + " " + s.SledAgentAddress}
	if p, ok := t.pace.sledWaiting(key); ok {
		// Its last requests failed: leave it alone until the back-off
		// has passed, however often the task runs meanwhile.
		*backingOff = true
		st.Error = fmt.Sprintf("not asked: backing off after %d failed requests in a row, until %s; last error: %s",
			p.failures, p.until.UTC().Format(time.RFC3339Nano), p.last)
		return out, st
	}
	fail := func(op string, err error) (Sled, SledState) {
		st.Error = fmt.Sprintf("%s: %v", op, err)
		t.record(RequestRecord{Time: t.cfg.Now(), Sled: s.ID, Operation: op, Error: err.Error()})
		slog.Warn().Err(err).Str("operation", op).Msg("sled request failed")
		if client.ErrorCode(err) != api.CodeConfigGeneration {
			// A sled ahead of this Nexus is a stale view, not a fault of
			// the sled's.
			t.pace.sledFailed(key, err)
		}
		return out, st
	}
	sc, err := t.sledClient(s)
	if err != nil {
		return fail("list", err)
	}
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	list, err := sc.ArtifactList(lctx)
	if err != nil {
		run.ListErr++
		return fail("list", err)
	}
	run.ListOK++
	t.pace.sledOK(key)
	if list.Generation < config.Generation {
		// Behind (or new): give it the config, then look again.
		_, err := sc.ArtifactConfigPut(lctx, config)
		t.record(RequestRecord{Time: t.cfg.Now(), Sled: s.ID, Operation: "config_put", Error: errString(err)})
		if err != nil {
			run.ConfigPutErr++
			if client.ErrorCode(err) == api.CodeConfigGeneration {
				// It moved past us between the list and the put.
				if again, lerr := sc.ArtifactList(lctx); lerr == nil {
					st.Generation = again.Generation
				}
			}
			return fail("config_put", err)
		}
		run.ConfigPutOK++
		slog.Info().Uint64("previous", list.Generation).Int("artifacts", len(config.Artifacts)).
			Msg("artifact config put to sled")
		if list, err = sc.ArtifactList(lctx); err != nil {
			run.ListErr++
			return fail("list", err)
		}
		run.ListOK++
	}
	st.Generation, st.M2Present = list.Generation, list.M2Present
	st.M2Expected = max(model.SledM2Devices, s.M2Configured)
	out.Generation, out.M2Present = int64(list.Generation), list.M2Present
	if list.Generation != config.Generation {
		// Newer than us: reported as stale by the caller, never acted on.
		return out, st
	}
	for h, n := range list.Artifacts {
		if a, ok := index[h]; ok {
			out.Copies[a] = uint8(min(max(n, 0), 255))
		}
	}
	for h, src := range list.Copying {
		if a, ok := index[h]; ok {
			out.InFlight = append(out.InFlight, InFlight{Artifact: a, Source: sourceBase(src)})
			st.InFlight++
		}
	}
	out.Reachable = true
	return out, st
}

// sourceBase turns a copy's source URL back into the base URL the planner
// knows sources by.
func sourceBase(u string) string {
	if i := strings.Index(u, "/artifact/sha256/"); i >= 0 {
		return u[:i]
	}
	return u
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (t *Task) keepMatrix(in Input, states []SledState) {
	m := model.ReplicationMatrix{Time: t.cfg.Now(), Generation: in.Generation,
		Artifacts: make([]model.MatrixArtifact, len(in.Artifacts)), Sleds: make([]model.MatrixSled, len(states)),
		Copies: make([][]int8, len(in.Sleds)), InFlight: make([]map[int]bool, len(in.Sleds))}
	for i, a := range in.Artifacts {
		m.Artifacts[i] = model.MatrixArtifact{SHA256: string(a.SHA256), Length: a.Length}
	}
	for i, s := range states {
		m.Sleds[i] = model.MatrixSled(s)
	}
	for i, s := range in.Sleds {
		row := make([]int8, len(in.Artifacts))
		for a := range row {
			row[a] = -1
			if s.Reachable && a < len(s.Copies) {
				row[a] = int8(s.Copies[a])
			}
		}
		m.Copies[i] = row
		m.InFlight[i] = map[int]bool{}
		for _, f := range s.InFlight {
			m.InFlight[i][f.Artifact] = true
		}
	}
	t.mu.Lock()
	t.matrix = m
	t.mu.Unlock()
}

// execute sends the plan's requests with bounded concurrency, except those
// that failed recently and are still backing off (it returns how many it
// held back). A sled that answers with a generation conflict means this
// Nexus's view went stale: the remaining requests are not sent.
func (t *Task) execute(ctx context.Context, log zerolog.Logger, c collected, plan Plan, run *Counters) (heldBack int) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sleds := make(map[uuid.UUID]datastore.ReplicationSled, len(c.snap.Sleds))
	for _, s := range c.snap.Sleds {
		sleds[s.ID] = s
	}
	gen := uint64(c.input.Generation)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, t.cfg.Concurrency)
	for _, r := range plan.Requests {
		if t.pace.requestWaiting(r.Sled, r.Artifact.SHA256) {
			heldBack++
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if ctx.Err() != nil {
				return
			}
			s := sleds[r.Sled]
			err := t.send(ctx, log, s, gen, r)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case r.SourceKind == "nexus" && err == nil:
				run.SeedOK++
				run.BytesSeeded += r.Artifact.Length
			case r.SourceKind == "nexus":
				run.SeedErr++
			case err == nil:
				run.CopyOK++
				run.BytesCopied += r.Artifact.Length
			default:
				run.CopyErr++
			}
			code := client.ErrorCode(err)
			switch {
			case code == api.CodeGenerationMismatch || code == api.CodeConfigGeneration:
				log.Warn().Str("sled_id", r.Sled.String()).Msg("sled is at another generation: stopping this run's requests")
				cancel()
			case err != nil && ctx.Err() == nil:
				t.pace.requestFailed(r.Sled, r.Artifact.SHA256, err)
			case err == nil:
				t.pace.requestOK(r.Sled, r.Artifact.SHA256)
			}
		}()
	}
	wg.Wait()
	return heldBack
}

func (t *Task) send(ctx context.Context, log zerolog.Logger, s datastore.ReplicationSled, gen uint64, r Request) error {
	rec := RequestRecord{Time: t.cfg.Now(), Sled: r.Sled, SHA256: string(r.Artifact.SHA256), Source: r.Source}
	ev := log.Info().Str("sled_id", r.Sled.String()).Str("sha256", string(r.Artifact.SHA256)).Uint64("generation", gen)
	sc, err := t.sledClient(s)
	if err == nil {
		rec.Operation = "copy"
		if r.SourceKind == "nexus" {
			rec.Operation = "seed"
		}
		_, err = sc.ArtifactCopyFromDepot(ctx, string(r.Artifact.SHA256), gen, r.Source)
	}
	rec.Error = errString(err)
	t.record(rec)
	if err != nil {
		ev = log.Warn().Err(err).Str("sled_id", r.Sled.String()).Str("sha256", string(r.Artifact.SHA256)).
			Uint64("generation", gen)
	}
	ev.Str("operation", rec.Operation).Str("source", rec.Source).Msg("replication request")
	return err
}

// dropLocal forgets and deletes this Nexus's local copies the plan says
// are safe to drop: the row first, then the file. It holds the depot's
// exclusive section, so a drop cannot race an upload relying on the file.
func (t *Task) dropLocal(ctx context.Context, log zerolog.Logger, hashes []Hash) ([]string, error) {
	if len(hashes) == 0 {
		return nil, nil
	}
	hs := hashesOf(hashes)
	var errs []error
	err := t.cfg.Depot.Exclusive(func() error {
		if err := t.cfg.DS.NexusArtifactCopiesDrop(ctx, t.cfg.NexusID, hs); err != nil {
			return fmt.Errorf("forget local copies: %w", err)
		}
		for _, h := range hs {
			if err := t.cfg.Depot.Remove(h); err != nil {
				errs = append(errs, fmt.Errorf("remove local copy %s: %w", h, err))
				continue
			}
			log.Info().Str("sha256", h).Msg("local copy dropped: enough sleds hold it")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return hs, errors.Join(errs...)
}

// fastForward handles a sled ahead of the run's snapshot: when the
// database itself is behind (read in the transaction that changes it), it
// moves the generation past the sled's, records it and reports true; when
// only this Nexus's snapshot was behind its database, it changes nothing
// and reports false, and the run stops as stale.
func (t *Task) fastForward(ctx context.Context, c collected) (bool, error) {
	if t.cfg.App == nil {
		return false, nil
	}
	ff, err := t.cfg.App.FastForwardTufGeneration(ctx, c.aheadGen, c.ahead)
	switch {
	case errors.Is(err, app.ErrGenerationNotBehind):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("sled %s holds generation %d, above the run's %d; fast-forwarding the database's: %w",
			c.ahead, c.aheadGen, c.snap.Generation, err)
	}
	// The application layer has logged it, loudly, with both numbers.
	rec := &api.ReplicationFastForward{Time: t.cfg.Now(), From: ff.Before, To: ff.After,
		SledGeneration: ff.SledGeneration, Sled: ff.Sled}
	t.mu.Lock()
	t.lastForward = rec
	t.mu.Unlock()
	return true, nil
}

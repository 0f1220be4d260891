// Package trustquorum is the trust_quorum_manager background task: it
// drives the rack's trust-quorum epochs, as Nexus records them, to commit.
//
// Each activation collects (the database's view; every watched node's
// trust-quorum status, read from its sled agent or through a member's
// proxy when it has none), decides (Decide, a pure function tested against
// golden files) and executes: it sends the coordinator its request,
// records the prepare acks it reports and decides the commit at K+Z,
// commits every member (prepare-and-commit for those that never prepared)
// and records their acks, and aborts an epoch whose prepare stands still
// for the configured time, starting the same change again at the next
// epoch with another coordinator. Every write is fenced in the database
// (still the epoch in progress, still in the state the write expects), so
// every Nexus may run the task at once. Every run also records each
// node's status and alarms.
package trustquorum

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/reqid"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/model"
)

// Name is the task's name.
const Name = "trust_quorum_manager"

// Description is the one-line summary operators see.
const Description = "drives trust-quorum epochs to commit (aborting and retrying a stalled one) and records every node's status and alarms"

// Defaults for Config.
const (
	// DefaultPeriod is the safety net and the pace of node-status
	// refreshes while nothing is in progress; every trust-quorum change
	// activates the task at once, and it follows up on its own while an
	// epoch is in progress.
	DefaultPeriod = 15 * time.Second
	// DefaultNoProgress is how long a prepare may stand still before the
	// epoch is aborted and retried.
	DefaultNoProgress  = time.Minute
	DefaultMaxAttempts = 3
	DefaultFollowUp    = 100 * time.Millisecond
	DefaultConcurrency = 32
	// DefaultRequestTimeout bounds each request to a sled.
	DefaultRequestTimeout = 10 * time.Second
)

// Config is the task's wiring and tuning.
type Config struct {
	App *app.App
	// TLS is how the task talks to sleds (required).
	TLS *tls.Config
	Log zerolog.Logger
	// NoProgress, MaxAttempts, FollowUp, Concurrency and RequestTimeout:
	// zero takes the defaults above.
	NoProgress     time.Duration
	MaxAttempts    int
	FollowUp       time.Duration
	Concurrency    int
	RequestTimeout time.Duration
	// Registerer receives the task's metrics (nil: none served).
	Registerer prometheus.Registerer
}

// Task is the manager. It keeps lifetime counters in memory for its
// status; everything it acts on is re-read each run.
type Task struct {
	cfg     Config
	http    *http.Client
	metrics *metrics

	mu       sync.Mutex
	lifetime Counters
}

// New returns the task.
func New(cfg Config) (*Task, error) {
	if cfg.NoProgress <= 0 {
		cfg.NoProgress = DefaultNoProgress
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.FollowUp <= 0 {
		cfg.FollowUp = DefaultFollowUp
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Task{cfg: cfg, metrics: m, http: &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSClientConfig:     cfg.TLS,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: 4,
	}}}, nil
}

// Counters are the task's lifetime totals in this Nexus.
type Counters struct {
	Reconfigures int `json:"reconfigures_sent"`
	PrepareAcks  int `json:"prepare_acks_recorded"`
	CommitsSent  int `json:"commits_sent"`
	CommitAcks   int `json:"commit_acks_recorded"`
	Aborts       int `json:"aborts"`
	Retries      int `json:"retries"`
	Fenced       int `json:"fenced_writes"`
	// SledAgentsStarted counts members asked to start their sled agent
	// that started it.
	SledAgentsStarted int `json:"sled_agents_started"`
}

// Status is what one activation saw and did.
type Status struct {
	// Epoch, State, Acked and Required are the configuration in progress
	// (or the latest one) after the run.
	Epoch       uint64 `json:"epoch"`
	State       string `json:"state"`
	Acked       int    `json:"acked"`
	Required    int    `json:"required"`
	Coordinator string `json:"coordinator,omitempty"`
	// LatestCommitted is the newest epoch Nexus decided to commit.
	LatestCommitted uint64 `json:"latest_committed_epoch"`
	// Did lists what the run did, in order; Waiting what the epoch waits
	// for.
	Did     []string `json:"did"`
	Waiting string   `json:"waiting,omitempty"`
	// Commits are this run's commit requests and their outcomes.
	Commits []CommitRecord `json:"commits,omitempty"`
	// Nodes counts the watched nodes, Reached those that answered, and
	// Alarms the alarms they report.
	Nodes   int `json:"nodes"`
	Reached int `json:"nodes_reached"`
	Alarms  int `json:"alarms"`
	// Unreachable names the nodes that did not answer, and why.
	Unreachable []string `json:"unreachable,omitempty"`
	// MovedOn says another Nexus moved the epoch on first (a fenced
	// write); the next run works from the new state.
	MovedOn  string   `json:"moved_on,omitempty"`
	Lifetime Counters `json:"lifetime"`
}

// CommitRecord is one commit request.
type CommitRecord struct {
	Member  string `json:"member"`
	Op      string `json:"op"`
	Via     string `json:"via,omitempty"`
	Outcome string `json:"outcome"`
}

var _ bgtasks.Task = (*Task)(nil)

// Activate runs collect → decide → execute once.
func (t *Task) Activate(ctx context.Context, act bgtasks.Activation) (any, error) {
	log := t.cfg.Log.With().Str("task", Name).Str("run_id", act.RunID).Logger()
	ctx = log.WithContext(app.WithActor(ctx, app.TaskActor(Name)))
	ctx = reqid.With(ctx, act.RunID)
	st := Status{Did: []string{}}
	var run Counters
	defer func() { t.fold(&st, run) }()

	c, err := t.collect(ctx)
	if err != nil {
		return t.finish(&st, run), err
	}
	if c.view.Rack == nil {
		st.Waiting = "rack setup has not handed the rack over"
		return t.finish(&st, run), nil
	}
	var errs []error
	if err := t.cfg.App.RecordTrustQuorumNodes(ctx, c.statuses()); err != nil {
		errs = append(errs, fmt.Errorf("record node statuses: %w", err))
	}
	c.summarise(&st)
	t.metrics.observe(c)

	in := c.input(t.cfg)
	plan := Decide(in)
	st.Waiting = plan.Waiting
	if err := t.execute(ctx, log, c, plan, &st, &run); err != nil {
		errs = append(errs, err)
	}
	if plan.FollowUp {
		act.RequeueAfter(t.cfg.FollowUp)
	} else if len(plan.Removed) > 0 || len(plan.Starts) > 0 {
		// The members' answers take a moment: look again soon, not at the
		// next period.
		act.RequeueAfter(max(10*t.cfg.FollowUp, time.Second))
	}
	if v, err := t.cfg.App.TrustQuorumView(ctx); err == nil {
		setState(&st, v)
		t.metrics.observeView(v)
	}
	log.Debug().Uint64("epoch", st.Epoch).Str("state", st.State).Int("acked", st.Acked).Int("required", st.Required).
		Strs("did", st.Did).Str("waiting", st.Waiting).Msg("trust-quorum manager run finished")
	return t.finish(&st, run), errors.Join(errs...)
}

func (t *Task) finish(st *Status, run Counters) Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	st.Lifetime = t.lifetime
	addCounters(&st.Lifetime, run)
	return *st
}

// fold adds a run's counters to the lifetime ones once, however the run
// ended.
func (t *Task) fold(_ *Status, run Counters) {
	t.mu.Lock()
	defer t.mu.Unlock()
	addCounters(&t.lifetime, run)
}

func addCounters(c *Counters, o Counters) {
	c.Reconfigures += o.Reconfigures
	c.PrepareAcks += o.PrepareAcks
	c.CommitsSent += o.CommitsSent
	c.CommitAcks += o.CommitAcks
	c.Aborts += o.Aborts
	c.Retries += o.Retries
	c.Fenced += o.Fenced
	c.SledAgentsStarted += o.SledAgentsStarted
}

func setState(st *Status, v *datastore.TQView) {
	c := v.Active
	if c == nil {
		c = v.Latest
	}
	if c != nil {
		st.Epoch, st.State, st.Acked, st.Required = c.Epoch, string(c.State), c.Acked(), c.Required()
		st.Coordinator = c.Coordinator.String()
	}
	if v.LatestCommitted != nil {
		st.LatestCommitted = v.LatestCommitted.Epoch
	}
}

// collected is what the collect phase produced.
type collected struct {
	view  *datastore.TQView
	sleds map[model.Baseboard]SledInfo
	// watched are the nodes whose status is read, in baseboard order.
	watched []model.Baseboard
	nodes   map[model.Baseboard]NodeObs
}

func (c *collected) input(cfg Config) Input {
	return Input{Now: c.view.Now, NoProgress: cfg.NoProgress, MaxAttempts: cfg.MaxAttempts, RackID: c.view.Rack.ID,
		Active: c.view.Active, LatestCommitted: c.view.LatestCommitted, Sleds: c.sleds, Nodes: c.nodes}
}

// collect reads the view and every watched node's status.
func (t *Task) collect(ctx context.Context) (*collected, error) {
	v, err := t.cfg.App.TrustQuorumView(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the trust quorum: %w", err)
	}
	c := &collected{view: v, sleds: map[model.Baseboard]SledInfo{}, nodes: map[model.Baseboard]NodeObs{}}
	if v.Rack == nil {
		return c, nil
	}
	for _, s := range v.Sleds {
		c.sleds[s.Baseboard] = SledInfo{Address: s.SledAgentAddress, InService: s.Policy == model.SledPolicyInService}
	}
	prior, err := t.cfg.App.TrustQuorumNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("read node statuses: %w", err)
	}
	c.watched = watched(v, prior)
	t.readStatuses(ctx, c)
	return c, nil
}

// watched are the nodes whose status each run reads: the members of the
// epoch in progress and of the latest committed one, and any node seen
// before, holding a committed epoch (or LRTQ), that is a member of
// neither and has not learnt it is expunged (a removed sled, until it
// knows).
func watched(v *datastore.TQView, prior []model.TQNodeStatus) []model.Baseboard {
	var out []model.Baseboard
	add := func(b model.Baseboard) {
		if !slices.Contains(out, b) {
			out = append(out, b)
		}
	}
	for _, c := range []*model.TQConfiguration{v.Active, v.LatestCommitted} {
		if c != nil {
			for _, m := range c.Members {
				add(m.Baseboard)
			}
		}
	}
	for _, n := range prior {
		if n.Seen != nil && n.Seen.Expunged == nil && (n.Seen.LatestCommittedEpoch > 0 || n.Seen.HasLrtq) {
			add(n.Baseboard)
		}
	}
	slices.SortFunc(out, model.CompareBaseboards)
	return out
}

// readStatuses reads every watched node's status: directly from the
// nodes with a sled agent, then through one that answered for the rest.
func (t *Task) readStatuses(ctx context.Context, c *collected) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, t.cfg.Concurrency)
	each := func(bs []model.Baseboard, fn func(model.Baseboard) NodeObs) {
		for _, b := range bs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				o := fn(b)
				mu.Lock()
				c.nodes[b] = o
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	var direct []model.Baseboard
	for _, b := range c.watched {
		// An expunged sled is still read (a removed one, until it knows).
		if s, ok := c.sleds[b]; ok && s.Address != "" {
			direct = append(direct, b)
		}
	}
	each(direct, func(b model.Baseboard) NodeObs {
		st, err := t.status(ctx, c.sleds[b].Address, nil)
		if err != nil {
			return NodeObs{Via: model.TQViaDirect, Error: err.Error()}
		}
		return NodeObs{Via: model.TQViaDirect, Status: &st}
	})
	var proxied []model.Baseboard
	for _, b := range c.watched {
		if !c.nodes[b].Reached() {
			proxied = append(proxied, b)
		}
	}
	vias := c.proxies()
	// The proxied reads replace the direct ones' failures; each starts
	// from its own, read before any goroutine writes the map.
	failed := map[model.Baseboard]NodeObs{}
	for _, b := range proxied {
		failed[b] = c.nodes[b]
	}
	each(proxied, func(b model.Baseboard) NodeObs {
		prev := failed[b]
		for _, via := range vias {
			if via == b {
				continue
			}
			dest := api.Baseboard{Part: b.Part, Serial: b.Serial}
			st, err := t.status(ctx, c.sleds[via].Address, &dest)
			o := NodeObs{Via: "proxy " + via.Part + ":" + via.Serial}
			if err != nil {
				o.Error = err.Error()
				if prev.Error != "" {
					o.Error = prev.Error + "; " + o.Error
				}
			} else {
				o.Status = &st
			}
			return o
		}
		if prev.Error == "" {
			prev = NodeObs{Via: model.TQViaDirect, Error: "no sled agent of its own, and no member to proxy through"}
		}
		return prev
	})
}

// proxies are the nodes other nodes' requests can go through: watched
// members of the latest committed epoch that answered directly.
func (c *collected) proxies() []model.Baseboard {
	var out []model.Baseboard
	lc := c.view.LatestCommitted
	for _, b := range c.watched {
		o := c.nodes[b]
		if o.Reached() && o.Via == model.TQViaDirect && lc != nil && lc.IsMember(b) {
			out = append(out, b)
		}
	}
	return out
}

func (t *Task) sled(addr string) (client.SledAgent, error) {
	return client.NewSledAgent("https://"+addr, t.http)
}

func (t *Task) status(ctx context.Context, addr string, dest *api.Baseboard) (api.TQStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.RequestTimeout)
	defer cancel()
	sc, err := t.sled(addr)
	if err != nil {
		return api.TQStatus{}, err
	}
	return sc.TQStatus(ctx, dest)
}

// statuses are the observations to record.
func (c *collected) statuses() []model.TQNodeStatus {
	out := make([]model.TQNodeStatus, 0, len(c.watched))
	for _, b := range c.watched {
		o := c.nodes[b]
		s := model.TQNodeStatus{Baseboard: b, Via: o.Via, Error: o.Error}
		if o.Status != nil {
			s.Error = ""
			s.Seen = nodeView(o.Status)
		}
		out = append(out, s)
	}
	return out
}

// nodeView is what Nexus keeps of a node's status.
func nodeView(st *api.TQStatus) *model.TQNodeView {
	v := &model.TQNodeView{LatestCommittedEpoch: st.LatestCommittedEpoch, HasLrtq: st.HasLrtq,
		CoordinatingEpoch: st.Coordination.Epoch, CoordinationState: st.Coordination.State,
		ConnectedPeers: []model.Baseboard{}, Alarms: []model.TQAlarm{}, LedgerGeneration: st.LedgerGeneration,
		Stopped: st.Stopped, StoppedReason: st.StoppedReason, StorageLock: st.StorageLock, StorageLockReason: st.StorageLockReason}
	if st.LatestConfiguration != nil {
		v.LatestConfigEpoch = st.LatestConfiguration.Epoch
	}
	if x := st.Expunged; x != nil {
		v.Expunged = &model.TQExpunged{Epoch: x.Epoch, From: model.Baseboard{Part: x.From.Part, Serial: x.From.Serial}}
	}
	for _, p := range st.ConnectedPeers {
		v.ConnectedPeers = append(v.ConnectedPeers, model.Baseboard{Part: p.Part, Serial: p.Serial})
	}
	for _, a := range st.Alarms {
		al := model.TQAlarm{Kind: a.Kind, Epoch: a.Epoch, Detail: a.Detail, Time: a.Time}
		if a.Peer != nil {
			p := model.Baseboard{Part: a.Peer.Part, Serial: a.Peer.Serial}
			al.Peer = &p
		}
		v.Alarms = append(v.Alarms, al)
	}
	return v
}

func (c *collected) summarise(st *Status) {
	st.Nodes = len(c.watched)
	for _, b := range c.watched {
		o := c.nodes[b]
		if o.Reached() {
			st.Reached++
			st.Alarms += len(o.Status.Alarms)
		} else {
			st.Unreachable = append(st.Unreachable, fmt.Sprintf("%s: %s", b, o.Error))
		}
	}
}

// execute carries the plan out.
func (t *Task) execute(ctx context.Context, log zerolog.Logger, c *collected, p Plan, st *Status, run *Counters) error {
	a := t.cfg.App
	moved := func(err error) bool {
		if errors.Is(err, app.ErrTrustQuorumMovedOn) {
			run.Fenced++
			st.MovedOn = err.Error()
			log.Info().Err(err).Uint64("epoch", p.Epoch).Msg("another Nexus moved the trust-quorum epoch on first")
			return true
		}
		return false
	}
	abort := func(cause, reason string) error {
		retry, err := a.AbortAndRetryTrustQuorum(ctx, p.Epoch, reason, t.cfg.MaxAttempts)
		if err != nil {
			if moved(err) {
				return nil
			}
			return fmt.Errorf("abort epoch %d: %w", p.Epoch, err)
		}
		run.Aborts++
		t.metrics.aborts.WithLabelValues(cause).Inc()
		what := fmt.Sprintf("aborted epoch %d (%s)", p.Epoch, reason)
		if retry != nil {
			run.Retries++
			t.metrics.retries.Inc()
			what += fmt.Sprintf("; retrying as epoch %d, attempt %d, coordinator %s", retry.Epoch, retry.Attempt, retry.Coordinator)
		}
		st.Did = append(st.Did, what)
		return nil
	}
	for _, rp := range p.Removed {
		t.tellRemoved(ctx, log, rp, st)
	}
	for _, sp := range p.Starts {
		t.startSledAgent(ctx, log, sp, st, run)
	}
	if c.view.Active == nil {
		return nil
	}
	if p.Abort != nil {
		return abort(p.Abort.Cause, p.Abort.Reason)
	}
	if r := p.Reconfigure; r != nil {
		cs, err := t.reconfigure(ctx, r)
		run.Reconfigures++
		switch {
		case refusal(err):
			return abort("refused", fmt.Sprintf("coordinator %s refused epoch %d: %v", r.Coordinator, p.Epoch, err))
		case err != nil:
			st.Did = append(st.Did, fmt.Sprintf("asked %s to coordinate epoch %d: %v", r.Coordinator, p.Epoch, err))
			return nil
		case r.LostIfNotCoordinating && (cs.Epoch != p.Epoch || cs.State == "not_coordinating"):
			return abort("coordinator_lost", fmt.Sprintf("coordinator %s prepared epoch %d before a restart and no longer coordinates it",
				r.Coordinator, p.Epoch))
		}
		st.Did = append(st.Did, fmt.Sprintf("asked %s to coordinate epoch %d (%s)", r.Coordinator, p.Epoch, cs.State))
		log.Info().Uint64("epoch", p.Epoch).Str("coordinator", r.Coordinator.String()).Str("state", cs.State).
			Msg("trust-quorum coordinator asked")
	}
	wire := WireConfiguration(c.view.Rack.ID, c.view.Active)
	if pr := p.Prepares; pr != nil {
		res, err := a.RecordTrustQuorumPrepares(ctx, p.Epoch, prepareReport(pr))
		switch {
		case moved(err):
			return nil
		case fault.CodeOf(err) == api.CodeMismatchedConfiguration:
			// A coordinator reporting a configuration that is not the
			// epoch's is broken: nothing it prepared can be committed.
			return abort("refused", err.Error())
		case err != nil:
			return fmt.Errorf("record epoch %d's prepares: %w", p.Epoch, err)
		}
		run.PrepareAcks += res.NewAcks
		st.Did = append(st.Did, fmt.Sprintf("recorded %d new prepare acks of epoch %d (%d of %d)", res.NewAcks, p.Epoch, res.Acked,
			c.view.Active.Threshold+c.view.Active.CommitCrashTolerance))
		if !res.Committing {
			return nil
		}
		st.Did = append(st.Did, fmt.Sprintf("epoch %d is committing", p.Epoch))
		log.Info().Uint64("epoch", p.Epoch).Int("prepared", res.Acked).Msg("trust-quorum epoch committing")
		wire = pr.Configuration
	}
	if !p.Finish {
		return nil
	}
	acked := slices.Clone(p.Observed)
	for _, rec := range t.commit(ctx, log, c.view.Rack.ID, p, wire) {
		st.Commits = append(st.Commits, rec.CommitRecord)
		run.CommitsSent++
		if rec.acked {
			acked = append(acked, rec.member)
		}
	}
	res, err := a.RecordTrustQuorumCommits(ctx, p.Epoch, acked)
	if err != nil {
		if moved(err) {
			return nil
		}
		return fmt.Errorf("record epoch %d's commits: %w", p.Epoch, err)
	}
	run.CommitAcks += res.NewAcks
	if res.NewAcks > 0 {
		st.Did = append(st.Did, fmt.Sprintf("recorded %d new commit acks of epoch %d (%d of %d)", res.NewAcks, p.Epoch, res.Acked,
			len(c.view.Active.Members)))
	}
	if res.Committed {
		st.Did = append(st.Did, fmt.Sprintf("epoch %d is committed", p.Epoch))
		log.Info().Uint64("epoch", p.Epoch).Msg("trust-quorum epoch committed")
	}
	return nil
}

// tellRemoved asks a removed sled to load the rack secret: the members it
// asks answer that it is expunged. Its next status shows whether it knows.
func (t *Task) tellRemoved(ctx context.Context, log zerolog.Logger, rp RemovedPlan, st *Status) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.RequestTimeout)
	defer cancel()
	sc, err := t.sled(rp.Address)
	if err == nil {
		_, err = sc.TQLoadRackSecret(ctx)
	}
	switch {
	case client.ErrorCode(err) == api.CodeExpunged:
		st.Did = append(st.Did, fmt.Sprintf("removed sled %s knows it is expunged", rp.Sled))
	case err != nil:
		log.Warn().Err(err).Str("sled", rp.Sled.String()).Msg("could not tell a removed sled")
		st.Did = append(st.Did, fmt.Sprintf("told removed sled %s: %v", rp.Sled, err))
	default:
		st.Did = append(st.Did, fmt.Sprintf("told removed sled %s to ask the members", rp.Sled))
	}
}

// startSledAgent asks a member with no sled agent, through another
// member's proxy, to start it. The member unlocks its data disks first
// (gathering K shares), so the answer may take a moment; a member still
// locked when the request times out is asked again next run.
func (t *Task) startSledAgent(ctx context.Context, log zerolog.Logger, sp StartPlan, st *Status, run *Counters) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.RequestTimeout)
	defer cancel()
	sc, err := t.sled(sp.Address)
	var res api.TQStartSledAgentResult
	if err == nil {
		res, err = sc.TQStartSledAgent(ctx, api.Baseboard{Part: sp.Sled.Part, Serial: sp.Sled.Serial})
	}
	switch {
	case err != nil:
		log.Warn().Err(err).Str("sled", sp.Sled.String()).Str("via", sp.Via.String()).Msg("could not start a member's sled agent")
		st.Did = append(st.Did, fmt.Sprintf("asked %s (through %s) to start its sled agent: %v", sp.Sled, sp.Via, err))
	case res.Started:
		run.SledAgentsStarted++
		log.Info().Str("sled", sp.Sled.String()).Str("via", sp.Via.String()).Msg("a member's sled agent started")
		st.Did = append(st.Did, fmt.Sprintf("started the sled agent of %s (through %s)", sp.Sled, sp.Via))
	default:
		st.Did = append(st.Did, fmt.Sprintf("asked %s (through %s) to start its sled agent: it runs already", sp.Sled, sp.Via))
	}
}

func (t *Task) reconfigure(ctx context.Context, r *ReconfigurePlan) (api.TQCoordinatorStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.RequestTimeout)
	defer cancel()
	sc, err := t.sled(r.Address)
	if err != nil {
		return api.TQCoordinatorStatus{}, err
	}
	if r.LrtqUpgrade != nil {
		return sc.TQLrtqUpgrade(ctx, *r.LrtqUpgrade)
	}
	return sc.TQReconfigure(ctx, *r.Reconfigure)
}

// refusal reports whether a sled refused a reconfiguration for good: a
// 4xx that asking again will not change (a busy or restarting sled
// answers 503, a rebuilding one rebuild_in_progress).
func refusal(err error) bool {
	code := client.StatusCode(err)
	return code >= 400 && code < 500 && client.ErrorCode(err) != api.CodeRebuildInProgress
}

func prepareReport(pr *PreparesPlan) app.TQPrepareReport {
	cfg := pr.Configuration
	r := app.TQPrepareReport{Coordinator: model.Baseboard{Part: cfg.Coordinator.Part, Serial: cfg.Coordinator.Serial},
		Threshold: int(cfg.Threshold), Shares: map[model.Baseboard]app.TQShare{}, Acked: pr.Acked}
	for _, m := range cfg.Members {
		r.Shares[model.Baseboard{Part: m.Part, Serial: m.Serial}] = app.TQShare{Digest: hexBytes(m.ShareDigest), X: int(m.X)}
	}
	if e := cfg.EncryptedRackSecrets; e != nil {
		r.Salt, r.Ciphertext = e.Salt, e.Ciphertext
	}
	return r
}

type commitResult struct {
	CommitRecord
	member model.Baseboard
	acked  bool
}

// commit sends the plan's commits, concurrently.
func (t *Task) commit(ctx context.Context, log zerolog.Logger, rack uuid.UUID, p Plan, cfg *api.TQConfiguration) []commitResult {
	out := make([]commitResult, len(p.Commits))
	var wg sync.WaitGroup
	sem := make(chan struct{}, t.cfg.Concurrency)
	for i, cp := range p.Commits {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i] = t.commitOne(ctx, log, rack, p.Epoch, cp, cfg)
		}()
	}
	wg.Wait()
	return out
}

func (t *Task) commitOne(ctx context.Context, log zerolog.Logger, rack uuid.UUID, epoch uint64, cp CommitPlan, cfg *api.TQConfiguration) commitResult {
	res := commitResult{member: cp.Member, CommitRecord: CommitRecord{Member: cp.Member.String(), Op: cp.Op}}
	var dest *api.Baseboard
	if cp.Via != nil {
		res.Via = cp.Via.String()
		dest = &api.Baseboard{Part: cp.Member.Part, Serial: cp.Member.Serial}
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.RequestTimeout)
	defer cancel()
	sc, err := t.sled(cp.Address)
	var cr api.TQCommitResult
	if err == nil && cp.Op == OpCommit {
		cr, err = sc.TQCommit(ctx, api.TQCommitRequest{Destination: dest, RackID: rack, Epoch: epoch})
		if client.ErrorCode(err) == api.CodeNotPrepared {
			// It never persisted the prepare after all: it rebuilds its
			// share from other members instead.
			res.Op = OpCommit + " → " + OpPrepareAndCommit
			cr, err = sc.TQPrepareAndCommit(ctx, api.TQPrepareAndCommitRequest{Destination: dest, Configuration: cfg})
		}
	} else if err == nil {
		cr, err = sc.TQPrepareAndCommit(ctx, api.TQPrepareAndCommitRequest{Destination: dest, Configuration: cfg})
	}
	switch {
	case err != nil:
		res.Outcome = err.Error()
		log.Warn().Err(err).Uint64("epoch", epoch).Str("member", cp.Member.String()).Str("via", res.Via).
			Str("op", res.Op).Msg("trust-quorum commit failed")
	default:
		res.Outcome = cr.Status
		// Stale: the member committed a newer epoch, so this one too.
		res.acked = cr.Status == "committed" || cr.Status == "stale"
	}
	return res
}

// hexBytes decodes a share digest; a malformed one decodes to nothing,
// which the application layer refuses as a malformed configuration.
func hexBytes(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil
	}
	return b
}

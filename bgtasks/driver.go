package bgtasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/internal/reqid"
)

// Errors the driver returns.
var (
	// ErrUnknownTask: no task is registered under the name.
	ErrUnknownTask = errors.New("unknown background task")
	// ErrInvalidRegistration: Register or Start refused the task set.
	ErrInvalidRegistration = errors.New("invalid background task registration")
	// ErrShutdownTimeout: Stop gave up waiting for running activations.
	ErrShutdownTimeout = errors.New("background tasks still running at shutdown")
)

// DefaultHistory is how many completed activations a task keeps.
const DefaultHistory = 32

// DefaultRetry paces a task after an activation that failed or asked to
// retry later: the first retry within 50-100 ms (a stale read usually
// resolves at once), each further one in a row waiting twice as long, up
// to the task's period, which is the Max of every task's schedule
// whatever the policy says. At least half of each delay is always waited,
// so a persistent failure costs at most twice the activations the
// ceilings alone would allow.
var DefaultRetry = backoff.Policy{Initial: 100 * time.Millisecond, Jitter: 0.5}

// Registration describes a task to the driver.
type Registration struct {
	// Name is stable snake_case; it appears in URLs, metrics and the
	// database's enable switch.
	Name string
	// Description is one line for operators.
	Description string
	// Period is the default time between periodic activations; config may
	// override it per task (Options.Periods).
	Period time.Duration
	Task   Task
	// DependsOn names tasks whose activations, when they call
	// MarkChanged, activate this task.
	DependsOn []string
}

// EnabledFunc reports whether a task is switched on. It is asked at the
// start of every activation, so a switch flipped in the database reaches
// every Nexus by their next activation.
type EnabledFunc func(ctx context.Context, name string) (bool, error)

// Options configure a Driver; the zero value runs with the wall clock,
// every task enabled, no metrics and a discarded log.
type Options struct {
	Log   zerolog.Logger
	Clock clock.Clock
	// Enabled, when nil, treats every task as enabled.
	Enabled EnabledFunc
	// Periods overrides registered periods by task name. Start fails when
	// it names a task that is not registered (a typo in config).
	Periods map[string]time.Duration
	// Metrics, when set, records every activation.
	Metrics *Metrics
	// History is how many activations each task keeps (DefaultHistory).
	History int
	// Retry is the back-off after failed or stalled activations
	// (DefaultRetry when Initial is zero); its Max is replaced by each
	// task's period.
	Retry backoff.Policy
	// Rand draws the back-off's jitter (nil: seeded from the operating
	// system), so tests can replay it.
	Rand rand.Source
}

// Driver runs registered tasks: once at start, then on their period, on
// explicit request and when a task they depend on changes something. Each
// task runs at most one activation at a time; triggers that arrive while
// one is running coalesce into a single follow-up activation.
type Driver struct {
	log     zerolog.Logger
	clock   clock.Clock
	enabled EnabledFunc
	periods map[string]time.Duration
	metrics *Metrics
	history int
	retry   backoff.Policy
	rnd     *backoff.Rand

	mu      sync.Mutex
	tasks   map[string]*runner
	order   []*runner
	started bool
	cancel  context.CancelFunc
	// wg counts task loops and running activations.
	wg sync.WaitGroup
}

// NewDriver returns a driver with no tasks.
func NewDriver(opts Options) *Driver {
	if opts.Clock == nil {
		opts.Clock = clock.Real()
	}
	if opts.Enabled == nil {
		opts.Enabled = func(context.Context, string) (bool, error) { return true, nil }
	}
	if opts.History <= 0 {
		opts.History = DefaultHistory
	}
	if opts.Retry.Initial <= 0 {
		opts.Retry = DefaultRetry
	}
	return &Driver{log: opts.Log, clock: opts.Clock, enabled: opts.Enabled, periods: opts.Periods,
		metrics: opts.Metrics, history: opts.History, retry: opts.Retry, rnd: backoff.NewRand(opts.Rand),
		tasks: map[string]*runner{}}
}

var validName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// ValidName reports whether name can name a task.
func ValidName(name string) bool { return validName.MatchString(name) }

// Register adds a task. It must be called before Start.
func (d *Driver) Register(reg Registration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.started:
		return fmt.Errorf("%w: %s: the driver has already started", ErrInvalidRegistration, reg.Name)
	case !ValidName(reg.Name):
		return fmt.Errorf("%w: name %q must be snake_case (a-z, 0-9, _), starting with a letter", ErrInvalidRegistration, reg.Name)
	case d.tasks[reg.Name] != nil:
		return fmt.Errorf("%w: %s is registered twice", ErrInvalidRegistration, reg.Name)
	case reg.Task == nil:
		return fmt.Errorf("%w: %s has no task", ErrInvalidRegistration, reg.Name)
	case strings.TrimSpace(reg.Description) == "":
		return fmt.Errorf("%w: %s needs a description", ErrInvalidRegistration, reg.Name)
	}
	if p, ok := d.periods[reg.Name]; ok {
		reg.Period = p
	}
	if reg.Period <= 0 {
		return fmt.Errorf("%w: %s needs a positive period, got %s", ErrInvalidRegistration, reg.Name, reg.Period)
	}
	reg.DependsOn = slices.Clone(reg.DependsOn)
	policy := d.retry
	policy.Max = reg.Period
	r := &runner{d: d, reg: reg, wake: make(chan struct{}, 1), finished: make(chan finish, 1),
		completed: make(chan struct{}), enabled: true, retry: backoff.New(policy, d.rnd)}
	d.tasks[reg.Name] = r
	d.order = append(d.order, r)
	if d.metrics != nil {
		d.metrics.known(reg.Name)
	}
	return nil
}

// Check validates the whole task set: configured periods name registered
// tasks, dependencies exist and form no cycle. Start calls it; Nexus calls
// it early so that bad config stops start-up before anything listens.
func (d *Driver) Check() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.checkLocked()
}

func (d *Driver) checkLocked() error {
	var unknown []string
	for name := range d.periods {
		if d.tasks[name] == nil {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("%w: a period is configured for %s, but no such task exists (tasks: %s)",
			ErrInvalidRegistration, strings.Join(unknown, ", "), strings.Join(d.namesLocked(), ", "))
	}
	for _, r := range d.order {
		for _, dep := range r.reg.DependsOn {
			if d.tasks[dep] == nil {
				return fmt.Errorf("%w: %s depends on %q, which is not registered", ErrInvalidRegistration, r.reg.Name, dep)
			}
		}
	}
	// A cycle of dependencies would let tasks that keep changing things
	// activate each other forever.
	const (
		unvisited = iota
		visiting
		done
	)
	mark := map[string]int{}
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		switch mark[name] {
		case visiting:
			return fmt.Errorf("%w: dependency cycle %s", ErrInvalidRegistration, strings.Join(append(path, name), " -> "))
		case done:
			return nil
		}
		mark[name] = visiting
		for _, dep := range d.tasks[name].reg.DependsOn {
			if err := visit(dep, append(path, name)); err != nil {
				return err
			}
		}
		mark[name] = done
		return nil
	}
	for _, r := range d.order {
		if err := visit(r.reg.Name, nil); err != nil {
			return err
		}
	}
	return nil
}

// Start checks the task set, links dependencies, and starts every task
// with a startup activation. The tasks run until ctx is done or Stop.
func (d *Driver) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		return errors.New("bgtasks: driver already started")
	}
	if err := d.checkLocked(); err != nil {
		return err
	}
	for _, r := range d.order {
		for _, dep := range r.reg.DependsOn {
			up := d.tasks[dep]
			up.dependents = append(up.dependents, r)
		}
	}
	ctx, d.cancel = context.WithCancel(ctx)
	d.started = true
	for _, r := range d.order {
		r.trigger(trigger{reason: ReasonStartup})
		d.wg.Add(1)
		go r.loop(ctx)
	}
	d.log.Info().Strs("tasks", d.namesLocked()).Msg("background tasks started")
	return nil
}

// Stop cancels every task's context and waits up to timeout for running
// activations to return. It reports which tasks were still running when it
// gave up; their goroutines finish on their own later.
func (d *Driver) Stop(timeout time.Duration) error {
	d.mu.Lock()
	cancel := d.cancel
	d.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		d.log.Info().Msg("background tasks stopped")
		return nil
	case <-t.C:
	}
	var running []string
	for _, st := range d.Tasks() {
		if st.Current.State == api.TaskStateRunning {
			running = append(running, st.Name)
		}
	}
	err := fmt.Errorf("%w after %s: %s", ErrShutdownTimeout, timeout, strings.Join(running, ", "))
	d.log.Warn().Err(err).Msg("background tasks did not stop in time")
	return err
}

// Names lists the registered tasks in registration order.
func (d *Driver) Names() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.namesLocked()
}

func (d *Driver) namesLocked() []string {
	names := make([]string, len(d.order))
	for i, r := range d.order {
		names[i] = r.reg.Name
	}
	return names
}

func (d *Driver) lookup(name string) (*runner, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.tasks[name]
	if r == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTask, name)
	}
	return r, nil
}

// Activate asks for an explicit activation of every named task on behalf
// of requester. It activates nothing when any name is unknown, and then
// returns an error wrapping ErrUnknownTask that names them all. A task
// named more than once is activated once. An activation asked for while
// the task runs follows that run; it does not move the task's period
// timer.
func (d *Driver) Activate(requester string, names ...string) error {
	d.mu.Lock()
	runners := make([]*runner, 0, len(names))
	var unknown []string
	for _, n := range names {
		if r := d.tasks[n]; r != nil {
			// A name given twice is one activation: triggering it twice
			// would start a second run whenever the task's loop took
			// the first trigger before the second arrived.
			if !slices.Contains(runners, r) {
				runners = append(runners, r)
			}
		} else {
			unknown = append(unknown, fmt.Sprintf("%q", n))
		}
	}
	d.mu.Unlock()
	if len(unknown) > 0 {
		return fmt.Errorf("%w: %s", ErrUnknownTask, strings.Join(unknown, ", "))
	}
	for _, r := range runners {
		r.trigger(trigger{reason: ReasonExplicit, requester: requester})
	}
	return nil
}

// Task returns one task's status, with its history when withHistory.
func (d *Driver) Task(name string, withHistory bool) (api.BackgroundTask, error) {
	r, err := d.lookup(name)
	if err != nil {
		return api.BackgroundTask{}, err
	}
	return r.snapshot(withHistory), nil
}

// Tasks returns every task's status without history, in registration
// order.
func (d *Driver) Tasks() []api.BackgroundTask {
	d.mu.Lock()
	order := slices.Clone(d.order)
	d.mu.Unlock()
	out := make([]api.BackgroundTask, len(order))
	for i, r := range order {
		out[i] = r.snapshot(false)
	}
	return out
}

// WaitCompleted blocks until the named task has completed activation
// iteration (or a later one), or ctx is done.
func (d *Driver) WaitCompleted(ctx context.Context, name string, iteration uint64) error {
	r, err := d.lookup(name)
	if err != nil {
		return err
	}
	for {
		r.mu.Lock()
		done, ch := r.lastCompleted >= iteration, r.completed
		r.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s iteration %d: %w", name, iteration, ctx.Err())
		case <-ch:
		}
	}
}

// trigger is a request for an activation.
type trigger struct {
	reason    Reason
	requester string
}

// finish is what a finished activation tells the task's loop.
type finish struct {
	// followUp is the follow-up the task asked for (0: none).
	followUp time.Duration
	// backOff is set after a failed activation, or one that asked to
	// retry later.
	backOff bool
}

// runner is one task's loop and status.
type runner struct {
	d          *Driver
	reg        Registration
	dependents []*runner // set by Start, read-only afterwards
	wake       chan struct{}
	finished   chan finish // one per finished activation
	// retry is the back-off schedule; only the loop touches it.
	retry *backoff.Schedule

	mu            sync.Mutex
	pending       *trigger
	coalesced     uint64
	iteration     uint64 // last started
	lastCompleted uint64
	completed     chan struct{} // closed and replaced at each completion
	running       *Activation
	enabled       bool
	last          *api.TaskActivation
	history       []api.TaskActivation // oldest first, at most d.history
	status        json.RawMessage
	statusIter    uint64
	activations   uint64
	errors        uint64
	consecutive   uint64
	// holdUntil is when the back-off after a failed or stalled activation
	// ends (zero: no back-off); nothing starts before it.
	holdUntil time.Time
}

// trigger records a request for an activation and wakes the loop. At most
// one trigger waits; later ones fold into it, so a burst of requests while
// the task runs becomes one follow-up activation with the first one's
// reason.
func (r *runner) trigger(t trigger) {
	r.mu.Lock()
	if r.pending == nil {
		r.pending = &t
	} else {
		r.coalesced++
		if r.d.metrics != nil {
			r.d.metrics.coalesced.WithLabelValues(r.reg.Name).Inc()
		}
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// loop owns the period timer and starts activations. Activations run in
// their own goroutine so that the timer keeps ticking (and coalescing)
// while one runs.
//
// After an activation that failed or asked to retry later, the loop holds
// every trigger until the back-off has passed and then starts a retry: no
// trigger, however often it comes (an operator, an event, the task's own
// follow-ups), reruns a failing task sooner than the back-off allows.
func (r *runner) loop(ctx context.Context) {
	defer r.d.wg.Done()
	timer := r.d.clock.NewTimer(r.reg.Period)
	defer timer.Stop()
	// followUp fires the follow-up an activation asked for, and hold the
	// end of a back-off; both are separate from the period timer so that
	// they do not move the schedule.
	var followUp, hold clock.Timer
	var followC, holdC <-chan time.Time
	defer func() {
		for _, t := range []clock.Timer{followUp, hold} {
			if t != nil {
				t.Stop()
			}
		}
	}()
	arm := func(t *clock.Timer, d time.Duration) <-chan time.Time {
		if *t == nil {
			*t = r.d.clock.NewTimer(d)
		} else {
			(*t).Reset(d)
		}
		return (*t).C()
	}
	busy, held := false, false
	for {
		if !busy && !held {
			if act, ok := r.begin(); ok {
				busy = true
				r.d.wg.Add(1)
				go r.run(ctx, act)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-timer.C():
			// Re-armed from when it fired, never from an explicit
			// activation: those do not move the schedule.
			timer.Reset(r.reg.Period)
			r.trigger(trigger{reason: ReasonPeriodic})
		case <-r.wake:
		case f := <-r.finished:
			busy = false
			if f.backOff {
				d := r.retry.NextBackOff()
				held = true
				r.setHold(r.d.clock.Now().Add(d))
				holdC = arm(&hold, d)
				// The retry stands for any follow-up asked for.
				followC = nil
				if followUp != nil {
					followUp.Stop()
				}
				continue
			}
			r.retry.Reset()
			if f.followUp > 0 {
				followC = arm(&followUp, f.followUp)
			}
		case <-followC:
			followC = nil
			r.trigger(trigger{reason: ReasonFollowUp, requester: r.reg.Name})
		case <-holdC:
			holdC, held = nil, false
			r.setHold(time.Time{})
			r.trigger(trigger{reason: ReasonRetry, requester: r.reg.Name})
		}
	}
}

// setHold records when the current back-off ends, for the status.
func (r *runner) setHold(until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holdUntil = until
}

// begin turns the pending trigger, if any, into a running activation.
func (r *runner) begin() (Activation, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		return Activation{}, false
	}
	t := *r.pending
	r.pending = nil
	r.iteration++
	act := NewActivation(r.iteration, t.reason, t.requester, reqid.New(), r.d.clock.Now())
	r.running = &act
	if r.d.metrics != nil {
		r.d.metrics.running.WithLabelValues(r.reg.Name).Set(1)
	}
	return act, true
}

// disabledStatus is what a switched-off task reports.
type disabledStatus struct {
	Disabled string `json:"disabled"`
}

func (r *runner) run(ctx context.Context, act Activation) {
	defer r.d.wg.Done()
	log := r.d.log.With().Str("task", r.reg.Name).Str("run_id", act.RunID).Uint64("iteration", act.Iteration).
		Str("reason", string(act.Reason)).Logger()
	ctx = log.WithContext(reqid.With(ctx, act.RunID))

	outcome := api.TaskOutcomeOK
	var status any
	ran := false
	enabled, err := r.isEnabled(ctx)
	switch {
	case err != nil:
		err = fmt.Errorf("could not tell whether the task is enabled: %w", err)
		// Not knowing, the last value seen stays.
		enabled = r.lastEnabled()
	case !enabled:
		outcome = api.TaskOutcomeDisabled
		status = disabledStatus{Disabled: "this task is switched off; enable it with `rackctl bgtasks enable " +
			r.reg.Name + "`"}
	default:
		ran = true
		status, err = r.activate(ctx, act, log)
	}
	end := r.d.clock.Now()
	if err != nil {
		outcome = api.TaskOutcomeError
	}
	rec := api.TaskActivation{Iteration: act.Iteration, Reason: string(act.Reason), Requester: act.Requester,
		RunID: act.RunID, Start: act.Start, DurationMS: float64(end.Sub(act.Start)) / float64(time.Millisecond),
		Outcome: outcome, Changed: act.Changed()}
	if status != nil {
		b, merr := json.Marshal(status)
		if merr != nil {
			err = errors.Join(err, fmt.Errorf("the task's status cannot be shown as JSON: %w", merr))
			rec.Outcome = api.TaskOutcomeError
		} else {
			rec.Status = b
		}
	}
	if err != nil {
		rec.Error = err.Error()
	}
	ev := log.Debug()
	switch {
	case err != nil && ctx.Err() != nil:
		// Cut short by shutdown: expected, not worth a warning.
		ev = log.Info().Err(err)
	case err != nil:
		ev = log.Warn().Err(err)
	}
	ev.Str("outcome", rec.Outcome).Float64("duration_ms", rec.DurationMS).Bool("changed", rec.Changed).
		Msg("background task activation finished")
	// Dependents are triggered before the activation is recorded, so that
	// whoever sees it completed (WaitCompleted) also sees their triggers.
	if rec.Changed && ctx.Err() == nil {
		for _, dep := range r.dependents {
			dep.trigger(trigger{reason: ReasonDependency, requester: r.reg.Name})
		}
	}
	if r.d.metrics != nil {
		r.d.metrics.observe(r.reg.Name, rec.Outcome, end.Sub(act.Start))
	}
	r.record(rec, ran, enabled)
	// The loop may already have returned at shutdown; finished has room
	// for this one signal because only one activation runs at a time.
	var f finish
	if ctx.Err() == nil {
		f.backOff = rec.Outcome == api.TaskOutcomeError || (ran && act.Retrying())
		if ran {
			f.followUp = act.Requeue()
		}
	}
	r.finished <- f
}

func (r *runner) lastEnabled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.enabled
}

func (r *runner) isEnabled(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return r.d.enabled(ctx, r.reg.Name)
}

// activate runs the task, turning a panic into that activation's error so
// that neither the task nor Nexus stops.
func (r *runner) activate(ctx context.Context, act Activation, log zerolog.Logger) (status any, err error) {
	defer func() {
		if v := recover(); v != nil {
			log.Error().Str("panic", fmt.Sprint(v)).Bytes("stack", debug.Stack()).Msg("background task panicked")
			status, err = nil, fmt.Errorf("task panicked: %v", v)
		}
	}()
	return r.reg.Task.Activate(ctx, act)
}

// record stores a completed activation. ran says whether the task itself
// ran (its status then replaces the task's reported status).
func (r *runner) record(rec api.TaskActivation, ran, enabled bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running = nil
	r.enabled = enabled
	r.activations++
	switch rec.Outcome {
	case api.TaskOutcomeError:
		r.errors++
		r.consecutive++
	case api.TaskOutcomeOK:
		r.consecutive = 0
	}
	if ran {
		r.status, r.statusIter = rec.Status, rec.Iteration
	}
	r.last = &rec
	if len(r.history) == r.d.history {
		copy(r.history, r.history[1:])
		r.history = r.history[:len(r.history)-1]
	}
	r.history = append(r.history, rec)
	r.lastCompleted = rec.Iteration
	close(r.completed)
	r.completed = make(chan struct{})
	if r.d.metrics != nil {
		r.d.metrics.running.WithLabelValues(r.reg.Name).Set(0)
	}
}

func (r *runner) snapshot(withHistory bool) api.BackgroundTask {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := api.BackgroundTask{Name: r.reg.Name, Description: r.reg.Description,
		PeriodSeconds: r.reg.Period.Seconds(), DependsOn: slices.Clone(r.reg.DependsOn), Enabled: r.enabled,
		Current: api.TaskCurrent{State: api.TaskStateIdle}, Status: r.status, StatusIteration: r.statusIter,
		Activations: r.activations, Errors: r.errors, ConsecutiveErrors: r.consecutive, Coalesced: r.coalesced}
	if t.DependsOn == nil {
		t.DependsOn = []string{}
	}
	if a := r.running; a != nil {
		since := a.Start
		t.Current = api.TaskCurrent{State: api.TaskStateRunning, Since: &since, Reason: string(a.Reason),
			Requester: a.Requester, Iteration: a.Iteration, RunID: a.RunID}
	}
	if r.pending != nil {
		t.Current.Pending = string(r.pending.reason)
	}
	if !r.holdUntil.IsZero() {
		until := r.holdUntil
		t.Current.BackoffUntil = &until
	}
	if r.last != nil {
		last := *r.last
		t.LastActivation = &last
	}
	if withHistory {
		t.History = make([]api.TaskActivation, len(r.history))
		for i, h := range r.history {
			t.History[len(r.history)-1-i] = h
		}
	}
	return t
}

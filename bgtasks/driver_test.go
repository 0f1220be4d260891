package bgtasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/clock"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func newDriver(t *testing.T, clk clock.Clock, opts bgtasks.Options) *bgtasks.Driver {
	t.Helper()
	opts.Clock = clk
	opts.Log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	d := bgtasks.NewDriver(opts)
	t.Cleanup(func() {
		if err := d.Stop(5 * time.Second); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return d
}

func register(t *testing.T, d *bgtasks.Driver, name string, period time.Duration, fn bgtasks.TaskFunc, deps ...string) {
	t.Helper()
	err := d.Register(bgtasks.Registration{Name: name, Description: "test task " + name, Period: period,
		Task: fn, DependsOn: deps})
	if err != nil {
		t.Fatal(err)
	}
}

func start(t *testing.T, d *bgtasks.Driver) {
	t.Helper()
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func wait(t *testing.T, d *bgtasks.Driver, name string, iteration uint64) api.BackgroundTask {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.WaitCompleted(ctx, name, iteration); err != nil {
		t.Fatal(err)
	}
	task, err := d.Task(name, true)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// activation returns iteration's record from the task's history.
func activation(t *testing.T, task api.BackgroundTask, iteration uint64) api.TaskActivation {
	t.Helper()
	a, ok := task.HistoryEntry(iteration)
	if !ok {
		t.Fatalf("%s has no iteration %d in its history %+v", task.Name, iteration, task.History)
	}
	return a
}

// waitArmed waits until n period timers are armed, i.e. every task loop
// has taken the last firing and re-armed.
func waitArmed(t *testing.T, c *clock.Fake, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Waiters() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d timers armed, want %d", c.Waiters(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func noop(context.Context, bgtasks.Activation) (any, error) { return map[string]int{"ok": 1}, nil }

func TestStartupThenPeriodic(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	d := newDriver(t, clk, bgtasks.Options{})
	register(t, d, "ticker", 10*time.Second, noop)
	start(t, d)

	task := wait(t, d, "ticker", 1)
	if a := activation(t, task, 1); a.Reason != "startup" || a.Outcome != api.TaskOutcomeOK || !a.Start.Equal(t0) ||
		string(a.Status) != `{"ok":1}` || a.RunID == "" {
		t.Fatalf("startup activation: %+v", a)
	}
	waitArmed(t, clk, 1)
	clk.Advance(10 * time.Second)
	task = wait(t, d, "ticker", 2)
	if a := activation(t, task, 2); a.Reason != "periodic" || !a.Start.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("periodic activation: %+v", a)
	}
	waitArmed(t, clk, 1)
	clk.Advance(10 * time.Second)
	task = wait(t, d, "ticker", 3)
	if a := activation(t, task, 3); a.Reason != "periodic" || !a.Start.Equal(t0.Add(20*time.Second)) {
		t.Fatalf("second periodic activation: %+v", a)
	}
	if task.Activations != 3 || task.Current.State != api.TaskStateIdle || task.PeriodSeconds != 10 ||
		string(task.Status) != `{"ok":1}` || task.StatusIteration != 3 {
		t.Fatalf("status after three runs: %+v", task)
	}
}

func TestExplicitActivationDoesNotResetTimer(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	d := newDriver(t, clk, bgtasks.Options{})
	register(t, d, "ticker", 10*time.Second, noop)
	start(t, d)
	wait(t, d, "ticker", 1)
	waitArmed(t, clk, 1)

	clk.Advance(6 * time.Second)
	if err := d.Activate("operator-1", "ticker"); err != nil {
		t.Fatal(err)
	}
	task := wait(t, d, "ticker", 2)
	if a := activation(t, task, 2); a.Reason != "explicit" || a.Requester != "operator-1" ||
		!a.Start.Equal(t0.Add(6*time.Second)) {
		t.Fatalf("explicit activation: %+v", a)
	}
	// The period still counts from start-up: 4 s more brings the periodic
	// activation. Had the explicit one re-armed the timer, nothing would
	// fire before t0+16s.
	clk.Advance(4 * time.Second)
	task = wait(t, d, "ticker", 3)
	if a := activation(t, task, 3); a.Reason != "periodic" || !a.Start.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("periodic activation after an explicit one: %+v", a)
	}
}

// blockingTask runs until released, counting how many of its activations
// overlap.
type blockingTask struct {
	started  chan bgtasks.Activation
	release  chan struct{}
	inFlight atomic.Int32
	maxSeen  atomic.Int32
}

func newBlockingTask() *blockingTask {
	return &blockingTask{started: make(chan bgtasks.Activation, 16), release: make(chan struct{})}
}

func (b *blockingTask) Activate(ctx context.Context, act bgtasks.Activation) (any, error) {
	n := b.inFlight.Add(1)
	defer b.inFlight.Add(-1)
	for {
		old := b.maxSeen.Load()
		if n <= old || b.maxSeen.CompareAndSwap(old, n) {
			break
		}
	}
	b.started <- act
	select {
	case <-b.release:
		return act.Requester, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (b *blockingTask) next(t *testing.T) bgtasks.Activation {
	t.Helper()
	select {
	case a := <-b.started:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("no activation started")
	}
	return bgtasks.Activation{}
}

func TestTriggersDuringARunCoalesce(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	d := newDriver(t, clk, bgtasks.Options{})
	task := newBlockingTask()
	register(t, d, "slow", 10*time.Second, task.Activate)
	start(t, d)

	if a := task.next(t); a.Iteration != 1 || a.Reason != bgtasks.ReasonStartup {
		t.Fatalf("first activation %+v", a)
	}
	for i := range 5 {
		if err := d.Activate(fmt.Sprintf("req-%d", i), "slow"); err != nil {
			t.Fatal(err)
		}
	}
	waitArmed(t, clk, 1)
	clk.Advance(10 * time.Second) // a periodic trigger, also mid-run
	waitArmed(t, clk, 1)
	st, _ := d.Task("slow", false)
	if st.Current.State != api.TaskStateRunning || st.Current.Iteration != 1 || st.Current.Reason != "startup" ||
		st.Current.Pending != "explicit" || st.Coalesced != 5 || st.Current.Since == nil {
		t.Fatalf("while running with triggers queued: %+v", st)
	}

	task.release <- struct{}{}
	// The six triggers make exactly one follow-up, with the first
	// trigger's reason and requester.
	if a := task.next(t); a.Iteration != 2 || a.Reason != bgtasks.ReasonExplicit || a.Requester != "req-0" {
		t.Fatalf("follow-up activation %+v", a)
	}
	task.release <- struct{}{}
	wait(t, d, "slow", 2)
	if err := d.Activate("late", "slow"); err != nil {
		t.Fatal(err)
	}
	// Had any trigger survived the follow-up, iteration 3 would be that one.
	if a := task.next(t); a.Iteration != 3 || a.Requester != "late" {
		t.Fatalf("activation after the follow-up %+v", a)
	}
	task.release <- struct{}{}
	final := wait(t, d, "slow", 3)
	if got := task.maxSeen.Load(); got != 1 {
		t.Fatalf("%d activations overlapped", got)
	}
	if final.Activations != 3 || activation(t, final, 2).Requester != "req-0" || string(final.Status) != `"late"` {
		t.Fatalf("final status %+v", final)
	}
}

func TestDependentRunsWhenUpstreamChanges(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	d := newDriver(t, clk, bgtasks.Options{})
	var change atomic.Bool
	register(t, d, "inventory", time.Hour, func(_ context.Context, act bgtasks.Activation) (any, error) {
		if change.Load() {
			act.MarkChanged()
		}
		return nil, nil
	})
	register(t, d, "quorum", time.Hour, noop, "inventory")
	start(t, d)
	wait(t, d, "inventory", 1)
	wait(t, d, "quorum", 1)

	// An unchanged result activates nothing downstream: the next quorum
	// activation is the probe.
	if err := d.Activate("op", "inventory"); err != nil {
		t.Fatal(err)
	}
	if up := wait(t, d, "inventory", 2); activation(t, up, 2).Changed {
		t.Fatal("unchanged activation recorded as changed")
	}
	if err := d.Activate("probe", "quorum"); err != nil {
		t.Fatal(err)
	}
	if a := activation(t, wait(t, d, "quorum", 2), 2); a.Reason != "explicit" || a.Requester != "probe" {
		t.Fatalf("quorum activated by an unchanged upstream: %+v", a)
	}

	change.Store(true)
	if err := d.Activate("op", "inventory"); err != nil {
		t.Fatal(err)
	}
	if up := wait(t, d, "inventory", 3); !activation(t, up, 3).Changed {
		t.Fatal("changed activation not recorded as changed")
	}
	q := wait(t, d, "quorum", 3)
	if a := activation(t, q, 3); a.Reason != "dependency" || a.Requester != "inventory" {
		t.Fatalf("dependency activation %+v", a)
	}
	if q.DependsOn[0] != "inventory" || len(q.DependsOn) != 1 {
		t.Fatalf("depends_on %v", q.DependsOn)
	}
}

// backoffUntil waits until the task backs off after a failed or stalled
// activation and returns when the back-off ends.
func backoffUntil(t *testing.T, d *bgtasks.Driver, name string) time.Time {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		task, err := d.Task(name, false)
		if err != nil {
			t.Fatal(err)
		}
		if u := task.Current.BackoffUntil; u != nil {
			return *u
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never backed off: %+v", name, task)
		}
		time.Sleep(time.Millisecond)
	}
}

// passBackoff moves clk to the end of the task's back-off.
func passBackoff(t *testing.T, d *bgtasks.Driver, clk *clock.Fake, name string) {
	t.Helper()
	clk.Advance(backoffUntil(t, d, name).Sub(clk.Now()))
}

func TestPanicIsRecordedAndTheTaskGoesOn(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	d := newDriver(t, clk, bgtasks.Options{})
	register(t, d, "fragile", time.Hour, func(_ context.Context, act bgtasks.Activation) (any, error) {
		if act.Iteration == 1 {
			var m map[string]int
			//lint:ignore SA5000 the test needs a real runtime panic, and asserts its "nil map" message
			m["boom"]++
		}
		return "fine", nil
	})
	start(t, d)
	task := wait(t, d, "fragile", 1)
	a := activation(t, task, 1)
	if a.Outcome != api.TaskOutcomeError || !strings.Contains(a.Error, "task panicked") ||
		!strings.Contains(a.Error, "nil map") || task.Errors != 1 || task.ConsecutiveErrors != 1 {
		t.Fatalf("panicking activation: %+v (task %+v)", a, task)
	}
	if err := d.Activate("op", "fragile"); err != nil {
		t.Fatal(err)
	}
	// The failed activation is followed by a back-off that the explicit
	// trigger waits for.
	passBackoff(t, d, clk, "fragile")
	task = wait(t, d, "fragile", 2)
	if a := activation(t, task, 2); a.Outcome != api.TaskOutcomeOK || string(a.Status) != `"fine"` ||
		task.ConsecutiveErrors != 0 || task.Errors != 1 {
		t.Fatalf("activation after the panic: %+v (task %+v)", a, task)
	}
}

// switches is an in-memory stand-in for the database switch (the driver's
// own tests do not need a database; the Nexus tests use the real one).
type switches struct {
	mu  sync.Mutex
	off map[string]bool
	err error
}

func (s *switches) enabled(_ context.Context, name string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.off[name], s.err
}

func (s *switches) set(name string, off bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.off[name], s.err = off, err
}

func TestDisabledTaskReportsDisabledAndDoesNothing(t *testing.T) {
	t.Parallel()
	sw := &switches{off: map[string]bool{"switchy": true}}
	d := newDriver(t, clock.NewFake(t0), bgtasks.Options{Enabled: sw.enabled})
	var calls atomic.Int32
	register(t, d, "switchy", time.Hour, func(context.Context, bgtasks.Activation) (any, error) {
		calls.Add(1)
		return map[string]int32{"calls": calls.Load()}, nil
	})
	start(t, d)
	task := wait(t, d, "switchy", 1)
	a := activation(t, task, 1)
	if calls.Load() != 0 || a.Outcome != api.TaskOutcomeDisabled || task.Enabled ||
		!strings.Contains(string(a.Status), "switched off") || task.Status != nil || task.Errors != 0 {
		t.Fatalf("disabled activation: calls %d, %+v, task %+v", calls.Load(), a, task)
	}

	sw.set("switchy", false, nil)
	_ = d.Activate("op", "switchy")
	task = wait(t, d, "switchy", 2)
	if calls.Load() != 1 || activation(t, task, 2).Outcome != api.TaskOutcomeOK || !task.Enabled {
		t.Fatalf("enabled activation: calls %d, task %+v", calls.Load(), task)
	}

	// Switched off again, the task keeps showing what it last saw.
	sw.set("switchy", true, nil)
	_ = d.Activate("op", "switchy")
	task = wait(t, d, "switchy", 3)
	if calls.Load() != 1 || task.LastActivation.Outcome != api.TaskOutcomeDisabled ||
		string(task.Status) != `{"calls":1}` || task.StatusIteration != 2 {
		t.Fatalf("disabled again: calls %d, task %+v", calls.Load(), task)
	}

	// Not knowing whether it is enabled, the task does not run.
	sw.set("switchy", false, errors.New("database unreachable"))
	_ = d.Activate("op", "switchy")
	task = wait(t, d, "switchy", 4)
	if a := activation(t, task, 4); calls.Load() != 1 || a.Outcome != api.TaskOutcomeError ||
		!strings.Contains(a.Error, "database unreachable") || task.Enabled {
		t.Fatalf("switch unreadable: calls %d, %+v, task %+v", calls.Load(), a, task)
	}
}

func TestStopWaitsForRunningActivations(t *testing.T) {
	t.Parallel()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)
	d := bgtasks.NewDriver(bgtasks.Options{Clock: clock.NewFake(t0), Log: log})
	polite := newBlockingTask()
	register(t, d, "polite", time.Hour, polite.Activate)
	start(t, d)
	polite.next(t)
	began := time.Now()
	if err := d.Stop(10 * time.Second); err != nil {
		t.Fatalf("stop with a task that honours cancellation: %v", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("stop took %s", took)
	}
	task, _ := d.Task("polite", false)
	if task.Current.State != api.TaskStateIdle || task.LastActivation == nil ||
		!strings.Contains(task.LastActivation.Error, "context canceled") {
		t.Fatalf("after stop: %+v", task)
	}

	// A task that ignores cancellation is waited for only up to the bound.
	d2 := bgtasks.NewDriver(bgtasks.Options{Clock: clock.NewFake(t0), Log: log})
	stubborn := make(chan struct{})
	defer close(stubborn)
	running := make(chan struct{})
	register(t, d2, "stubborn", time.Hour, func(context.Context, bgtasks.Activation) (any, error) {
		close(running)
		<-stubborn
		return nil, nil
	})
	register(t, d2, "quick", time.Hour, noop)
	start(t, d2)
	<-running
	wait(t, d2, "quick", 1)
	began = time.Now()
	err := d2.Stop(200 * time.Millisecond)
	if !errors.Is(err, bgtasks.ErrShutdownTimeout) || !strings.Contains(err.Error(), "stubborn") ||
		strings.Contains(err.Error(), "quick") {
		t.Fatalf("stop with a stubborn task: %v", err)
	}
	if took := time.Since(began); took > 3*time.Second {
		t.Fatalf("bounded stop took %s", took)
	}
}

func TestRegistrationIsChecked(t *testing.T) {
	t.Parallel()
	good := bgtasks.Registration{Name: "good_one", Description: "d", Period: time.Second, Task: bgtasks.TaskFunc(noop)}
	for _, tc := range []struct {
		name    string
		mutate  func(*bgtasks.Registration)
		mention string
	}{
		{"bad name", func(r *bgtasks.Registration) { r.Name = "Bad-Name" }, "snake_case"},
		{"no task", func(r *bgtasks.Registration) { r.Task = nil }, "no task"},
		{"no description", func(r *bgtasks.Registration) { r.Description = " " }, "description"},
		{"no period", func(r *bgtasks.Registration) { r.Period = 0 }, "positive period"},
	} {
		d := bgtasks.NewDriver(bgtasks.Options{})
		r := good
		tc.mutate(&r)
		if err := d.Register(r); !errors.Is(err, bgtasks.ErrInvalidRegistration) || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	d := bgtasks.NewDriver(bgtasks.Options{})
	if err := d.Register(good); err != nil {
		t.Fatal(err)
	}
	if err := d.Register(good); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate: %v", err)
	}

	// Set-wide checks: configured periods, dependencies, cycles.
	d = bgtasks.NewDriver(bgtasks.Options{Periods: map[string]time.Duration{"good_one": time.Minute, "typo": time.Second}})
	_ = d.Register(good)
	if err := d.Check(); !errors.Is(err, bgtasks.ErrInvalidRegistration) || !strings.Contains(err.Error(), "typo") ||
		!strings.Contains(err.Error(), "tasks: good_one") {
		t.Errorf("period for an unknown task: %v", err)
	}
	if task, _ := d.Task("good_one", false); task.PeriodSeconds != 60 {
		t.Errorf("configured period not applied: %v", task.PeriodSeconds)
	}
	if err := d.Start(context.Background()); err == nil {
		t.Errorf("Start accepted a bad task set")
	}

	d = bgtasks.NewDriver(bgtasks.Options{})
	a, b, c := good, good, good
	a.Name, a.DependsOn = "a", []string{"c"}
	b.Name, b.DependsOn = "b", []string{"a"}
	c.Name, c.DependsOn = "c", []string{"b"}
	_, _, _ = d.Register(a), d.Register(b), d.Register(c)
	if err := d.Check(); err == nil || !strings.Contains(err.Error(), "cycle a -> c -> b -> a") {
		t.Errorf("cycle: %v", err)
	}
	d = bgtasks.NewDriver(bgtasks.Options{})
	b.DependsOn = []string{"nope"}
	_ = d.Register(b)
	if err := d.Check(); err == nil || !strings.Contains(err.Error(), `depends on "nope"`) {
		t.Errorf("missing dependency: %v", err)
	}
}

func TestActivateUnknownNamesActivatesNothing(t *testing.T) {
	t.Parallel()
	d := newDriver(t, clock.NewFake(t0), bgtasks.Options{})
	register(t, d, "real", time.Hour, noop)
	start(t, d)
	wait(t, d, "real", 1)
	err := d.Activate("mixed", "real", "ghost", "phantom")
	if !errors.Is(err, bgtasks.ErrUnknownTask) || !strings.Contains(err.Error(), `"ghost", "phantom"`) {
		t.Fatalf("unknown names: %v", err)
	}
	if err := d.Activate("probe", "real"); err != nil {
		t.Fatal(err)
	}
	if a := activation(t, wait(t, d, "real", 2), 2); a.Requester != "probe" {
		t.Fatalf("the refused request activated the known task: %+v", a)
	}
	if _, err := d.Task("ghost", false); !errors.Is(err, bgtasks.ErrUnknownTask) {
		t.Fatalf("Task(ghost): %v", err)
	}
}

func TestHistoryKeepsTheNewest(t *testing.T) {
	t.Parallel()
	d := newDriver(t, clock.NewFake(t0), bgtasks.Options{History: 3})
	register(t, d, "h", time.Hour, noop)
	start(t, d)
	wait(t, d, "h", 1)
	for i := uint64(2); i <= 5; i++ {
		_ = d.Activate("op", "h")
		wait(t, d, "h", i)
	}
	task := wait(t, d, "h", 5)
	if len(task.History) != 3 || task.History[0].Iteration != 5 || task.History[2].Iteration != 3 ||
		task.LastActivation.Iteration != 5 {
		t.Fatalf("history %+v", task.History)
	}
	if all := d.Tasks(); len(all) != 1 || all[0].History != nil || all[0].Activations != 5 {
		t.Fatalf("listing %+v", all)
	}
}

func TestUnserialisableStatusIsAnError(t *testing.T) {
	t.Parallel()
	d := newDriver(t, clock.NewFake(t0), bgtasks.Options{})
	register(t, d, "weird", time.Hour, func(context.Context, bgtasks.Activation) (any, error) {
		return make(chan int), nil
	})
	start(t, d)
	a := activation(t, wait(t, d, "weird", 1), 1)
	if a.Outcome != api.TaskOutcomeError || !strings.Contains(a.Error, "JSON") {
		t.Fatalf("%+v", a)
	}
}

func TestMetricsCountActivationsByOutcome(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := bgtasks.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	sw := &switches{off: map[string]bool{}}
	clk := clock.NewFake(t0)
	d := newDriver(t, clk, bgtasks.Options{Metrics: m, Enabled: sw.enabled})
	register(t, d, "m", time.Hour, func(_ context.Context, act bgtasks.Activation) (any, error) {
		if act.Iteration == 2 {
			return nil, errors.New("nope")
		}
		return nil, nil
	})
	start(t, d)
	wait(t, d, "m", 1)
	_ = d.Activate("op", "m")
	wait(t, d, "m", 2)
	sw.set("m", true, nil)
	_ = d.Activate("op", "m")
	passBackoff(t, d, clk, "m")
	wait(t, d, "m", 3)

	got := map[string]float64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			key := f.GetName()
			for _, l := range mt.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case mt.Counter != nil:
				got[key] = mt.Counter.GetValue()
			case mt.Histogram != nil:
				got[key] = float64(mt.Histogram.GetSampleCount())
			case mt.Gauge != nil:
				got[key] = mt.Gauge.GetValue()
			}
		}
	}
	want := map[string]float64{
		"rackplane_bgtask_activations_total,outcome=ok,task=m":                 1,
		"rackplane_bgtask_activations_total,outcome=error,task=m":              1,
		"rackplane_bgtask_activations_total,outcome=disabled,task=m":           1,
		"rackplane_bgtask_errors_total,task=m":                                 1,
		"rackplane_bgtask_activation_duration_seconds,outcome=error,task=m":    1,
		"rackplane_bgtask_activation_duration_seconds,outcome=ok,task=m":       1,
		"rackplane_bgtask_activation_duration_seconds,outcome=disabled,task=m": 1,
		"rackplane_bgtask_running,task=m":                                      0,
	}
	for k, v := range want {
		if got[k] != v {
			b, _ := json.MarshalIndent(got, "", " ")
			t.Errorf("%s = %v, want %v; all:\n%s", k, got[k], v, b)
		}
	}
}

// A task that asks for a follow-up runs again that long after it finished,
// with reason follow_up, without moving its period; one that stops asking
// stops being followed up.
func TestRequeueAfterRunsAFollowUp(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	d := newDriver(t, clk, bgtasks.Options{})
	var runs atomic.Int32
	register(t, d, "copier", time.Hour, func(_ context.Context, act bgtasks.Activation) (any, error) {
		if runs.Add(1) <= 2 {
			act.RequeueAfter(5 * time.Second)
			act.RequeueAfter(2 * time.Second) // the shortest wins
			act.RequeueAfter(9 * time.Second)
		}
		return nil, nil
	})
	start(t, d)
	wait(t, d, "copier", 1)
	waitArmed(t, clk, 2) // period and follow-up

	clk.Advance(time.Second)
	if task, _ := d.Task("copier", false); task.Activations != 1 {
		t.Fatalf("follow-up ran early: %d activations", task.Activations)
	}
	clk.Advance(time.Second)
	task := wait(t, d, "copier", 2)
	if a := activation(t, task, 2); a.Reason != string(bgtasks.ReasonFollowUp) || a.Requester != "copier" ||
		!a.Start.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("follow-up activation: %+v", a)
	}
	waitArmed(t, clk, 2)
	clk.Advance(2 * time.Second)
	wait(t, d, "copier", 3)
	// The third run asked for nothing: only the period timer is left, and
	// it still fires an hour after start.
	waitArmed(t, clk, 1)
	clk.Advance(time.Hour - 4*time.Second - time.Millisecond)
	if task, _ := d.Task("copier", false); task.Activations != 3 {
		t.Fatalf("unexpected activation: %d", task.Activations)
	}
	clk.Advance(time.Millisecond)
	task = wait(t, d, "copier", 4)
	if a := activation(t, task, 4); a.Reason != "periodic" {
		t.Fatalf("period moved by follow-ups: %+v", a)
	}
}

// A task that keeps failing is retried after a jittered back-off that
// doubles up to its period, and nothing (a flood of explicit activations,
// its period) starts it sooner; a success ends the back-off.
func TestFailingTaskBacksOffUpToItsPeriod(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	const period = 10 * time.Second
	d := newDriver(t, clk, bgtasks.Options{Rand: rand.NewPCG(7, 7)})
	var failing atomic.Bool
	failing.Store(true)
	register(t, d, "flaky", period, func(context.Context, bgtasks.Activation) (any, error) {
		if failing.Load() {
			return nil, errors.New("the database is away")
		}
		return "fine", nil
	})
	start(t, d)
	ceiling := bgtasks.DefaultRetry.Initial
	jittered := false
	for it := uint64(1); it <= 12; it++ {
		task := wait(t, d, "flaky", it)
		last := task.LastActivation
		if last.Outcome != api.TaskOutcomeError {
			t.Fatalf("iteration %d: %+v", it, last)
		}
		end := last.Start.Add(time.Duration(last.DurationMS * float64(time.Millisecond)))
		until := backoffUntil(t, d, "flaky")
		delay := until.Sub(end)
		if delay < ceiling/2 || delay > ceiling {
			t.Fatalf("back-off after failure %d is %s, want within [%s, %s]", it, delay, ceiling/2, ceiling)
		}
		if delay != ceiling {
			jittered = true
		}
		// Asked for over and over during the back-off, the task does not
		// run; the triggers wait, folded into one.
		for range 20 {
			if err := d.Activate("impatient operator", "flaky"); err != nil {
				t.Fatal(err)
			}
		}
		clk.Advance(until.Sub(clk.Now()) - time.Nanosecond)
		time.Sleep(5 * time.Millisecond) // a loop that wrongly starts a run gets the chance
		if task, _ := d.Task("flaky", false); task.Activations != it || task.Current.State != api.TaskStateIdle ||
			task.Current.Pending == "" {
			t.Fatalf("during back-off %d: %d activations, current %+v", it, task.Activations, task.Current)
		}
		clk.Advance(time.Nanosecond)
		ceiling = min(2*ceiling, period)
	}
	if !jittered {
		t.Fatal("every back-off sat on its ceiling")
	}
	if ceiling != period {
		t.Fatalf("the back-off never reached the period: ceiling %s", ceiling)
	}
	// Fixed: the retry succeeds and the back-off is over; the next
	// failure starts again from the first delay.
	failing.Store(false)
	task := wait(t, d, "flaky", 13)
	if a := activation(t, task, 13); a.Outcome != api.TaskOutcomeOK || task.Current.BackoffUntil != nil ||
		task.ConsecutiveErrors != 0 {
		t.Fatalf("after the fix: %+v, task %+v", a, task)
	}
	failing.Store(true)
	_ = d.Activate("op", "flaky")
	task = wait(t, d, "flaky", 14)
	last := task.LastActivation
	end := last.Start.Add(time.Duration(last.DurationMS * float64(time.Millisecond)))
	if delay := backoffUntil(t, d, "flaky").Sub(end); delay > bgtasks.DefaultRetry.Initial {
		t.Fatalf("back-off after a success and a new failure is %s, want at most %s", delay, bgtasks.DefaultRetry.Initial)
	}
}

// A task that asks to retry later (it made no progress) is paced like a
// failed one: its follow-up request is ignored, and it runs again, with
// reason retry, only after the back-off.
func TestRetryLaterIsPacedByTheBackoff(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	d := newDriver(t, clk, bgtasks.Options{Retry: backoff.Policy{Initial: time.Second, Jitter: 0}})
	var runs atomic.Int32
	register(t, d, "stale", time.Hour, func(_ context.Context, act bgtasks.Activation) (any, error) {
		if runs.Add(1) <= 3 {
			act.RequeueAfter(time.Millisecond)
			act.RetryLater()
		}
		return "looked", nil
	})
	start(t, d)
	for it, delay := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		task := wait(t, d, "stale", uint64(it+1))
		if a := task.LastActivation; a.Outcome != api.TaskOutcomeOK {
			t.Fatalf("a run that retries later is not a failure: %+v", a)
		}
		until := backoffUntil(t, d, "stale")
		if got := until.Sub(clk.Now()); got != delay {
			t.Fatalf("back-off %d is %s, want %s", it+1, got, delay)
		}
		clk.Advance(delay - time.Millisecond)
		time.Sleep(5 * time.Millisecond)
		if task, _ := d.Task("stale", false); task.Activations != uint64(it+1) {
			t.Fatalf("the follow-up ran during the back-off: %d activations", task.Activations)
		}
		clk.Advance(time.Millisecond)
		task = wait(t, d, "stale", uint64(it+2))
		if a := activation(t, task, uint64(it+2)); a.Reason != string(bgtasks.ReasonRetry) || a.Requester != "stale" {
			t.Fatalf("activation after the back-off: %+v", a)
		}
	}
	// The fourth run made progress: no back-off, no further run.
	task := wait(t, d, "stale", 4)
	time.Sleep(5 * time.Millisecond)
	if task, _ = d.Task("stale", false); task.Current.BackoffUntil != nil || task.Activations != 4 {
		t.Fatalf("after progress: %+v", task)
	}
}

package clock

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Fake is a clock that moves only when it is advanced or slept on.
//
// Timers and After channels fire when Advance (or Sleep) brings the time
// to their deadline, never on their own. Sleep returns at once after
// moving the time forward, so code that paces itself runs at full speed
// while the time it asked to wait is recorded (Slept, Sleeps).
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
	// armed holds the timers (and After channels) waiting to fire; a timer
	// leaves it when it fires or is stopped.
	armed map[*fakeTimer]struct{}
}

// NewFake returns a fake clock set to start.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, armed: map[*fakeTimer]struct{}{}}
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer armed to fire d after the fake time; one with
// d <= 0 fires at once, as a real timer would.
func (f *Fake) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{f: f, ch: make(chan time.Time, 1)}
	t.armLocked(d)
	return t
}

// After returns a channel that receives the fake time once it has moved d
// on (at once when d <= 0).
func (f *Fake) After(d time.Duration) <-chan time.Time { return f.NewTimer(d).C() }

// Sleep advances the fake time by d (when positive), firing what comes
// due, and returns. A cancelled ctx returns its error without moving the
// time.
func (f *Fake) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d > 0 {
		f.mu.Lock()
		f.sleeps = append(f.sleeps, d)
		f.advanceLocked(d)
		f.mu.Unlock()
	}
	return nil
}

// Advance moves the fake time forward without counting it as sleep, and
// fires every timer and After channel whose deadline has come. A fired
// timer stays quiet until it is Reset.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advanceLocked(d)
}

func (f *Fake) advanceLocked(d time.Duration) {
	f.now = f.now.Add(d)
	for t := range f.armed {
		if !t.at.After(f.now) {
			t.fireLocked()
		}
	}
}

// Waiters counts the timers and After channels that have not fired yet,
// so a test can wait until a loop is parked on the clock before moving it.
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.armed)
}

// NextDeadline is the earliest time a waiting timer or After channel
// fires, and false when nothing waits. A test reads from it how long a
// loop chose to wait.
func (f *Fake) NextDeadline() (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var next time.Time
	found := false
	for t := range f.armed {
		if !found || t.at.Before(next) {
			next, found = t.at, true
		}
	}
	return next, found
}

// Slept is the total time callers asked to sleep.
func (f *Fake) Slept() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var total time.Duration
	for _, d := range f.sleeps {
		total += d
	}
	return total
}

// Sleeps lists every positive sleep asked for, in order.
func (f *Fake) Sleeps() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sleeps)
}

type fakeTimer struct {
	f  *Fake
	ch chan time.Time
	at time.Time // the deadline while armed
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Reset(d time.Duration) {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	t.drain()
	t.armLocked(d)
}

func (t *fakeTimer) Stop() {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	t.drain()
	delete(t.f.armed, t)
}

func (t *fakeTimer) armLocked(d time.Duration) {
	t.at = t.f.now.Add(d)
	if d <= 0 {
		t.fireLocked()
		return
	}
	t.f.armed[t] = struct{}{}
}

// fireLocked delivers the fake time and disarms the timer. The channel
// holds one value and every arming drains it first, so the send never
// blocks.
func (t *fakeTimer) fireLocked() {
	delete(t.f.armed, t)
	select {
	case t.ch <- t.f.now:
	default:
	}
}

func (t *fakeTimer) drain() {
	select {
	case <-t.ch:
	default:
	}
}

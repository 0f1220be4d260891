package clock_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/clock"
)

var start = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func TestFakeSleepAndAfter(t *testing.T) {
	f := clock.NewFake(start)
	ch := f.After(time.Minute)
	if f.Waiters() != 1 {
		t.Fatalf("waiters %d", f.Waiters())
	}
	f.Advance(59 * time.Second)
	select {
	case <-ch:
		t.Fatal("fired early")
	default:
	}
	if err := f.Sleep(context.Background(), time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-ch:
		if !at.Equal(start.Add(time.Minute)) {
			t.Fatalf("fired at %s", at)
		}
	default:
		t.Fatal("did not fire when due")
	}
	if f.Slept() != time.Second || !f.Now().Equal(start.Add(time.Minute)) || f.Waiters() != 0 {
		t.Fatalf("slept %s now %s waiters %d", f.Slept(), f.Now(), f.Waiters())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.Sleep(ctx, time.Hour); err == nil || !f.Now().Equal(start.Add(time.Minute)) {
		t.Fatal("a cancelled sleep must not move the clock")
	}
	if err := clock.Real().Sleep(ctx, time.Hour); err == nil {
		t.Fatal("real sleep ignored a cancelled context")
	}
	if err := f.Sleep(context.Background(), 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := f.Sleeps(); !slices.Equal(got, []time.Duration{time.Second, 3 * time.Second}) || f.Slept() != 4*time.Second {
		t.Fatalf("sleeps %v (total %s), want [1s 3s]", got, f.Slept())
	}
	select {
	case <-f.After(0):
	default:
		t.Fatal("After(0) must fire at once")
	}
}

// The driver's period timer: fires once when due, stays quiet until it is
// re-armed, and a re-arming or stop discards a value not yet received.
func TestFakeTimer(t *testing.T) {
	f := clock.NewFake(start)
	tm := f.NewTimer(10 * time.Second)
	if next, ok := f.NextDeadline(); !ok || !next.Equal(start.Add(10*time.Second)) || f.Waiters() != 1 {
		t.Fatalf("next deadline %s %v, waiters %d", next, ok, f.Waiters())
	}
	f.Advance(9 * time.Second)
	if fired(tm) {
		t.Fatal("fired early")
	}
	f.Advance(5 * time.Second)
	if f.Waiters() != 0 {
		t.Fatalf("a fired timer still counts as waiting (%d)", f.Waiters())
	}
	select {
	case at := <-tm.C():
		if !at.Equal(start.Add(14 * time.Second)) {
			t.Fatalf("fired at %s, want the time the clock was moved to", at)
		}
	default:
		t.Fatal("did not fire when due")
	}
	f.Advance(time.Hour)
	if fired(tm) {
		t.Fatal("a fired timer fired again without being reset")
	}

	tm.Reset(time.Second)
	f.Advance(time.Second) // fires; the value is left unreceived
	tm.Reset(time.Minute)
	if fired(tm) {
		t.Fatal("Reset delivered the value of the earlier arming")
	}
	if next, _ := f.NextDeadline(); !next.Equal(f.Now().Add(time.Minute)) {
		t.Fatalf("re-armed for %s, want a minute from now", next.Sub(f.Now()))
	}
	tm.Stop()
	if _, ok := f.NextDeadline(); ok || f.Waiters() != 0 {
		t.Fatal("a stopped timer still waits")
	}
	f.Advance(time.Hour)
	if fired(tm) {
		t.Fatal("a stopped timer fired")
	}

	now := f.NewTimer(0)
	if !fired(now) {
		t.Fatal("NewTimer(0) must fire at once, as a real timer does")
	}
}

func TestRealTimerReset(t *testing.T) {
	tm := clock.Real().NewTimer(time.Millisecond)
	time.Sleep(5 * time.Millisecond) // fired, not received
	tm.Reset(time.Hour)
	if fired(tm) {
		t.Fatal("Reset delivered the value of the earlier arming")
	}
	tm.Stop()
	if d := time.Since(clock.Real().Now()); d < 0 || d > time.Minute {
		t.Fatalf("real Now is %s away from time.Now", d)
	}
}

func fired(t clock.Timer) bool {
	select {
	case <-t.C():
		return true
	default:
		return false
	}
}

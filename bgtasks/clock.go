package bgtasks

import "time"

// Clock is the driver's source of time: the period timers, activation
// start times and durations. Tests inject a fake (see bgtasks/bgtest) to
// make periodic activations happen exactly when they say.
type Clock interface {
	Now() time.Time
	// NewTimer returns an armed timer that fires once after d.
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer the driver re-arms after each firing.
type Timer interface {
	C() <-chan time.Time
	// Reset re-arms the timer to fire d from now; no value from an earlier
	// arming is delivered afterwards.
	Reset(d time.Duration)
	Stop()
}

// RealClock is the wall clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// NewTimer wraps time.NewTimer.
func (RealClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }

// Reset relies on Go 1.23+ timers, whose Reset discards a fired but
// unreceived value.
func (r realTimer) Reset(d time.Duration) { r.t.Reset(d) }
func (r realTimer) Stop()                 { r.t.Stop() }

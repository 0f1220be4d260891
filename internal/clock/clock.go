// Package clock is the one injectable time source: the wall clock in
// production, and a fake that tests move by hand, so that periodic work
// (background-task timers, scrub pacing, copy and registration back-off,
// M.2 polling) and the timestamps it records happen exactly when a test
// says, without waiting.
package clock

import (
	"context"
	"time"
)

// Clock reads the time and waits.
type Clock interface {
	Now() time.Time
	// NewTimer returns an armed timer that fires once, d from now.
	NewTimer(d time.Duration) Timer
	// After returns a channel that receives the time once d has passed.
	After(d time.Duration) <-chan time.Time
	// Sleep waits for d or until ctx is done, returning ctx.Err() then.
	Sleep(ctx context.Context, d time.Duration) error
}

// Timer is a one-shot timer that can be re-armed.
type Timer interface {
	C() <-chan time.Time
	// Reset re-arms the timer to fire d from now; no value from an earlier
	// arming is delivered afterwards.
	Reset(d time.Duration)
	// Stop disarms the timer; no value from an earlier arming is delivered
	// afterwards.
	Stop()
}

// Real is the system clock.
func Real() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// realTimer relies on Go 1.23+ timers, whose Reset and Stop discard a
// fired but unreceived value.
type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time   { return r.t.C }
func (r realTimer) Reset(d time.Duration) { r.t.Reset(d) }
func (r realTimer) Stop()                 { r.t.Stop() }

// Package bgtest helps test background tasks and the driver: a fake clock
// whose timers fire only when the test advances it.
package bgtest

import (
	"sync"
	"time"

	"github.com/rackplane/rackplane/bgtasks"
)

// Clock is a bgtasks.Clock that stands still until Advance.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer
}

// NewClock returns a clock reading start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer armed to fire d after the clock's time.
func (c *Clock) NewTimer(d time.Duration) bgtasks.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{c: c, ch: make(chan time.Time, 1), deadline: c.now.Add(d), armed: true}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves the clock forward by d and fires every armed timer whose
// deadline has come. A fired timer stays quiet until it is Reset.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, t := range c.timers {
		if t.armed && !t.deadline.After(c.now) {
			t.armed = false
			select {
			case t.ch <- c.now:
			default:
			}
		}
	}
}

// Armed counts the timers waiting to fire, so a test can wait until every
// task loop has re-armed its timer before advancing the clock again.
func (c *Clock) Armed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if t.armed {
			n++
		}
	}
	return n
}

type timer struct {
	c        *Clock
	ch       chan time.Time
	deadline time.Time
	armed    bool
}

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) Reset(d time.Duration) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.drain()
	t.deadline, t.armed = t.c.now.Add(d), true
}

func (t *timer) Stop() {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.drain()
	t.armed = false
}

func (t *timer) drain() {
	select {
	case <-t.ch:
	default:
	}
}

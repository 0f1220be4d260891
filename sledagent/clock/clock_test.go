package clock_test

import (
	"context"
	"testing"
	"time"

	"github.com/rackplane/rackplane/sledagent/clock"
)

func TestFakeSleepAndAfter(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
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
}

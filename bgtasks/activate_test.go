package bgtasks_test

import (
	"slices"
	"testing"
	"time"

	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/internal/clock"
)

// One request naming a task several times activates it once, however the
// task's loop is scheduled between the names.
func TestActivateNamingATaskRepeatedlyRunsItOnce(t *testing.T) {
	t.Parallel()
	d := newDriver(t, clock.NewFake(t0), bgtasks.Options{})
	register(t, d, "once", time.Hour, noop)
	start(t, d)
	wait(t, d, "once", 1)
	if err := d.Activate("op", slices.Repeat([]string{"once"}, 500)...); err != nil {
		t.Fatal(err)
	}
	if a := activation(t, wait(t, d, "once", 2), 2); a.Reason != "explicit" || a.Requester != "op" {
		t.Fatalf("explicit activation: %+v", a)
	}
	if err := d.Activate("probe", "once"); err != nil {
		t.Fatal(err)
	}
	if a := activation(t, wait(t, d, "once", 3), 3); a.Requester != "probe" {
		t.Fatalf("one request activated the task more than once; iteration 3 is %+v", a)
	}
}

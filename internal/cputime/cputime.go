// Package cputime reads the CPU time the calling OS thread has used, so a
// benchmark of single-threaded code can report what that code cost even
// while the rest of the machine is busy.
package cputime

import (
	"time"

	"golang.org/x/sys/unix"
)

// Thread returns the CPU time of the calling OS thread. It reads
// CLOCK_THREAD_CPUTIME_ID, which the kernel keeps to the nanosecond
// (getrusage's per-thread figure moves in scheduler ticks of several
// milliseconds, too coarse for a plan that takes tens of them). Callers
// lock the goroutine to its thread (runtime.LockOSThread) around what they
// measure, or the difference of two readings means nothing.
func Thread() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, err
	}
	return time.Duration(ts.Nano()), nil
}

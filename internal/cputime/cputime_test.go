package cputime

import (
	"crypto/sha256"
	"runtime"
	"testing"
	"time"
)

// Work on this thread moves its CPU time forward; sleeping does not.
func TestThreadCountsOnlyWork(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := Thread()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	slept, err := Thread()
	if err != nil {
		t.Fatal(err)
	}
	if d := slept - before; d > 50*time.Millisecond {
		t.Errorf("sleeping 100 ms cost %s of CPU", d)
	}
	// Hashing 64 MiB takes tens of milliseconds of CPU on any machine,
	// however busy (a busy machine stretches the wall time, not the CPU).
	buf := make([]byte, 1<<20)
	start := time.Now()
	for range 64 {
		sha256.Sum256(buf)
	}
	wall := time.Since(start)
	worked, err := Thread()
	if err != nil {
		t.Fatal(err)
	}
	if d := worked - slept; d < 5*time.Millisecond || d > wall+10*time.Millisecond {
		t.Errorf("hashing 64 MiB in %s of wall time counted %s of CPU", wall, d)
	}
}

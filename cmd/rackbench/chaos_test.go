package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// ciSeed is the first seed whose short schedule injects every kind of
// fault, so that the CI run exercises each of them.
func ciSeed(o chaosOptions) uint64 {
	for seed := uint64(1); ; seed++ {
		o.seed = seed
		kinds := map[string]bool{}
		for _, f := range schedule(o) {
			kinds[f.Kind] = true
		}
		if len(kinds) == len(allFaultKinds) {
			return seed
		}
	}
}

// The schedule is a function of the seed alone: the same seed prints and
// injects the same faults.
func TestChaosScheduleReplays(t *testing.T) {
	o := chaosOptions{seed: 42, duration: 30 * time.Minute, sleds: 8, nexuses: 2, gap: 15 * time.Second, tq: true}
	a, b := schedule(o), schedule(o)
	if !slices.Equal(a, b) {
		t.Fatal("one seed gave two schedules")
	}
	o.seed = 43
	if slices.Equal(a, schedule(o)) {
		t.Fatal("two seeds gave one schedule")
	}
	for i, f := range a {
		if f.At < 0 || f.At >= o.duration || (i > 0 && f.At < a[i-1].At) {
			t.Fatalf("fault %d at %s: outside the run or out of order", i, f.At)
		}
		if !slices.Contains(allFaultKinds, f.Kind) {
			t.Fatalf("fault %d has unknown kind %q", i, f.Kind)
		}
	}
	if n := len(a); n < 80 || n > 200 {
		t.Fatalf("%d faults in 30 minutes at a 15 s mean gap", n)
	}
}

// The short chaos run CI does: a rack of real processes (PostgreSQL, two
// Nexus, five sleds) under a schedule of every kind of fault for 40 s,
// then every invariant checked on the disks, the database and the API.
func TestChaosShort(t *testing.T) {
	o := chaosOptions{duration: 40 * time.Second, sleds: 5, nexuses: 2, gap: 3 * time.Second, tq: true,
		converge: 3 * time.Minute}
	o.seed = ciSeed(o)
	var out bytes.Buffer
	res, err := chaos(context.Background(), o, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !res.ok() {
		t.Fatalf("invariants failed (seed %d)", o.seed)
	}
	for _, k := range allFaultKinds {
		if res.injected[k] == 0 {
			t.Errorf("no %s fault injected", k)
		}
	}
	// Every kill was followed by a restart by the supervisor: the
	// processes killed were started again (and the rack converged, above).
	killed := map[string]bool{}
	for _, f := range schedule(o) {
		switch f.Kind {
		case faultKillSled, faultHoldSled:
			killed[fmt.Sprintf("sled-%d", f.Target)] = true
		case faultKillTwoSld:
			killed[fmt.Sprintf("sled-%d", f.Target)] = true
			killed[fmt.Sprintf("sled-%d", f.Second)] = true
		case faultKillNexus, faultHoldNexus:
			killed[fmt.Sprintf("nexus-%d", f.Target)] = true
		}
	}
	for name := range killed {
		if res.starts[name] < 2 {
			t.Errorf("%s was killed but started %d times", name, res.starts[name])
		}
	}
	if !strings.Contains(out.String(), fmt.Sprintf("seed %d", o.seed)) || !strings.Contains(out.String(), "schedule (") {
		t.Error("the output does not print the seed and the schedule")
	}
}

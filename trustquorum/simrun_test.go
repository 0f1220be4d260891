package trustquorum_test

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
)

var (
	simCases     = flag.Int("tq.cases", 300, "number of random cluster-simulation cases")
	simSteps     = flag.Int("tq.steps", 320, "random events per simulation case")
	simSeed      = flag.Uint64("tq.seed", 0, "run only this simulation seed (0: seeds 1..tq.cases)")
	simSoak      = flag.Int("tq.soak", 0, "run this many extra, longer simulation cases (a soak)")
	simSoakSteps = flag.Int("tq.soaksteps", 2000, "random events per soak case")
	simReplay    = flag.String("tq.replay", "", "replay this simulation event log step by step")
	simLogDir    = flag.String("tq.logdir", "", "directory for event logs of failed runs (default: the OS temp dir)")
	simWrite     = flag.String("tq.writelog", "", "with -tq.seed: write the run's event log here even if it passes")
	simMaxPool   = 16
)

// simTotals aggregates the statistics of many runs.
type simTotals struct {
	mu    sync.Mutex
	stats map[string]int
}

func (st *simTotals) add(s *sim) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for k, v := range s.stats {
		st.stats[k] += v
	}
	st.stats["nexus_aborts"] += s.nx.aborts
	st.stats["nexus_superseded"] += s.nx.superseded
	st.stats["events"] += len(s.log)
	st.stats["messages"] += s.messages
	for _, c := range s.nx.configs {
		if c.upgrade && c.state == nxCommitted {
			st.stats["lrtq_upgrades_committed"]++
		}
		if c.state == nxCommitted {
			st.stats["epochs_committed"]++
		}
	}
}

// runSeed runs one random case and, on failure, writes its event log and
// reports the seed and how to replay it.
func runSeed(t *testing.T, seed uint64, steps int, totals *simTotals) {
	s := newSim(seed)
	pool := 4 + int(seed%uint64(simMaxPool-3))
	err := s.runRandom(simParams{pool: pool}, steps)
	if err == nil {
		if totals != nil {
			totals.add(s)
		}
		if *simWrite != "" && *simSeed == seed {
			if err := os.WriteFile(*simWrite, s.writeLog(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	dir := *simLogDir
	if dir == "" {
		dir = os.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("tq-sim-%d.jsonl", seed))
	if werr := os.WriteFile(path, s.writeLog(), 0o644); werr != nil {
		t.Logf("writing event log: %v", werr)
	}
	t.Fatalf("simulation seed %d failed after %d events: %v\nevent log: %s\nreplay: go test ./trustquorum -run TestSimReplay -tq.replay=%s -v",
		seed, len(s.log), err, path, path)
}

// TestSimulation runs the cluster simulation: tq.cases seeded cases of
// tq.steps random events over 4 to 16 nodes, invariants after every event
// and liveness at the end.
func TestSimulation(t *testing.T) {
	if *simSeed != 0 {
		runSeed(t, *simSeed, *simSteps, nil)
		return
	}
	totals := &simTotals{stats: map[string]int{}}
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		keys := slices.Sorted(maps.Keys(totals.stats))
		for _, k := range keys {
			t.Logf("%-34s %d", k, totals.stats[k])
		}
		// A generator that stopped reaching a path would let these
		// runs pass without testing it; insist on every one.
		for _, k := range []string{
			"commit", "commit_by_rebuild", "expunged", "learned", "coordinator_crash",
			"nexus_aborts", "nexus_superseded", "lrtq_upgrades_committed",
			"msg:prepare", "msg:prepare_ack", "msg:get_share", "msg:share", "msg:get_lrtq_share",
			"msg:lrtq_share", "msg:commit_advance", "msg:expunged", "msg:lrtq_learn", "msg:lrtq_learn_pkg",
			"msg:lrtq_init", "msg:lrtq_init_ack", "lrtq_setup_crash", "lrtq_upgrade_partial", "lrtq_upgrade_below_k",
			"connection_replaced", "stale_disconnect_dropped", "expunged_to_fresh", "threshold_varied",
			"commit_advance_older_than_rebuild", "commit_across_pruned_epochs",
			"lagging_member_unlocked", "lagging_member_caught_up",
		} {
			if totals.stats[k] == 0 && *simCases >= 100 {
				t.Errorf("no run exercised %s", k)
			}
		}
	})
	// Cases run in a few parallel groups rather than one subtest each,
	// so the output stays readable and the 2-core CI stays busy.
	groups := runtime.GOMAXPROCS(0)
	for g := range groups {
		t.Run(fmt.Sprintf("group%d", g), func(t *testing.T) {
			t.Parallel()
			for seed := uint64(g + 1); seed <= uint64(*simCases); seed += uint64(groups) {
				runSeed(t, seed, *simSteps, totals)
			}
		})
	}
}

// TestSimulationSoak runs -tq.soak extra cases of -tq.soaksteps events
// from seeds above the CI range, in parallel groups like TestSimulation,
// and logs the run statistics. Without the flag it runs a single short
// case, so it never passes by doing nothing.
func TestSimulationSoak(t *testing.T) {
	n, steps := *simSoak, *simSoakSteps
	if n == 0 {
		runSeed(t, 1_000_000, 600, nil)
		return
	}
	totals := &simTotals{stats: map[string]int{}}
	t.Cleanup(func() {
		for _, k := range slices.Sorted(maps.Keys(totals.stats)) {
			t.Logf("%-34s %d", k, totals.stats[k])
		}
	})
	groups := runtime.GOMAXPROCS(0)
	for g := range groups {
		t.Run(fmt.Sprintf("group%d", g), func(t *testing.T) {
			t.Parallel()
			for i := g; i < n; i += groups {
				runSeed(t, uint64(1_000_000+i), steps, totals)
			}
		})
	}
}

// TestSimReplay replays the checked-in event logs under testdata/sim (and
// the one named by -tq.replay), checking that every step reproduces the
// recorded summary and invariants. A deliberate change to what nodes send
// changes the summaries; regenerate the logs then with
//
//	go test ./trustquorum -run 'TestSimulation$' -tq.seed=42 -tq.writelog=$PWD/trustquorum/testdata/sim/seed-42.jsonl
//
// (and likewise for seed 57), and review why the diff is expected.
func TestSimReplay(t *testing.T) {
	paths, err := filepath.Glob("testdata/sim/*.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if *simReplay != "" {
		paths = []string{*simReplay}
	}
	if len(paths) == 0 {
		t.Fatal("no event logs under testdata/sim")
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var logf func(string, ...any)
		if *simReplay != "" {
			logf = t.Logf // step by step, for a failure being investigated
		}
		if err := replay(b, logf); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// TestSimDeterministic checks that a run's log replays to the same
// summaries, which is what makes a failure's log useful.
func TestSimDeterministic(t *testing.T) {
	for _, seed := range []uint64{7, 8} {
		s := newSim(seed)
		if err := s.runRandom(simParams{pool: 10}, 200); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if err := replay(s.writeLog(), nil); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

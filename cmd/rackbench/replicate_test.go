package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/internal/buildinfo"
)

// The replicate benchmark runs end to end at a tiny size (4 MiB to three
// sleds, split two ways) so it cannot rot: every figure it prints comes
// from a run that converged, and it leaves no data behind.
func TestReplicateTiny(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"replicate", "--size", "4MiB", "--sleds", "3", "--artifacts", "2,6",
		"--min-sled-replication", "2", "--plan-sleds", "20", "--plan-artifacts", "50", "--plan-runs", "2",
		"--timeline", "--dir", dir}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	text := out.String()
	t.Log(text)

	// The planner was timed on both shapes, below the target.
	for _, shape := range []string{"steady state", "fresh upload"} {
		m := regexp.MustCompile(shape + `.* ratio ([0-9.]+) \(target < 1\)`).FindStringSubmatch(text)
		if m == nil || number(t, m[1]) >= 1 {
			t.Errorf("planner line for %s: %v", shape, m)
		}
	}

	blocks := strings.Split(text, "\nReplication of ")[1:]
	if len(blocks) != 2 {
		t.Fatalf("want a report per shape, got %d", len(blocks))
	}
	for i, b := range blocks {
		want := []string{"2 artifacts", "6 artifacts"}[i]
		if !strings.HasPrefix(b, "4.0 MiB in "+want) || !strings.Contains(b, "3 sleds × 2 M.2s (6 copies") {
			t.Errorf("shape %d header: %q", i, firstLine(b))
		}
		inPlace := figure(t, b, `every copy in place\s+([0-9.]+) s`)
		reported := figure(t, b, `reported by the task\s+([0-9.]+) s`)
		limit := figure(t, b, `machine limit \(hash\+write\)\s+([0-9.]+) s`)
		// The task reports convergence only once every copy is in place,
		// but the watcher sees that up to one listing interval late.
		slack := copyWatchInterval.Seconds() + 0.01
		if inPlace <= 0 || reported < inPlace-slack || limit <= 0 {
			t.Errorf("shape %d: in place %v s, reported %v s, limit %v s", i, inPlace, reported, limit)
		}
		// Nexus seeds each artifact to one sled, which the others copy
		// from: each byte leaves Nexus once (plus the requests' and TLS's
		// own bytes), whatever min_sled_replication is.
		if x := figure(t, b, `seeds from Nexus's depot\s+[0-9.]+ MiB = ([0-9.]+) × repo`); x != 1 {
			t.Errorf("shape %d: Nexus seeded %v × the repo, want each artifact once", i, x)
		}
		if x := figure(t, b, `bytes Nexus sent to sleds\s+[0-9.]+ MiB = ([0-9.]+) × repo`); x < 1 || x > 1.1 {
			t.Errorf("shape %d: Nexus sent %v × the repo in all, want [1, 1.1]", i, x)
		}
		if n := figure(t, b, `sled-to-sled copies\s+([0-9]+)`); n < 1 {
			t.Errorf("shape %d: no sled-to-sled copies", i)
		}
		if lo, hi := figure(t, b, `db round trips per run\s+([0-9]+)–`), figure(t, b, `db round trips per run\s+[0-9]+–([0-9]+)`); lo < 1 || hi < lo {
			t.Errorf("shape %d: round trips %v–%v", i, lo, hi)
		}
		if n := len(regexp.MustCompile(`(?m)^\s+[0-9]+\s+[0-9.]+ s\s+[0-9.]+ s \(\s*[0-9]+\+\s*[0-9]+\+\s*[0-9]+\+\s*[0-9]+\)\s+[0-9]+ seeds`).FindAllString(b, -1)); n < 2 {
			t.Errorf("shape %d: %d timeline lines", i, n)
		}
	}
	if !strings.Contains(text, "must not grow with artifacts") {
		t.Error("no round-trip comparison across shapes")
	}

	// Nothing but the log is left in a kept work dir: no M.2, depot or
	// limit files.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "rack.log" {
			t.Errorf("left behind: %s", filepath.Join(dir, e.Name()))
		}
	}
}

// A run that cannot fit on the disk stops before doing anything, saying
// so; bad flags are refused with a usage error.
func TestReplicateRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--size", "1GiB", "--sleds", "1000000"}, 1, "needs"},
		{[]string{"--artifacts", "4,zero"}, 2, "--artifacts"},
		{[]string{"--size", "-3"}, 2, "positive"},
		{[]string{"--sleds", "0"}, 2, "at least 1"},
	} {
		dir := t.TempDir()
		var out, errb bytes.Buffer
		args := append([]string{"replicate", "--plan-sleds", "2", "--plan-artifacts", "2", "--plan-runs", "1", "--dir", dir}, tc.args...)
		if code := run(context.Background(), args, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", tc.args, code, errb.String(), tc.code, tc.want)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%v: left %d entries in the work dir", tc.args, len(entries))
		}
	}
}

func figure(t *testing.T, text, pattern string) float64 {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no %q in:\n%s", pattern, text)
	}
	return number(t, m[1])
}

func number(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return f
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func TestVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"--version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "rackbench "+buildinfo.Read().Version) {
		t.Fatalf("exit %d, %q, %q", code, out.String(), errOut.String())
	}
}

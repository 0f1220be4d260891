package main

import (
	"strings"
	"testing"
	"time"
)

func TestTaskPeriodFlag(t *testing.T) {
	got, err := parseTaskPeriods([]string{"sled_liveness=30s", " nexus_heartbeat=2m"})
	if err != nil || len(got) != 2 || got["sled_liveness"] != 30*time.Second || got["nexus_heartbeat"] != 2*time.Minute {
		t.Fatalf("parse: %v, %v", got, err)
	}
	for _, bad := range [][]string{{"sled_liveness"}, {"=5s"}, {"a=soon"}, {"a=-1s"}, {"a=0s"}, {"a=1s", "a=2s"}} {
		if _, err := parseTaskPeriods(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	code, _, errOut := nexusCmd(t, "--task-period", "sled_liveness", "--data-dir", t.TempDir())
	if code != 2 || !strings.Contains(errOut, "must be NAME=DURATION") {
		t.Fatalf("bad --task-period: exit %d, %q", code, errOut)
	}
	code, _, errOut = nexusCmd(t, "--help")
	if code != 0 || !strings.Contains(errOut, "--task-period") || !strings.Contains(errOut, "--sled-liveness-threshold") {
		t.Fatalf("--help: exit %d\n%s", code, errOut)
	}
}

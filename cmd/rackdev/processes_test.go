package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pidsRunning lists the processes whose command line holds every arg in
// order-free form: found in /proc, as an operator would find them.
func pidsRunning(t *testing.T, args ...string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		fields := strings.Split(string(b), "\x00")
		all := true
		for _, a := range args {
			found := false
			for _, f := range fields {
				if f == a {
					found = true
				}
			}
			all = all && found
		}
		if all {
			out = append(out, pid)
		}
	}
	return out
}

func eventually(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hashFiles maps each artifact file in an M.2's update dir to whether its
// bytes hash to its name.
func hashFiles(t *testing.T, m2 string) map[string]bool {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(m2, "update"))
	out := map[string]bool{}
	for _, e := range entries {
		if len(e.Name()) != 64 || !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(m2, "update", e.Name()))
		sum := sha256.Sum256(b)
		out[e.Name()] = err == nil && hex.EncodeToString(sum[:]) == e.Name()
	}
	return out
}

// rackdev --processes runs each sled as a sled-agent process. One killed
// with SIGKILL, its second M.2's artifacts gone with it, is started again
// by the supervisor, and the rack puts the artifacts back; Ctrl-C stops
// every child.
func TestProcessesKilledSledComesBack(t *testing.T) {
	dataDir := keptDataDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut lockedBuffer
	code := make(chan int, 1)
	go func() {
		code <- runContext(ctx, []string{"--processes", "--sleds", "3", "--data-dir", dataDir,
			"--nexus-external-addr", "127.0.0.1:0", "--nexus-internal-addr", "127.0.0.1:0"}, &out, &errOut)
	}()
	select {
	case c := <-code:
		t.Fatalf("rackdev exited %d\nstdout:\n%s\nstderr:\n%s", c, out.String(), errOut.String())
	default:
	}
	eventually(t, 3*time.Minute, "the rack to be up", func() bool {
		select {
		case c := <-code:
			t.Fatalf("rackdev exited %d\nstdout:\n%s\nstderr:\n%s", c, out.String(), errOut.String())
		default:
		}
		return strings.Contains(out.String(), "Press Ctrl-C")
	})
	for _, want := range []string{"3 sleds running as sled-agent processes", "every sled holds the demo repo on each M.2",
		"trust-quorum epoch 1 committed on 3 sleds"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}

	sledDir := filepath.Join(dataDir, "sled-1")
	pids := pidsRunning(t, "--data-dir", sledDir)
	if len(pids) != 1 {
		t.Fatalf("%d processes run sled-1, want 1", len(pids))
	}
	want := hashFiles(t, filepath.Join(sledDir, "m2-a"))
	if len(want) < 10 {
		t.Fatalf("sled-1's first M.2 holds %d artifacts before the kill", len(want))
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the killed sled to be gone", func() bool {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pids[0]), "stat"))
		return err != nil || strings.Contains(string(b), ") Z ")
	})
	// What it held on its second M.2 goes with it.
	if err := os.RemoveAll(filepath.Join(sledDir, "m2-b", "update")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the supervisor to start sled-1 again", func() bool {
		now := pidsRunning(t, "--data-dir", sledDir)
		return len(now) == 1 && now[0] != pids[0]
	})
	eventually(t, 2*time.Minute, "sled-1's second M.2 to hold every artifact again", func() bool {
		got := hashFiles(t, filepath.Join(sledDir, "m2-b"))
		for sha := range want {
			if !got[sha] {
				return false
			}
		}
		return true
	})
	log, err := os.ReadFile(filepath.Join(dataDir, "logs", "supervisor.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(log, []byte(`"child":"sled-1"`)) || !bytes.Contains(log, []byte("signal: killed")) {
		t.Fatalf("the supervisor log does not record sled-1's death and its status:\n%s", log)
	}
	if !strings.Contains(out.String(), "child died; restarting") {
		t.Errorf("the restart is not on rackdev's output:\n%s", out.String())
	}

	// Ctrl-C: rackdev stops every child before it exits.
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("rackdev exited %d after Ctrl-C\nstderr:\n%s", c, errOut.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("rackdev did not stop within a minute of Ctrl-C")
	}
	for i := range 3 {
		if left := pidsRunning(t, "--data-dir", filepath.Join(dataDir, "sled-"+strconv.Itoa(i))); len(left) != 0 {
			t.Errorf("sled-%d still running after rackdev stopped: %v", i, left)
		}
	}
	if strings.Contains(out.String(), "did not stop after SIGTERM") {
		t.Errorf("a sled needed SIGKILL to stop:\n%s", out.String())
	}
}

package supervise

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/backoff"
)

// syncBuffer collects a child's output and the supervisor's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var fast = Policy{
	Backoff:     backoff.Policy{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: 0.5},
	Burst:       3,
	Interval:    time.Minute,
	StopTimeout: 5 * time.Second,
}

func start(t *testing.T, script string, p Policy) (*Child, *syncBuffer) {
	t.Helper()
	var logs syncBuffer
	c, err := Start(Spec{Name: "child", Path: "/bin/sh", Args: []string{"-c", script}, Output: &logs}, p,
		backoff.NewRand(rand.NewPCG(1, 2)), zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop(context.Background()) })
	return c, &logs
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestKilledChildIsRestarted(t *testing.T) {
	c, logs := start(t, "sleep 30", fast)
	waitFor(t, "first start", func() bool { return c.PID() != 0 })
	first := c.PID()
	if err := c.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "restart", func() bool { return c.Starts() == 2 && c.PID() != 0 })
	if c.PID() == first {
		t.Fatalf("pid %d after restart, the killed one's", first)
	}
	if !bytes.Contains([]byte(logs.String()), []byte("signal: killed")) {
		t.Fatalf("the restart's log line does not give the exit status:\n%s", logs)
	}
}

func TestFailingChildIsLeftDownAfterBurst(t *testing.T) {
	c, logs := start(t, "exit 3", fast)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a child failing at once was not left down")
	}
	if !errors.Is(c.Err(), ErrGaveUp) {
		t.Fatalf("Err = %v, want ErrGaveUp", c.Err())
	}
	// Burst 3: the first run and three restarts fail, the fourth failure
	// within the interval is one too many.
	if got := c.Starts(); got != fast.Burst+1 {
		t.Fatalf("started %d times, want %d", got, fast.Burst+1)
	}
	if !bytes.Contains([]byte(logs.String()), []byte("exit status 3")) {
		t.Fatalf("no exit status in the log:\n%s", logs)
	}
}

func TestCleanExitIsNotRestarted(t *testing.T) {
	c, _ := start(t, "exit 0", fast)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("supervisor still running after a clean exit")
	}
	if c.Starts() != 1 || c.Err() != nil {
		t.Fatalf("starts %d err %v, want 1 and nil", c.Starts(), c.Err())
	}
}

func TestStopSendsTermThenKill(t *testing.T) {
	// This child exits on SIGTERM, with a word on its way out.
	c, logs := start(t, `trap 'echo got-term; exit 0' TERM; while :; do sleep 0.05; done`, fast)
	waitFor(t, "start", func() bool { return c.PID() != 0 })
	time.Sleep(100 * time.Millisecond) // the trap is set
	c.Stop(context.Background())
	if !bytes.Contains([]byte(logs.String()), []byte("got-term")) {
		t.Fatalf("the child did not get SIGTERM:\n%s", logs)
	}
	if c.Starts() != 1 {
		t.Fatalf("restarted after Stop: %d starts", c.Starts())
	}

	// This one ignores SIGTERM: Stop kills it after the timeout.
	p := fast
	p.StopTimeout = 200 * time.Millisecond
	c2, logs2 := start(t, `trap '' TERM; while :; do sleep 0.05; done`, p)
	waitFor(t, "start", func() bool { return c2.PID() != 0 })
	time.Sleep(100 * time.Millisecond)
	began := time.Now()
	c2.Stop(context.Background())
	if took := time.Since(began); took < p.StopTimeout {
		t.Fatalf("stopped in %s, before the SIGTERM timeout", took)
	}
	if !bytes.Contains([]byte(logs2.String()), []byte("killing it")) {
		t.Fatalf("no SIGKILL logged:\n%s", logs2)
	}
}

func TestHoldKeepsChildDown(t *testing.T) {
	c, _ := start(t, "sleep 30", fast)
	waitFor(t, "start", func() bool { return c.PID() != 0 })
	c.Hold()
	if err := c.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if c.PID() != 0 || c.Starts() != 1 {
		t.Fatalf("a held child was restarted (pid %d, %d starts)", c.PID(), c.Starts())
	}
	c.Release()
	waitFor(t, "restart after release", func() bool { return c.Starts() == 2 && c.PID() != 0 })
}

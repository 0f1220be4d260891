// Package supervise runs child processes the way systemd's Restart=on-failure
// does: a child that exits with a failure (a non-zero status, or a signal
// such as kill -9) is started again after a jittered back-off, and one
// that fails more than Burst times within Interval is left down, as
// StartLimitBurst/StartLimitIntervalSec leave a unit. A clean exit (status
// 0) is not restarted. Stop sends SIGTERM, and SIGKILL after StopTimeout.
//
// rackdev --processes and rackbench chaos use it; it never runs in a
// production rack, where systemd (deploy/systemd) or the container runtime
// does this job.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/backoff"
)

// Policy is how a child is restarted and stopped.
type Policy struct {
	// Backoff paces restarts; it starts over once a child has run for
	// longer than Backoff.Max.
	Backoff backoff.Policy
	// Burst failures within Interval leave the child down (systemd's
	// StartLimitBurst within StartLimitIntervalSec). Zero Burst: no limit.
	Burst    int
	Interval time.Duration
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	StopTimeout time.Duration
}

// DefaultPolicy mirrors the systemd units in deploy/systemd: restarts
// about 2 s apart (here 0.5-2 s, doubling up to 10 s while it keeps
// failing), at most 10 failures in 5 minutes, 30 s to stop.
var DefaultPolicy = Policy{
	Backoff:     backoff.Policy{Initial: 2 * time.Second, Max: 10 * time.Second, Jitter: 0.75},
	Burst:       10,
	Interval:    5 * time.Minute,
	StopTimeout: 30 * time.Second,
}

// Spec is the process to run.
type Spec struct {
	// Name names the child in log lines.
	Name string
	Path string
	Args []string
	// Env is the child's environment (nil: this process's).
	Env []string
	// Output receives the child's stdout and stderr.
	Output io.Writer
}

// ErrGaveUp is Child.Err once the restart limit left the child down.
var ErrGaveUp = errors.New("supervise: restart limit reached; left down")

// Child is one supervised process.
type Child struct {
	spec   Spec
	policy Policy
	log    zerolog.Logger
	sched  *backoff.Schedule

	mu       sync.Mutex
	proc     *os.Process
	starts   int
	stopping bool
	held     bool
	release  chan struct{}
	err      error
	failures []time.Time

	wake chan struct{}
	done chan struct{}
}

// Start starts the child and supervises it until Stop (or the restart
// limit). The first start's error is returned; later ones are retried.
func Start(spec Spec, p Policy, rnd *backoff.Rand, log zerolog.Logger) (*Child, error) {
	c := &Child{spec: spec, policy: p, log: log.With().Str("child", spec.Name).Logger(),
		sched: backoff.New(p.Backoff, rnd), wake: make(chan struct{}, 1), done: make(chan struct{})}
	started := make(chan error, 1)
	go c.loop(started)
	if err := <-started; err != nil {
		<-c.done
		return nil, err
	}
	return c, nil
}

// loop runs on one goroutine locked to its OS thread for the child's whole
// life: the children are started with a parent-death signal, which Linux
// sends when the forking thread exits.
func (c *Child) loop(started chan<- error) {
	runtime.LockOSThread()
	defer close(c.done)
	first := true
	for {
		cmd := exec.Command(c.spec.Path, c.spec.Args...)
		cmd.Env = c.spec.Env
		cmd.Stdout, cmd.Stderr = c.spec.Output, c.spec.Output
		// Its own process group: a Ctrl-C at the terminal reaches the
		// supervisor, which stops the children in order; and the children
		// die with the supervisor.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		// A grandchild left holding the output pipe does not hold Wait.
		cmd.WaitDelay = time.Second
		err := cmd.Start()
		if first {
			started <- err
			first = false
			if err != nil {
				return
			}
		}
		var began time.Time
		if err == nil {
			began = time.Now()
			c.mu.Lock()
			c.proc, c.starts = cmd.Process, c.starts+1
			if c.stopping {
				// Stop came between the start and now: it saw no process.
				_ = signalGroup(cmd.Process, syscall.SIGTERM)
			}
			c.mu.Unlock()
			err = cmd.Wait()
		}
		c.mu.Lock()
		c.proc = nil
		stopping := c.stopping
		c.mu.Unlock()
		if stopping {
			return
		}
		status := exitStatus(cmd, err)
		if err == nil {
			c.log.Info().Str("exit", status).Msg("child exited cleanly; not restarted (as Restart=on-failure)")
			c.setErr(nil)
			return
		}
		if time.Since(began) > c.policy.Backoff.Max {
			c.sched.Reset()
		}
		if c.limitReached() {
			c.log.Error().Str("exit", status).Int("burst", c.policy.Burst).Dur("interval", c.policy.Interval).
				Msg("child failed too often; left down")
			c.setErr(ErrGaveUp)
			return
		}
		delay := c.sched.NextBackOff()
		c.log.Warn().Str("exit", status).Int64("restart_in_ms", delay.Milliseconds()).Msg("child died; restarting")
		if !c.sleep(delay) {
			return
		}
		if !c.waitRelease() {
			return
		}
	}
}

func exitStatus(cmd *exec.Cmd, err error) string {
	if cmd.ProcessState != nil {
		return cmd.ProcessState.String()
	}
	if err != nil {
		return err.Error()
	}
	return "unknown"
}

func (c *Child) setErr(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

// limitReached records a failure and says whether the burst is spent.
func (c *Child) limitReached() bool {
	if c.policy.Burst <= 0 {
		return false
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	kept := c.failures[:0]
	for _, t := range c.failures {
		if now.Sub(t) < c.policy.Interval {
			kept = append(kept, t)
		}
	}
	c.failures = append(kept, now)
	return len(c.failures) > c.policy.Burst
}

// sleep waits d, or returns false when Stop was called.
func (c *Child) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-c.wake:
			c.mu.Lock()
			stopping := c.stopping
			c.mu.Unlock()
			if stopping {
				return false
			}
		}
	}
}

// waitRelease waits while the child is held down (Hold), or returns false
// when Stop was called.
func (c *Child) waitRelease() bool {
	for {
		c.mu.Lock()
		held, stopping, rel := c.held, c.stopping, c.release
		c.mu.Unlock()
		if stopping {
			return false
		}
		if !held {
			return true
		}
		select {
		case <-rel:
		case <-c.wake:
		}
	}
}

// Signal sends sig to the running process (kill -9 is how a test makes it
// die). It returns an error when none is running.
func (c *Child) Signal(sig os.Signal) error {
	c.mu.Lock()
	p := c.proc
	c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("supervise: %s is not running", c.spec.Name)
	}
	return signalGroup(p, sig)
}

// signalGroup signals the child's process group (it leads its own), so
// that what the child started goes too and cannot hold its output open.
func signalGroup(p *os.Process, sig os.Signal) error {
	if s, ok := sig.(syscall.Signal); ok {
		if err := syscall.Kill(-p.Pid, s); err == nil {
			return nil
		}
	}
	return p.Signal(sig)
}

// Hold keeps the child down after its next exit until Release: a fault
// that keeps a process away for a while rather than the back-off's
// seconds.
func (c *Child) Hold() {
	c.mu.Lock()
	if !c.held {
		c.held, c.release = true, make(chan struct{})
	}
	c.mu.Unlock()
}

// Release lets a held child start again.
func (c *Child) Release() {
	c.mu.Lock()
	if c.held {
		c.held = false
		close(c.release)
	}
	c.mu.Unlock()
}

// PID is the running process's id, or 0 while none runs.
func (c *Child) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return 0
	}
	return c.proc.Pid
}

// Starts is how many times the process was started (1 + restarts).
func (c *Child) Starts() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.starts
}

// Done is closed when the child is down for good (Stop, a clean exit, or
// the restart limit); Err then says which.
func (c *Child) Done() <-chan struct{} { return c.done }

// Err is ErrGaveUp once the restart limit left the child down.
func (c *Child) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Stop stops supervising: SIGTERM to the process, SIGKILL after the
// policy's StopTimeout (or when ctx ends first), and waits for it.
func (c *Child) Stop(ctx context.Context) {
	c.mu.Lock()
	c.stopping = true
	p := c.proc
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	if p != nil {
		_ = signalGroup(p, syscall.SIGTERM)
	}
	timeout := c.policy.StopTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
		return
	case <-t.C:
		c.log.Warn().Dur("timeout", timeout).Msg("child did not stop after SIGTERM; killing it")
	case <-ctx.Done():
	}
	c.mu.Lock()
	p = c.proc
	c.mu.Unlock()
	if p != nil {
		_ = signalGroup(p, syscall.SIGKILL)
	}
	<-c.done
}

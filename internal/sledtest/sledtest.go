// Package sledtest starts real sled agents inside a test process, on
// loopback ports and temp dirs, and stops them when the test ends; with
// the small helpers every component's tests share (a test logger,
// polling). It imports nothing of Nexus, so the sled agent's own tests do
// not compile it; internal/racktest builds whole racks on top of it.
package sledtest

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/sledagent"
)

// Logger returns a logger for component that writes to the test log at the
// level in $RACKPLANE_TEST_LOG (default warn).
func Logger(t testing.TB, component string) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(os.Getenv("RACKPLANE_TEST_LOG"))
	if err != nil || os.Getenv("RACKPLANE_TEST_LOG") == "" {
		lvl = zerolog.WarnLevel
	}
	return zerolog.New(zerolog.NewTestWriter(t)).Level(lvl).With().Timestamp().Str("component", component).Logger()
}

// Background runs fn until the returned stop function (also registered as
// a cleanup) cancels it; stop waits for fn to return and is idempotent.
func Background(t testing.TB, name string, fn func(context.Context) error) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := fn(ctx); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// Sled is a sled agent running in the test.
type Sled struct {
	*sledagent.Server
	Config sledagent.Config
	stop   func()
}

// Stop shuts the sled agent down and waits for it (also done at cleanup).
func (s *Sled) Stop() { s.stop() }

// StartSled starts a sled agent that registers with the Nexus internal API
// at nexusInternalURL. Unset fields of cfg get loopback addresses, a temp
// data dir and two temp M.2 dirs.
func StartSled(t testing.TB, nexusInternalURL string, cfg sledagent.Config) *Sled {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	if cfg.RepoDepotAddr == "" {
		cfg.RepoDepotAddr = "127.0.0.1:0"
	}
	if cfg.M2Dirs == nil {
		cfg.M2Dirs = []string{filepath.Join(cfg.DataDir, "m2-a"), filepath.Join(cfg.DataDir, "m2-b")}
		cfg.CreateM2Dirs = true
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = 5 * time.Second
	}
	cfg.NexusURL = nexusInternalURL
	srv, err := sledagent.New(cfg, Logger(t, "sled-agent"))
	if err != nil {
		t.Fatalf("start sled agent: %v", err)
	}
	return &Sled{Server: srv, Config: cfg, stop: Background(t, "sled agent", srv.Run)}
}

// WaitFor polls cond every 20 ms until it returns nil or timeout passes,
// then fails the test with cond's last error.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

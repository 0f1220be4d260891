// Package racktest starts real Nexus servers and sled agents inside a test
// process, on loopback ports and temp dirs, against a real database, and
// stops them when the test ends.
package racktest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/nexus"
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

// Nexus is a Nexus running in the test.
type Nexus struct {
	*nexus.Server
	// Client talks to its external API.
	Client client.Nexus
	stop   func()
}

// Stop shuts the Nexus down and waits for it (also done at cleanup).
func (n *Nexus) Stop() { n.stop() }

// StartNexus starts a Nexus on loopback against databaseURL. cfg may set
// anything; unset listen addresses become 127.0.0.1:0 and an unset ID and
// data dir are made up.
func StartNexus(t testing.TB, databaseURL string, cfg nexus.Config) *Nexus {
	t.Helper()
	if cfg.ID == uuid.Nil {
		cfg.ID = uuid.New()
	}
	if cfg.ExternalAddr == "" {
		cfg.ExternalAddr = "127.0.0.1:0"
	}
	if cfg.InternalAddr == "" {
		cfg.InternalAddr = "127.0.0.1:0"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(t.TempDir(), "nexus")
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = 5 * time.Second
	}
	cfg.DatabaseURL = databaseURL
	srv, err := nexus.New(context.Background(), cfg, Logger(t, "nexus"))
	if err != nil {
		t.Fatalf("start nexus: %v", err)
	}
	n := &Nexus{Server: srv, stop: background(t, "nexus", srv.Run)}
	n.Client, err = client.NewNexus(srv.ExternalURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// background runs fn until the returned stop function (also registered as
// a cleanup) cancels it; stop waits for fn to return and is idempotent.
func background(t testing.TB, name string, fn func(context.Context) error) func() {
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
	return &Sled{Server: srv, Config: cfg, stop: background(t, "sled agent", srv.Run)}
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

// WaitRegistered waits until Nexus lists every given sled.
func WaitRegistered(t testing.TB, nx client.Nexus, sleds ...*Sled) []api.Sled {
	t.Helper()
	var listed []api.Sled
	WaitFor(t, 20*time.Second, "sleds to register", func() error {
		var err error
		listed, err = nx.SledList(context.Background())
		if err != nil {
			return err
		}
		have := map[uuid.UUID]bool{}
		for _, s := range listed {
			have[s.ID] = true
		}
		for _, s := range sleds {
			if !have[s.ID()] {
				return errors.New("sled " + s.ID().String() + " not listed yet")
			}
		}
		return nil
	})
	return listed
}

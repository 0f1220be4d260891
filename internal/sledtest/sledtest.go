// Package sledtest starts real sled agents inside a test process, on
// loopback ports and temp dirs, and stops them when the test ends; with
// the small helpers every component's tests share (a test logger,
// polling). It imports nothing of Nexus, so the sled agent's own tests do
// not compile it; internal/racktest builds whole racks on top of it.
package sledtest

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/fsutil"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent"
)

// Logger returns a logger for component that writes to the test log at the
// level in $RACKPLANE_TEST_LOG (default warn).
func Logger(t testing.TB, component string) zerolog.Logger {
	lvl := os.Getenv("RACKPLANE_TEST_LOG")
	if _, err := zerolog.ParseLevel(lvl); err != nil || lvl == "" {
		lvl = "warn"
	}
	log, err := logging.New(zerolog.NewTestWriter(t), component, logging.Options{Level: lvl})
	if err != nil {
		t.Fatal(err)
	}
	return log
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
	return StartSledLogged(t, nexusInternalURL, cfg, Logger(t, "sled-agent"))
}

// StartSledLogged is StartSled with the sled agent logging to log.
func StartSledLogged(t testing.TB, nexusInternalURL string, cfg sledagent.Config, log zerolog.Logger) *Sled {
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
	if cfg.TLS == nil {
		part := cfg.Baseboard.Part
		if part == "" {
			part = sledagent.DefaultBaseboardPart
		}
		cfg.TLS = Bundle(t, rackpki.Sled(part, serialFor(t, cfg)))
	}
	cfg.NexusURL = nexusInternalURL
	srv, err := sledagent.New(cfg, log)
	if err != nil {
		t.Fatalf("start sled agent: %v", err)
	}
	return &Sled{Server: srv, Config: cfg, stop: Background(t, "sled agent", srv.Run)}
}

// serialFor is the baseboard serial a test sled's certificate names: the
// one its config asks for, or one derived from its id, so a sled
// restarted on the same data dir is the same sled.
func serialFor(t testing.TB, cfg sledagent.Config) string {
	t.Helper()
	if cfg.Baseboard.Serial != "" {
		return cfg.Baseboard.Serial
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	id, err := fsutil.LoadOrCreateUUID(filepath.Join(cfg.DataDir, "sled-id"))
	if err != nil {
		t.Fatal(err)
	}
	return "SIM-" + strings.ToUpper(id.String()[:8])
}

// The test binary's rack CA: every Nexus and sled a test starts gets its
// certificate from it, as a real rack's parties do from theirs. Tests that
// need a stranger make their own CA.
var testCA = sync.OnceValues(func() (*rackpki.CA, error) { return rackpki.NewCA("test rack", 0) })

// CA is the test binary's rack CA.
func CA(t testing.TB) *rackpki.CA {
	t.Helper()
	ca, err := testCA()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// Bundle issues a certificate for id from the test CA.
func Bundle(t testing.TB, id rackpki.Identity) *rackpki.Bundle {
	t.Helper()
	b, err := CA(t).Issue(id, rackpki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// HTTPClient is a client that presents a certificate for id from the test
// CA and accepts any server the CA signed: how a test talks to the rack's
// mutual-TLS listeners as a sled, a Nexus or the rack-setup service.
func HTTPClient(t testing.TB, id rackpki.Identity) *http.Client {
	t.Helper()
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: Bundle(t, id).ClientTLS(rackpki.AnyIdentity, nil)}}
}

// AsNexus is a client of s's sled API with a Nexus's certificate (which
// may change what the sled holds).
func (s *Sled) AsNexus(t testing.TB) client.SledAgent {
	t.Helper()
	c, err := client.NewSledAgent(s.URL(), HTTPClient(t, rackpki.Nexus("test-nexus")))
	if err != nil {
		t.Fatal(err)
	}
	return c
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

// Package racktest starts real Nexus servers and whole racks (a Nexus, sled
// agents, a signing lineage) inside a test process, on loopback ports and
// temp dirs, against a real database, and stops them when the test ends.
// Sled agents alone come from internal/sledtest, which it builds on.
package racktest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/heartbeat"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/model"
)

// The sled-level helpers, under the names rack tests have always used.
var (
	Logger    = sledtest.Logger
	WaitFor   = sledtest.WaitFor
	StartSled = sledtest.StartSled
)

// Sled is a sled agent running in the test.
type Sled = sledtest.Sled

// Nexus is a Nexus running in the test.
type Nexus struct {
	*nexus.Server
	// Client talks to its external API with AdminToken.
	Client client.Nexus
	// AdminToken is an operator token with the admin role.
	AdminToken string
	stop       func()
}

// Stop shuts the Nexus down and waits for it (also done at cleanup).
func (n *Nexus) Stop() { n.stop() }

// StartNexus starts a Nexus on loopback against databaseURL. cfg may set
// anything; unset listen addresses become 127.0.0.1:0, an unset ID and
// data dir are made up, and unset tasks are every task of nexustasks with
// its defaults.
func StartNexus(t testing.TB, databaseURL string, cfg nexus.Config) *Nexus {
	t.Helper()
	return StartNexusLogged(t, databaseURL, cfg, Logger(t, "nexus"))
}

// StartNexusLogged is StartNexus with Nexus logging to log.
func StartNexusLogged(t testing.TB, databaseURL string, cfg nexus.Config, log zerolog.Logger) *Nexus {
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
	if cfg.Tasks == nil {
		cfg.Tasks = nexustasks.Registrar(nexustasks.Config{})
	}
	if cfg.TLS == nil {
		cfg.TLS = sledtest.Bundle(t, rackpki.Nexus(cfg.ID.String()))
	}
	cfg.DatabaseURL = databaseURL
	srv, err := nexus.New(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("start nexus: %v", err)
	}
	n := &Nexus{Server: srv, stop: sledtest.Background(t, "nexus", srv.Run)}
	// Every test rack has an admin token made the way an operator's first
	// one is (at the console), and a client that uses it: tests never run
	// with authentication off.
	tok, err := srv.App().CreateToken(app.WithActor(context.Background(), app.ConsoleActor()), "racktest-admin",
		model.RoleAdmin, 0)
	if err != nil {
		t.Fatalf("admin token: %v", err)
	}
	n.AdminToken = tok.Secret
	c, err := client.NewNexus(srv.ExternalURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	n.Client = c.WithToken(n.AdminToken)
	return n
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

// FastHeartbeat is a Nexus config whose heartbeat task runs every 200 ms,
// often enough for tests to watch other instances appear.
func FastHeartbeat() nexus.Config {
	return nexus.Config{TaskPeriods: map[string]time.Duration{heartbeat.Name: 200 * time.Millisecond}}
}

// WaitTask waits until the named task of nx has completed iteration and
// returns the task as the external API shows it.
func WaitTask(t testing.TB, nx *Nexus, name string, iteration uint64) api.BackgroundTask {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := nx.Tasks().WaitCompleted(ctx, name, iteration); err != nil {
		t.Fatal(err)
	}
	task, err := nx.Client.BackgroundTaskGet(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// Activation returns the activation of task with the given iteration from
// its history, failing the test when there is none.
func Activation(t testing.TB, task api.BackgroundTask, iteration uint64) api.TaskActivation {
	t.Helper()
	a, ok := task.HistoryEntry(iteration)
	if !ok {
		t.Fatalf("%s: no iteration %d in history %+v", task.Name, iteration, task.History)
	}
	return a
}

// Token makes an operator token for nx with role.
func (n *Nexus) Token(t testing.TB, name string, role model.Role, ttl time.Duration) string {
	t.Helper()
	tok, err := n.App().CreateToken(app.WithActor(context.Background(), app.ConsoleActor()), name, role, ttl)
	if err != nil {
		t.Fatalf("token %s: %v", name, err)
	}
	return tok.Secret
}

// Request makes a request to nx's external API with its admin token (for
// tests that send what the typed client will not).
func (n *Nexus) Request(t testing.TB, method, path string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, n.ExternalURL()+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+n.AdminToken)
	return req
}

// RunTask activates the named task of nx and waits until that activation
// (not one already running) has finished; it returns the task as the
// external API then shows it.
func RunTask(t testing.TB, nx *Nexus, name string) api.BackgroundTask {
	t.Helper()
	task, err := nx.Tasks().Task(name, false)
	if err != nil {
		t.Fatal(err)
	}
	next := max(task.Current.Iteration, task.Activations) + 1
	if err := nx.ActivateTask(name, "test"); err != nil {
		t.Fatal(err)
	}
	return WaitTask(t, nx, name, next)
}

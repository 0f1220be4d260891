// Package app is Nexus's application layer: the rules of every operation
// Nexus offers — uploading a release (verify and record), pruning and
// keeping repos, trust roots, sled registration, background-task control —
// independent of how they are reached. The HTTP handlers (nexus/httpapi),
// the status pages (nexus/ui) and the background tasks call it; it imports
// no net/http (a test enforces it).
//
// Errors it returns are *fault.Error values (a kind, a code from package
// api and an operator-facing message) or plain errors for internal
// failures; each edge maps them once.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/bgtasks/taskdb"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/depot"
	"github.com/rackplane/rackplane/nexus/model"
)

// Config is the application layer's policy.
type Config struct {
	// NexusID is this instance; its depot holds the artifacts it records.
	NexusID uuid.UUID
	// UploadMaxBytes bounds an upload's body.
	UploadMaxBytes int64
	// TufMaxExpansion bounds the total uncompressed size of an uploaded
	// archive's entries (zip bombs).
	TufMaxExpansion int64
	// TufEnforceExpiry refuses uploads whose metadata has expired.
	TufEnforceExpiry bool
	// Now is the clock expiry is judged against (nil: time.Now).
	Now func() time.Time
	// Rand picks trust-quorum coordinators (nil: seeded from the
	// operating system).
	Rand rand.Source

	// UploadConcurrency is how many uploads run at once; the rest are
	// refused with 429 and Retry-After (0: DefaultUploadConcurrency).
	UploadConcurrency int
	// UploadTempBudget bounds the temp-file bytes all uploads in progress
	// hold together (0: twice UploadMaxBytes).
	UploadTempBudget int64
	// UploadIdleTimeout cuts off an upload whose client sends nothing for
	// this long (0: DefaultUploadIdleTimeout).
	UploadIdleTimeout time.Duration
}

// Deps are the parts the application layer works with.
type Deps struct {
	DS    *datastore.Datastore
	Depot *depot.Depot
	// Tasks is this Nexus's background-task driver and TaskDB the
	// database side of the tasks (switches, heartbeats).
	Tasks  *bgtasks.Driver
	TaskDB *taskdb.Store
	Log    zerolog.Logger
	// Identity is this Nexus's certificate: what the tasks present to
	// sleds (and, on the internal listener, what sleds see).
	Identity *rackpki.Bundle
	// Metrics receives the application layer's metrics and the tasks'
	// (nil: a registry of its own that nobody serves, for tools).
	Metrics prometheus.Registerer
}

// Event is a change of state that background tasks may want to act on at
// once rather than at their next period.
type Event int

// The events the application layer reports.
const (
	// ReposChanged: the set of artifacts wanted on sleds may have changed
	// (an upload, a prune).
	ReposChanged Event = iota + 1
	// SledsChanged: a sled appeared, or what it can hold or serve changed.
	SledsChanged
	// TrustQuorumChanged: a trust-quorum configuration was started,
	// moved on or handed over.
	TrustQuorumChanged
)

// ReplicationView is what the replication task shows of its last run;
// the task registers itself with SetReplicationView.
type ReplicationView interface {
	Matrix() model.ReplicationMatrix
}

// App is the application layer of one Nexus.
type App struct {
	cfg    Config
	log    zerolog.Logger
	ds     *datastore.Datastore
	depot  *depot.Depot
	tasks  *bgtasks.Driver
	taskdb *taskdb.Store
	// tokens remembers validated tokens for reads during a database
	// outage (authcache.go).
	tokens authCache
	// identity is this Nexus's certificate.
	identity *rackpki.Bundle

	// rng picks coordinators (it locks itself).
	rng *backoff.Rand

	metricsReg prometheus.Registerer
	metrics    *uploadMetrics
	uploads    uploadTracker

	mu              sync.Mutex
	subscribers     map[Event][]func(requester string)
	replication     ReplicationView
	replicationTask string
	// heartbeatTask is the task writing this Nexus's heartbeat.
	heartbeatTask string

	// gate bounds the uploads in progress (limits.go).
	gate *uploadGate
}

// New returns the application layer, with its metrics registered on
// deps.Metrics.
func New(cfg Config, deps Deps) (*App, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.UploadConcurrency <= 0 {
		cfg.UploadConcurrency = DefaultUploadConcurrency
	}
	if cfg.UploadTempBudget <= 0 {
		cfg.UploadTempBudget = 2 * cfg.UploadMaxBytes
	}
	if cfg.UploadIdleTimeout <= 0 {
		cfg.UploadIdleTimeout = DefaultUploadIdleTimeout
	}
	if deps.Metrics == nil {
		deps.Metrics = prometheus.NewRegistry()
	}
	a := &App{cfg: cfg, log: deps.Log, ds: deps.DS, depot: deps.Depot, tasks: deps.Tasks, taskdb: deps.TaskDB,
		identity: deps.Identity, rng: backoff.NewRand(cfg.Rand), metricsReg: deps.Metrics,
		subscribers: map[Event][]func(string){},
		gate:        newUploadGate(cfg.UploadConcurrency, cfg.UploadTempBudget)}
	var err error
	if a.metrics, err = newUploadMetrics(deps.Metrics); err != nil {
		return nil, fmt.Errorf("upload metrics: %w", err)
	}
	if err := deps.Metrics.Register(&stateCollector{a: a}); err != nil {
		return nil, fmt.Errorf("state metrics: %w", err)
	}
	return a, nil
}

// Metrics is where the background tasks wired on this App register
// their metrics.
func (a *App) Metrics() prometheus.Registerer { return a.metricsReg }

// NexusID is this instance's id.
func (a *App) NexusID() uuid.UUID { return a.cfg.NexusID }

// Datastore is the datastore, for the background tasks wired on this App.
func (a *App) Datastore() *datastore.Datastore { return a.ds }

// Identity is this Nexus's certificate (nil in tools that only touch the
// database, such as nexus token create).
func (a *App) Identity() *rackpki.Bundle { return a.identity }

// SledTLS is the TLS configuration for calling sleds' APIs and depots:
// it presents this Nexus's certificate and accepts only a sled's.
func (a *App) SledTLS() *tls.Config {
	return a.identity.ClientTLS(rackpki.OnlyKinds(rackpki.KindSled), a.cfg.Now)
}

// TaskDB is the database side of the background tasks.
func (a *App) TaskDB() *taskdb.Store { return a.taskdb }

// Log is the application layer's logger.
func (a *App) Log() zerolog.Logger { return a.log }

// Depot is this instance's local artifact depot.
func (a *App) Depot() *depot.Depot { return a.depot }

// Subscribe calls fn (with the requester that caused it) whenever ev
// happens. The composition root uses it to activate tasks; fn must not
// block.
func (a *App) Subscribe(ev Event, fn func(requester string)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.subscribers[ev] = append(a.subscribers[ev], fn)
}

func (a *App) notify(ev Event, requester string) {
	a.mu.Lock()
	subs := a.subscribers[ev]
	a.mu.Unlock()
	for _, fn := range subs {
		fn(requester)
	}
}

// SetReplicationView registers the replication task (by its name, for
// the status pages) and its view.
func (a *App) SetReplicationView(task string, v ReplicationView) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.replicationTask, a.replication = task, v
}

// ReplicationTask is the replication task's name ("" when none is wired).
func (a *App) ReplicationTask() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.replicationTask
}

// ReplicationMatrix is the replication task's last collected holdings
// (empty before its first run, or when this Nexus runs no such task).
func (a *App) ReplicationMatrix() model.ReplicationMatrix {
	a.mu.Lock()
	v := a.replication
	a.mu.Unlock()
	if v == nil {
		return model.ReplicationMatrix{}
	}
	return v.Matrix()
}

// Ping checks that the database answers.
func (a *App) Ping(ctx context.Context) error { return a.ds.Ping(ctx) }

// dbUnavailable is what a request the database is needed for is told
// while it is away.
const dbUnavailable = "the database is unavailable, so nothing was read or changed; " +
	"this Nexus still serves /healthz and its background tasks' status from memory; try again once the database is back"

// translate turns the datastore's sentinels into faults with the codes the
// API answers with; anything else passes through unchanged (a fault
// already, or an internal error).
func translate(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := fault.As(err); ok {
		return err
	}
	switch {
	case errors.Is(err, datastore.ErrAmbiguous):
		// Before ErrUnavailable: the database may have gone away while
		// the commit was in flight, and the operator must know the change
		// may have been made.
		return fault.Wrap(err, fault.Unavailable, api.CodeServiceUnavailable,
			"the database could not confirm whether the change was made; look before trying again")
	case errors.Is(err, datastore.ErrUnavailable):
		return fault.Wrap(err, fault.Unavailable, api.CodeServiceUnavailable, "%s", dbUnavailable)
	case errors.Is(err, datastore.ErrNotFound):
		return fault.Wrap(err, fault.NotFound, api.CodeNotFound, "%s", stripSentinel(err, datastore.ErrNotFound))
	case errors.Is(err, datastore.ErrConflict):
		return fault.Wrap(err, fault.Conflict, api.CodeConflict, "%s", stripSentinel(err, datastore.ErrConflict))
	}
	return err
}

// stripSentinel returns err's message without the "sentinel: " prefix that
// fmt.Errorf("%w: ...") puts in front, for use as an operator-facing message.
func stripSentinel(err, sentinel error) string {
	return strings.TrimPrefix(err.Error(), sentinel.Error()+": ")
}

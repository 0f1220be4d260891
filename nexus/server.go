// Package nexus is the Nexus server: it holds the rack's desired state in
// the database, serves the operator's external API and the sled agents'
// internal API, and runs the background tasks that drive sleds toward that
// state.
//
// Several Nexus instances may run against one database at once; nothing
// here assumes it is the only one.
package nexus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/bgtasks/taskdb"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/internal/fsutil"
	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/migrations"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/depot"
)

// Config is everything a Nexus needs to start.
type Config struct {
	// ID identifies this Nexus instance among several on one database.
	ID uuid.UUID
	// ExternalAddr is the operator API's listen address (":12220").
	ExternalAddr string
	// InternalAddr is the sled agents' API listen address (":12221").
	InternalAddr string
	// DatabaseURL is a postgres:// URL (PostgreSQL or CockroachDB).
	DatabaseURL string
	// AutoMigrate brings an older (or empty) database to this build's
	// schema at start instead of refusing to start.
	AutoMigrate bool
	// DataDir holds this instance's files: its id and the depot of
	// artifacts (<data-dir>/depot).
	DataDir string
	// DatabaseWait bounds how long start-up waits for the database to
	// answer (it may still be starting, as in docker-compose).
	DatabaseWait time.Duration
	// Clock paces start-up's wait for the database (nil: the real clock).
	Clock clock.Clock
	// Rand draws the jitter of that wait's retries (nil: seeded from the
	// operating system).
	Rand rand.Source
	// ShutdownGrace bounds how long shutdown waits for in-flight requests,
	// and then for running background-task activations.
	ShutdownGrace time.Duration
	// Tasks registers the background tasks this Nexus runs on its
	// driver: the composition root passes nexustasks.Registrar (the
	// nexus package imports no task). Required.
	Tasks func(*app.App) error
	// TaskPeriods overrides background-task periods by task name; a name
	// that is not a task stops start-up.
	TaskPeriods map[string]time.Duration

	// UploadMaxBytes bounds a TUF repo upload's body (413 above it).
	UploadMaxBytes int64
	// UploadConcurrency is how many uploads run at once (429 with
	// Retry-After beyond it; 0: app.DefaultUploadConcurrency).
	UploadConcurrency int
	// UploadTempBudget bounds the temp-file bytes the uploads in progress
	// hold together (0: twice UploadMaxBytes).
	UploadTempBudget int64
	// UploadIdleTimeout cuts off an upload whose client sends nothing for
	// this long, removing its temp file (0: app.DefaultUploadIdleTimeout).
	UploadIdleTimeout time.Duration
	// TufMaxExpansion bounds the total uncompressed size of an uploaded
	// archive's entries (zip bombs).
	TufMaxExpansion int64
	// TufEnforceExpiry refuses uploads whose metadata has expired. Off by
	// default: racks are often offline and releases are signed with short
	// expiry; expiry is recorded either way.
	TufEnforceExpiry bool
	// InternalAdvertiseURL is the internal API's base URL as sleds reach
	// it (they fetch artifacts from this Nexus's depot there); empty means
	// the internal listener's own address.
	InternalAdvertiseURL string

	// TLS is this Nexus's certificate (naming it, urn:rackplane:nexus:<id>)
	// and the rack CA (required). The internal listener serves mutual TLS
	// with it and accepts only sleds and other Nexus instances; the tasks
	// present it to sleds and accept only sleds.
	TLS *rackpki.Bundle
	// ExternalTLS, when set, makes the external listener serve HTTPS with
	// this certificate (one for the names operators use, not the rack
	// identity); without it the external API is plain HTTP, and should be
	// bound to loopback or a trusted network.
	ExternalTLS *tls.Certificate
}

// Defaults for Config fields left empty.
const (
	DefaultExternalAddr = ":12220"
	DefaultInternalAddr = ":12221"
	// Real release archives are 1-3 GiB.
	DefaultUploadMaxBytes  = 8 << 30
	DefaultTufMaxExpansion = 16 << 30
)

func (c *Config) setDefaults() {
	if c.ExternalAddr == "" {
		c.ExternalAddr = DefaultExternalAddr
	}
	if c.InternalAddr == "" {
		c.InternalAddr = DefaultInternalAddr
	}
	if c.DatabaseWait == 0 {
		c.DatabaseWait = time.Minute
	}
	if c.Clock == nil {
		c.Clock = clock.Real()
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.UploadMaxBytes <= 0 {
		c.UploadMaxBytes = DefaultUploadMaxBytes
	}
	if c.TufMaxExpansion <= 0 {
		c.TufMaxExpansion = DefaultTufMaxExpansion
	}
}

// Server is a running Nexus: its listeners, its application layer and
// its background tasks.
type Server struct {
	cfg  Config
	log  zerolog.Logger
	pool *pgxpool.Pool
	ds   *datastore.Datastore
	app  *app.App

	tasks       *bgtasks.Driver
	metrics     *prometheus.Registry
	httpMetrics *httpx.HTTPMetrics

	externalLn net.Listener
	internalLn net.Listener
	external   chi.Router
	internal   chi.Router
}

// New connects to the database, checks (or, with AutoMigrate, brings up)
// its schema, and opens both listeners. Run serves them.
func New(ctx context.Context, cfg Config, log zerolog.Logger) (_ *Server, err error) {
	cfg.setDefaults()
	if cfg.ID == uuid.Nil {
		return nil, errors.New("nexus: config needs an instance ID")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("nexus: config needs a data dir (it holds the artifact depot)")
	}
	if cfg.Tasks == nil {
		return nil, errors.New("nexus: config needs its background tasks (nexustasks.Registrar)")
	}
	if cfg.TLS == nil {
		return nil, errors.New("nexus: the Nexus certificate is required (--tls-dir, or --tls-cert, --tls-key and --tls-ca; " +
			"`nexus pki issue --nexus ID` makes one)")
	}
	if id := cfg.TLS.Identity; id != rackpki.Nexus(cfg.ID.String()) {
		return nil, fmt.Errorf("nexus: the certificate names %s, but this is Nexus %s", id, cfg.ID)
	}
	log = log.With().Str("nexus_id", cfg.ID.String()).Logger()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("nexus: data dir: %w", err)
	}
	poolCfg, err := datastore.PoolConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("nexus: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, fmt.Errorf("nexus: %w", err)
	}
	defer func() {
		if err != nil {
			pool.Close()
		}
	}()
	if err := waitForDatabase(ctx, pool, cfg.DatabaseWait, cfg.Clock, backoff.NewRand(cfg.Rand), log); err != nil {
		return nil, err
	}
	if err := ensureSchema(ctx, pool, cfg.AutoMigrate, log); err != nil {
		return nil, err
	}

	s := &Server{cfg: cfg, log: log, pool: pool, ds: datastore.New(pool, log, datastore.Options{})}
	d, err := s.openDepot(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.setupApp(d); err != nil {
		return nil, err
	}
	if s.externalLn, err = net.Listen("tcp", cfg.ExternalAddr); err != nil {
		return nil, fmt.Errorf("nexus: external API: %w", err)
	}
	if s.internalLn, err = net.Listen("tcp", cfg.InternalAddr); err != nil {
		s.externalLn.Close()
		return nil, fmt.Errorf("nexus: internal API: %w", err)
	}
	// Sleds, other Nexus instances and the rack-setup service (which
	// hands the rack over) only; what each may do is decided from the
	// identity its certificate names.
	s.internalLn = tls.NewListener(s.internalLn,
		cfg.TLS.ServerTLS(rackpki.OnlyKinds(rackpki.KindSled, rackpki.KindNexus, rackpki.KindRSS), nil))
	if cfg.ExternalTLS != nil {
		s.externalLn = tls.NewListener(s.externalLn, &tls.Config{MinVersion: tls.VersionTLS12,
			Certificates: []tls.Certificate{*cfg.ExternalTLS}})
	}
	if s.external, err = s.externalRouter(); err == nil {
		s.internal, err = s.internalRouter()
	}
	if err != nil {
		s.externalLn.Close()
		s.internalLn.Close()
		return nil, fmt.Errorf("nexus: routes: %w", err)
	}
	// Other Nexus instances point sleds at this one's depot by this URL.
	if err := s.ds.NexusInstanceUpsert(ctx, cfg.ID, s.InternalAdvertiseURL()); err != nil {
		s.externalLn.Close()
		s.internalLn.Close()
		return nil, fmt.Errorf("nexus: record this instance: %w", err)
	}
	return s, nil
}

// InternalAdvertiseURL is the internal API's URL as sleds reach it.
func (s *Server) InternalAdvertiseURL() string {
	if s.cfg.InternalAdvertiseURL != "" {
		return strings.TrimRight(s.cfg.InternalAdvertiseURL, "/")
	}
	return s.InternalURL()
}

// databaseRetry paces the pings of a database that does not answer yet.
// The jitter keeps Nexus instances started together (docker-compose, a
// rack restart) from pinging in step.
var databaseRetry = backoff.Policy{Initial: 200 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.5}

func waitForDatabase(ctx context.Context, pool *pgxpool.Pool, wait time.Duration, clk clock.Clock, rnd *backoff.Rand,
	log zerolog.Logger) error {
	deadline := clk.Now().Add(wait)
	retry := backoff.New(databaseRetry, rnd)
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := pool.Ping(pctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		left := deadline.Sub(clk.Now())
		if left <= 0 {
			return fmt.Errorf("nexus: database did not answer within %s: %w", wait, err)
		}
		// Sleeping past the deadline would only delay the error; the last
		// ping is at the deadline.
		delay := min(retry.NextBackOff(), left)
		log.Warn().Err(err).Float64("retry_in_ms", logging.Millis(delay)).Msg("waiting for the database")
		if err := clk.Sleep(ctx, delay); err != nil {
			return err
		}
	}
}

// ensureSchema refuses to run against a schema this build does not know,
// unless told to migrate an older one.
func ensureSchema(ctx context.Context, pool *pgxpool.Pool, autoMigrate bool, log zerolog.Logger) error {
	st, err := migrations.Check(ctx, pool)
	if err != nil {
		return fmt.Errorf("nexus: %w", err)
	}
	serr := st.Err()
	if serr == nil {
		return nil
	}
	if autoMigrate && (errors.Is(serr, migrations.ErrNotInitialised) || errors.Is(serr, migrations.ErrTooOld)) {
		log.Info().Uint("from", st.Current).Uint("to", st.Latest).Msg("migrating database schema")
		if _, err := migrations.UpWith(ctx, pool.Config().ConnConfig, migrations.Options{Log: log}); err != nil {
			return fmt.Errorf("nexus: auto-migrate: %w", err)
		}
		st, err = migrations.Check(ctx, pool)
		if err != nil {
			return fmt.Errorf("nexus: %w", err)
		}
		serr = st.Err()
	}
	if serr != nil {
		return fmt.Errorf("nexus: %w", serr)
	}
	return nil
}

// ExternalURL is the base URL of the external API.
func (s *Server) ExternalURL() string { return listenerURL(s.externalLn, s.cfg.ExternalTLS != nil) }

// InternalURL is the base URL of the internal API (always HTTPS).
func (s *Server) InternalURL() string { return listenerURL(s.internalLn, true) }

// ID is this instance's id.
func (s *Server) ID() uuid.UUID { return s.cfg.ID }

func listenerURL(ln net.Listener, secure bool) string {
	addr := ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	scheme := "http://"
	if secure {
		scheme = "https://"
	}
	return scheme + net.JoinHostPort(host, fmt.Sprint(addr.Port))
}

// Run serves both APIs until ctx is done, then shuts down gracefully and
// closes the database pool.
func (s *Server) Run(ctx context.Context) error {
	defer s.pool.Close()
	s.log.Info().Str("external", s.ExternalURL()).Str("internal", s.InternalURL()).Msg("nexus serving")
	// Tasks stop when ctx is done, alongside the listeners; the pool is
	// closed only once both have.
	if err := s.tasks.Start(ctx); err != nil {
		s.externalLn.Close()
		s.internalLn.Close()
		return fmt.Errorf("nexus: %w", err)
	}
	err := httpx.ServeAll(ctx, s.cfg.ShutdownGrace, s.log,
		httpx.Listener{Ln: s.externalLn, Handler: s.external},
		httpx.Listener{Ln: s.internalLn, Handler: s.internal})
	// A task that overstays the bound is logged by Stop and abandoned:
	// shutdown must finish.
	_ = s.tasks.Stop(s.cfg.ShutdownGrace)
	s.log.Info().Msg("nexus stopped")
	return err
}

// LoadOrCreateID returns the instance id stored in dataDir/nexus-id,
// creating it on first start so the id survives restarts.
func LoadOrCreateID(dataDir string) (uuid.UUID, error) {
	return fsutil.LoadOrCreateUUID(filepath.Join(dataDir, "nexus-id"))
}

// setupApp creates the background-task driver and the application layer,
// registers the tasks (Config.Tasks) and checks the set, including
// Config.TaskPeriods, so bad config stops New before anything listens.
// Run starts the tasks.
func (s *Server) setupApp(d *depot.Depot) error {
	var err error
	if s.metrics, err = newMetricsRegistry(); err != nil {
		return fmt.Errorf("nexus: metrics: %w", err)
	}
	if s.httpMetrics, err = httpx.NewHTTPMetrics(s.metrics); err != nil {
		return fmt.Errorf("nexus: HTTP metrics: %w", err)
	}
	m, err := bgtasks.NewMetrics(s.metrics)
	if err != nil {
		return fmt.Errorf("nexus: background-task metrics: %w", err)
	}
	tdb := taskdb.New(s.ds)
	s.tasks = bgtasks.NewDriver(bgtasks.Options{
		Log:     s.log.With().Str("subsystem", "bgtasks").Logger(),
		Enabled: tdb.Enabled,
		Periods: s.cfg.TaskPeriods,
		Metrics: m,
	})
	s.app, err = app.New(app.Config{
		NexusID: s.cfg.ID, UploadMaxBytes: s.cfg.UploadMaxBytes, TufMaxExpansion: s.cfg.TufMaxExpansion,
		TufEnforceExpiry: s.cfg.TufEnforceExpiry, UploadConcurrency: s.cfg.UploadConcurrency,
		UploadTempBudget: s.cfg.UploadTempBudget, UploadIdleTimeout: s.cfg.UploadIdleTimeout,
	}, app.Deps{DS: s.ds, Depot: d, Tasks: s.tasks, TaskDB: tdb, Log: s.log, Identity: s.cfg.TLS, Metrics: s.metrics})
	if err != nil {
		return fmt.Errorf("nexus: %w", err)
	}
	if err := s.cfg.Tasks(s.app); err != nil {
		return fmt.Errorf("nexus: %w", err)
	}
	if err := s.tasks.Check(); err != nil {
		return fmt.Errorf("nexus: %w", err)
	}
	return nil
}

// openDepot opens <data-dir>/depot and makes it agree with the database:
// temp files are removed, and so is any artifact this instance is not
// recorded as holding (a crash between copying an upload's artifacts and
// recording them leaves such files).
func (s *Server) openDepot(ctx context.Context) (*depot.Depot, error) {
	d, temps, err := depot.Open(filepath.Join(s.cfg.DataDir, "depot"))
	if err != nil {
		return nil, fmt.Errorf("nexus: %w", err)
	}
	held, err := s.ds.NexusArtifactCopies(ctx, s.cfg.ID)
	if err != nil {
		return nil, fmt.Errorf("nexus: read local artifact copies: %w", err)
	}
	stray, err := d.RemoveExcept(held)
	if err != nil {
		return nil, fmt.Errorf("nexus: %w", err)
	}
	// The other way round: copies recorded but not on disk, which only a
	// database restored from a backup (or a data dir lost or replaced)
	// leaves. Forgotten, no sled is sent here for them, and a repo whose
	// artifact now has no holder at all shows as degraded.
	var missing []string
	for h := range held {
		if _, err := os.Stat(d.Path(h)); errors.Is(err, os.ErrNotExist) {
			missing = append(missing, h)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		if err := s.ds.NexusArtifactCopiesDrop(ctx, s.cfg.ID, missing); err != nil {
			return nil, fmt.Errorf("nexus: forget local copies the depot lacks: %w", err)
		}
		s.log.Warn().Strs("sha256", missing).Str("dir", d.Dir()).
			Msg("the database recorded local artifact copies this Nexus's depot does not hold " +
				"(a restored database, or a lost data dir): forgotten")
	}
	if temps > 0 || len(stray) > 0 {
		s.log.Info().Int("temp_files", temps).Strs("unrecorded", stray).Str("dir", d.Dir()).
			Msg("removed depot files left by an interrupted upload")
	}
	return d, nil
}

// App is this Nexus's application layer.
func (s *Server) App() *app.App { return s.app }

// Depot is this instance's local artifact depot.
func (s *Server) Depot() *depot.Depot { return s.app.Depot() }

// Tasks is this Nexus's background-task driver (tests wait on it).
func (s *Server) Tasks() *bgtasks.Driver { return s.tasks }

// ActivateTask asks for an explicit activation of the named task on behalf
// of requester; the error wraps bgtasks.ErrUnknownTask for a name no task
// has.
func (s *Server) ActivateTask(name, requester string) error {
	return s.tasks.Activate(requester, name)
}

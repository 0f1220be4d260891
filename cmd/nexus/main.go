// Command nexus runs the Nexus control-plane server, or manages its database
// schema (nexus migrate up|status).
package main

//go:generate go test -run ^TestConfigurationReference$ . -args -update-docs

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/bgtasks/sledliveness"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/buildinfo"
	"github.com/rackplane/rackplane/internal/envflag"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/migrations"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/datastore"
)

const usage = `nexus: the rackplane control-plane server.

Usage:
  nexus [flags]                  run the server
  nexus migrate up [flags]       bring the database schema to this build's version (a one-shot
                                 step a deployment runs before starting Nexus; concurrent
                                 runs wait for each other)
  nexus migrate status [flags]   show the schema version and the migration lock; exit 0 when
                                 current, 3 when it needs 'migrate up', 1 on any other problem
  nexus healthcheck [--url URL]  exit 0 when the Nexus at URL answers /healthz with ok
                                 (for container health checks)
  nexus pki init --dir DIR       make the rack CA (a real deployment's; rackdev makes its own)
  nexus pki issue --ca-dir DIR --out DIR --nexus ID|--sled PART:SERIAL|--rss
                                 issue a certificate under it
  nexus token create --name NAME [--role viewer|admin] [--ttl D] [flags]
                                 make an operator token (printed once); the first
                                 admin token comes from here`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// defaultDatabaseURL suits a local PostgreSQL; CockroachDB users pass
// postgresql://root@host:26257/rackplane?sslmode=disable.
const defaultDatabaseURL = "postgres://postgres@localhost:5432/rackplane?sslmode=disable"

type options struct {
	nexus.Config
	uploadMax    int
	uploadBudget int
	maxExpansion int
	id           string
	logLevel     string
	logFormat    string
	taskPeriods  []string
	tasks        nexustasks.Config
	// The Nexus certificate (internal mutual TLS) and the external
	// listener's HTTPS certificate.
	tlsCert, tlsKey, tlsCA, tlsDir string
	extCert, extKey                string
	version                        bool
}

func flags(name string, o *options) *envflag.Set {
	fs := envflag.New(name, usage)
	fs.String(&o.DatabaseURL, "database-url", "RACKPLANE_DATABASE_URL", defaultDatabaseURL,
		"database URL (PostgreSQL or CockroachDB)")
	fs.String(&o.logLevel, "log-level", "RACKPLANE_LOG_LEVEL", "info", "log level: trace, debug, info, warn, error")
	fs.String(&o.logFormat, "log-format", "RACKPLANE_LOG_FORMAT", "json", "log format: json, pretty or auto")
	return fs
}

// serverFlags are the flags of the server itself (nexus [flags]).
func serverFlags(o *options) *envflag.Set {
	fs := flags("nexus", o)
	fs.String(&o.ExternalAddr, "external-addr", "RACKPLANE_NEXUS_EXTERNAL_ADDR", nexus.DefaultExternalAddr,
		"listen address of the external (operator) API")
	fs.String(&o.InternalAddr, "internal-addr", "RACKPLANE_NEXUS_INTERNAL_ADDR", nexus.DefaultInternalAddr,
		"listen address of the internal API that sled agents call")
	fs.String(&o.DataDir, "data-dir", "RACKPLANE_NEXUS_DATA_DIR", "/var/lib/rackplane/nexus",
		"directory for this instance's id and local files")
	fs.String(&o.id, "id", "RACKPLANE_NEXUS_ID", "", "instance UUID (default: kept in <data-dir>/nexus-id, made on first start)")
	fs.Bool(&o.AutoMigrate, "auto-migrate", "RACKPLANE_AUTO_MIGRATE", false,
		"migrate an empty or older database schema at start (for development)")
	fs.Duration(&o.DatabaseWait, "database-wait", "RACKPLANE_DATABASE_WAIT", time.Minute,
		"how long start-up waits for the database to answer")
	fs.Duration(&o.ShutdownGrace, "shutdown-grace", "RACKPLANE_SHUTDOWN_GRACE", 10*time.Second,
		"how long shutdown waits for in-flight requests, then for running background tasks")
	fs.Strings(&o.taskPeriods, "task-period", "RACKPLANE_NEXUS_TASK_PERIODS",
		"NAME=DURATION: run background task NAME every DURATION instead of its default (repeatable)")
	fs.Duration(&o.tasks.SledLivenessThreshold, "sled-liveness-threshold", "RACKPLANE_SLED_LIVENESS_THRESHOLD",
		sledliveness.DefaultThreshold, "how long a sled may go unseen before it is marked unreachable")
	fs.Int(&o.uploadMax, "upload-max-bytes", "RACKPLANE_UPLOAD_MAX_BYTES", nexus.DefaultUploadMaxBytes,
		"largest TUF repo upload accepted, in bytes (larger ones get 413)")
	fs.Int(&o.UploadConcurrency, "upload-concurrency", "RACKPLANE_UPLOAD_CONCURRENCY", app.DefaultUploadConcurrency,
		"uploads run at once; more get 429 with Retry-After")
	fs.Int(&o.uploadBudget, "upload-temp-budget", "RACKPLANE_UPLOAD_TEMP_BUDGET", 0,
		"bytes of temp files all uploads in progress may hold together (default: twice --upload-max-bytes)")
	fs.Duration(&o.UploadIdleTimeout, "upload-idle-timeout", "RACKPLANE_UPLOAD_IDLE_TIMEOUT", app.DefaultUploadIdleTimeout,
		"cut off an upload whose client sends nothing for this long")
	fs.Int(&o.maxExpansion, "tuf-max-expansion", "RACKPLANE_TUF_MAX_EXPANSION", nexus.DefaultTufMaxExpansion,
		"largest total uncompressed size of an uploaded archive's entries, in bytes (zip bombs)")
	fs.Bool(&o.TufEnforceExpiry, "tuf-enforce-expiry", "RACKPLANE_TUF_ENFORCE_EXPIRY", false,
		"refuse uploads whose TUF metadata has expired (expiry is recorded either way)")
	fs.Int(&o.tasks.TufReposKept, "tuf-repos-kept", "RACKPLANE_TUF_REPOS_KEPT", nexustasks.DefaultTufReposKept,
		"how many of the newest TUF repos the pruner keeps")
	fs.String(&o.InternalAdvertiseURL, "internal-advertise-url", "RACKPLANE_NEXUS_INTERNAL_ADVERTISE_URL", "",
		"base URL at which sleds reach this Nexus's internal API, to copy artifacts from its depot\n"+
			"(default: the internal listener's address)")
	fs.Int(&o.tasks.Replication.MinSledReplication, "min-sled-replication", "RACKPLANE_MIN_SLED_REPLICATION",
		tufreplication.DefaultMinSledReplication,
		"sleds that must hold an artifact before Nexus drops its local copy (also how many sleds Nexus seeds itself)")
	fs.Int(&o.tasks.Replication.MaxCopiesPerSource, "replication-copies-per-source", "RACKPLANE_REPLICATION_COPIES_PER_SOURCE",
		tufreplication.DefaultMaxCopiesPerSource, "copies one sled serves to other sleds at once")
	fs.String(&o.tlsDir, "tls-dir", "RACKPLANE_NEXUS_TLS_DIR", "",
		"directory holding nexus.crt, nexus.key and ca.crt: this Nexus's certificate under the rack CA (required; "+
			"`nexus pki issue --nexus ID` makes one)")
	fs.String(&o.tlsCert, "tls-cert", "RACKPLANE_NEXUS_TLS_CERT", "", "this Nexus's certificate (PEM), instead of --tls-dir")
	fs.String(&o.tlsKey, "tls-key", "RACKPLANE_NEXUS_TLS_KEY", "", "its private key (PEM)")
	fs.String(&o.tlsCA, "tls-ca", "RACKPLANE_NEXUS_TLS_CA", "", "the rack CA's certificate (PEM)")
	fs.String(&o.extCert, "external-tls-cert", "RACKPLANE_NEXUS_EXTERNAL_TLS_CERT", "",
		"serve the external API over HTTPS with this certificate (PEM; one for the names operators use)")
	fs.String(&o.extKey, "external-tls-key", "RACKPLANE_NEXUS_EXTERNAL_TLS_KEY", "", "the external certificate's private key")
	fs.Bool(&o.version, "version", "", false, "print the version and exit")
	return fs
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "migrate" {
		return runMigrate(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "token" {
		return runToken(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "healthcheck" {
		return runHealthcheck(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "pki" {
		return runPKI(args[1:], stdout, stderr)
	}
	var o options
	fs := serverFlags(&o)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return exitUsage(err, stderr)
	}
	if o.version {
		fmt.Fprintln(stdout, buildinfo.Line("nexus"))
		return 0
	}
	periods, err := parseTaskPeriods(o.taskPeriods)
	if err != nil {
		fmt.Fprintln(stderr, "nexus: --task-period:", err)
		return 2
	}
	o.TaskPeriods = periods
	// The composition root: this Nexus runs every task of nexustasks.
	o.Tasks = nexustasks.Registrar(o.tasks)
	o.UploadMaxBytes, o.TufMaxExpansion = int64(o.uploadMax), int64(o.maxExpansion)
	o.UploadTempBudget = int64(o.uploadBudget)
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nexus: unexpected argument %q (see --help)\n", fs.Arg(0))
		return 2
	}
	log, err := logging.New(stderr, "nexus", logging.Options{Level: o.logLevel, Format: o.logFormat})
	if err != nil {
		fmt.Fprintln(stderr, "nexus:", err)
		return 2
	}
	if o.id != "" {
		if o.ID, err = uuid.Parse(o.id); err != nil {
			fmt.Fprintf(stderr, "nexus: --id %q is not a UUID\n", o.id)
			return 2
		}
	} else if o.ID, err = nexus.LoadOrCreateID(o.DataDir); err != nil {
		fmt.Fprintln(stderr, "nexus: instance id:", err)
		return 1
	}

	bundle, err := rackpki.LoadFromFlags(o.tlsCert, o.tlsKey, o.tlsCA, o.tlsDir, "nexus")
	if err != nil {
		fmt.Fprintln(stderr, "nexus:", err)
		return 2
	}
	o.TLS = bundle
	if o.TLS == nil {
		fmt.Fprintln(stderr, "nexus: the Nexus certificate is required (--tls-dir, or --tls-cert, --tls-key and --tls-ca; "+
			"`nexus pki init` and `nexus pki issue --nexus ID` make them)")
		return 2
	}
	switch {
	case (o.extCert == "") != (o.extKey == ""):
		fmt.Fprintln(stderr, "nexus: --external-tls-cert and --external-tls-key go together")
		return 2
	case o.extCert != "":
		ext, err := tls.LoadX509KeyPair(o.extCert, o.extKey)
		if err != nil {
			fmt.Fprintln(stderr, "nexus: --external-tls-cert:", err)
			return 2
		}
		o.ExternalTLS = &ext
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := nexus.New(ctx, o.Config, log)
	if err != nil {
		log.Error().Err(err).Msg("nexus failed to start")
		return 1
	}
	if err := srv.Run(ctx); err != nil {
		log.Error().Err(err).Msg("nexus stopped with an error")
		return 1
	}
	return 0
}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "up" && args[0] != "status") {
		fmt.Fprintln(stderr, "usage: nexus migrate up|status [--database-url URL]")
		return 2
	}
	verb := args[0]
	var o options
	var mo migrations.Options
	fs := flags("nexus migrate "+verb, &o)
	fs.SetOutput(stderr)
	fs.Duration(&o.DatabaseWait, "database-wait", "RACKPLANE_DATABASE_WAIT", time.Minute,
		"how long to wait for the database to answer")
	if verb == "up" {
		fs.Duration(&mo.LockWait, "lock-wait", "RACKPLANE_MIGRATE_LOCK_WAIT", migrations.DefaultLockWait,
			"how long to wait for another migrator holding the migration lock")
		fs.Duration(&mo.Lease, "lock-lease", "RACKPLANE_MIGRATE_LOCK_LEASE", migrations.DefaultLease,
			"how long this migrator's claim on the lock lasts unrenewed: a migrator that dies holding the lock\n"+
				"delays the next one by at most this")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage(err, stderr)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nexus: unexpected argument %q (see --help)\n", fs.Arg(0))
		return 2
	}
	log, err := logging.New(stderr, "nexus-migrate", logging.Options{Level: o.logLevel, Format: o.logFormat})
	if err != nil {
		fmt.Fprintln(stderr, "nexus:", err)
		return 2
	}
	cfg, err := datastore.PoolConfig(o.DatabaseURL)
	if err != nil {
		fmt.Fprintln(stderr, "nexus:", err)
		return 2
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "rackplane-migrate"
	// No overall deadline: waiting for the database and for the lock are
	// bounded by their flags, and a migration cut off half-way would
	// leave the schema dirty.
	mo.Log = log
	if err := migrations.WaitForDatabase(ctx, cfg.ConnConfig, o.DatabaseWait, mo); err != nil {
		fmt.Fprintln(stderr, "nexus: migrate "+verb+":", err)
		return 1
	}
	if verb == "up" {
		before, _ := checkStatus(ctx, cfg)
		st, err := migrations.UpWith(ctx, cfg.ConnConfig, mo)
		if err != nil {
			fmt.Fprintln(stderr, "nexus: migrate up:", err)
			return 1
		}
		if before.Initialised && before.Current == st.Current {
			fmt.Fprintf(stdout, "schema already at version %d; nothing to do\n", st.Current)
		} else if !before.Initialised {
			fmt.Fprintf(stdout, "created schema at version %d\n", st.Current)
		} else {
			fmt.Fprintf(stdout, "migrated schema from version %d to %d\n", before.Current, st.Current)
		}
		return 0
	}
	st, holder, err := checkStatusAndLock(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "nexus: migrate status:", err)
		return 1
	}
	fmt.Fprintf(stdout, "schema version: %d (this build: %d)\n", st.Current, st.Latest)
	switch {
	case holder == nil:
		fmt.Fprintln(stdout, "migration lock: free")
	case holder.Stale:
		fmt.Fprintf(stdout, "migration lock: stale claim by %s; the next `nexus migrate up` takes it over\n", holder)
	default:
		fmt.Fprintf(stdout, "migration lock: held by %s\n", holder)
	}
	switch serr := st.Err(); {
	case serr == nil:
		fmt.Fprintln(stdout, "status: up to date")
		return 0
	case errors.Is(serr, migrations.ErrTooOld), errors.Is(serr, migrations.ErrNotInitialised):
		fmt.Fprintln(stdout, "status:", serr)
		return 3
	default:
		fmt.Fprintln(stdout, "status:", serr)
		return 1
	}
}

func checkStatusAndLock(ctx context.Context, cfg *pgxpool.Config) (migrations.Status, *migrations.LockHolder, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return migrations.Status{}, nil, err
	}
	defer pool.Close()
	st, err := migrations.Check(ctx, pool)
	if err != nil {
		return st, nil, err
	}
	holder, err := migrations.LockStatus(ctx, pool)
	return st, holder, err
}

func checkStatus(ctx context.Context, cfg *pgxpool.Config) (migrations.Status, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return migrations.Status{}, err
	}
	defer pool.Close()
	return migrations.Check(ctx, pool)
}

// parseTaskPeriods turns NAME=DURATION pairs into a map. Whether NAME is a
// task is checked by Nexus at start, which knows the tasks.
func parseTaskPeriods(pairs []string) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	for _, p := range pairs {
		name, value, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("%q must be NAME=DURATION, like sled_liveness=30s", p)
		}
		d, err := time.ParseDuration(value)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%q: %q is not a positive duration (like 30s or 5m)", p, value)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s is given twice", name)
		}
		out[name] = d
	}
	return out, nil
}

func exitUsage(err error, stderr io.Writer) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "nexus:", err)
	return 2
}

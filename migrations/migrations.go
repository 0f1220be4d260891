// Package migrations holds the numbered schema migrations and the code that
// brings a database to the schema this build knows.
//
// A fresh database is created from schema/dbinit.sql in one transaction that
// also records the latest migration version; an older database is upgraded
// by golang-migrate, one numbered file at a time. Nexus never runs against a
// schema it does not know: Check reports a database that is uninitialised,
// older, newer or left dirty by a failed migration, and says what to do.
//
// Whoever changes the schema first takes the migration lock, a lease in the
// database that other migrators wait for and that a dead holder's claim
// gives up by itself (see lock.go), so that any number of `nexus migrate up`
// runs may start at once, on PostgreSQL and CockroachDB alike.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	"github.com/golang-migrate/migrate/v4/database/cockroachdb"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/schema"
)

//go:embed *.sql
var files embed.FS

// versionTable is golang-migrate's default version table, shared with it.
const versionTable = "schema_migrations"

var (
	// ErrNotInitialised: the database has no rackplane schema yet.
	ErrNotInitialised = errors.New("database has no rackplane schema")
	// ErrTooOld: the schema is older than this build; migrate it up.
	ErrTooOld = errors.New("database schema is older than this build")
	// ErrTooNew: the schema is newer than this build; run a newer Nexus.
	ErrTooNew = errors.New("database schema is newer than this build")
	// ErrDirty: a migration failed half-way and needs a person.
	ErrDirty = errors.New("database schema is dirty")
	// ErrForeign: the database has tables but no rackplane version record.
	ErrForeign = errors.New("database has tables but no rackplane schema version")
)

// Status is where a database's schema stands relative to this build.
type Status struct {
	// Current is the applied version; 0 when the database is uninitialised.
	Current uint `json:"current"`
	// Latest is the newest version this build knows.
	Latest uint `json:"latest"`
	// Dirty is set when a migration to Current failed part-way.
	Dirty bool `json:"dirty"`
	// Initialised is false when no version is recorded.
	Initialised bool `json:"initialised"`
}

// Err returns nil when the database is exactly at Latest and clean, and an
// error wrapping one of the sentinel errors, with advice, otherwise.
func (s Status) Err() error {
	switch {
	case !s.Initialised:
		return fmt.Errorf("%w: run `nexus migrate up` (or start Nexus with --auto-migrate)", ErrNotInitialised)
	case s.Dirty:
		return fmt.Errorf("%w: migration %d failed part-way; inspect the database, repair it by hand, "+
			"then record the version it is really at (golang-migrate `force`) before retrying", ErrDirty, s.Current)
	case s.Current > s.Latest:
		return fmt.Errorf("%w: database is at version %d but this Nexus knows only up to %d; run a newer Nexus",
			ErrTooNew, s.Current, s.Latest)
	case s.Current < s.Latest:
		return fmt.Errorf("%w: database is at version %d, this Nexus needs %d; run `nexus migrate up` "+
			"(or start Nexus with --auto-migrate)", ErrTooOld, s.Current, s.Latest)
	}
	return nil
}

var fileName = regexp.MustCompile(`^(\d+)_[a-z0-9_]+\.(up|down)\.sql$`)

// Latest returns the highest migration version embedded in this build.
func Latest() uint {
	versions, err := Versions()
	if err != nil || len(versions) == 0 {
		// The embedded files are checked by tests; a bad name is a build bug.
		panic(fmt.Sprintf("migrations: bad embedded migrations: %v", err))
	}
	return versions[len(versions)-1]
}

// Versions lists the embedded migration versions in ascending order and
// checks that every version has both an up and a down file.
func Versions() ([]uint, error) {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		return nil, err
	}
	seen := map[uint]map[string]bool{}
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %q is not named NNNN_name.(up|down).sql", e.Name())
		}
		v, _ := strconv.ParseUint(m[1], 10, 32)
		if seen[uint(v)] == nil {
			seen[uint(v)] = map[string]bool{}
		}
		seen[uint(v)][m[2]] = true
	}
	var out []uint
	for v, dirs := range seen {
		if !dirs["up"] || !dirs["down"] {
			return nil, fmt.Errorf("migration %d needs both an up and a down file", v)
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// Querier is what Check needs: a pool, a connection or a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Check reads the schema version without changing anything.
func Check(ctx context.Context, q Querier) (Status, error) {
	st := Status{Latest: Latest()}
	var version int64
	var dirty bool
	err := q.QueryRow(ctx, "SELECT version, dirty FROM "+versionTable+" LIMIT 1").Scan(&version, &dirty)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows), errors.As(err, &pgErr) && pgErr.Code == "42P01":
		return st, nil
	case err != nil:
		return st, fmt.Errorf("read schema version: %w", err)
	}
	st.Initialised, st.Current, st.Dirty = true, uint(version), dirty
	return st, nil
}

// Options tune Up; the zero value picks the defaults.
type Options struct {
	// LockWait bounds how long Up waits for another migrator's lock
	// (DefaultLockWait when zero).
	LockWait time.Duration
	// Lease is how long this migrator's claim on the lock lasts without
	// renewal, and so how long a migrator that dies holding it delays the
	// next one (DefaultLease when zero).
	Lease time.Duration
	// Holder names this migrator in the lock row (default: host and pid).
	Holder string
	// Log receives the lock's waits and take-overs (zero: discarded).
	Log zerolog.Logger
	// Clock paces the waits (nil: the real clock); Rand draws their jitter
	// (nil: seeded from the operating system).
	Clock clock.Clock
	Rand  rand.Source

	// driver forces golang-migrate's cockroachdb driver on PostgreSQL
	// (tests), so that its code path runs where CockroachDB cannot.
	driver dialect
	// beforeFreshCommit runs just before the fresh-schema transaction
	// commits (tests kill the process there); afterLock runs once the lock
	// is taken (tests make a holder slow there).
	beforeFreshCommit func()
	afterLock         func()
}

func (o *Options) setDefaults() {
	if o.LockWait <= 0 {
		o.LockWait = DefaultLockWait
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.Holder == "" {
		o.Holder = defaultHolder()
	}
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
}

type dialect int

const (
	dialectUnknown dialect = iota
	dialectPostgres
	dialectCockroach
)

// Up brings the database at connConfig to the latest schema with the
// default Options (see UpWith).
func Up(ctx context.Context, connConfig *pgx.ConnConfig) (Status, error) {
	return UpWith(ctx, connConfig, Options{})
}

// UpWith brings the database at connConfig to the latest schema: a fresh
// database is created from dbinit.sql, an older one migrated. It holds the
// migration lock throughout (waiting for another migrator's up to
// o.LockWait), so several instances may run it at once; it is harmless to
// run again.
func UpWith(ctx context.Context, connConfig *pgx.ConnConfig, o Options) (Status, error) {
	o.setDefaults()
	s, err := openSession(ctx, connConfig, &o)
	if err != nil {
		return Status{}, err
	}
	defer s.close()
	if err := s.lock(ctx); err != nil {
		return Status{}, err
	}
	defer s.unlock(ctx)
	if o.afterLock != nil {
		o.afterLock()
	}
	if err := s.openMigrate(ctx); err != nil {
		return Status{}, err
	}
	if err := s.initFresh(ctx); err != nil {
		return Status{}, err
	}
	st, err := status(s.drv)
	if err != nil {
		return st, err
	}
	if st.Dirty || st.Current > st.Latest {
		return st, st.Err()
	}
	if err := s.m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		st, _ = status(s.drv)
		return st, fmt.Errorf("migrate up: %w", err)
	}
	if s.lease.isLost() {
		st, _ = status(s.drv)
		return st, fmt.Errorf("%w: migrations stopped at version %d; run `nexus migrate up` again", ErrLockLost, st.Current)
	}
	return status(s.drv)
}

// Down reverts every migration. Only tests use it: a production schema is
// never migrated down.
func Down(ctx context.Context, connConfig *pgx.ConnConfig) error {
	return withMigrate(ctx, connConfig, Options{}, func(m *migrate.Migrate) error {
		if err := m.Down(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
			return fmt.Errorf("migrate down: %w", err)
		}
		return nil
	})
}

// UpFromMigrations applies every numbered migration to an empty database,
// bypassing dbinit.sql. Tests use it to prove both paths agree.
func UpFromMigrations(ctx context.Context, connConfig *pgx.ConnConfig) error {
	return withMigrate(ctx, connConfig, Options{}, func(m *migrate.Migrate) error {
		if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
			return fmt.Errorf("migrate up: %w", err)
		}
		return nil
	})
}

func withMigrate(ctx context.Context, connConfig *pgx.ConnConfig, o Options, fn func(*migrate.Migrate) error) error {
	o.setDefaults()
	s, err := openSession(ctx, connConfig, &o)
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.unlock(ctx)
	if err := s.openMigrate(ctx); err != nil {
		return err
	}
	return fn(s.m)
}

// session is one migrator's connections to the database, its claim on the
// lock and, once opened, golang-migrate over them.
type session struct {
	o       *Options
	dialect dialect
	pool    *pgxpool.Pool
	db      *sql.DB
	lease   *lease
	cancel  context.CancelFunc
	// stop becomes golang-migrate's GracefulStop channel: a lost lock
	// stops it before its next migration.
	stop chan bool
	m    *migrate.Migrate
	drv  database.Driver
}

func openSession(ctx context.Context, connConfig *pgx.ConnConfig, o *Options) (*session, error) {
	s := &session{o: o, stop: make(chan bool, 1)}
	var err error
	if s.dialect, err = detectDialect(ctx, connConfig); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	cfg, err := pgxpool.ParseConfig("")
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig = connConfig.Copy()
	// The lease's renewals, the fresh-schema transaction and
	// golang-migrate's connection at once, and one spare.
	cfg.MaxConns = 4
	if s.dialect == dialectCockroach {
		cfg.AfterConnect = disableAutocommitBeforeDDL
	}
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	s.db = stdlib.OpenDBFromPool(s.pool)
	return s, nil
}

// disableAutocommitBeforeDDL keeps a DDL statement inside the transaction
// it is sent in. From CockroachDB v25.1 the session default is on: each DDL
// in an explicit transaction first commits what came before it, so the
// fresh-schema transaction would no longer be all or nothing. Versions
// from before the setting (it came in v24.1, off by default) never did
// that, so an unknown variable (42704) is fine.
func disableAutocommitBeforeDDL(ctx context.Context, conn *pgx.Conn) error {
	_, err := conn.Exec(ctx, "SET autocommit_before_ddl = off")
	if sqlState(err) == "42704" {
		return nil
	}
	return err
}

// detectDialect tells CockroachDB from PostgreSQL by what the server says
// it is, so that the same postgres:// URL works for both.
func detectDialect(ctx context.Context, connConfig *pgx.ConnConfig) (dialect, error) {
	conn, err := pgx.ConnectConfig(ctx, connConfig)
	if err != nil {
		return dialectUnknown, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return dialectUnknown, err
	}
	if strings.Contains(v, "CockroachDB") {
		return dialectCockroach, nil
	}
	return dialectPostgres, nil
}

// lock takes the migration lock and keeps it renewed; a take-over by
// another migrator stops golang-migrate before its next migration.
func (s *session) lock(ctx context.Context) error {
	l, err := acquireLease(ctx, s.pool, s.o)
	if err != nil {
		return err
	}
	s.lease = l
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	go l.keepAlive(kctx, func() {
		select {
		case s.stop <- true:
		default:
		}
	})
	return nil
}

func (s *session) unlock(ctx context.Context) {
	if s.lease != nil {
		s.lease.release(ctx)
		s.cancel()
	}
}

func (s *session) close() {
	if s.m != nil {
		s.m.Close()
	}
	s.db.Close()
	s.pool.Close()
}

// openMigrate opens golang-migrate with the driver for the dialect (or the
// one Options forces). The caller holds the lock.
func (s *session) openMigrate(ctx context.Context) error {
	crdb := s.dialect == dialectCockroach || s.o.driver == dialectCockroach
	if crdb {
		if err := s.prepareDriverLock(ctx); err != nil {
			return err
		}
	}
	var drv database.Driver
	err := retryRaces(ctx, s.o, backoff.NewRand(s.o.Rand), "open the migration driver", func() error {
		var err error
		if crdb {
			drv, err = cockroachdb.WithInstance(s.db, &cockroachdb.Config{MigrationsTable: versionTable, LockTable: driverLockTable})
		} else {
			drv, err = migratepgx.WithInstance(s.db, &migratepgx.Config{MigrationsTable: versionTable})
		}
		return err
	})
	if err != nil {
		return err
	}
	src, err := iofs.New(files, ".")
	if err != nil {
		drv.Close()
		return err
	}
	m, err := migrate.NewWithInstance("iofs", src, "rackplane", drv)
	if err != nil {
		drv.Close()
		return err
	}
	m.GracefulStop = s.stop
	s.m, s.drv = m, drv
	return nil
}

func status(drv database.Driver) (Status, error) {
	st := Status{Latest: Latest()}
	v, dirty, err := drv.Version()
	if err != nil {
		return st, fmt.Errorf("read schema version: %w", err)
	}
	if v != database.NilVersion {
		st.Initialised, st.Current, st.Dirty = true, uint(v), dirty
	}
	return st, nil
}

// freshStates are the errors on which the fresh-schema transaction is run
// again: serialization failures, and an outcome that is not known (40003,
// CockroachDB's ambiguous commit; or the connection lost during COMMIT),
// after which the version row says whether it committed.
var freshStates = map[string]bool{"40001": true, "40P01": true, "40003": true}

// initFresh creates the schema from dbinit.sql when the database has
// none, recording the latest version in the same transaction so that a
// crash leaves either nothing or a complete schema.
//
// On CockroachDB that holds because the transaction only creates objects
// (no backfills or validations of existing tables, which run after commit
// there) and because autocommit_before_ddl is off on its connection. The
// version row is written with DELETE, not TRUNCATE: TRUNCATE is itself a
// schema change on CockroachDB, run outside the transaction.
func (s *session) initFresh(ctx context.Context) error {
	wait := backoff.New(lockRetry, backoff.NewRand(s.o.Rand))
	for attempt := 1; ; attempt++ {
		st, err := status(s.drv)
		if err != nil || st.Initialised {
			return err
		}
		err = s.lease.withoutRenewals(ctx, func() error { return s.freshOnce(ctx) })
		var unknown commitUnknownError
		if err == nil || !(freshStates[sqlState(err)] || errors.As(err, &unknown)) {
			return err
		}
		if attempt >= 10 {
			return fmt.Errorf("create schema from dbinit.sql: gave up after %d attempts: %w", attempt, err)
		}
		s.o.Log.Warn().Err(err).Int("attempt", attempt).Msg("creating the schema did not go through; checking and retrying")
		if err := s.o.Clock.Sleep(ctx, wait.NextBackOff()); err != nil {
			return err
		}
	}
}

func (s *session) freshOnce(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Release()
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return fmt.Errorf("create schema from dbinit.sql: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var others int
	err = tx.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables
		WHERE table_schema = current_schema() AND NOT (table_name = ANY($1::TEXT[]))`, BookkeepingTables).Scan(&others)
	if err != nil {
		return fmt.Errorf("inspect database: %w", err)
	}
	if others > 0 {
		return fmt.Errorf("%w: it has %d other tables; point Nexus at an empty database or a rackplane one", ErrForeign, others)
	}
	s.o.Log.Info().Uint("version", Latest()).Msg("creating the schema from dbinit.sql")
	// Exec without arguments sends the whole file in one simple-protocol
	// message, inside this transaction.
	if _, err := tx.Exec(ctx, schema.DBInit); err != nil {
		return fmt.Errorf("create schema from dbinit.sql: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM `+versionTable); err != nil {
		return fmt.Errorf("record schema version: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+versionTable+` (version, dirty) VALUES ($1, false)`, int64(Latest())); err != nil {
		return fmt.Errorf("record schema version: %w", err)
	}
	if err := s.lease.holds(ctx, tx); err != nil {
		return err
	}
	if s.o.beforeFreshCommit != nil {
		s.o.beforeFreshCommit()
	}
	if err := tx.Commit(ctx); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			// The server may have committed before the connection went.
			return commitUnknownError{err}
		}
		return fmt.Errorf("create schema from dbinit.sql: commit: %w", err)
	}
	return nil
}

// commitUnknownError is a COMMIT whose answer never came.
type commitUnknownError struct{ err error }

func (e commitUnknownError) Error() string {
	return fmt.Sprintf("create schema from dbinit.sql: commit outcome unknown: %v", e.err)
}
func (e commitUnknownError) Unwrap() error { return e.err }

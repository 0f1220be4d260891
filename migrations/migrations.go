// Package migrations holds the numbered schema migrations and the code that
// brings a database to the schema this build knows.
//
// A fresh database is created from schema/dbinit.sql in one transaction that
// also records the latest migration version; an older database is upgraded
// by golang-migrate, one numbered file at a time. Nexus never runs against a
// schema it does not know: Check reports a database that is uninitialised,
// older, newer or left dirty by a failed migration, and says what to do.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	"github.com/golang-migrate/migrate/v4/database/cockroachdb"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

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

// Up brings the database at connConfig to the latest schema: a fresh
// database is created from dbinit.sql, an older one migrated. It is safe to
// run concurrently from several Nexus instances (golang-migrate's lock
// serialises them) and harmless to run again.
func Up(ctx context.Context, connConfig *pgx.ConnConfig) (Status, error) {
	m, drv, closeFn, err := open(ctx, connConfig)
	if err != nil {
		return Status{}, err
	}
	defer closeFn()

	if err := initFresh(ctx, drv, connConfig); err != nil {
		return Status{}, err
	}
	st, err := status(drv)
	if err != nil {
		return st, err
	}
	if st.Dirty || st.Current > st.Latest {
		return st, st.Err()
	}
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		st, _ = status(drv)
		return st, fmt.Errorf("migrate up: %w", err)
	}
	return status(drv)
}

// Down reverts every migration. Only tests use it: a production schema is
// never migrated down.
func Down(ctx context.Context, connConfig *pgx.ConnConfig) error {
	m, _, closeFn, err := open(ctx, connConfig)
	if err != nil {
		return err
	}
	defer closeFn()
	if err := m.Down(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrate down: %w", err)
	}
	return nil
}

// UpFromMigrations applies every numbered migration to an empty database,
// bypassing dbinit.sql. Tests use it to prove both paths agree.
func UpFromMigrations(ctx context.Context, connConfig *pgx.ConnConfig) error {
	m, _, closeFn, err := open(ctx, connConfig)
	if err != nil {
		return err
	}
	defer closeFn()
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrate up: %w", err)
	}
	return nil
}

func open(ctx context.Context, connConfig *pgx.ConnConfig) (*migrate.Migrate, database.Driver, func(), error) {
	db := stdlib.OpenDB(*connConfig)
	crdb, err := isCockroach(ctx, db)
	if err != nil {
		db.Close()
		return nil, nil, nil, fmt.Errorf("connect: %w", err)
	}
	var drv database.Driver
	if crdb {
		drv, err = cockroachdb.WithInstance(db, &cockroachdb.Config{MigrationsTable: versionTable})
	} else {
		drv, err = migratepgx.WithInstance(db, &migratepgx.Config{MigrationsTable: versionTable})
	}
	if err != nil {
		db.Close()
		return nil, nil, nil, fmt.Errorf("open migration driver: %w", err)
	}
	src, err := iofs.New(files, ".")
	if err != nil {
		drv.Close()
		return nil, nil, nil, err
	}
	m, err := migrate.NewWithInstance("iofs", src, "rackplane", drv)
	if err != nil {
		drv.Close()
		return nil, nil, nil, err
	}
	return m, drv, func() { m.Close() }, nil
}

// isCockroach tells CockroachDB from PostgreSQL by what the server says it
// is, so the same postgres:// URL works for both.
func isCockroach(ctx context.Context, db *sql.DB) (bool, error) {
	var v string
	if err := db.QueryRowContext(ctx, "SELECT version()").Scan(&v); err != nil {
		return false, err
	}
	return strings.Contains(v, "CockroachDB"), nil
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

// initFresh creates the schema from dbinit.sql when the database has none,
// recording the latest version in the same transaction so that a crash
// leaves either nothing or a complete schema.
func initFresh(ctx context.Context, drv database.Driver, connConfig *pgx.ConnConfig) error {
	if err := drv.Lock(); err != nil {
		return fmt.Errorf("lock schema: %w", err)
	}
	defer drv.Unlock()

	st, err := status(drv)
	if err != nil || st.Initialised {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, connConfig)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)

	var others int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_name NOT IN ($1, 'schema_lock')`, versionTable).Scan(&others)
	if err != nil {
		return fmt.Errorf("inspect database: %w", err)
	}
	if others > 0 {
		return fmt.Errorf("%w: it has %d other tables; point Nexus at an empty database or a rackplane one", ErrForeign, others)
	}
	// One simple-protocol Exec of several statements runs as one implicit
	// transaction; BEGIN/COMMIT make that explicit for CockroachDB too.
	script := "BEGIN;\n" + schema.DBInit + fmt.Sprintf(`;
TRUNCATE %[1]s;
INSERT INTO %[1]s (version, dirty) VALUES (%[2]d, false);
COMMIT;`, versionTable, Latest())
	if _, err := conn.Exec(ctx, script); err != nil {
		return fmt.Errorf("create schema from dbinit.sql: %w", err)
	}
	return nil
}

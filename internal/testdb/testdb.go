// Package testdb gives each test its own real database: PostgreSQL, or the
// CockroachDB (or PostgreSQL) server RACKPLANE_TEST_DATABASE_URL names.
//
// Without the variable, one throwaway PostgreSQL cluster (see
// internal/pgtemp) is started per test binary on first use, a template
// database is brought to the current schema once, and every New clones the
// template (a fraction of a second). With it, databases are made on that
// server (the URL's database is used to create and drop others); on
// CockroachDB, which has no template databases, every New runs the
// migrations into a new database instead. Every database is dropped when
// its test ends, and a failure to drop it fails the test: on a shared
// server a leak would otherwise go unnoticed.
//
// Tests that depend on something only PostgreSQL has say so with
// PostgresOnly, which skips them (with the reason) on CockroachDB runs only;
// .ci/cockroach runs the suite on CockroachDB when a binary is at hand.
//
// A test binary that uses this package must have
//
//	func TestMain(m *testing.M) { testdb.Main(m) }
//
// so the cluster is shut down and removed when the tests end.
package testdb

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackplane/rackplane/internal/pgtemp"
	"github.com/rackplane/rackplane/internal/reqid"
	"github.com/rackplane/rackplane/migrations"
)

// EnvURL names the variable that points tests at an existing server.
const EnvURL = "RACKPLANE_TEST_DATABASE_URL"

var (
	mainCalled atomic.Bool
	once       sync.Once
	shared     *server
	sharedErr  error
	cloneMu    sync.Mutex
)

// server is where test databases are made.
type server struct {
	cluster  *pgtemp.Cluster // nil when EnvURL is used
	adminURL string
	admin    *pgxpool.Pool
	// template is the migrated database New clones; empty on CockroachDB.
	template  string
	cockroach bool
}

// Main runs the tests and then removes the shared cluster (or, with
// EnvURL, the template database).
func Main(m *testing.M) {
	mainCalled.Store(true)
	code := m.Run()
	if shared != nil {
		shared.close()
	}
	os.Exit(code)
}

// DB is one test's database.
type DB struct {
	// Name is the database's name.
	Name string
	// URL connects to it.
	URL string
	// Pool is connected to it and closed when the test ends.
	Pool *pgxpool.Pool
}

// ConnConfig returns a connection config for the database.
func (d *DB) ConnConfig(t testing.TB) *pgx.ConnConfig {
	cfg, err := pgx.ParseConfig(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Count runs a query returning one integer (a SELECT count(*) ...), for
// tests that assert what a request left behind.
func (d *DB) Count(t testing.TB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := d.Pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("count %q: %v", query, err)
	}
	return n
}

// New returns a fresh database with the current schema.
func New(t testing.TB) *DB {
	t.Helper()
	s := get(t)
	name := "t_" + reqid.New()
	if s.cockroach {
		// No TEMPLATE on CockroachDB (only template0 exists, for
		// PostgreSQL compatibility): build the schema the way a
		// deployment does.
		db := NewEmpty(t)
		if _, err := migrations.Up(context.Background(), db.ConnConfig(t)); err != nil {
			t.Fatalf("testdb: migrate %s: %v", db.Name, err)
		}
		return db
	}
	cloneMu.Lock()
	_, err := s.admin.Exec(context.Background(),
		fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", ident(name), ident(s.template)))
	cloneMu.Unlock()
	if err != nil {
		t.Fatalf("testdb: clone template: %v", err)
	}
	return s.open(t, name)
}

// NewEmpty returns a fresh database with no schema at all, for tests of
// migrations themselves.
func NewEmpty(t testing.TB) *DB {
	t.Helper()
	s := get(t)
	name := "t_" + reqid.New()
	if _, err := s.admin.Exec(context.Background(), "CREATE DATABASE "+ident(name)); err != nil {
		t.Fatalf("testdb: create database: %v", err)
	}
	return s.open(t, name)
}

func (s *server) open(t testing.TB, name string) *DB {
	t.Helper()
	u := withDatabase(s.adminURL, name)
	pool, err := pgxpool.New(context.Background(), u)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	t.Cleanup(func() {
		pool.Close()
		if err := s.drop(name); err != nil {
			t.Errorf("testdb: %v", err)
		}
	})
	return &DB{Name: name, URL: u, Pool: pool}
}

// drop removes a database, cutting off connections a test left open
// (PostgreSQL's FORCE; CockroachDB drops under open sessions and needs
// CASCADE for a database that still holds tables). A failed drop is tried
// again a few times: CockroachDB may refuse one while a schema change job
// on the database finishes.
func (s *server) drop(name string) error {
	stmt := "DROP DATABASE IF EXISTS " + ident(name) + " WITH (FORCE)"
	if s.cockroach {
		stmt = "DROP DATABASE IF EXISTS " + ident(name) + " CASCADE"
	}
	var err error
	for attempt := range 5 {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err = s.admin.Exec(ctx, stmt)
		cancel()
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("drop database %s (it is left on the server): %w", name, err)
}

// Cockroach reports whether this run's databases are on CockroachDB.
func Cockroach(t testing.TB) bool {
	t.Helper()
	return get(t).cockroach
}

// PostgresOnly marks a test that needs what only PostgreSQL has (named by
// why): on a CockroachDB run it is skipped with that reason; on PostgreSQL
// it runs, so it is never counted as passing without having run.
func PostgresOnly(t testing.TB, why string) {
	t.Helper()
	if Cockroach(t) {
		t.Skipf("PostgreSQL only, not run on CockroachDB: %s", why)
	}
}

// Execer is what ForceSerializationFailure needs: a transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ForceSerializationFailure makes the server fail tx's current statement
// with a real serialization failure (SQLSTATE 40001) and returns that
// error, on PostgreSQL (a PL/pgSQL block raising it) and CockroachDB
// (crdb_internal.force_retry, which fails every statement of a transaction
// younger than its argument). On CockroachDB a statement's result must
// have reached the client first, or the server retries the transaction
// by itself instead of reporting the failure; the version() query that
// picks the dialect does that.
func ForceSerializationFailure(ctx context.Context, tx Execer) error {
	var v string
	if err := tx.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return err
	}
	var err error
	if strings.Contains(v, "CockroachDB") {
		_, err = tx.Exec(ctx, "SELECT crdb_internal.force_retry('1h'::INTERVAL)")
	} else {
		_, err = tx.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'forced by the test' USING ERRCODE = 'serialization_failure'; END $$`)
	}
	if err == nil {
		return errors.New("testdb: the server did not raise the serialization failure")
	}
	return err
}

func get(t testing.TB) *server {
	t.Helper()
	if !mainCalled.Load() {
		t.Fatal("testdb: this test binary needs `func TestMain(m *testing.M) { testdb.Main(m) }` " +
			"so that its PostgreSQL cluster is removed when the tests end")
	}
	once.Do(func() { shared, sharedErr = start() })
	if sharedErr != nil {
		t.Fatalf("testdb: %v", sharedErr)
	}
	return shared
}

func start() (*server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := &server{template: "rackplane_template_" + reqid.New()}
	if u := os.Getenv(EnvURL); u != "" {
		s.adminURL = u
	} else {
		c, err := pgtemp.Start(ctx, pgtemp.Options{})
		if err != nil {
			return nil, err
		}
		s.cluster, s.adminURL = c, c.URL("postgres")
	}
	var err error
	if s.admin, err = pgxpool.New(ctx, s.adminURL); err != nil {
		s.close()
		return nil, err
	}
	var version string
	if err := s.admin.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		s.close()
		return nil, err
	}
	if s.cockroach = strings.Contains(version, "CockroachDB"); s.cockroach {
		s.template = ""
		return s, nil
	}
	if _, err := s.admin.Exec(ctx, "CREATE DATABASE "+ident(s.template)); err != nil {
		s.close()
		return nil, fmt.Errorf("create template: %w", err)
	}
	cfg, err := pgx.ParseConfig(withDatabase(s.adminURL, s.template))
	if err != nil {
		s.close()
		return nil, err
	}
	if _, err := migrations.Up(ctx, cfg); err != nil {
		s.close()
		return nil, fmt.Errorf("migrate template: %w", err)
	}
	return s, nil
}

func (s *server) close() {
	if s.admin != nil {
		if s.cluster == nil && s.template != "" {
			if err := s.drop(s.template); err != nil {
				fmt.Fprintln(os.Stderr, "testdb:", err)
			}
		}
		s.admin.Close()
	}
	if s.cluster != nil {
		s.cluster.Close()
	}
}

// NewCluster starts a private PostgreSQL cluster for a test that needs to
// stop and restart the database under a running server, and returns it
// with the URL of a database holding the current schema. The cluster is
// removed when the test ends. Such a test is PostgreSQL only: a CockroachDB
// run skips it rather than quietly testing PostgreSQL.
func NewCluster(t testing.TB) (*pgtemp.Cluster, string) {
	t.Helper()
	PostgresOnly(t, "stops and restarts a private PostgreSQL cluster under a running server")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgtemp.Start(ctx, pgtemp.Options{})
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	t.Cleanup(c.Close)
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE rackplane")
	conn.Close(ctx)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	cfg, err := pgx.ParseConfig(c.URL("rackplane"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Up(ctx, cfg); err != nil {
		t.Fatalf("testdb: migrate: %v", err)
	}
	return c, c.URL("rackplane")
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// withDatabase replaces the database in a postgres URL (keeping host,
// socket directory and options).
func withDatabase(raw, db string) string {
	u, err := url.Parse(raw)
	if err != nil || !strings.HasPrefix(u.Scheme, "postgres") {
		// Key-value DSNs are not supported; the URL form is documented.
		panic(fmt.Sprintf("testdb: %s must be a postgres:// URL", EnvURL))
	}
	u.Path = "/" + db
	return u.String()
}

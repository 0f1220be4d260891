// Package testdb gives each test its own real PostgreSQL database.
//
// One throwaway cluster (see internal/pgtemp) is started per test binary on
// first use, a template database is brought to the current schema once, and
// every New clones the template (a fraction of a second) and drops the clone
// when the test ends. Set RACKPLANE_TEST_DATABASE_URL to use an existing
// server instead (the URL's database is used to create and drop others).
//
// A test binary that uses this package must have
//
//	func TestMain(m *testing.M) { testdb.Main(m) }
//
// so the cluster is shut down and removed when the tests end.
package testdb

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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
	template string
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

// New returns a fresh database with the current schema.
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

func New(t testing.TB) *DB {
	t.Helper()
	s := get(t)
	name := "t_" + reqid.New()
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
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := s.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
			t.Logf("testdb: drop %s: %v", name, err)
		}
	})
	return &DB{Name: name, URL: u, Pool: pool}
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
		if s.cluster == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, _ = s.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(s.template)+" WITH (FORCE)")
			cancel()
		}
		s.admin.Close()
	}
	if s.cluster != nil {
		s.cluster.Close()
	}
}

// NewCluster starts a private cluster for a test that needs to stop and
// restart the database under a running server, and returns it with the URL
// of a database holding the current schema. The cluster is removed when the
// test ends.
func NewCluster(t testing.TB) (*pgtemp.Cluster, string) {
	t.Helper()
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

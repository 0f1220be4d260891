package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/migrations"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	testdb.Main(m)
}

// catalog describes everything about a schema that a migration could get
// wrong, one line per fact, sorted, so two schemas can be diffed.
func catalog(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	queries := map[string]string{
		"table": `SELECT table_name FROM information_schema.tables
			WHERE table_schema = 'public'`,
		"column": `SELECT table_name || '.' || column_name || ' ' || udt_name || ' null=' || is_nullable ||
				' default=' || coalesce(column_default, '-')
			FROM information_schema.columns WHERE table_schema = 'public'`,
		"index": `SELECT indexname || ': ' || indexdef FROM pg_indexes WHERE schemaname = 'public'`,
		"constraint": `SELECT rel.relname || '.' || con.conname || ' ' || con.contype::TEXT || ' ' || pg_get_constraintdef(con.oid)
			FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
			JOIN pg_namespace ns ON ns.oid = rel.relnamespace WHERE ns.nspname = 'public'`,
		"enum": `SELECT typ.typname || ' = ' || string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
			FROM pg_type typ JOIN pg_enum e ON e.enumtypid = typ.oid
			JOIN pg_namespace ns ON ns.oid = typ.typnamespace WHERE ns.nspname = 'public'
			GROUP BY typ.typname`,
	}
	var out []string
	for kind, q := range queries {
		rows, err := pool.Query(context.Background(), q)
		if err != nil {
			t.Fatalf("catalog %s: %v", kind, err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, kind+" "+s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(out)
	return out
}

func diff(a, b []string) string {
	inA, inB := map[string]bool{}, map[string]bool{}
	for _, s := range a {
		inA[s] = true
	}
	for _, s := range b {
		inB[s] = true
	}
	var sb strings.Builder
	for _, s := range a {
		if !inB[s] {
			fmt.Fprintf(&sb, "  only in first:  %s\n", s)
		}
	}
	for _, s := range b {
		if !inA[s] {
			fmt.Fprintf(&sb, "  only in second: %s\n", s)
		}
	}
	return sb.String()
}

// isBookkeeping tells facts about the migration machinery's own tables,
// which stay when every migration is reverted.
func isBookkeeping(fact string) bool {
	for _, name := range migrations.BookkeepingTables {
		if strings.Contains(fact, name) {
			return true
		}
	}
	return false
}

func TestMigrationsFromEmptyMatchDBInit(t *testing.T) {
	ctx := context.Background()
	viaMigrations := testdb.NewEmpty(t)
	if err := migrations.UpFromMigrations(ctx, viaMigrations.ConnConfig(t)); err != nil {
		t.Fatal(err)
	}
	viaDBInit := testdb.NewEmpty(t)
	st, err := migrations.Up(ctx, viaDBInit.ConnConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Current != migrations.Latest() || st.Dirty {
		t.Fatalf("dbinit path left status %+v, want version %d clean", st, migrations.Latest())
	}
	a, b := catalog(t, viaMigrations.Pool), catalog(t, viaDBInit.Pool)
	if d := diff(a, b); d != "" {
		t.Fatalf("migrations (first) and dbinit.sql (second) disagree:\n%s", d)
	}
	if len(a) < 10 {
		t.Fatalf("catalog suspiciously small (%d facts): %v", len(a), a)
	}
	// Both record the same version.
	for _, db := range []*testdb.DB{viaMigrations, viaDBInit} {
		st, err := migrations.Check(ctx, db.Pool)
		if err != nil || st.Err() != nil {
			t.Fatalf("%s: status %+v, %v, %v", db.Name, st, err, st.Err())
		}
	}
}

func TestUpTwiceIsHarmless(t *testing.T) {
	ctx := context.Background()
	for _, path := range []struct {
		name string
		up   func(*testdb.DB) error
	}{
		{"dbinit", func(db *testdb.DB) error { _, err := migrations.Up(ctx, db.ConnConfig(t)); return err }},
		{"migrations", func(db *testdb.DB) error { return migrations.UpFromMigrations(ctx, db.ConnConfig(t)) }},
	} {
		t.Run(path.name, func(t *testing.T) {
			db := testdb.NewEmpty(t)
			if err := path.up(db); err != nil {
				t.Fatal(err)
			}
			before := catalog(t, db.Pool)
			_, err := db.Pool.Exec(ctx, `INSERT INTO sled (id, time_created, time_modified, time_last_seen,
				part_number, serial_number, sled_agent_address)
				VALUES (gen_random_uuid(), now(), now(), now(), 'p', 's', 'h:1')`)
			if err != nil {
				t.Fatal(err)
			}
			// Again through both entry points.
			if _, err := migrations.Up(ctx, db.ConnConfig(t)); err != nil {
				t.Fatalf("second Up: %v", err)
			}
			if err := migrations.UpFromMigrations(ctx, db.ConnConfig(t)); err != nil {
				t.Fatalf("second UpFromMigrations: %v", err)
			}
			if d := diff(before, catalog(t, db.Pool)); d != "" {
				t.Fatalf("second run changed the schema:\n%s", d)
			}
			var n int
			if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM sled").Scan(&n); err != nil || n != 1 {
				t.Fatalf("data after second run: %d rows, %v", n, err)
			}
		})
	}
}

func TestDownThenUp(t *testing.T) {
	ctx := context.Background()
	db := testdb.NewEmpty(t)
	if err := migrations.UpFromMigrations(ctx, db.ConnConfig(t)); err != nil {
		t.Fatal(err)
	}
	want := catalog(t, db.Pool)
	if err := migrations.Down(ctx, db.ConnConfig(t)); err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, fact := range catalog(t, db.Pool) {
		if !isBookkeeping(fact) {
			left = append(left, fact)
		}
	}
	if len(left) > 0 {
		t.Fatalf("down migrations left objects behind: %v", left)
	}
	if err := migrations.UpFromMigrations(ctx, db.ConnConfig(t)); err != nil {
		t.Fatal(err)
	}
	if d := diff(want, catalog(t, db.Pool)); d != "" {
		t.Fatalf("up after down differs:\n%s", d)
	}
}

func TestCheckReportsEveryState(t *testing.T) {
	ctx := context.Background()
	db := testdb.NewEmpty(t)
	st, err := migrations.Check(ctx, db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(st.Err(), migrations.ErrNotInitialised) {
		t.Fatalf("empty database: got %v, want ErrNotInitialised", st.Err())
	}
	if _, err := migrations.Up(ctx, db.ConnConfig(t)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		version int64
		dirty   bool
		want    error
	}{
		{int64(migrations.Latest()), false, nil},
		{int64(migrations.Latest()) + 1, false, migrations.ErrTooNew},
		{int64(migrations.Latest()) - 1, false, migrations.ErrTooOld},
		{int64(migrations.Latest()), true, migrations.ErrDirty},
	} {
		if _, err := db.Pool.Exec(ctx, "UPDATE schema_migrations SET version = $1, dirty = $2", tc.version, tc.dirty); err != nil {
			t.Fatal(err)
		}
		st, err := migrations.Check(ctx, db.Pool)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Err(); !errors.Is(got, tc.want) || (tc.want == nil) != (got == nil) {
			t.Errorf("version %d dirty %v: got %v, want %v", tc.version, tc.dirty, got, tc.want)
		}
		if st.Current != uint(tc.version) || st.Dirty != tc.dirty {
			t.Errorf("status %+v does not echo version %d dirty %v", st, tc.version, tc.dirty)
		}
	}
	// Up refuses to touch a schema that is too new or dirty.
	if _, err := migrations.Up(ctx, db.ConnConfig(t)); !errors.Is(err, migrations.ErrDirty) {
		t.Errorf("Up on a dirty schema: got %v, want ErrDirty", err)
	}
	if _, err := db.Pool.Exec(ctx, "UPDATE schema_migrations SET version = $1, dirty = false", migrations.Latest()+1); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Up(ctx, db.ConnConfig(t)); !errors.Is(err, migrations.ErrTooNew) {
		t.Errorf("Up on a newer schema: got %v, want ErrTooNew", err)
	}
}

func TestUpRefusesForeignDatabase(t *testing.T) {
	ctx := context.Background()
	db := testdb.NewEmpty(t)
	if _, err := db.Pool.Exec(ctx, "CREATE TABLE somebody_elses (x INT)"); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Up(ctx, db.ConnConfig(t)); !errors.Is(err, migrations.ErrForeign) {
		t.Fatalf("got %v, want ErrForeign", err)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'sled'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("schema was created in a foreign database (%d, %v)", n, err)
	}
}

func TestEmbeddedFilesArePaired(t *testing.T) {
	vs, err := migrations.Versions()
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		if v != uint(i+1) {
			t.Fatalf("migration versions must be 1, 2, 3, ... without gaps; got %v", vs)
		}
	}
}

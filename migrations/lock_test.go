package migrations_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/migrations"
)

// logBuffer is a zerolog destination a migrator writes and a test reads
// while it runs.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() zerolog.Logger { return zerolog.New(l).Level(zerolog.DebugLevel) }

// drivers are golang-migrate's two code paths: the one the server picks
// (PostgreSQL's here) and the cockroachdb driver's, forced.
var drivers = []struct {
	name  string
	apply func(*migrations.Options)
}{
	{"server's driver", func(*migrations.Options) {}},
	{"cockroachdb driver", migrations.ForceCockroachDriver},
}

// rackplaneTables counts the tables that are not the migration machinery's
// own.
func rackplaneTables(t *testing.T, db *testdb.DB) int {
	t.Helper()
	return db.Count(t, `SELECT count(*) FROM information_schema.tables
		WHERE table_schema = current_schema() AND NOT (table_name = ANY($1::TEXT[]))`, migrations.BookkeepingTables)
}

func requireCurrent(t *testing.T, db *testdb.DB) {
	t.Helper()
	st, err := migrations.Check(context.Background(), db.Pool)
	if err != nil || st.Err() != nil {
		t.Fatalf("schema after Up: %+v, %v, %v", st, err, st.Err())
	}
	if n := rackplaneTables(t, db); n < 10 {
		t.Fatalf("only %d rackplane tables after Up", n)
	}
}

func TestConcurrentUpFromEmpty(t *testing.T) {
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			db := testdb.NewEmpty(t)
			const n = 4
			logs := make([]*logBuffer, n)
			errs := make(chan error, n)
			for i := range n {
				logs[i] = &logBuffer{}
				o := migrations.Options{Log: logs[i].logger(), LockWait: time.Minute}
				d.apply(&o)
				go func() { _, err := migrations.UpWith(ctx, db.ConnConfig(t), o); errs <- err }()
			}
			for range n {
				if err := <-errs; err != nil {
					t.Errorf("concurrent Up: %v", err)
				}
			}
			requireCurrent(t, db)
			created := 0
			for _, l := range logs {
				created += strings.Count(l.String(), "creating the schema from dbinit.sql")
			}
			if created != 1 {
				t.Fatalf("the schema was created %d times, want once", created)
			}
		})
	}
}

// holdLock takes the migration lock as a live migrator would: a claim that
// runs out in an hour.
func holdLock(t *testing.T, ctx context.Context, q interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, holder string) {
	t.Helper()
	if _, err := q.Exec(ctx, `INSERT INTO schema_migration_lease (id, holder, token, time_acquired, time_expires)
		VALUES (1, $1, $2, now(), now() + INTERVAL '1 hour')`, holder, uuid.New()); err != nil {
		t.Fatal(err)
	}
}

// Two migrators start on an empty database, on the cockroachdb driver's
// code path, while the test holds a transaction that has created the lock
// table and taken the lock but not committed. Both collide with that table
// (on PostgreSQL their CREATE waits on the uncommitted catalog row, then
// fails), retry, find the lock held, and wait; neither touches the schema
// until the test lets go. Then both finish, exactly one of them creating
// the schema, and nothing of the locks is left.
func TestRacingMigratorsWaitForTheLock(t *testing.T) {
	testdb.PostgresOnly(t, "finds the migrators waiting on the uncommitted table through pg_stat_activity")
	ctx := context.Background()
	db := testdb.NewEmpty(t)
	ctrl, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ctrl.Rollback(ctx) }()
	if _, err := ctrl.Exec(ctx, migrations.CreateLeaseTable); err != nil {
		t.Fatal(err)
	}
	holdLock(t, ctx, ctrl, "the test pid 1")

	type result struct {
		st  migrations.Status
		err error
	}
	results := make(chan result, 2)
	logs := []*logBuffer{{}, {}}
	for i := range 2 {
		o := migrations.Options{Log: logs[i].logger(), LockWait: time.Minute, Holder: fmt.Sprintf("racer %d", i)}
		migrations.ForceCockroachDriver(&o)
		cfg := db.ConnConfig(t)
		cfg.RuntimeParams["application_name"] = "racer"
		go func() { st, err := migrations.UpWith(ctx, cfg, o); results <- result{st, err} }()
	}
	waitFor(t, "both racers to wait on the uncommitted lock table", func() bool {
		return db.Count(t, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'racer'
			AND wait_event_type = 'Lock' AND query LIKE 'CREATE TABLE IF NOT EXISTS schema_migration_lease%'`) == 2
	})
	if err := ctrl.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both racers to wait for the lock", func() bool {
		return strings.Contains(logs[0].String(), "waiting for the migration lock") &&
			strings.Contains(logs[1].String(), "waiting for the migration lock")
	})
	for i, l := range logs {
		if !strings.Contains(l.String(), "collided with another migrator") {
			t.Errorf("racer %d did not retry its collision with the lock table:\n%s", i, l)
		}
		if !strings.Contains(l.String(), `"holder":"the test pid 1"`) {
			t.Errorf("racer %d does not name the holder it waits for:\n%s", i, l)
		}
	}
	// A holder's claim keeps everybody out.
	time.Sleep(300 * time.Millisecond)
	select {
	case r := <-results:
		t.Fatalf("a racer returned while the lock was held: %+v", r)
	default:
	}
	if n := rackplaneTables(t, db); n != 0 {
		t.Fatalf("%d tables created while the lock was held", n)
	}

	if _, err := db.Pool.Exec(ctx, `DELETE FROM schema_migration_lease`); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		r := <-results
		if r.err != nil || r.st.Current != migrations.Latest() {
			t.Fatalf("racer after the lock was released: %+v, %v", r.st, r.err)
		}
	}
	requireCurrent(t, db)
	if created := strings.Count(logs[0].String()+logs[1].String(), "creating the schema from dbinit.sql"); created != 1 {
		t.Fatalf("the schema was created %d times, want once", created)
	}
	if n := db.Count(t, `SELECT count(*) FROM schema_migration_lease`); n != 0 {
		t.Fatalf("%d lock claims left behind", n)
	}
	if n := db.Count(t, `SELECT count(*) FROM schema_lock`); n != 0 {
		t.Fatalf("%d cockroachdb driver lock rows left behind", n)
	}
}

// A claim whose holder stopped renewing it, and a row in the cockroachdb
// driver's lock table (left by a migrator killed between the driver's Lock
// and Unlock), do not wedge the next migrator: it takes the claim over,
// clears the driver's row, says so, and migrates.
func TestStaleLocksAreRecovered(t *testing.T) {
	ctx := context.Background()
	db := testdb.NewEmpty(t)
	if _, err := db.Pool.Exec(ctx, migrations.CreateLeaseTable); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO schema_migration_lease (id, holder, token, time_acquired, time_expires)
		VALUES (1, 'dead-host pid 4242', $1, now() - INTERVAL '10 minutes', now() - INTERVAL '1 second')`, uuid.New()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `CREATE TABLE schema_lock (lock_id INT8 NOT NULL PRIMARY KEY);
		INSERT INTO schema_lock VALUES (12345)`); err != nil {
		t.Fatal(err)
	}
	holder, err := migrations.LockStatus(ctx, db.Pool)
	if err != nil || holder == nil || !holder.Stale || holder.Holder != "dead-host pid 4242" {
		t.Fatalf("LockStatus of the stale claim: %+v, %v", holder, err)
	}
	var log logBuffer
	o := migrations.Options{Log: log.logger(), LockWait: 2 * time.Second}
	migrations.ForceCockroachDriver(&o)
	start := time.Now()
	if _, err := migrations.UpWith(ctx, db.ConnConfig(t), o); err != nil {
		t.Fatalf("Up with stale locks: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("took %s", d)
	}
	requireCurrent(t, db)
	out := log.String()
	if !strings.Contains(out, "taking over a stale migration lock") || !strings.Contains(out, "dead-host pid 4242") {
		t.Errorf("the take-over is not logged with the dead holder:\n%s", out)
	}
	if !strings.Contains(out, "removed a stale golang-migrate lock") {
		t.Errorf("clearing the driver's row is not logged:\n%s", out)
	}
	if strings.Contains(out, "waiting for the migration lock") {
		t.Errorf("waited for a stale claim:\n%s", out)
	}
	if holder, err := migrations.LockStatus(ctx, db.Pool); err != nil || holder != nil {
		t.Fatalf("lock after Up: %+v, %v", holder, err)
	}
	if n := db.Count(t, `SELECT count(*) FROM schema_lock`); n != 0 {
		t.Fatalf("%d driver lock rows left", n)
	}
}

// A live holder makes Up wait, with jittered back-off on the clock, for
// exactly LockWait, and then fail naming the holder, having changed
// nothing.
func TestLiveLockHolderMakesUpWaitThenGiveUp(t *testing.T) {
	ctx := context.Background()
	db := testdb.NewEmpty(t)
	if _, err := db.Pool.Exec(ctx, migrations.CreateLeaseTable); err != nil {
		t.Fatal(err)
	}
	holdLock(t, ctx, db.Pool, "busy-host pid 7")
	fake := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	_, err := migrations.UpWith(ctx, db.ConnConfig(t), migrations.Options{LockWait: 20 * time.Second, Clock: fake})
	if !errors.Is(err, migrations.ErrLockHeld) || !strings.Contains(err.Error(), "busy-host pid 7") {
		t.Fatalf("Up against a live holder: %v", err)
	}
	sleeps := fake.Sleeps()
	if fake.Slept() != 20*time.Second || len(sleeps) < 10 {
		t.Fatalf("slept %s in %d waits (%v), want exactly 20s in many", fake.Slept(), len(sleeps), sleeps)
	}
	distinct := map[time.Duration]bool{}
	for _, d := range sleeps[:len(sleeps)-1] {
		if d > 2*time.Second {
			t.Fatalf("a wait of %s exceeds the 2s ceiling: %v", d, sleeps)
		}
		distinct[d] = true
	}
	if len(distinct) < 3 {
		t.Fatalf("waits barely vary: %v", sleeps)
	}
	if n := rackplaneTables(t, db); n != 0 {
		t.Fatalf("%d tables created without the lock", n)
	}
	if holder, err := migrations.LockStatus(ctx, db.Pool); err != nil || holder == nil || holder.Holder != "busy-host pid 7" {
		t.Fatalf("the holder's claim was touched: %+v, %v", holder, err)
	}
}

// A holder that works longer than its lease keeps its claim by renewing
// it: a second migrator waits for it instead of taking over.
func TestRenewedLockIsNotTakenOver(t *testing.T) {
	ctx := context.Background()
	db := testdb.NewEmpty(t)
	release := make(chan struct{})
	locked := make(chan struct{})
	var firstLog, secondLog logBuffer
	first := migrations.Options{Log: firstLog.logger(), Lease: 600 * time.Millisecond, Holder: "slow"}
	migrations.AfterLock(&first, func() { close(locked); <-release })
	errs := make(chan error, 2)
	go func() { _, err := migrations.UpWith(ctx, db.ConnConfig(t), first); errs <- err }()
	<-locked
	go func() {
		_, err := migrations.UpWith(ctx, db.ConnConfig(t), migrations.Options{Log: secondLog.logger(), LockWait: time.Minute})
		errs <- err
	}()
	waitFor(t, "the second migrator to wait", func() bool {
		return strings.Contains(secondLog.String(), "waiting for the migration lock")
	})
	// Five leases' worth: only renewals keep the claim alive.
	time.Sleep(3 * time.Second)
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("Up: %v", err)
		}
	}
	requireCurrent(t, db)
	if strings.Contains(secondLog.String(), "taking over") {
		t.Fatalf("a renewed claim was taken over:\n%s", secondLog.String())
	}
	if strings.Contains(firstLog.String(), "lost") || strings.Contains(firstLog.String(), "could not renew") {
		t.Fatalf("the holder's renewals failed:\n%s", firstLog.String())
	}
}

// childEnv makes the test binary a migrator that stops just before its
// fresh-schema transaction commits, for the parent to kill it there.
const childEnv = "RACKPLANE_MIGRATIONS_TEST_CHILD"

// runChild is the child's whole life: connect, take the lock with a short
// lease, create the schema up to COMMIT, say so, and hang.
func runChild(spec string) int {
	url, driver, _ := strings.Cut(spec, " ")
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	o := migrations.Options{Lease: time.Second, Holder: "child pid " + strconv.Itoa(os.Getpid())}
	if driver == "cockroachdb" {
		migrations.ForceCockroachDriver(&o)
	}
	migrations.BeforeFreshCommit(&o, func() {
		fmt.Println("about to commit")
		select {}
	})
	_, err = migrations.UpWith(context.Background(), cfg, o)
	fmt.Fprintln(os.Stderr, "child: Up returned:", err)
	return 1
}

// A migrator killed in the middle of creating the schema (every statement
// of dbinit.sql run, the version row written, COMMIT not yet sent) leaves
// no table behind and no half schema: the database still reads as
// uninitialised, not foreign, and the next migrator takes the dead one's
// lock over once its claim runs out and creates the schema.
func TestFreshSchemaKilledHalfWay(t *testing.T) {
	for _, d := range []string{"server", "cockroachdb"} {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := testdb.NewEmpty(t)
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"="+db.URL+" "+d)
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil || line != "about to commit\n" {
				_ = cmd.Process.Kill()
				t.Fatalf("child said %q, %v", line, err)
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()

			if n := rackplaneTables(t, db); n != 0 {
				t.Fatalf("the killed migrator left %d tables", n)
			}
			st, err := migrations.Check(ctx, db.Pool)
			if err != nil || !errors.Is(st.Err(), migrations.ErrNotInitialised) {
				t.Fatalf("after the kill: %+v, %v, %v; want uninitialised", st, err, st.Err())
			}
			holder, err := migrations.LockStatus(ctx, db.Pool)
			if err != nil || holder == nil || holder.Holder != "child pid "+strconv.Itoa(cmd.Process.Pid) {
				t.Fatalf("the dead child's claim: %+v, %v", holder, err)
			}

			var log logBuffer
			if _, err := migrations.UpWith(ctx, db.ConnConfig(t), migrations.Options{Log: log.logger(), LockWait: 30 * time.Second}); err != nil {
				t.Fatalf("Up after the kill: %v", err)
			}
			requireCurrent(t, db)
			if !strings.Contains(log.String(), "taking over a stale migration lock") {
				t.Fatalf("the dead child's claim was not taken over:\n%s", log.String())
			}
		})
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

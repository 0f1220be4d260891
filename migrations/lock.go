package migrations

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackplane/rackplane/internal/backoff"
)

// The migration lock is a lease: one row in leaseTable naming its holder
// and the time (by the database's clock) its claim runs out. The holder
// renews it every third of a lease while it works and deletes it when it
// is done. A migrator that finds a live claim waits, with back-off, up to
// Options.LockWait; one that finds an expired claim takes it over.
//
// Why a lease and not golang-migrate's own locks: on PostgreSQL the pgx
// driver waits on an advisory lock that dies with its session, but the
// cockroachdb driver's lock is a row in schema_lock that it refuses at once
// when present (a second migrator fails instead of waiting) and that stays
// forever when its holder dies (every later migration fails until a person
// deletes it). Every migrator here takes the lease before it opens a
// golang-migrate driver, so the driver's own lock is never contended.
//
// How a claim is known to be stale: its holder renews it every
// Lease/3, so a claim that has gone a whole Lease without renewal belongs
// to a holder that is dead, hung or cut off from the database. Expiry is
// compared with now() on the database, so clocks of the machines running
// migrators do not matter. A holder that could not renew in time and finds
// its claim taken stops (ErrLockLost) before its next migration, and the
// fresh-schema transaction checks the claim before it commits.
const leaseTable = "schema_migration_lease"

// driverLockTable is the cockroachdb driver's lock table. A row in it while
// this process holds the lease was left by a migrator that died between
// the driver's Lock and Unlock: every migrator takes the lease first, so
// nobody alive can be holding it.
const driverLockTable = "schema_lock"

// BookkeepingTables are the tables the migration machinery itself keeps
// (golang-migrate's version table, the cockroachdb driver's lock table and
// the lease table): not part of the rackplane schema, and left behind when
// every migration is reverted.
var BookkeepingTables = []string{versionTable, driverLockTable, leaseTable}

const createLeaseTable = `CREATE TABLE IF NOT EXISTS ` + leaseTable + ` (
    id INT8 PRIMARY KEY,
    holder TEXT NOT NULL,
    token UUID NOT NULL,
    time_acquired TIMESTAMPTZ NOT NULL,
    time_expires TIMESTAMPTZ NOT NULL,
    CONSTRAINT ` + leaseTable + `_one_row CHECK (id = 1)
)`

var (
	// ErrLockHeld: another migrator held the lock for all of LockWait.
	ErrLockHeld = errors.New("the migration lock is held by another migrator")
	// ErrLockLost: this migrator's claim ran out and another took it over.
	ErrLockLost = errors.New("this migrator lost the migration lock")
)

// Defaults for Options fields left zero.
const (
	DefaultLockWait = 5 * time.Minute
	DefaultLease    = 30 * time.Second
)

// LockHolder describes a claim on the migration lock.
type LockHolder struct {
	Holder   string
	Acquired time.Time
	Expires  time.Time
	// Stale is set when the claim had run out by the database's clock.
	Stale bool
}

func (h LockHolder) String() string {
	return fmt.Sprintf("%s (since %s, claim runs out at %s)", h.Holder,
		h.Acquired.UTC().Format(time.RFC3339), h.Expires.UTC().Format(time.RFC3339))
}

// LockStatus reports who holds the migration lock, or nil when nobody
// does (or the lock table does not exist yet).
func LockStatus(ctx context.Context, q Querier) (*LockHolder, error) {
	var h LockHolder
	err := q.QueryRow(ctx, `SELECT holder, time_acquired, time_expires, time_expires < now() FROM `+leaseTable+
		` WHERE id = 1`).Scan(&h.Holder, &h.Acquired, &h.Expires, &h.Stale)
	switch {
	case errors.Is(err, pgx.ErrNoRows), sqlState(err) == "42P01":
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read migration lock: %w", err)
	}
	return &h, nil
}

// lease is this process's claim on the migration lock.
type lease struct {
	pool  *pgxpool.Pool
	token uuid.UUID
	every time.Duration
	o     *Options

	mu   sync.Mutex
	lost bool
	stop chan struct{}
	done chan struct{}
	// renewing is held by a renewal, and by a transaction that checks the
	// claim (holds): that transaction locks the claim's row, and a
	// renewal committed under it would make it fail to serialize.
	renewing sync.Mutex
}

// lockRetry paces attempts to take a held lock, and retries of the
// statements that set it up when they collide with another migrator's.
var lockRetry = backoff.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.5}

// acquireLease creates the lease table if needed and takes the lock,
// waiting for a live holder up to o.LockWait.
func acquireLease(ctx context.Context, pool *pgxpool.Pool, o *Options) (*lease, error) {
	rnd := backoff.NewRand(o.Rand)
	if err := retryRaces(ctx, o, rnd, "create the lock table", func() error {
		_, err := pool.Exec(ctx, createLeaseTable)
		return err
	}); err != nil {
		return nil, err
	}
	l := &lease{pool: pool, token: uuid.New(), every: o.Lease / 3, o: o}
	deadline := o.Clock.Now().Add(o.LockWait)
	wait := backoff.New(lockRetry, rnd)
	var reported *LockHolder
	for {
		var held *LockHolder
		err := retryRaces(ctx, o, rnd, "take the lock", func() error {
			var err error
			held, err = l.tryAcquire(ctx)
			return err
		})
		if err != nil {
			return nil, err
		}
		if held == nil {
			l.stop, l.done = make(chan struct{}), make(chan struct{})
			return l, nil
		}
		left := deadline.Sub(o.Clock.Now())
		if left <= 0 {
			return nil, fmt.Errorf("%w: %s; waited %s. If that migrator is gone, its claim runs out by itself "+
				"at the time shown and the next `nexus migrate up` takes the lock over; see docs/cockroachdb.md",
				ErrLockHeld, held, o.LockWait)
		}
		if reported == nil || reported.Holder != held.Holder {
			o.Log.Info().Str("holder", held.Holder).Time("claim_expires", held.Expires).
				Msg("waiting for the migration lock")
			reported = held
		}
		if err := o.Clock.Sleep(ctx, min(wait.NextBackOff(), left)); err != nil {
			return nil, err
		}
	}
}

// tryAcquire takes the lock if it is free or stale, and otherwise returns
// its live holder.
func (l *lease) tryAcquire(ctx context.Context) (*LockHolder, error) {
	tx, err := l.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var h LockHolder
	err = tx.QueryRow(ctx, `SELECT holder, time_acquired, time_expires, time_expires < now() FROM `+leaseTable+
		` WHERE id = 1 FOR UPDATE`).Scan(&h.Holder, &h.Acquired, &h.Expires, &h.Stale)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		_, err = tx.Exec(ctx, `INSERT INTO `+leaseTable+` (id, holder, token, time_acquired, time_expires)
			VALUES (1, $1, $2, now(), now() + $3::INT8 * INTERVAL '1 millisecond')`,
			l.o.Holder, l.token, l.o.Lease.Milliseconds())
	case err != nil:
		return nil, err
	case !h.Stale:
		return &h, nil
	default:
		l.o.Log.Warn().Str("stale_holder", h.Holder).Time("claim_expired", h.Expires).
			Msg("taking over a stale migration lock: its holder stopped renewing its claim")
		_, err = tx.Exec(ctx, `UPDATE `+leaseTable+` SET holder = $1, token = $2, time_acquired = now(),
			time_expires = now() + $3::INT8 * INTERVAL '1 millisecond' WHERE id = 1`,
			l.o.Holder, l.token, l.o.Lease.Milliseconds())
	}
	if err != nil {
		return nil, err
	}
	return nil, tx.Commit(ctx)
}

// keepAlive renews the claim until release; onLost runs once if a renewal
// finds the claim taken by another migrator.
func (l *lease) keepAlive(ctx context.Context, onLost func()) {
	defer close(l.done)
	t := l.o.Clock.NewTimer(l.every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-ctx.Done():
			return
		case <-t.C():
		}
		l.renewing.Lock()
		ok, err := l.renew(ctx)
		l.renewing.Unlock()
		switch {
		case err != nil:
			// The next renewal may get through; the claim lasts three
			// renewal periods.
			l.o.Log.Warn().Err(err).Msg("could not renew the migration lock")
		case !ok:
			l.mu.Lock()
			l.lost = true
			l.mu.Unlock()
			l.o.Log.Error().Msg("the migration lock was taken over by another migrator; stopping")
			onLost()
			return
		}
		t.Reset(l.every)
	}
}

func (l *lease) renew(ctx context.Context) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, l.every)
	defer cancel()
	tag, err := l.pool.Exec(rctx, `UPDATE `+leaseTable+` SET time_expires = now() + $2::INT8 * INTERVAL '1 millisecond'
		WHERE id = 1 AND token = $1`, l.token, l.o.Lease.Milliseconds())
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// isLost reports whether a renewal found the claim taken over.
func (l *lease) isLost() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// withoutRenewals runs fn, a transaction that will check the claim with
// holds, with renewals held off; it renews the claim first, so fn has a
// whole lease before anyone may take the claim over (and if fn outlasts
// it, holds sees the take-over).
func (l *lease) withoutRenewals(ctx context.Context, fn func() error) error {
	l.renewing.Lock()
	defer l.renewing.Unlock()
	ok, err := l.renew(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("renew the migration lock: %w", err)
	case !ok:
		return fmt.Errorf("%w: its claim ran out and another migrator took the lock over", ErrLockLost)
	}
	return fn()
}

// holds checks, inside tx, that the claim is still this process's, and
// locks the row so that nobody takes it over before tx commits.
func (l *lease) holds(ctx context.Context, tx pgx.Tx) error {
	var token uuid.UUID
	err := tx.QueryRow(ctx, `SELECT token FROM `+leaseTable+` WHERE id = 1 FOR UPDATE`).Scan(&token)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && token != l.token) {
		return fmt.Errorf("%w: its claim ran out and another migrator took the lock over", ErrLockLost)
	}
	return err
}

// release stops renewing and deletes the claim. It runs even when the
// caller's context is done: a claim left behind only delays the next
// migrator by one lease.
func (l *lease) release(ctx context.Context) {
	close(l.stop)
	<-l.done
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := l.pool.Exec(rctx, `DELETE FROM `+leaseTable+` WHERE id = 1 AND token = $1`, l.token); err != nil {
		l.o.Log.Warn().Err(err).Msg("could not release the migration lock; the next migrator takes it over " +
			"when its claim runs out")
	}
}

// prepareDriverLock makes the cockroachdb driver's lock table and deletes
// any row in it: the caller holds the lease, so such a row is stale (see
// driverLockTable). The table is made here, as the driver would make it on
// CockroachDB, because the driver's own "INT" is 32 bits on PostgreSQL,
// too small for its lock ids when tests run its code path there.
func (s *session) prepareDriverLock(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+driverLockTable+` (lock_id INT8 NOT NULL PRIMARY KEY)`); err != nil {
		return fmt.Errorf("create the cockroachdb driver's lock table: %w", err)
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM `+driverLockTable)
	if err != nil {
		return fmt.Errorf("clear the cockroachdb driver's lock: %w", err)
	}
	if tag.RowsAffected() > 0 {
		s.o.Log.Warn().Int64("rows", tag.RowsAffected()).
			Msg("removed a stale golang-migrate lock left by a migrator that died holding it")
	}
	return nil
}

// raceStates are the errors two migrators starting on an empty database at
// once may get from each other's set-up statements, and that running the
// statement again resolves: a table created under one's feet (42P07; on
// PostgreSQL also 42710 for its row type, or 23505 from the catalog's
// unique indexes) and serialization failures (40001; CockroachDB raises
// them for concurrent schema changes too).
var raceStates = map[string]bool{"42P07": true, "42710": true, "23505": true, "40001": true, "40P01": true}

// retryRaces runs fn until it succeeds or fails with an error other than
// a race with another migrator, a bounded number of times.
func retryRaces(ctx context.Context, o *Options, rnd *backoff.Rand, what string, fn func() error) error {
	wait := backoff.New(lockRetry, rnd)
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || !raceStates[sqlState(err)] {
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			return nil
		}
		if attempt >= 20 {
			return fmt.Errorf("%s: still colliding with another migrator after %d attempts: %w", what, attempt, err)
		}
		o.Log.Debug().Err(err).Str("step", what).Msg("collided with another migrator; retrying")
		if serr := o.Clock.Sleep(ctx, wait.NextBackOff()); serr != nil {
			return serr
		}
	}
}

func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// defaultHolder names this process in the lock row, for the operator
// reading it: host and process id.
func defaultHolder() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown-host"
	}
	return fmt.Sprintf("%s pid %d", host, os.Getpid())
}

// dbRetry paces WaitForDatabase's attempts.
var dbRetry = backoff.Policy{Initial: 200 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.5}

// WaitForDatabase tries to connect until the database answers or wait has
// passed, pacing attempts on o's clock: a one-shot `nexus migrate up` may
// start before the database does.
func WaitForDatabase(ctx context.Context, connConfig *pgx.ConnConfig, wait time.Duration, o Options) error {
	o.setDefaults()
	deadline := o.Clock.Now().Add(wait)
	retry := backoff.New(dbRetry, backoff.NewRand(o.Rand))
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgx.ConnectConfig(cctx, connConfig)
		cancel()
		if err == nil {
			return conn.Close(ctx)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		left := deadline.Sub(o.Clock.Now())
		if left <= 0 {
			return fmt.Errorf("database did not answer within %s: %w", wait, err)
		}
		delay := min(retry.NextBackOff(), left)
		o.Log.Warn().Err(err).Dur("retry_in", delay).Msg("waiting for the database")
		if err := o.Clock.Sleep(ctx, delay); err != nil {
			return err
		}
	}
}

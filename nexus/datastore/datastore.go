// Package datastore is Nexus's access to its database (PostgreSQL or
// CockroachDB) through a pgx pool.
//
// Every change goes through InTx, which runs a function in a SERIALIZABLE
// transaction and re-runs the whole function when the database reports a
// serialization failure (40001) or a deadlock (40P01), or through Exec1 for
// a single idempotent statement, retried the same way. Functions passed to
// InTx must therefore be safe to run more than once: they may not have side
// effects outside the transaction.
//
// A commit can also end with its outcome unknown (CockroachDB's 40003, or a
// connection lost during COMMIT). Retrying blindly could apply a change
// twice, so InTx first finds out whether the attempt committed, by the
// means each call site declares (ReadOnly, Idempotent, AppliedIf, or the
// audit entry the attempt carried); see InTx.
//
// Pool connections live a bounded, jittered time (PoolConfig): after a
// CockroachDB node restarts or joins, connections spread over the nodes
// again instead of staying where they were opened.
package datastore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/logging"
)

var (
	// ErrUnavailable wraps failures to reach the database at all, so that
	// the API can answer 503 rather than 500.
	ErrUnavailable = errors.New("database unavailable")
	// ErrNotFound is returned by lookups of a single object that does not
	// exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned when a change would violate a uniqueness rule
	// (for example a baseboard already registered under another sled id).
	ErrConflict = errors.New("conflict")
	// ErrAmbiguous wraps a commit whose outcome is unknown and could not be
	// found out (the database became unreachable, or the transaction gave
	// no way to tell): the change may or may not have been made.
	ErrAmbiguous = errors.New("transaction outcome unknown")
)

// RetryPolicy bounds InTx's retries of serialization failures. Back-off
// between attempts is "full jitter": uniform in [0, min(Max, Base·2^n)).
type RetryPolicy struct {
	MaxAttempts int
	Base        time.Duration
	Max         time.Duration
}

// DefaultRetryPolicy suits interactive requests and background tasks alike:
// at most ~3 s of waiting in the worst case.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 12, Base: 2 * time.Millisecond, Max: 500 * time.Millisecond}

// Options configure a Datastore; the zero value picks defaults.
type Options struct {
	Retry RetryPolicy
	// Rand drives retry jitter; tests inject a seeded one (nil: seeded from
	// the operating system). InTx draws from it under a lock.
	Rand *rand.Rand
	// Sleep waits between retries; tests may inject a fake.
	Sleep func(context.Context, time.Duration) error
}

// Datastore wraps the pool with the retry helper and the queries Nexus uses.
type Datastore struct {
	pool  *pgxpool.Pool
	log   zerolog.Logger
	retry RetryPolicy
	rng   *backoff.Rand
	sleep func(context.Context, time.Duration) error
	// onRetry is called for each retried attempt; tests count them.
	onRetry func(attempt int, err error)
	// commit replaces tx.Commit; tests make a commit's outcome unknown.
	commit func(context.Context, pgx.Tx) error
}

// New wraps an existing pool.
func New(pool *pgxpool.Pool, log zerolog.Logger, opts Options) *Datastore {
	if opts.Retry.MaxAttempts == 0 {
		opts.Retry = DefaultRetryPolicy
	}
	if opts.Sleep == nil {
		opts.Sleep = sleepCtx
	}
	var src rand.Source
	if opts.Rand != nil {
		src = opts.Rand
	}
	return &Datastore{pool: pool, log: log, retry: opts.Retry, rng: backoff.NewRand(src), sleep: opts.Sleep}
}

// PoolConfig parses a database URL into a pool configuration with the
// timeouts Nexus needs: a database that is down must make requests fail
// quickly, not hang.
func PoolConfig(url string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "rackplane-nexus"
	cfg.ConnConfig.Tracer = roundTripTracer{}
	cfg.HealthCheckPeriod = 10 * time.Second
	// pgx's default lifetime is an hour without jitter: connections opened
	// together (at start-up) would close together, and a node that came
	// back would get no connections for up to an hour. CockroachDB's
	// connection-pooling guidance is a lifetime of minutes; the jitter
	// spreads the reconnections. A URL's pool_max_conn_lifetime and
	// pool_max_conn_lifetime_jitter win.
	if !strings.Contains(url, "pool_max_conn_lifetime=") {
		cfg.MaxConnLifetime = DefaultConnLifetime
	}
	if !strings.Contains(url, "pool_max_conn_lifetime_jitter=") {
		cfg.MaxConnLifetimeJitter = DefaultConnLifetimeJitter
	}
	return cfg, nil
}

// Pool connection lifetime, unless the database URL sets its own.
const (
	DefaultConnLifetime       = 10 * time.Minute
	DefaultConnLifetimeJitter = 2 * time.Minute
)

// Pool exposes the pool to packages that run their own single-statement
// queries (background tasks' collectors, for instance).
func (d *Datastore) Pool() *pgxpool.Pool { return d.pool }

// Ping reports whether the database answers.
func (d *Datastore) Ping(ctx context.Context) error {
	return classify(d.pool.Ping(ctx))
}

// TxFunc is the body of a transaction. It may run more than once.
type TxFunc func(ctx context.Context, tx pgx.Tx) error

// AppliedFunc answers, in a new transaction, whether the attempt of a
// TxFunc whose commit had an unknown outcome did commit. It reads what
// that attempt would have written (a row with the id it chose, a value it
// set); it must not write.
type AppliedFunc func(ctx context.Context, tx pgx.Tx) (bool, error)

// TxOption says how InTx may handle a commit whose outcome is unknown.
// Every call site chooses one, with a comment saying why it fits.
type TxOption func(*txConfig)

type txConfig struct {
	readOnly   bool
	idempotent bool
	applied    AppliedFunc
}

// ReadOnly runs the transaction READ ONLY (the server refuses writes): an
// unknown commit outcome has nothing to apply, so the body runs again. A
// pending audit entry is left for the next read-write transaction.
func ReadOnly(c *txConfig) { c.readOnly = true }

// Idempotent declares that running the body again after an attempt that
// did commit leaves the database as that attempt left it: the body reads
// what it changes and writes absolute values (upserts, "set to", deletes
// by key or age), never increments. What it returns must stay true on a
// second run, or be a figure only logged (the call site says which). An
// unknown commit outcome then simply runs it again.
func Idempotent(c *txConfig) { c.idempotent = true }

// AppliedIf gives the check that tells, after an unknown commit outcome,
// whether the attempt committed: if so its results stand; if not the body
// runs again. Bodies whose results (or writes) would differ on a second
// run use it.
func AppliedIf(check AppliedFunc) TxOption { return func(c *txConfig) { c.applied = check } }

// InTx runs fn in a SERIALIZABLE transaction, committing when fn returns nil
// and rolling back otherwise. Serialization failures and deadlocks, whether
// raised by fn's statements or by the commit, re-run the whole transaction
// after a jittered back-off, up to the policy's attempt limit. name labels
// the transaction in logs.
//
// A commit whose outcome is unknown (CockroachDB's 40003 "result is
// ambiguous", or the connection lost while COMMIT was in flight) is never
// simply retried, since that could apply a change twice. InTx first finds
// out whether it committed: by the audit entry the attempt wrote, when it
// carried one (its id is unique to the attempt and it commits with the
// change); else by the AppliedIf check; else, for ReadOnly and Idempotent
// bodies, running again is the answer. Without any of these the outcome
// stays unknown and InTx returns ErrAmbiguous.
func (d *Datastore) InTx(ctx context.Context, name string, fn TxFunc, opts ...TxOption) error {
	var cfg txConfig
	for _, o := range opts {
		o(&cfg)
	}
	return d.retrying(ctx, name, cfg, func() (attemptResult, error) { return d.runOnce(ctx, fn, cfg) })
}

// Exec1 runs one statement as its own (implicit) transaction, retrying
// serialization failures as InTx does. It suits idempotent writes that
// run on every task activation and should not cost a BEGIN and a COMMIT
// round trip each: an unknown outcome (CockroachDB reports 40003 for a
// single statement too) runs the statement again. scan, when not nil,
// reads the rows of a statement with RETURNING; it may run more than once.
func (d *Datastore) Exec1(ctx context.Context, name string, scan func(pgx.Rows) error, sql string, args ...any) error {
	return d.retrying(ctx, name, txConfig{idempotent: true}, func() (attemptResult, error) {
		var at attemptResult
		rows, err := d.pool.Query(ctx, sql, args...)
		if err == nil {
			if scan != nil {
				err = scan(rows)
			}
			rows.Close()
			if rerr := rows.Err(); err == nil {
				err = rerr
			}
		}
		if err != nil {
			at.commitUnknown = commitOutcomeUnknown(err)
		}
		return at, err
	})
}

// retrying is the loop of InTx and Exec1: attempt until success, an error
// that another attempt cannot fix, or the policy's attempt limit.
func (d *Datastore) retrying(ctx context.Context, name string, cfg txConfig, attemptOnce func() (attemptResult, error)) error {
	var err error
	var wait *backoff.Schedule // made on the first retry: most transactions never need it
	for attempt := 1; ; attempt++ {
		var at attemptResult
		at, err = attemptOnce()
		switch {
		case err == nil:
			return nil
		case at.commitUnknown:
			applied, rerr := d.resolve(ctx, name, cfg, at)
			if rerr != nil {
				return ambiguousError{tx: name, commit: err, resolve: rerr}
			}
			if applied {
				if at.audit != nil {
					at.audit.written = true
				}
				zerolog.Ctx(ctx).Info().Str("tx", name).Err(err).Msg("commit outcome was unknown; it had committed")
				return nil
			}
			zerolog.Ctx(ctx).Info().Str("tx", name).Err(err).Msg("commit outcome was unknown; it had not committed, retrying")
		case SQLState(err) == "40003":
			// Raised by a statement before COMMIT was sent: the
			// transaction did not commit, so it can run again.
		case !IsRetryable(err):
			return classify(err)
		}
		if attempt >= d.retry.MaxAttempts {
			return fmt.Errorf("transaction %s: gave up after %d attempts: %w", name, attempt, err)
		}
		if d.onRetry != nil {
			d.onRetry(attempt, err)
		}
		if wait == nil {
			wait = d.retrySchedule()
		}
		delay := wait.NextBackOff()
		zerolog.Ctx(ctx).Debug().Str("tx", name).Int("attempt", attempt).Float64("backoff_ms", logging.Millis(delay)).
			Err(err).Msg("retrying transaction")
		if serr := d.sleep(ctx, delay); serr != nil {
			return serr
		}
	}
}

// attemptResult is what resolving an unknown commit needs to know of the
// attempt.
type attemptResult struct {
	commitUnknown bool
	// audit is the pending entry the attempt wrote, auditID its row's id.
	audit   *pendingAudit
	auditID uuid.UUID
}

func (d *Datastore) runOnce(ctx context.Context, fn TxFunc, cfg txConfig) (at attemptResult, err error) {
	txOpts := pgx.TxOptions{IsoLevel: pgx.Serializable}
	if cfg.readOnly {
		txOpts.AccessMode = pgx.ReadOnly
	}
	tx, err := d.pool.BeginTx(ctx, txOpts)
	if err != nil {
		return at, err
	}
	defer func() {
		if err != nil {
			// Rollback after a failed statement or commit is harmless; its
			// own error adds nothing.
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if err = fn(ctx, tx); err != nil {
		return at, err
	}
	if !cfg.readOnly {
		if at.audit, at.auditID, err = writePendingAudit(ctx, tx); err != nil {
			return at, err
		}
	}
	if d.commit != nil {
		err = d.commit(ctx, tx)
	} else {
		err = tx.Commit(ctx)
	}
	if err != nil {
		at.commitUnknown = commitOutcomeUnknown(err)
		return at, err
	}
	if at.audit != nil {
		at.audit.written = true
	}
	return at, nil
}

// commitOutcomeUnknown reports whether a failed COMMIT may nevertheless
// have committed: CockroachDB says so with 40003; a connection that broke,
// or a context that ended, after COMMIT was sent says nothing either way.
// A request that never left (pgconn.SafeToRetry, which covers a context
// already done) did not commit, and any other answer from the server is
// definite, a COMMIT answered with ROLLBACK among them.
func commitOutcomeUnknown(err error) bool {
	if SQLState(err) == "40003" {
		return true
	}
	var pgErr *pgconn.PgError
	return !errors.As(err, &pgErr) && !pgconn.SafeToRetry(err) && !errors.Is(err, pgx.ErrTxCommitRollback)
}

// resolveTimeout bounds finding out an unknown commit's outcome, which
// runs even when the caller's context is done: an answer beats a guess.
const resolveTimeout = 10 * time.Second

// resolve finds out whether an attempt whose commit outcome is unknown
// committed (see InTx).
func (d *Datastore) resolve(ctx context.Context, name string, cfg txConfig, at attemptResult) (bool, error) {
	var check AppliedFunc
	switch {
	case at.audit != nil:
		id := at.auditID
		check = func(ctx context.Context, tx pgx.Tx) (bool, error) {
			var found bool
			err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM audit_log WHERE id = $1::UUID)`, id).Scan(&found)
			return found, err
		}
	case cfg.applied != nil:
		check = cfg.applied
	case cfg.readOnly || cfg.idempotent:
		return false, nil
	default:
		return false, errors.New("the transaction gives no way to tell whether it committed")
	}
	// The check runs on its own: not carrying the caller's pending audit
	// entry, and not cut short by the caller's cancellation.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(withoutAudit(ctx)), resolveTimeout)
	defer cancel()
	var applied bool
	err := d.InTx(rctx, name+"_outcome", func(ctx context.Context, tx pgx.Tx) error {
		var err error
		applied, err = check(ctx, tx)
		return err
	}, ReadOnly)
	return applied, err
}

// ambiguousError is a commit whose outcome InTx could not find out.
type ambiguousError struct {
	tx      string
	commit  error
	resolve error
}

func (e ambiguousError) Error() string {
	return fmt.Sprintf("%v: transaction %s: commit failed with %v, and whether it took effect is unknown (%v)",
		ErrAmbiguous, e.tx, e.commit, e.resolve)
}

func (e ambiguousError) Unwrap() []error { return []error{ErrAmbiguous, e.commit, e.resolve} }

// retrySchedule starts one InTx call's back-off: full jitter under a
// ceiling that doubles from Base to Max.
func (d *Datastore) retrySchedule() *backoff.Schedule {
	return backoff.New(backoff.Policy{Initial: d.retry.Base, Max: d.retry.Max, Jitter: 1}, d.rng)
}

// IsRetryable reports whether err is a serialization failure or deadlock
// that re-running the transaction can resolve.
func IsRetryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// SQLState returns err's SQLSTATE, or "" when err is not a database error.
func SQLState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

type unavailableError struct{ err error }

func (e unavailableError) Error() string        { return fmt.Sprintf("%v: %v", ErrUnavailable, e.err) }
func (e unavailableError) Unwrap() []error      { return []error{ErrUnavailable, e.err} }
func (e unavailableError) Is(target error) bool { return target == ErrUnavailable }

// classify marks errors that mean "could not reach the database" as
// ErrUnavailable while keeping the original reachable with errors.As.
func classify(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	if errors.As(err, &connectErr) || errors.As(err, &netErr) || pgconn.SafeToRetry(err) {
		return unavailableError{err}
	}
	// Admin shutdown and friends: the server is going away.
	switch SQLState(err) {
	case "57P01", "57P02", "57P03", "08000", "08003", "08006":
		return unavailableError{err}
	}
	return err
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// exists runs a SELECT EXISTS (...) query: the common AppliedIf check.
func exists(ctx context.Context, tx pgx.Tx, sql string, args ...any) (bool, error) {
	var found bool
	err := tx.QueryRow(ctx, sql, args...).Scan(&found)
	return found, err
}

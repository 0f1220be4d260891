// Package datastore is Nexus's access to its database (PostgreSQL or
// CockroachDB) through a pgx pool.
//
// Every change that spans more than one statement goes through InTx, which
// runs a function in a SERIALIZABLE transaction and re-runs the whole
// function when the database reports a serialization failure (40001) or a
// deadlock (40P01). Functions passed to InTx must therefore be safe to run
// more than once: they may not have side effects outside the transaction.
package datastore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

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
	return cfg, nil
}

// Pool exposes the pool to packages that run their own single-statement
// queries (background tasks' collectors, for instance).
func (d *Datastore) Pool() *pgxpool.Pool { return d.pool }

// Ping reports whether the database answers.
func (d *Datastore) Ping(ctx context.Context) error {
	return classify(d.pool.Ping(ctx))
}

// TxFunc is the body of a transaction. It may run more than once.
type TxFunc func(ctx context.Context, tx pgx.Tx) error

// InTx runs fn in a SERIALIZABLE transaction, committing when fn returns nil
// and rolling back otherwise. Serialization failures and deadlocks, whether
// raised by fn's statements or by the commit, re-run the whole transaction
// after a jittered back-off, up to the policy's attempt limit. name labels
// the transaction in logs.
func (d *Datastore) InTx(ctx context.Context, name string, fn TxFunc) error {
	var err error
	var wait *backoff.Schedule // made on the first retry: most transactions never need it
	for attempt := 1; ; attempt++ {
		err = d.runOnce(ctx, fn)
		if err == nil || !IsRetryable(err) {
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

func (d *Datastore) runOnce(ctx context.Context, fn TxFunc) (err error) {
	tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// Rollback after a failed statement or commit is harmless; its
			// own error adds nothing.
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if err = fn(ctx, tx); err != nil {
		return err
	}
	audit, err := writePendingAudit(ctx, tx)
	if err != nil {
		return err
	}
	if err = tx.Commit(ctx); err != nil {
		return err
	}
	if audit != nil {
		audit.written = true
	}
	return nil
}

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

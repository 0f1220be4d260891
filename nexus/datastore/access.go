package datastore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/nexus/model"
)

// Operator tokens -----------------------------------------------------------

const tokenColumns = `id, name, role::TEXT, time_created, time_expires, time_last_used, time_revoked, created_by`

func scanToken(row pgx.Row) (model.OperatorToken, error) {
	var t model.OperatorToken
	var role string
	err := row.Scan(&t.ID, &t.Name, &role, &t.TimeCreated, &t.TimeExpires, &t.TimeLastUsed, &t.TimeRevoked, &t.CreatedBy)
	t.Role = model.Role(role)
	return t, err
}

// OperatorTokenCreate records a token by the SHA-256 of its secret.
func (d *Datastore) OperatorTokenCreate(ctx context.Context, t model.OperatorToken, hash []byte) (model.OperatorToken, error) {
	var out model.OperatorToken
	if t.ID == uuid.Nil {
		t.ID = uuid.New()
	}
	err := d.InTx(ctx, "operator_token_create", func(ctx context.Context, tx pgx.Tx) error {
		var err error
		out, err = scanToken(tx.QueryRow(ctx, `INSERT INTO operator_token
			(id, name, role, token_sha256, time_created, time_expires, created_by)
			VALUES ($1, $2, $3, $4, now(), $5, $6) RETURNING `+tokenColumns,
			t.ID, t.Name, string(t.Role), hash, t.TimeExpires, t.CreatedBy))
		return err
	}, AppliedIf(func(ctx context.Context, tx pgx.Tx) (bool, error) {
		// Run again after it committed, the insert would fail on the
		// token's unique hash: look for the row by its id instead.
		return exists(ctx, tx, `SELECT EXISTS (SELECT 1 FROM operator_token WHERE id = $1::UUID)`, t.ID)
	}))
	return out, err
}

// OperatorTokenByHash returns the token whose secret hashes to hash, or
// ErrNotFound. Revoked and expired tokens are returned too: the caller
// says why they no longer work.
func (d *Datastore) OperatorTokenByHash(ctx context.Context, hash []byte) (model.OperatorToken, error) {
	t, err := scanToken(d.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM operator_token WHERE token_sha256 = $1`, hash))
	if errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("%w: no such token", ErrNotFound)
	}
	return t, classify(err)
}

// OperatorTokenUsed records that a token was used, at most once per
// interval, so that authenticating every request does not write a row
// every time.
func (d *Datastore) OperatorTokenUsed(ctx context.Context, id uuid.UUID, interval time.Duration) error {
	// Idempotent (it sets a time), so Exec1 may run it twice.
	return d.Exec1(ctx, "operator_token_used", nil, `UPDATE operator_token SET time_last_used = now()
		WHERE id = $1::UUID AND (time_last_used IS NULL OR time_last_used < now() - $2::INTERVAL)`,
		id, fmt.Sprintf("%d milliseconds", interval.Milliseconds()))
}

// OperatorTokenList returns up to limit tokens with ids after `after`.
func (d *Datastore) OperatorTokenList(ctx context.Context, after uuid.UUID, limit int) ([]model.OperatorToken, error) {
	rows, err := d.pool.Query(ctx, `SELECT `+tokenColumns+` FROM operator_token WHERE id > $1 ORDER BY id LIMIT $2`,
		after, limit)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.OperatorToken, error) { return scanToken(r) })
	return out, classify(err)
}

// OperatorTokenRevoke revokes a token (already revoked: unchanged), or
// returns ErrNotFound.
func (d *Datastore) OperatorTokenRevoke(ctx context.Context, id uuid.UUID) (model.OperatorToken, error) {
	var out model.OperatorToken
	err := d.InTx(ctx, "operator_token_revoke", func(ctx context.Context, tx pgx.Tx) error {
		var err error
		out, err = scanToken(tx.QueryRow(ctx, `UPDATE operator_token
			SET time_revoked = COALESCE(time_revoked, now()) WHERE id = $1 RETURNING `+tokenColumns, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: no token with id %s", ErrNotFound, id)
		}
		return err
	}, Idempotent) // a revoked token keeps its first revocation time: a second run returns the same row
	return out, err
}

// Audit log -----------------------------------------------------------------

type auditKey struct{}

// pendingAudit is an audit entry waiting for the transaction of the change
// it records.
type pendingAudit struct {
	entry   model.AuditEntry
	written bool
}

// WithAudit returns a context whose next committed InTx transaction also
// inserts e (with outcome ok), so that the change and its audit record
// commit together or not at all. AuditWritten tells whether that happened.
func WithAudit(ctx context.Context, e model.AuditEntry) context.Context {
	return context.WithValue(ctx, auditKey{}, &pendingAudit{entry: e})
}

// UpdateAudit lets the change fill in what it learns on the way (an
// upload's system version) before its entry is written.
func UpdateAudit(ctx context.Context, fn func(*model.AuditEntry)) {
	if p, _ := ctx.Value(auditKey{}).(*pendingAudit); p != nil && !p.written {
		fn(&p.entry)
	}
}

// PendingAudit returns ctx's audit entry as it stands.
func PendingAudit(ctx context.Context) (model.AuditEntry, bool) {
	p, _ := ctx.Value(auditKey{}).(*pendingAudit)
	if p == nil {
		return model.AuditEntry{}, false
	}
	return p.entry, true
}

// AuditWritten reports whether ctx's pending audit entry was committed
// with a transaction.
func AuditWritten(ctx context.Context) bool {
	p, _ := ctx.Value(auditKey{}).(*pendingAudit)
	return p != nil && p.written
}

// writePendingAudit inserts ctx's pending audit entry in tx, if any is
// still waiting, under a new id for this attempt (returned: it tells, after
// an unknown commit outcome, whether the attempt committed); it is marked
// written only once tx commits.
func writePendingAudit(ctx context.Context, tx pgx.Tx) (*pendingAudit, uuid.UUID, error) {
	p, _ := ctx.Value(auditKey{}).(*pendingAudit)
	if p == nil || p.written {
		return nil, uuid.Nil, nil
	}
	e := p.entry
	e.Outcome = model.AuditOK
	e.ID = uuid.New()
	return p, e.ID, insertAudit(ctx, tx, e)
}

// withoutAudit returns ctx with no pending audit entry: a transaction in
// it neither carries nor waits for one.
func withoutAudit(ctx context.Context) context.Context {
	return context.WithValue(ctx, auditKey{}, (*pendingAudit)(nil))
}

func insertAudit(ctx context.Context, tx pgx.Tx, e model.AuditEntry) error {
	if e.ID == uuid.Nil {
		e.ID = uuid.New()
	}
	_, err := tx.Exec(ctx, `INSERT INTO audit_log
		(id, time, actor, actor_kind, action, target, request_id, outcome, error_code, detail)
		VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8, $9)`,
		e.ID, e.Actor, e.ActorKind, e.Action, e.Target, e.RequestID, e.Outcome, e.ErrorCode, e.Detail)
	return err
}

// AuditInsert records an entry on its own: a refused or failed request,
// or a change that has no transaction (an activation).
func (d *Datastore) AuditInsert(ctx context.Context, e model.AuditEntry) error {
	// A plain background context: the entry must not join (or wait for)
	// the request's pending audit, and must be written even when the
	// request's context was cancelled.
	ctx = context.WithoutCancel(withoutAudit(ctx))
	if e.ID == uuid.Nil {
		e.ID = uuid.New()
	}
	return d.InTx(ctx, "audit_insert", func(ctx context.Context, tx pgx.Tx) error {
		return insertAudit(ctx, tx, e)
	}, AppliedIf(func(ctx context.Context, tx pgx.Tx) (bool, error) {
		// The entry's id is chosen once, before the first attempt.
		return exists(ctx, tx, `SELECT EXISTS (SELECT 1 FROM audit_log WHERE id = $1::UUID)`, e.ID)
	}))
}

// AuditCursor is a position in the newest-first audit listing.
type AuditCursor = RepoCursor

const auditColumns = `id, time, actor, actor_kind, action, target, request_id, outcome, error_code, detail`

// AuditList returns up to limit entries, newest first, older than the
// cursor (nil for the first page).
func (d *Datastore) AuditList(ctx context.Context, before *AuditCursor, limit int) ([]model.AuditEntry, error) {
	q := `SELECT ` + auditColumns + ` FROM audit_log`
	args := []any{limit}
	if before != nil {
		q += ` WHERE (time, id) < ($2::TIMESTAMPTZ, $3::UUID)`
		args = append(args, before.TimeCreated, before.ID)
	}
	q += ` ORDER BY time DESC, id DESC LIMIT $1`
	rows, err := d.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.AuditEntry, error) {
		var e model.AuditEntry
		err := r.Scan(&e.ID, &e.Time, &e.Actor, &e.ActorKind, &e.Action, &e.Target, &e.RequestID, &e.Outcome,
			&e.ErrorCode, &e.Detail)
		return e, err
	})
	return out, classify(err)
}

package datastore

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/api"
)

const sledColumns = `id, part_number, serial_number, sled_agent_address, repo_depot_port,
	policy::TEXT, state::TEXT, time_created, time_modified, time_last_seen`

func scanSled(row pgx.Row) (api.Sled, error) {
	var s api.Sled
	err := row.Scan(&s.ID, &s.Baseboard.Part, &s.Baseboard.Serial, &s.SledAgentAddress, &s.RepoDepotPort,
		&s.Policy, &s.State, &s.TimeCreated, &s.TimeModified, &s.TimeLastSeen)
	return s, err
}

// SledUpsertResult says what a registration did.
type SledUpsertResult struct {
	Sled    api.Sled
	Created bool
	// Changed is set when the baseboard or addresses differ from what was
	// recorded (always set when Created).
	Changed bool
}

// SledUpsert records a sled agent's registration, keyed by sled id. It
// refreshes the last-seen time, brings an unreachable sled back to active,
// refuses an expunged sled, and refuses a baseboard that another sled id
// already holds.
func (d *Datastore) SledUpsert(ctx context.Context, id uuid.UUID, reg api.SledRegistration) (SledUpsertResult, error) {
	var res SledUpsertResult
	err := d.InTx(ctx, "sled_upsert", func(ctx context.Context, tx pgx.Tx) error {
		res = SledUpsertResult{}
		var holder uuid.UUID
		err := tx.QueryRow(ctx, `SELECT id FROM sled WHERE part_number = $1 AND serial_number = $2`,
			reg.Baseboard.Part, reg.Baseboard.Serial).Scan(&holder)
		switch {
		case err == nil && holder != id:
			return fmt.Errorf("%w: baseboard %s is already registered as sled %s", ErrConflict, reg.Baseboard, holder)
		case err != nil && !errors.Is(err, pgx.ErrNoRows):
			return err
		}

		old, err := scanSled(tx.QueryRow(ctx, `SELECT `+sledColumns+` FROM sled WHERE id = $1`, id))
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			res.Created, res.Changed = true, true
			res.Sled, err = scanSled(tx.QueryRow(ctx, `
				INSERT INTO sled (id, time_created, time_modified, time_last_seen,
					part_number, serial_number, sled_agent_address, repo_depot_port)
				VALUES ($1, now(), now(), now(), $2, $3, $4, $5)
				RETURNING `+sledColumns,
				id, reg.Baseboard.Part, reg.Baseboard.Serial, reg.SledAgentAddress, reg.RepoDepotPort))
			return err
		case err != nil:
			return err
		case old.Policy == api.SledPolicyExpunged:
			return fmt.Errorf("%w: sled %s is expunged and cannot register again", ErrExpunged, id)
		}
		res.Changed = old.Baseboard != reg.Baseboard || old.SledAgentAddress != reg.SledAgentAddress ||
			old.RepoDepotPort != reg.RepoDepotPort
		res.Sled, err = scanSled(tx.QueryRow(ctx, `
			UPDATE sled SET
				part_number = $2, serial_number = $3, sled_agent_address = $4, repo_depot_port = $5,
				time_last_seen = now(),
				time_modified = CASE WHEN $6 THEN now() ELSE time_modified END,
				state = CASE WHEN state = 'unreachable' THEN 'active' ELSE state END
			WHERE id = $1
			RETURNING `+sledColumns,
			id, reg.Baseboard.Part, reg.Baseboard.Serial, reg.SledAgentAddress, reg.RepoDepotPort, res.Changed))
		return err
	})
	return res, err
}

// ErrExpunged is returned when an expunged sled tries to register.
var ErrExpunged = errors.New("sled expunged")

// SledList returns up to limit sleds with ids after `after` (uuid.Nil for
// the first page), in id order.
func (d *Datastore) SledList(ctx context.Context, after uuid.UUID, limit int) ([]api.Sled, error) {
	rows, err := d.pool.Query(ctx, `SELECT `+sledColumns+` FROM sled WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, classify(err)
	}
	sleds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (api.Sled, error) { return scanSled(r) })
	return sleds, classify(err)
}

// SledGet returns one sled, or ErrNotFound.
func (d *Datastore) SledGet(ctx context.Context, id uuid.UUID) (api.Sled, error) {
	s, err := scanSled(d.pool.QueryRow(ctx, `SELECT `+sledColumns+` FROM sled WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return s, fmt.Errorf("%w: no sled with id %s", ErrNotFound, id)
	}
	return s, classify(err)
}

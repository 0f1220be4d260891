package datastore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/nexus/model"
)

const sledColumns = `id, part_number, serial_number, sled_agent_address, repo_depot_port,
	policy::TEXT, state::TEXT, time_created, time_modified, time_last_seen,
	artifact_generation, m2_devices, artifacts_complete`

func scanSled(row pgx.Row) (model.Sled, error) {
	var s model.Sled
	var gen, complete *int64
	var m2s []byte
	err := row.Scan(&s.ID, &s.Baseboard.Part, &s.Baseboard.Serial, &s.SledAgentAddress, &s.RepoDepotPort,
		&s.Policy, &s.State, &s.TimeCreated, &s.TimeModified, &s.TimeLastSeen, &gen, &m2s, &complete)
	if err != nil {
		return s, err
	}
	if complete != nil {
		c := int(*complete)
		s.ArtifactsComplete = &c
	}
	if gen != nil {
		g := uint64(*gen)
		s.ArtifactGeneration = &g
	}
	if m2s != nil {
		var rows []m2Row
		if err := json.Unmarshal(m2s, &rows); err != nil {
			return s, fmt.Errorf("sled %s: m2_devices: %w", s.ID, err)
		}
		s.M2s = make([]model.M2Device, len(rows))
		for i, r := range rows {
			s.M2s[i] = model.M2Device(r)
		}
	}
	return s, nil
}

// m2Row is the stored form of one M.2 in the m2_devices column. Its JSON
// names are the column's format, fixed here rather than borrowed from a
// wire type, so an API change cannot change what old rows mean.
type m2Row struct {
	Path       string `json:"path"`
	Present    bool   `json:"present"`
	FreeBytes  uint64 `json:"free_bytes"`
	TotalBytes uint64 `json:"total_bytes"`
	Error      string `json:"error,omitempty"`
}

// inventoryArgs turns a registration's optional inventory into query
// arguments: NULL when the agent did not report it.
func inventoryArgs(reg model.SledRegistration) (gen *int64, m2s []byte, err error) {
	if reg.ArtifactGeneration != nil {
		g := int64(*reg.ArtifactGeneration) // Validate bounds it to int64
		gen = &g
	}
	if reg.M2s != nil {
		rows := make([]m2Row, len(reg.M2s))
		for i, d := range reg.M2s {
			rows[i] = m2Row(d)
		}
		if m2s, err = json.Marshal(rows); err != nil {
			return nil, nil, err
		}
	}
	return gen, m2s, nil
}

// inventoryChanged reports a change in what the sled reports that matters
// to Nexus: its generation or which M.2s are present (free space moves all
// the time and is not a change).
func inventoryChanged(old model.Sled, reg model.SledRegistration) bool {
	if reg.ArtifactGeneration != nil && (old.ArtifactGeneration == nil || *old.ArtifactGeneration != *reg.ArtifactGeneration) {
		return true
	}
	if reg.ArtifactsComplete != nil && (old.ArtifactsComplete == nil || *old.ArtifactsComplete != *reg.ArtifactsComplete) {
		return true
	}
	if reg.M2s == nil {
		return false
	}
	if len(old.M2s) != len(reg.M2s) {
		return true
	}
	for i, d := range reg.M2s {
		if old.M2s[i].Path != d.Path || old.M2s[i].Present != d.Present {
			return true
		}
	}
	return false
}

// SledUpsert records a sled agent's registration, keyed by sled id. It
// refreshes the last-seen time, brings an unreachable sled back to active,
// refuses an expunged sled, and refuses a baseboard that another sled id
// already holds.
func (d *Datastore) SledUpsert(ctx context.Context, id uuid.UUID, reg model.SledRegistration) (model.SledUpsertResult, error) {
	var res model.SledUpsertResult
	gen, m2s, err := inventoryArgs(reg)
	if err != nil {
		return res, err
	}
	err = d.InTx(ctx, "sled_upsert", func(ctx context.Context, tx pgx.Tx) error {
		res = model.SledUpsertResult{}
		var holder uuid.UUID
		var holderPolicy string
		err := tx.QueryRow(ctx, `SELECT id, policy::TEXT FROM sled WHERE part_number = $1 AND serial_number = $2`,
			reg.Baseboard.Part, reg.Baseboard.Serial).Scan(&holder, &holderPolicy)
		switch {
		case err == nil && holderPolicy == model.SledPolicyExpunged:
			// The baseboard was expunged (removed from the trust
			// quorum): under no sled id may it come back.
			return fmt.Errorf("%w: baseboard %s is sled %s, expunged, and cannot register again", ErrExpunged, reg.Baseboard, holder)
		case err == nil && holder != id:
			return fmt.Errorf("%w: baseboard %s is already registered as sled %s", ErrConflict, reg.Baseboard, holder)
		case err != nil && !errors.Is(err, pgx.ErrNoRows):
			return err
		}

		old, err := scanSled(tx.QueryRow(ctx, `SELECT `+sledColumns+` FROM sled WHERE id = $1`, id))
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			res.Created, res.Changed = true, true
			res.InventoryChanged = reg.ArtifactGeneration != nil || reg.M2s != nil || reg.ArtifactsComplete != nil
			res.Sled, err = scanSled(tx.QueryRow(ctx, `
				INSERT INTO sled (id, time_created, time_modified, time_last_seen,
					part_number, serial_number, sled_agent_address, repo_depot_port,
					artifact_generation, m2_devices, artifacts_complete)
				VALUES ($1, now(), now(), now(), $2, $3, $4, $5, $6, $7, $8)
				RETURNING `+sledColumns,
				id, reg.Baseboard.Part, reg.Baseboard.Serial, reg.SledAgentAddress, reg.RepoDepotPort, gen, m2s,
				reg.ArtifactsComplete))
			return err
		case err != nil:
			return err
		case old.Policy == model.SledPolicyExpunged:
			return fmt.Errorf("%w: sled %s is expunged and cannot register again", ErrExpunged, id)
		case old.Baseboard != reg.Baseboard:
			// A sled id belongs to one baseboard for good: another
			// sled re-registering it would take its traffic.
			return fmt.Errorf("%w: sled %s is baseboard %s, not %s", ErrBaseboardMismatch, id, old.Baseboard, reg.Baseboard)
		}
		res.Changed = old.Baseboard != reg.Baseboard || old.SledAgentAddress != reg.SledAgentAddress ||
			old.RepoDepotPort != reg.RepoDepotPort
		res.InventoryChanged = inventoryChanged(old, reg)
		res.Revived = old.State == model.SledStateUnreachable
		res.Sled, err = scanSled(tx.QueryRow(ctx, `
			UPDATE sled SET
				part_number = $2, serial_number = $3, sled_agent_address = $4, repo_depot_port = $5,
				time_last_seen = now(),
				time_modified = CASE WHEN $6::BOOL THEN now() ELSE time_modified END,
				state = CASE WHEN state = 'unreachable' THEN 'active' ELSE state END,
				artifact_generation = COALESCE($7::INT8, artifact_generation),
				m2_devices = COALESCE($8::JSONB, m2_devices),
				artifacts_complete = COALESCE($9::INT8, artifacts_complete)
			WHERE id = $1
			RETURNING `+sledColumns,
			id, reg.Baseboard.Part, reg.Baseboard.Serial, reg.SledAgentAddress, reg.RepoDepotPort, res.Changed,
			gen, m2s, reg.ArtifactsComplete))
		return err
	}, AppliedIf(func(ctx context.Context, tx pgx.Tx) (bool, error) {
		// Every attempt stamps time_last_seen with its own transaction's
		// now(): the row carries this attempt's stamp only if it committed.
		// (A later registration may have stamped it since; the body then
		// runs again, harmlessly, against that state.)
		var seen time.Time
		err := tx.QueryRow(ctx, `SELECT time_last_seen FROM sled WHERE id = $1::UUID`, id).Scan(&seen)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		return err == nil && seen.Equal(res.Sled.TimeLastSeen), err
	}))
	return res, err
}

// ErrExpunged is returned when an expunged sled tries to register.
var ErrExpunged = errors.New("sled expunged")

// ErrBaseboardMismatch is returned when a sled id is registered with a
// baseboard other than the one it was first registered with.
var ErrBaseboardMismatch = errors.New("sled id belongs to another baseboard")

// SledList returns up to limit sleds with ids after `after` (uuid.Nil for
// the first page), in id order.
func (d *Datastore) SledList(ctx context.Context, after uuid.UUID, limit int) ([]model.Sled, error) {
	rows, err := d.pool.Query(ctx, `SELECT `+sledColumns+` FROM sled WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, classify(err)
	}
	sleds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Sled, error) { return scanSled(r) })
	return sleds, classify(err)
}

// SledGet returns one sled, or ErrNotFound.
func (d *Datastore) SledGet(ctx context.Context, id uuid.UUID) (model.Sled, error) {
	s, err := scanSled(d.pool.QueryRow(ctx, `SELECT `+sledColumns+` FROM sled WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return s, fmt.Errorf("%w: no sled with id %s", ErrNotFound, id)
	}
	return s, classify(err)
}

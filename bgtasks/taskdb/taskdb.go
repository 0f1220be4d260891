// Package taskdb keeps the background-task driver's shared state in the
// database: the per-task enable switches every Nexus honours, and each
// Nexus's heartbeat of its tasks' statuses.
//
// Every statement runs through datastore.InTx, so unreachable-database
// errors come back as datastore.ErrUnavailable (503 at the API),
// serialization failures are retried, and a commit with an unknown outcome
// is handled as each transaction declares (reads are ReadOnly; the writes
// are upserts and deletes by age, Idempotent).
package taskdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/nexus/datastore"
)

// Store reads and writes the background-task tables.
type Store struct{ ds *datastore.Datastore }

// New returns a Store over ds.
func New(ds *datastore.Datastore) *Store { return &Store{ds: ds} }

// Enabled reports whether the task is switched on; a task nobody has
// switched is on. Its signature fits bgtasks.Options.Enabled.
func (s *Store) Enabled(ctx context.Context, name string) (bool, error) {
	enabled := true
	err := s.ds.InTx(ctx, "bgtask_enabled", func(ctx context.Context, tx pgx.Tx) error {
		enabled = true
		err := tx.QueryRow(ctx, `SELECT enabled FROM bgtask_setting WHERE name = $1`, name).Scan(&enabled)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	}, datastore.ReadOnly)
	if err != nil {
		return false, fmt.Errorf("read switch of %s: %w", name, err)
	}
	return enabled, nil
}

// Switches returns every task that has a switch row, by name.
func (s *Store) Switches(ctx context.Context) (map[string]bool, error) {
	var out map[string]bool
	err := s.ds.InTx(ctx, "bgtask_switches", func(ctx context.Context, tx pgx.Tx) error {
		out = map[string]bool{}
		rows, err := tx.Query(ctx, `SELECT name, enabled FROM bgtask_setting`)
		if err != nil {
			return err
		}
		var name string
		var on bool
		_, err = pgx.ForEachRow(rows, []any{&name, &on}, func() error {
			out[name] = on
			return nil
		})
		return err
	}, datastore.ReadOnly)
	if err != nil {
		return nil, fmt.Errorf("read background-task switches: %w", err)
	}
	return out, nil
}

// SetEnabled flips a task's switch; by says who asked (a request id).
func (s *Store) SetEnabled(ctx context.Context, name string, enabled bool, by string) error {
	err := s.ds.InTx(ctx, "bgtask_set_enabled", func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
			INSERT INTO bgtask_setting (name, enabled, time_modified, modified_by)
			VALUES ($1, $2, now(), $3)
			ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled,
				time_modified = excluded.time_modified, modified_by = excluded.modified_by`,
			name, enabled, by)
		return err
	}, datastore.Idempotent) // an upsert of absolute values
	if err != nil {
		return fmt.Errorf("set switch of %s: %w", name, err)
	}
	return nil
}

// WriteHeartbeat records nexusID's task summaries, stamped with the
// database's clock.
func (s *Store) WriteHeartbeat(ctx context.Context, nexusID uuid.UUID, tasks []api.TaskSummary) error {
	if tasks == nil {
		tasks = []api.TaskSummary{}
	}
	b, err := json.Marshal(tasks)
	if err != nil {
		return fmt.Errorf("encode heartbeat: %w", err)
	}
	err = s.ds.InTx(ctx, "bgtask_heartbeat", func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
			INSERT INTO bgtask_heartbeat (nexus_id, time_written, tasks) VALUES ($1, now(), $2)
			ON CONFLICT (nexus_id) DO UPDATE SET time_written = excluded.time_written, tasks = excluded.tasks`,
			nexusID, b)
		return err
	}, datastore.Idempotent) // an upsert of absolute values
	if err != nil {
		return fmt.Errorf("write heartbeat: %w", err)
	}
	return nil
}

// Heartbeats returns every Nexus's last heartbeat in id order, aged by the
// database's clock; those older than staleAfter are marked stale.
func (s *Store) Heartbeats(ctx context.Context, staleAfter time.Duration) ([]api.NexusTaskHeartbeat, error) {
	var out []api.NexusTaskHeartbeat
	err := s.ds.InTx(ctx, "bgtask_heartbeats", func(ctx context.Context, tx pgx.Tx) error {
		out = []api.NexusTaskHeartbeat{}
		rows, err := tx.Query(ctx, `SELECT now(), nexus_id, time_written, tasks FROM bgtask_heartbeat ORDER BY nexus_id`)
		if err != nil {
			return err
		}
		var now time.Time
		var hb api.NexusTaskHeartbeat
		var raw []byte
		_, err = pgx.ForEachRow(rows, []any{&now, &hb.NexusID, &hb.TimeWritten, &raw}, func() error {
			h := hb
			if err := json.Unmarshal(raw, &h.Tasks); err != nil {
				return fmt.Errorf("heartbeat of nexus %s: %w", h.NexusID, err)
			}
			age := now.Sub(h.TimeWritten)
			h.AgeSeconds, h.Stale = age.Seconds(), age > staleAfter
			out = append(out, h)
			return nil
		})
		return err
	}, datastore.ReadOnly)
	if err != nil {
		return nil, fmt.Errorf("read heartbeats: %w", err)
	}
	return out, nil
}

// PruneHeartbeats deletes heartbeats older than olderThan (Nexus instances
// long gone) and returns how many went.
func (s *Store) PruneHeartbeats(ctx context.Context, olderThan time.Duration) (int64, error) {
	var n int64
	// Deleting what is older than a cutoff converges, so Idempotent: a
	// second run after an unknown outcome deletes what is left (and may
	// count 0 for rows the first run took, a figure only logged).
	err := s.ds.InTx(ctx, "bgtask_heartbeat_prune", func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM bgtask_heartbeat WHERE time_written < now() - $1::FLOAT8 * INTERVAL '1 second'`,
			olderThan.Seconds())
		n = tag.RowsAffected()
		return err
	}, datastore.Idempotent)
	if err != nil {
		return 0, fmt.Errorf("prune heartbeats: %w", err)
	}
	return n, nil
}

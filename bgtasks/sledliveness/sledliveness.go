// Package sledliveness is the sled_liveness background task: it marks
// in-service sleds that stopped re-registering as unreachable, and marks
// unreachable sleds that are seen again as active.
//
// Sled agents re-register every 30 s, which refreshes sled.time_last_seen.
// Staleness is judged against the database's clock, never this Nexus's:
// several Nexus instances may run, and only the database's clock is the one
// time_last_seen was written with. Expunged and decommissioned sleds are
// left alone.
package sledliveness

import (
	"context"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/nexus/datastore"
)

// Name is the task's registered name.
const Name = "sled_liveness"

// Defaults. Three missed registrations make a sled unreachable: one lost
// request or a slow restart must not.
const (
	DefaultPeriod    = 15 * time.Second
	DefaultThreshold = 90 * time.Second
)

// Description is the one line operators see.
const Description = "marks sleds that stopped reporting as unreachable, and unreachable sleds seen again as active"

// Task is the liveness check.
type Task struct {
	DS *datastore.Datastore
	// Threshold is how long a sled may go unseen (DefaultThreshold when
	// zero).
	Threshold time.Duration
}

// Status says what the activation saw and changed.
type Status struct {
	ThresholdSeconds float64 `json:"threshold_seconds"`
	// DatabaseTime is the clock every comparison used.
	DatabaseTime time.Time `json:"database_time"`
	// Counts of in-service sleds by state after this activation.
	Active         int `json:"active"`
	Unreachable    int `json:"unreachable"`
	Decommissioned int `json:"decommissioned"`
	// Expunged sleds are counted but never touched.
	Expunged          int          `json:"expunged"`
	MarkedUnreachable []SledChange `json:"marked_unreachable"`
	MarkedActive      []SledChange `json:"marked_active"`
}

// SledChange is one sled whose state this activation changed.
type SledChange struct {
	ID           uuid.UUID `json:"id"`
	Serial       string    `json:"serial"`
	TimeLastSeen time.Time `json:"time_last_seen"`
	// SilentSeconds is how long the sled had not been seen.
	SilentSeconds float64 `json:"silent_seconds"`
}

// Activate compares every in-service sled's last-seen time with the
// database clock and flips the states that disagree, in one transaction.
// It marks the activation changed when any sled changed state.
func (t *Task) Activate(ctx context.Context, act bgtasks.Activation) (any, error) {
	threshold := t.Threshold
	if threshold <= 0 {
		threshold = DefaultThreshold
	}
	var st Status
	err := t.DS.InTx(ctx, "sled_liveness", func(ctx context.Context, tx pgx.Tx) error {
		st = Status{ThresholdSeconds: threshold.Seconds(), MarkedUnreachable: []SledChange{}, MarkedActive: []SledChange{}}
		if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&st.DatabaseTime); err != nil {
			return err
		}
		cutoff := st.DatabaseTime.Add(-threshold)
		var err error
		st.MarkedUnreachable, err = flip(ctx, tx, st.DatabaseTime, `
			UPDATE sled SET state = 'unreachable', time_modified = now()
			WHERE policy = 'in_service' AND state = 'active' AND time_last_seen < $1
			RETURNING id, serial_number, time_last_seen`, cutoff)
		if err != nil {
			return err
		}
		// Registration already revives a sled it hears from; this catches
		// a sled whose registration landed while another Nexus was marking
		// it, or a state set by hand.
		st.MarkedActive, err = flip(ctx, tx, st.DatabaseTime, `
			UPDATE sled SET state = 'active', time_modified = now()
			WHERE policy = 'in_service' AND state = 'unreachable' AND time_last_seen >= $1
			RETURNING id, serial_number, time_last_seen`, cutoff)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT policy::TEXT, state::TEXT, count(*) FROM sled GROUP BY policy, state`)
		if err != nil {
			return err
		}
		var policy, state string
		var n int
		_, err = pgx.ForEachRow(rows, []any{&policy, &state, &n}, func() error {
			switch {
			case policy == "expunged":
				st.Expunged += n
			case state == "active":
				st.Active += n
			case state == "unreachable":
				st.Unreachable += n
			case state == "decommissioned":
				st.Decommissioned += n
			}
			return nil
		})
		return err
	}, datastore.AppliedIf(func(ctx context.Context, tx pgx.Tx) (bool, error) {
		// Run again after it committed, the flips would find nothing to
		// flip and the changes would go unreported. Each flip stamped
		// time_modified with the attempt's now(), st.DatabaseTime.
		var changed []uuid.UUID
		for _, c := range append(append([]SledChange(nil), st.MarkedUnreachable...), st.MarkedActive...) {
			changed = append(changed, c.ID)
		}
		if len(changed) == 0 {
			return true, nil
		}
		var n int
		err := tx.QueryRow(ctx, `SELECT count(*) FROM sled WHERE id = ANY($1::UUID[]) AND time_modified = $2::TIMESTAMPTZ`,
			changed, st.DatabaseTime).Scan(&n)
		return n == len(changed), err
	}))
	if err != nil {
		return nil, err
	}
	log := zerolog.Ctx(ctx)
	for _, c := range st.MarkedUnreachable {
		log.Warn().Str("sled_id", c.ID.String()).Str("serial", c.Serial).Float64("silent_ms", c.SilentSeconds*1000).
			Msg("sled stopped reporting; marked unreachable")
	}
	for _, c := range st.MarkedActive {
		log.Info().Str("sled_id", c.ID.String()).Str("serial", c.Serial).Msg("unreachable sled is reporting again; marked active")
	}
	if len(st.MarkedUnreachable)+len(st.MarkedActive) > 0 {
		act.MarkChanged()
	}
	return st, nil
}

func flip(ctx context.Context, tx pgx.Tx, now time.Time, sql string, cutoff time.Time) ([]SledChange, error) {
	rows, err := tx.Query(ctx, sql, cutoff)
	if err != nil {
		return nil, err
	}
	out := []SledChange{}
	var c SledChange
	_, err = pgx.ForEachRow(rows, []any{&c.ID, &c.Serial, &c.TimeLastSeen}, func() error {
		c.SilentSeconds = now.Sub(c.TimeLastSeen).Seconds()
		out = append(out, c)
		return nil
	})
	// RETURNING has no order; sort so statuses read the same every time.
	sort.Slice(out, func(i, j int) bool { return out[i].ID.String() < out[j].ID.String() })
	return out, err
}

package datastore

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// NexusInstanceUpsert records that this Nexus runs and where sleds reach
// its internal API.
func (d *Datastore) NexusInstanceUpsert(ctx context.Context, id uuid.UUID, internalURL string) error {
	// An upsert of absolute values: running it twice is running it once.
	return d.Exec1(ctx, "nexus_instance_upsert", nil, `
		INSERT INTO nexus_instance (id, internal_url, time_started, time_modified)
		VALUES ($1, $2, now(), now())
		ON CONFLICT (id) DO UPDATE SET internal_url = excluded.internal_url,
			time_started = excluded.time_started, time_modified = excluded.time_modified`,
		id, internalURL)
}

// WantedArtifact is one artifact sleds should hold.
type WantedArtifact struct {
	SHA256 string
	Length int64
}

// ReplicationSled is an in-service sled the replication task talks to.
type ReplicationSled struct {
	ID               uuid.UUID
	SledAgentAddress string
	RepoDepotPort    int
	// M2Configured counts the M.2 devices its last inventory lists
	// (present or not); 0 before it reported one.
	M2Configured int
}

// NexusCopyRow says a Nexus holds an artifact locally.
type NexusCopyRow struct {
	NexusID uuid.UUID
	SHA256  string
	// URL is that Nexus's internal API ("" when it never recorded one).
	URL string
}

// ReplicationSnapshot is everything the replication task reads from the
// database for one run, read in one transaction so that the generation and
// the wanted set agree.
type ReplicationSnapshot struct {
	Generation int64
	// Wanted is sorted by SHA256.
	Wanted []WantedArtifact
	Sleds  []ReplicationSled
	// Copies lists every Nexus's local copies, wanted or not.
	Copies []NexusCopyRow
}

// ReplicationSnapshot reads a consistent snapshot in one batch: the round
// trips do not depend on how many artifacts, sleds or copies there are.
func (d *Datastore) ReplicationSnapshot(ctx context.Context) (ReplicationSnapshot, error) {
	var snap ReplicationSnapshot
	err := d.InTx(ctx, "replication_snapshot", func(ctx context.Context, tx pgx.Tx) error {
		snap = ReplicationSnapshot{}
		b := &pgx.Batch{}
		b.Queue(`SELECT generation FROM tuf_generation`).QueryRow(func(row pgx.Row) error {
			return row.Scan(&snap.Generation)
		})
		b.Queue(`SELECT a.sha256, max(a.length) FROM tuf_artifact a
			JOIN tuf_repo_artifact ra ON ra.artifact_id = a.id
			JOIN tuf_repo r ON r.id = ra.repo_id
			WHERE r.time_pruned IS NULL
			GROUP BY a.sha256 ORDER BY a.sha256`).Query(func(rows pgx.Rows) error {
			var err error
			snap.Wanted, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (WantedArtifact, error) {
				var w WantedArtifact
				return w, r.Scan(&w.SHA256, &w.Length)
			})
			return err
		})
		b.Queue(`SELECT id, sled_agent_address, repo_depot_port, coalesce(jsonb_array_length(m2_devices), 0)::INT8
			FROM sled WHERE policy = 'in_service' AND state = 'active' ORDER BY id`).Query(func(rows pgx.Rows) error {
			var err error
			snap.Sleds, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (ReplicationSled, error) {
				var s ReplicationSled
				var m2s int64
				err := r.Scan(&s.ID, &s.SledAgentAddress, &s.RepoDepotPort, &m2s)
				s.M2Configured = int(m2s)
				return s, err
			})
			return err
		})
		b.Queue(`SELECT c.nexus_id, c.sha256, coalesce(n.internal_url, '') FROM nexus_artifact_copy c
			LEFT JOIN nexus_instance n ON n.id = c.nexus_id ORDER BY c.sha256, c.nexus_id`).Query(func(rows pgx.Rows) error {
			var err error
			snap.Copies, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (NexusCopyRow, error) {
				var c NexusCopyRow
				return c, r.Scan(&c.NexusID, &c.SHA256, &c.URL)
			})
			return err
		})
		return tx.SendBatch(ctx, b).Close()
	}, ReadOnly)
	return snap, err
}

// NexusArtifactCopiesDrop forgets this Nexus's local copies of hashes. The
// caller deletes the files afterwards: a row without a file only makes a
// fetch fail, while a file without a row is removed at start-up.
func (d *Datastore) NexusArtifactCopiesDrop(ctx context.Context, nexusID uuid.UUID, hashes []string) error {
	if len(hashes) == 0 {
		return nil
	}
	// A delete by key: a second run deletes nothing more.
	return d.Exec1(ctx, "nexus_artifact_copies_drop", nil,
		`DELETE FROM nexus_artifact_copy WHERE nexus_id = $1 AND sha256 = ANY($2::TEXT[])`, nexusID, hashes)
}

// RepoStateChange is a repo whose state the replication task changed.
type RepoStateChange struct {
	SystemVersion string
	State         string
	Reason        string
}

// TufRepoStatesFromHolders marks live repos with an artifact in unheld as
// degraded (naming the artifacts) and degraded repos with none as active
// again. One transaction, a constant number of statements.
func (d *Datastore) TufRepoStatesFromHolders(ctx context.Context, unheld []string) ([]RepoStateChange, error) {
	if len(unheld) == 0 {
		// Everything has a holder (the usual case, on every run): the
		// only possible change is degraded repos recovering, one
		// statement. If its outcome is unknown and it runs again, a
		// second run finds nothing degraded and reports no change, so
		// this run may under-report the recoveries it made (the log line
		// of a change; the states themselves are right).
		var changes []RepoStateChange
		err := d.Exec1(ctx, "tuf_repo_states_recover", func(rows pgx.Rows) error {
			var err error
			changes, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (RepoStateChange, error) {
				c := RepoStateChange{State: "active"}
				return c, r.Scan(&c.SystemVersion)
			})
			return err
		}, `UPDATE tuf_repo SET state = 'active', state_reason = ''
			WHERE time_pruned IS NULL AND state = 'degraded' RETURNING system_version`)
		return changes, err
	}
	var changes []RepoStateChange
	var ids []uuid.UUID
	var states, reasons []string
	err := d.InTx(ctx, "tuf_repo_states", func(ctx context.Context, tx pgx.Tx) error {
		changes, ids, states, reasons = nil, nil, nil, nil
		rows, err := tx.Query(ctx, `
			SELECT r.id, r.system_version, r.state::TEXT,
				coalesce(array_agg(a.name || ' ' || a.version || ' (' || substr(a.sha256, 1, 12) || ')'
					ORDER BY a.name) FILTER (WHERE a.sha256 = ANY($1::TEXT[])), '{}')
			FROM tuf_repo r
			JOIN tuf_repo_artifact ra ON ra.repo_id = r.id
			JOIN tuf_artifact a ON a.id = ra.artifact_id
			WHERE r.time_pruned IS NULL AND r.state IN ('active', 'degraded')
			GROUP BY r.id, r.system_version, r.state`, unheld)
		if err != nil {
			return err
		}
		type repo struct {
			id      uuid.UUID
			version string
			state   string
			missing []string
		}
		all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (repo, error) {
			var x repo
			return x, r.Scan(&x.id, &x.version, &x.state, &x.missing)
		})
		if err != nil {
			return err
		}
		for _, r := range all {
			want, reason := "active", ""
			if len(r.missing) > 0 {
				want = "degraded"
				reason = fmt.Sprintf("no sled or Nexus holds %s; upload the repo again to restore it",
					strings.Join(r.missing, ", "))
			}
			if want == r.state && want == "active" {
				continue
			}
			ids, states, reasons = append(ids, r.id), append(states, want), append(reasons, reason)
			if want != r.state {
				changes = append(changes, RepoStateChange{SystemVersion: r.version, State: want, Reason: reason})
			}
		}
		if len(ids) == 0 {
			return nil
		}
		_, err = tx.Exec(ctx, `
			UPDATE tuf_repo SET state = u.state::tuf_repo_state, state_reason = u.reason
			FROM (SELECT unnest($1::UUID[]) AS id, unnest($2::TEXT[]) AS state, unnest($3::TEXT[]) AS reason) AS u
			WHERE tuf_repo.id = u.id AND (tuf_repo.state::TEXT <> u.state OR tuf_repo.state_reason <> u.reason)`,
			ids, states, reasons)
		return err
	}, AppliedIf(func(ctx context.Context, tx pgx.Tx) (bool, error) {
		// Applied when every repo the attempt set holds what it set; a
		// second run would find nothing to change and lose the list of
		// changes.
		if len(ids) == 0 {
			return true, nil
		}
		var n int
		err := tx.QueryRow(ctx, `SELECT count(*) FROM tuf_repo r
			JOIN (SELECT unnest($1::UUID[]) AS id, unnest($2::TEXT[]) AS state, unnest($3::TEXT[]) AS reason) AS u
				ON r.id = u.id
			WHERE r.state::TEXT = u.state AND r.state_reason = u.reason`, ids, states, reasons).Scan(&n)
		return n == len(ids), err
	}))
	return changes, err
}

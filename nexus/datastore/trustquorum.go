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

// The trust quorum's tables. Every change is decided by the application
// layer on a TQView read inside the change's own SERIALIZABLE transaction
// (TQChange): the rules (who may coordinate, whether a write is still
// fenced to the latest epoch) stay in nexus/app, and the view they judge
// cannot move under them, whichever Nexus races.

// ErrTQFenced is returned when a write's fence no longer holds: the
// configuration is no longer the one in progress, or no longer in the state
// the write expects (another Nexus moved it on).
var ErrTQFenced = errors.New("trust-quorum configuration moved on")

// querier is what both the pool and a transaction offer.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// TQView is what the trust quorum's rules are judged on.
type TQView struct {
	// Now is the database's clock for this view (the transaction's time):
	// every time recorded with a change is this one.
	Now  time.Time
	Rack *model.Rack
	// Latest is the highest epoch in any state, LatestCommitted the
	// highest that Nexus decided to commit (committing counts), Active the
	// one in progress (preparing or committing). Any may be nil, and they
	// may be the same configuration.
	Latest, LatestCommitted, Active *model.TQConfiguration
	// Epoch1 is the rack's first configuration (LRTQ or epoch 1).
	Epoch1 *model.TQConfiguration
	// Sleds are the registered sleds (with TQViewNeeds.Sleds).
	Sleds []TQSled
	// Seen are the sleds members reported as connected peers (ever),
	// with the last reporter and when (with TQViewNeeds.Seen).
	Seen []model.TQUninitializedSled
	// Former are the baseboards that were members of any epoch Nexus
	// decided to commit (with TQViewNeeds.Former).
	Former []model.Baseboard
	// Attempts are the configurations of Latest's change, oldest first,
	// without members (with TQViewNeeds.Attempts).
	Attempts []model.TQConfiguration
}

// TQSled is a registered sled as the trust quorum sees it.
type TQSled struct {
	ID               uuid.UUID
	Baseboard        model.Baseboard
	SledAgentAddress string
	Policy, State    string
}

// TQViewNeeds says what a view loads besides the rack and configurations.
type TQViewNeeds struct {
	Sleds, Seen, Former, Attempts bool
}

// Operations a trust-quorum change applies, in order, in its transaction.
type (
	// TQInsertRack records the rack.
	TQInsertRack struct{ Rack model.Rack }
	// TQInsertConfig inserts a configuration with its members. Its times
	// are the transaction's; a configuration inserted committing or
	// committed gets its committing (and committed) time too.
	TQInsertConfig struct{ Config model.TQConfiguration }
	// TQSetState moves a configuration from state From to To, setting
	// the times To implies (and clearing the commit time when a partially
	// committed configuration goes back to committing); Reason is the
	// abort reason.
	TQSetState struct {
		Epoch    uint64
		From, To model.TQState
		Reason   string
	}
	// TQRecordConfig records the coordinator's configuration: every
	// member's share digest and x, and the encrypted secrets.
	TQRecordConfig struct {
		Epoch            uint64
		Salt, Ciphertext []byte
		Digests          map[model.Baseboard][]byte
		X                map[model.Baseboard]int
	}
	// TQMarkMembers moves members of Epoch forward to To (unacked →
	// prepared, or anything → committed); members already there or past
	// it are left alone.
	TQMarkMembers struct {
		Epoch   uint64
		Members []model.Baseboard
		To      model.TQMemberState
	}
	// TQProgress records that Epoch's prepare moved forward now.
	TQProgress struct{ Epoch uint64 }
	// TQExpungeSleds expunges the registered sleds of these baseboards
	// (left out of an epoch Nexus decided to commit): no task gives them
	// work again and they cannot register.
	TQExpungeSleds struct{ Baseboards []model.Baseboard }
)

// TQOp is one of the operations above.
type TQOp interface{ tqOp() }

func (TQInsertRack) tqOp()   {}
func (TQInsertConfig) tqOp() {}
func (TQSetState) tqOp()     {}
func (TQRecordConfig) tqOp() {}
func (TQMarkMembers) tqOp()  {}
func (TQProgress) tqOp()     {}
func (TQExpungeSleds) tqOp() {}

// TQChange runs decide on a view read in a SERIALIZABLE transaction and
// applies the operations it returns in the same transaction. decide may run
// more than once (the transaction is retried on serialization failures),
// so it must only read the view. An error from decide rolls back and is
// returned as is.
func (d *Datastore) TQChange(ctx context.Context, name string, needs TQViewNeeds, decide func(v *TQView) ([]TQOp, error)) error {
	return d.InTx(ctx, name, func(ctx context.Context, tx pgx.Tx) error {
		v, err := loadTQView(ctx, tx, needs)
		if err != nil {
			return err
		}
		ops, err := decide(v)
		if err != nil {
			return err
		}
		for _, op := range ops {
			if err := applyTQOp(ctx, tx, v, op); err != nil {
				return err
			}
		}
		return nil
	}, Idempotent) // level-based: after an unknown commit outcome, decide runs again on the view as
	// it is, and the fences on every op keep a change from applying twice. An operator's change
	// carries its audit entry, which InTx checks first, so the operator is told what happened; a
	// task's decision that finds its work done does nothing, or fails and is redecided next run.
}

// TQViewRead reads a view outside any change (for reads and the task's
// collect phase).
func (d *Datastore) TQViewRead(ctx context.Context, needs TQViewNeeds) (*TQView, error) {
	v, err := loadTQView(ctx, d.pool, needs)
	return v, classify(err)
}

const tqConfigColumns = `rack_id, epoch, last_committed_epoch, state::TEXT, threshold, commit_crash_tolerance,
	coordinator_part, coordinator_serial, lrtq, lrtq_upgrade, configuration_recorded,
	encrypted_secrets_salt, encrypted_secrets_ciphertext, change_id, attempt,
	time_created, time_last_progress, time_committing, time_committed, time_aborted, abort_reason`

func scanTQConfig(row pgx.Row) (model.TQConfiguration, error) {
	var c model.TQConfiguration
	var epoch, last int64
	var state string
	var reason *string
	err := row.Scan(&c.RackID, &epoch, &last, &state, &c.Threshold, &c.CommitCrashTolerance,
		&c.Coordinator.Part, &c.Coordinator.Serial, &c.Lrtq, &c.LrtqUpgrade, &c.Recorded,
		&c.EncryptedSalt, &c.EncryptedCiphertext, &c.ChangeID, &c.Attempt,
		&c.TimeCreated, &c.TimeLastProgress, &c.TimeCommitting, &c.TimeCommitted, &c.TimeAborted, &reason)
	c.Epoch, c.LastCommittedEpoch, c.State = uint64(epoch), uint64(last), model.TQState(state)
	if reason != nil {
		c.AbortReason = *reason
	}
	return c, err
}

// loadConfigs reads the configurations a query selects (newest first)
// with their members.
func loadConfigs(ctx context.Context, q querier, where string, args ...any) ([]*model.TQConfiguration, error) {
	rows, err := q.Query(ctx, `SELECT `+tqConfigColumns+` FROM trust_quorum_configuration `+where, args...)
	if err != nil {
		return nil, err
	}
	configs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*model.TQConfiguration, error) {
		c, err := scanTQConfig(r)
		return &c, err
	})
	if err != nil || len(configs) == 0 {
		return configs, err
	}
	epochs := make([]int64, len(configs))
	byEpoch := map[uint64]*model.TQConfiguration{}
	for i, c := range configs {
		epochs[i] = int64(c.Epoch)
		byEpoch[c.Epoch] = c
	}
	rows, err = q.Query(ctx, `SELECT epoch, part_number, serial_number, state::TEXT, share_digest, share_x,
			time_prepared, time_committed
		FROM trust_quorum_member WHERE rack_id = $1 AND epoch = ANY($2::INT8[])
		ORDER BY epoch, part_number, serial_number`, configs[0].RackID, epochs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var epoch int64
		var m model.TQMember
		var state string
		var x *int32
		if err := rows.Scan(&epoch, &m.Baseboard.Part, &m.Baseboard.Serial, &state, &m.ShareDigest, &x,
			&m.TimePrepared, &m.TimeCommitted); err != nil {
			return nil, err
		}
		m.State = model.TQMemberState(state)
		if x != nil {
			m.X = int(*x)
		}
		if c := byEpoch[uint64(epoch)]; c != nil {
			c.Members = append(c.Members, m)
		}
	}
	return configs, rows.Err()
}

func loadTQView(ctx context.Context, q querier, needs TQViewNeeds) (*TQView, error) {
	v := &TQView{}
	if err := q.QueryRow(ctx, `SELECT now()`).Scan(&v.Now); err != nil {
		return nil, err
	}
	var r model.Rack
	err := q.QueryRow(ctx, `SELECT id, time_created, setup FROM rack`).Scan(&r.ID, &r.TimeCreated, &r.Setup)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return nil, err
	default:
		v.Rack = &r
	}
	if needs.Sleds {
		rows, err := q.Query(ctx, `SELECT id, part_number, serial_number, sled_agent_address, policy::TEXT, state::TEXT
			FROM sled ORDER BY part_number, serial_number`)
		if err != nil {
			return nil, err
		}
		v.Sleds, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (TQSled, error) {
			var s TQSled
			err := r.Scan(&s.ID, &s.Baseboard.Part, &s.Baseboard.Serial, &s.SledAgentAddress, &s.Policy, &s.State)
			return s, err
		})
		if err != nil {
			return nil, err
		}
	}
	if needs.Seen {
		if v.Seen, err = loadSeen(ctx, q); err != nil {
			return nil, err
		}
	}
	if v.Rack == nil {
		return v, nil
	}
	// The latest, the latest committed, the active and the first: one
	// query for all four (they often coincide).
	configs, err := loadConfigs(ctx, q, `WHERE rack_id = $1 AND (
			epoch = (SELECT max(epoch) FROM trust_quorum_configuration WHERE rack_id = $1)
			OR epoch = (SELECT max(epoch) FROM trust_quorum_configuration WHERE rack_id = $1
				AND state IN ('committing', 'committed', 'committed_partially'))
			OR state IN ('preparing', 'preparing_lrtq_upgrade', 'committing')
			OR epoch = 1)
		ORDER BY epoch DESC`, v.Rack.ID)
	if err != nil {
		return nil, err
	}
	for _, c := range configs {
		if v.Latest == nil {
			v.Latest = c
		}
		if v.LatestCommitted == nil && c.State.Committed() {
			v.LatestCommitted = c
		}
		if c.State.Active() {
			v.Active = c
		}
		if c.Epoch == 1 {
			v.Epoch1 = c
		}
	}
	if needs.Former {
		rows, err := q.Query(ctx, `SELECT DISTINCT m.part_number, m.serial_number
			FROM trust_quorum_member m JOIN trust_quorum_configuration c ON c.rack_id = m.rack_id AND c.epoch = m.epoch
			WHERE c.rack_id = $1 AND c.state IN ('committing', 'committed', 'committed_partially')
			ORDER BY 1, 2`, v.Rack.ID)
		if err != nil {
			return nil, err
		}
		v.Former, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Baseboard, error) {
			var b model.Baseboard
			err := r.Scan(&b.Part, &b.Serial)
			return b, err
		})
		if err != nil {
			return nil, err
		}
	}
	if needs.Attempts && v.Latest != nil {
		rows, err := q.Query(ctx, `SELECT `+tqConfigColumns+` FROM trust_quorum_configuration
			WHERE rack_id = $1 AND change_id = $2 ORDER BY attempt, epoch`, v.Rack.ID, v.Latest.ChangeID)
		if err != nil {
			return nil, err
		}
		v.Attempts, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.TQConfiguration, error) { return scanTQConfig(r) })
		if err != nil {
			return nil, err
		}
	}
	return v, nil
}

func applyTQOp(ctx context.Context, tx pgx.Tx, v *TQView, op TQOp) error {
	switch op := op.(type) {
	case TQInsertRack:
		_, err := tx.Exec(ctx, `INSERT INTO rack (singleton, id, time_created, setup) VALUES (true, $1, now(), $2)`,
			op.Rack.ID, op.Rack.Setup)
		if err == nil {
			v.Rack = &model.Rack{ID: op.Rack.ID, TimeCreated: v.Now, Setup: op.Rack.Setup}
		}
		return err
	case TQInsertConfig:
		return insertTQConfig(ctx, tx, op.Config)
	case TQSetState:
		return setTQState(ctx, tx, v, op)
	case TQRecordConfig:
		return recordTQConfig(ctx, tx, v, op)
	case TQMarkMembers:
		return markTQMembers(ctx, tx, v, op)
	case TQProgress:
		_, err := tx.Exec(ctx, `UPDATE trust_quorum_configuration SET time_last_progress = now()
			WHERE rack_id = $1 AND epoch = $2`, v.Rack.ID, int64(op.Epoch))
		return err
	case TQExpungeSleds:
		for _, b := range op.Baseboards {
			if _, err := tx.Exec(ctx, `UPDATE sled SET policy = 'expunged', time_modified = now()
				WHERE part_number = $1::TEXT AND serial_number = $2::TEXT AND policy = 'in_service'`, b.Part, b.Serial); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("datastore: unknown trust-quorum operation %T", op)
}

func insertTQConfig(ctx context.Context, tx pgx.Tx, c model.TQConfiguration) error {
	committing := c.State.Committed()
	committed := c.State == model.TQCommitted || c.State == model.TQCommittedPartially
	var reason *string
	if c.State == model.TQAborted {
		reason = &c.AbortReason
	}
	_, err := tx.Exec(ctx, `INSERT INTO trust_quorum_configuration (rack_id, epoch, last_committed_epoch, state,
			member_count, threshold, commit_crash_tolerance, coordinator_part, coordinator_serial, lrtq, lrtq_upgrade,
			configuration_recorded, encrypted_secrets_salt, encrypted_secrets_ciphertext, change_id, attempt,
			time_created, time_last_progress, time_committing, time_committed, time_aborted, abort_reason)
		VALUES ($1, $2, $3, $4::trust_quorum_state, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
			now(), now(), CASE WHEN $17::BOOL THEN now() END, CASE WHEN $18::BOOL THEN now() END,
			CASE WHEN $19::TEXT IS NOT NULL THEN now() END, $19::TEXT)`,
		c.RackID, int64(c.Epoch), int64(c.LastCommittedEpoch), string(c.State), len(c.Members), c.Threshold,
		c.CommitCrashTolerance, c.Coordinator.Part, c.Coordinator.Serial, c.Lrtq, c.LrtqUpgrade, c.Recorded,
		c.EncryptedSalt, c.EncryptedCiphertext, c.ChangeID, c.Attempt, committing, committed, reason)
	if err != nil {
		return err
	}
	b := &pgx.Batch{}
	for _, m := range c.Members {
		var x *int32
		if m.ShareDigest != nil {
			v := int32(m.X)
			x = &v
		}
		b.Queue(`INSERT INTO trust_quorum_member (rack_id, epoch, part_number, serial_number, state, share_digest,
				share_x, time_prepared, time_committed)
			VALUES ($1, $2, $3, $4, $5::trust_quorum_member_state, $6, $7,
				CASE WHEN $8::BOOL THEN now() END, CASE WHEN $9::BOOL THEN now() END)`,
			c.RackID, int64(c.Epoch), m.Baseboard.Part, m.Baseboard.Serial, string(m.State), m.ShareDigest, x,
			m.State == model.TQMemberPrepared, m.State == model.TQMemberCommitted)
	}
	return tx.SendBatch(ctx, b).Close()
}

func setTQState(ctx context.Context, tx pgx.Tx, v *TQView, op TQSetState) error {
	var reason *string
	if op.To == model.TQAborted {
		r := op.Reason
		reason = &r
	}
	tag, err := tx.Exec(ctx, `UPDATE trust_quorum_configuration SET
			state = $4::trust_quorum_state,
			time_committing = CASE WHEN $6::BOOL THEN COALESCE(time_committing, now()) END,
			time_committed = CASE WHEN $7::BOOL THEN COALESCE(time_committed, now()) END,
			time_aborted = CASE WHEN $8::BOOL THEN now() END,
			abort_reason = $5::TEXT
		WHERE rack_id = $1 AND epoch = $2 AND state = $3::trust_quorum_state`,
		v.Rack.ID, int64(op.Epoch), string(op.From), string(op.To), reason, op.To.Committed(),
		op.To == model.TQCommitted || op.To == model.TQCommittedPartially, op.To == model.TQAborted)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("%w: epoch %d is not %s", ErrTQFenced, op.Epoch, op.From)
	}
	return nil
}

func recordTQConfig(ctx context.Context, tx pgx.Tx, v *TQView, op TQRecordConfig) error {
	tag, err := tx.Exec(ctx, `UPDATE trust_quorum_configuration SET configuration_recorded = true,
			encrypted_secrets_salt = $3, encrypted_secrets_ciphertext = $4
		WHERE rack_id = $1 AND epoch = $2 AND NOT configuration_recorded`,
		v.Rack.ID, int64(op.Epoch), op.Salt, op.Ciphertext)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("%w: epoch %d's configuration is recorded already", ErrTQFenced, op.Epoch)
	}
	b := &pgx.Batch{}
	for id, d := range op.Digests {
		b.Queue(`UPDATE trust_quorum_member SET share_digest = $5, share_x = $6
			WHERE rack_id = $1 AND epoch = $2 AND part_number = $3 AND serial_number = $4`,
			v.Rack.ID, int64(op.Epoch), id.Part, id.Serial, d, int32(op.X[id]))
	}
	return tx.SendBatch(ctx, b).Close()
}

func markTQMembers(ctx context.Context, tx pgx.Tx, v *TQView, op TQMarkMembers) error {
	if len(op.Members) == 0 {
		return nil
	}
	parts, serials := make([]string, len(op.Members)), make([]string, len(op.Members))
	for i, m := range op.Members {
		parts[i], serials[i] = m.Part, m.Serial
	}
	var q string
	switch op.To {
	case model.TQMemberPrepared:
		q = `UPDATE trust_quorum_member SET state = 'prepared', time_prepared = now()
			WHERE rack_id = $1 AND epoch = $2 AND state = 'unacked'
				AND (part_number, serial_number) IN (SELECT * FROM unnest($3::TEXT[], $4::TEXT[]))`
	case model.TQMemberCommitted:
		q = `UPDATE trust_quorum_member SET state = 'committed', time_committed = now()
			WHERE rack_id = $1 AND epoch = $2 AND state <> 'committed'
				AND (part_number, serial_number) IN (SELECT * FROM unnest($3::TEXT[], $4::TEXT[]))`
	default:
		return fmt.Errorf("datastore: members cannot be moved to %q", op.To)
	}
	_, err := tx.Exec(ctx, q, v.Rack.ID, int64(op.Epoch), parts, serials)
	return err
}

// TQConfigurationGet returns one epoch with its members, or ErrNotFound.
func (d *Datastore) TQConfigurationGet(ctx context.Context, epoch uint64) (model.TQConfiguration, error) {
	configs, err := loadConfigs(ctx, d.pool, `WHERE epoch = $1`, int64(epoch))
	if err != nil {
		return model.TQConfiguration{}, classify(err)
	}
	if len(configs) == 0 {
		return model.TQConfiguration{}, fmt.Errorf("%w: no trust-quorum epoch %d", ErrNotFound, epoch)
	}
	return *configs[0], nil
}

// TQConfigurationList returns up to limit configurations with their
// members, newest first, with epochs below before (0: from the newest).
func (d *Datastore) TQConfigurationList(ctx context.Context, before uint64, limit int) ([]model.TQConfiguration, error) {
	if before == 0 {
		before = 1 << 62
	}
	configs, err := loadConfigs(ctx, d.pool, `WHERE epoch < $1 ORDER BY epoch DESC LIMIT $2`, int64(min(before, 1<<62)), limit)
	if err != nil {
		return nil, classify(err)
	}
	out := make([]model.TQConfiguration, len(configs))
	for i, c := range configs {
		out[i] = *c
	}
	return out, nil
}

// Node status ----------------------------------------------------------------

// tqNodeRow is the stored form of the status column. Its JSON names are
// the column's format, fixed here rather than borrowed from a wire type.
type tqNodeRow struct {
	LatestCommittedEpoch uint64         `json:"latest_committed_epoch"`
	LatestConfigEpoch    uint64         `json:"latest_configuration_epoch"`
	HasLrtq              bool           `json:"has_lrtq"`
	Expunged             *tqExpungedRow `json:"expunged,omitempty"`
	CoordinatingEpoch    uint64         `json:"coordinating_epoch"`
	CoordinationState    string         `json:"coordination_state"`
	ConnectedPeers       []tqBoardRow   `json:"connected_peers"`
	Alarms               []tqAlarmRow   `json:"alarms"`
	LedgerGeneration     uint64         `json:"ledger_generation"`
	Stopped              bool           `json:"stopped"`
	StoppedReason        string         `json:"stopped_reason,omitempty"`
	StorageLock          string         `json:"storage_lock,omitempty"`
	StorageLockReason    string         `json:"storage_lock_reason,omitempty"`
}

type tqBoardRow struct {
	Part   string `json:"part"`
	Serial string `json:"serial"`
}

type tqExpungedRow struct {
	Epoch uint64     `json:"epoch"`
	From  tqBoardRow `json:"from"`
}

type tqAlarmRow struct {
	Kind   string      `json:"kind"`
	Epoch  uint64      `json:"epoch"`
	Peer   *tqBoardRow `json:"peer,omitempty"`
	Detail string      `json:"detail"`
	Time   time.Time   `json:"time"`
}

func boardsToRows(bs []model.Baseboard) []tqBoardRow {
	out := make([]tqBoardRow, len(bs))
	for i, b := range bs {
		out[i] = tqBoardRow(b)
	}
	return out
}

func nodeViewToRow(v *model.TQNodeView) tqNodeRow {
	r := tqNodeRow{LatestCommittedEpoch: v.LatestCommittedEpoch, LatestConfigEpoch: v.LatestConfigEpoch,
		HasLrtq: v.HasLrtq, CoordinatingEpoch: v.CoordinatingEpoch, CoordinationState: v.CoordinationState,
		ConnectedPeers: boardsToRows(v.ConnectedPeers), Alarms: []tqAlarmRow{}, LedgerGeneration: v.LedgerGeneration,
		Stopped: v.Stopped, StoppedReason: v.StoppedReason, StorageLock: v.StorageLock, StorageLockReason: v.StorageLockReason}
	if x := v.Expunged; x != nil {
		r.Expunged = &tqExpungedRow{Epoch: x.Epoch, From: tqBoardRow(x.From)}
	}
	for _, a := range v.Alarms {
		row := tqAlarmRow{Kind: a.Kind, Epoch: a.Epoch, Detail: a.Detail, Time: a.Time}
		if a.Peer != nil {
			p := tqBoardRow(*a.Peer)
			row.Peer = &p
		}
		r.Alarms = append(r.Alarms, row)
	}
	return r
}

func nodeRowToView(r tqNodeRow) *model.TQNodeView {
	v := &model.TQNodeView{LatestCommittedEpoch: r.LatestCommittedEpoch, LatestConfigEpoch: r.LatestConfigEpoch,
		HasLrtq: r.HasLrtq, CoordinatingEpoch: r.CoordinatingEpoch, CoordinationState: r.CoordinationState,
		LedgerGeneration: r.LedgerGeneration, Stopped: r.Stopped, StoppedReason: r.StoppedReason,
		StorageLock: r.StorageLock, StorageLockReason: r.StorageLockReason,
		ConnectedPeers: []model.Baseboard{}, Alarms: []model.TQAlarm{}}
	for _, p := range r.ConnectedPeers {
		v.ConnectedPeers = append(v.ConnectedPeers, model.Baseboard(p))
	}
	if x := r.Expunged; x != nil {
		v.Expunged = &model.TQExpunged{Epoch: x.Epoch, From: model.Baseboard(x.From)}
	}
	for _, a := range r.Alarms {
		al := model.TQAlarm{Kind: a.Kind, Epoch: a.Epoch, Detail: a.Detail, Time: a.Time}
		if a.Peer != nil {
			p := model.Baseboard(*a.Peer)
			al.Peer = &p
		}
		v.Alarms = append(v.Alarms, al)
	}
	return v
}

// TQNodeStatusRecord records what one Nexus just observed of nodes: an
// answer replaces the last status seen; a failure records the attempt and
// its error and keeps the last status seen.
func (d *Datastore) TQNodeStatusRecord(ctx context.Context, observedBy uuid.UUID, statuses []model.TQNodeStatus) error {
	if len(statuses) == 0 {
		return nil
	}
	docs := make([][]byte, len(statuses))
	for i, s := range statuses {
		if s.Seen != nil {
			var err error
			if docs[i], err = json.Marshal(nodeViewToRow(s.Seen)); err != nil {
				return err
			}
		}
	}
	err := d.InTx(ctx, "tq_node_status_record", func(ctx context.Context, tx pgx.Tx) error {
		// A batch per attempt: pgx keeps each queued query's prepared
		// statement in the batch, and after a failed attempt (a
		// serialization failure between two Nexus recording at once) it
		// deallocates those statements, so a batch sent again would run
		// statements that no longer exist (SQLSTATE 26000).
		b := &pgx.Batch{}
		for i, s := range statuses {
			var epoch *int64
			alarms := 0
			if s.Seen != nil {
				e := int64(s.Seen.LatestCommittedEpoch)
				epoch, alarms = &e, len(s.Seen.Alarms)
				for _, p := range s.Seen.ConnectedPeers {
					b.Queue(`INSERT INTO trust_quorum_sighting (part_number, serial_number, seen_by_part, seen_by_serial, time_seen)
						VALUES ($1, $2, $3, $4, now())
						ON CONFLICT (part_number, serial_number) DO UPDATE SET
							seen_by_part = $3, seen_by_serial = $4, time_seen = now()`,
						p.Part, p.Serial, s.Baseboard.Part, s.Baseboard.Serial)
				}
			}
			b.Queue(`INSERT INTO trust_quorum_node_status AS n (part_number, serial_number, time_observed, observed_by,
					via, error, time_status, latest_committed_epoch, alarm_count, status)
				VALUES ($1, $2, now(), $3, $4, $5, CASE WHEN $6::JSONB IS NOT NULL THEN now() END, $7::INT8, $8::INT4, $6::JSONB)
				ON CONFLICT (part_number, serial_number) DO UPDATE SET
					time_observed = now(), observed_by = $3, via = $4, error = $5,
					time_status = CASE WHEN $6::JSONB IS NOT NULL THEN now() ELSE n.time_status END,
					latest_committed_epoch = CASE WHEN $6::JSONB IS NOT NULL THEN $7::INT8 ELSE n.latest_committed_epoch END,
					alarm_count = CASE WHEN $6::JSONB IS NOT NULL THEN $8::INT4 ELSE n.alarm_count END,
					status = COALESCE($6::JSONB, n.status)`,
				s.Baseboard.Part, s.Baseboard.Serial, observedBy, s.Via, s.Error, docs[i], epoch, alarms)
		}
		return tx.SendBatch(ctx, b).Close()
	}, Idempotent) // upserts of what was observed, by baseboard
	return err
}

// TQNodeStatusList returns every node's last observed status, by baseboard.
func (d *Datastore) TQNodeStatusList(ctx context.Context) ([]model.TQNodeStatus, error) {
	rows, err := d.pool.Query(ctx, `SELECT part_number, serial_number, time_observed, observed_by, via, error,
			time_status, status
		FROM trust_quorum_node_status ORDER BY part_number, serial_number`)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, scanNodeStatus)
	return out, classify(err)
}

func scanNodeStatus(r pgx.CollectableRow) (model.TQNodeStatus, error) {
	var s model.TQNodeStatus
	var doc []byte
	if err := r.Scan(&s.Baseboard.Part, &s.Baseboard.Serial, &s.TimeObserved, &s.ObservedBy, &s.Via, &s.Error,
		&s.TimeSeen, &doc); err != nil {
		return s, err
	}
	if doc != nil {
		var row tqNodeRow
		if err := json.Unmarshal(doc, &row); err != nil {
			return s, fmt.Errorf("trust-quorum node %s: status: %w", s.Baseboard, err)
		}
		s.Seen = nodeRowToView(row)
	}
	return s, nil
}

// loadSeen lists every sled members reported seeing on the bootstrap
// network, with the last reporter and when.
func loadSeen(ctx context.Context, q querier) ([]model.TQUninitializedSled, error) {
	rows, err := q.Query(ctx, `SELECT part_number, serial_number, seen_by_part, seen_by_serial, time_seen
		FROM trust_quorum_sighting ORDER BY part_number, serial_number`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.TQUninitializedSled, error) {
		var s model.TQUninitializedSled
		err := r.Scan(&s.Baseboard.Part, &s.Baseboard.Serial, &s.SeenBy.Part, &s.SeenBy.Serial, &s.TimeSeen)
		return s, err
	})
}

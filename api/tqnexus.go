package api

import (
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Nexus's trust-quorum API: the operator's view and requests (external
// API, /v1/system/trust-quorum) and rack setup's handoff (internal API).

// Error codes of Nexus's trust-quorum operations (409 unless noted).
const (
	// CodeTQNotSetUp: rack setup has not handed the rack to Nexus yet.
	CodeTQNotSetUp = "trust_quorum_not_set_up"
	// CodeTQInProgress: another configuration is being prepared or
	// committed.
	CodeTQInProgress = "trust_quorum_change_in_progress"
	// CodeTQUnknownBaseboard (400): a baseboard Nexus has never seen.
	CodeTQUnknownBaseboard = "unknown_baseboard"
	// CodeTQAlreadyMember: the sled to add is a member already.
	CodeTQAlreadyMember = "already_a_member"
	// CodeTQCommitting: the epoch cannot be aborted; Nexus decided to
	// commit it.
	CodeTQCommitting = "trust_quorum_committing"
	// CodeTQNotLatest: the epoch is not the one being prepared.
	CodeTQNotLatest = "not_the_latest_epoch"
	// CodeTQNoCoordinator: no member can coordinate (none committed the
	// last epoch and has a sled agent Nexus can reach).
	CodeTQNoCoordinator = "no_coordinator"
	// CodeTQMovedOn: another Nexus moved the configuration on first.
	CodeTQMovedOn = "trust_quorum_moved_on"
	// CodeRackAlreadySetUp: a different rack setup was handed over before.
	CodeRackAlreadySetUp = "rack_already_set_up"
)

// TrustQuorumMember is one member of an epoch as Nexus recorded it:
// unacked, prepared (the coordinator counted its prepare) or committed.
type TrustQuorumMember struct {
	Part          string     `json:"part"`
	Serial        string     `json:"serial"`
	State         string     `json:"state"`
	TimePrepared  *time.Time `json:"time_prepared,omitempty"`
	TimeCommitted *time.Time `json:"time_committed,omitempty"`
}

// TrustQuorumConfig is one epoch of the rack's trust quorum. Acked of
// Required are the prepare acks (of K+Z) while preparing and the commit
// acks (of every member) from committing on.
type TrustQuorumConfig struct {
	Epoch                uint64              `json:"epoch"`
	LastCommittedEpoch   uint64              `json:"last_committed_epoch"`
	State                string              `json:"state"`
	Threshold            int                 `json:"threshold"`
	CommitCrashTolerance int                 `json:"commit_crash_tolerance"`
	Coordinator          Baseboard           `json:"coordinator"`
	Lrtq                 bool                `json:"lrtq"`
	LrtqUpgrade          bool                `json:"lrtq_upgrade"`
	Members              []TrustQuorumMember `json:"members"`
	Acked                int                 `json:"acked"`
	Required             int                 `json:"required"`
	TimeCreated          time.Time           `json:"time_created"`
	TimeLastProgress     time.Time           `json:"time_last_progress"`
	TimeCommitting       *time.Time          `json:"time_committing,omitempty"`
	TimeCommitted        *time.Time          `json:"time_committed,omitempty"`
	TimeAborted          *time.Time          `json:"time_aborted,omitempty"`
	AbortReason          string              `json:"abort_reason,omitempty"`
	// ChangeID is the operator request this epoch serves and Attempt
	// which attempt at it: Nexus retries an epoch it aborted on its own as
	// the next one.
	ChangeID uuid.UUID `json:"change_id"`
	Attempt  int       `json:"attempt"`
}

// Done reports whether the configuration reached a final state.
func (c TrustQuorumConfig) Done() bool {
	return c.State == "committed" || c.State == "committed_partially" || c.State == "aborted"
}

// TrustQuorumNodeStatus is a node's trust-quorum status as Nexus last saw
// it.
type TrustQuorumNodeStatus struct {
	LatestCommittedEpoch     uint64      `json:"latest_committed_epoch"`
	LatestConfigurationEpoch uint64      `json:"latest_configuration_epoch"`
	HasLrtq                  bool        `json:"has_lrtq"`
	Expunged                 *TQExpunged `json:"expunged,omitempty"`
	CoordinatingEpoch        uint64      `json:"coordinating_epoch"`
	CoordinationState        string      `json:"coordination_state"`
	ConnectedPeers           []Baseboard `json:"connected_peers"`
	Alarms                   []TQAlarm   `json:"alarms"`
	LedgerGeneration         uint64      `json:"ledger_generation"`
	Stopped                  bool        `json:"stopped"`
	StoppedReason            string      `json:"stopped_reason,omitempty"`
	StorageLock              string      `json:"storage_lock,omitempty"`
	StorageLockReason        string      `json:"storage_lock_reason,omitempty"`
}

// TrustQuorumNode is what Nexus last saw of one node: the last attempt
// (when, by which Nexus, how, and its error) and the last answer.
type TrustQuorumNode struct {
	Part         string                 `json:"part"`
	Serial       string                 `json:"serial"`
	TimeObserved time.Time              `json:"time_observed"`
	ObservedBy   uuid.UUID              `json:"observed_by"`
	Via          string                 `json:"via"`
	Error        string                 `json:"error,omitempty"`
	TimeStatus   *time.Time             `json:"time_status,omitempty"`
	Status       *TrustQuorumNodeStatus `json:"status,omitempty"`
}

// TrustQuorumStatus is GET /v1/system/trust-quorum: the latest and the
// latest committed configurations (either may be null, and they may be the
// same epoch) and every node Nexus watches.
type TrustQuorumStatus struct {
	RackID          *uuid.UUID         `json:"rack_id,omitempty"`
	Latest          *TrustQuorumConfig `json:"latest"`
	LatestCommitted *TrustQuorumConfig `json:"latest_committed"`
	Nodes           []TrustQuorumNode  `json:"nodes"`
}

// TrustQuorumMembership is the body of POST
// /v1/system/trust-quorum/membership: sleds to add and to remove.
type TrustQuorumMembership struct {
	Add    []Baseboard `json:"add,omitempty"`
	Remove []Baseboard `json:"remove,omitempty"`
}

// Validate checks the lists' entries and that something changes.
func (m TrustQuorumMembership) Validate() error {
	if len(m.Add)+len(m.Remove) == 0 {
		return fieldErr("add", "name at least one sled to add or remove")
	}
	for field, list := range map[string][]Baseboard{"add": m.Add, "remove": m.Remove} {
		for i, b := range list {
			if err := checkLabel(fmt.Sprintf("%s[%d].part", field, i), b.Part); err != nil {
				return err
			}
			if err := checkLabel(fmt.Sprintf("%s[%d].serial", field, i), b.Serial); err != nil {
				return err
			}
		}
	}
	return nil
}

// TrustQuorumAbort is the body of POST /v1/system/trust-quorum/abort.
type TrustQuorumAbort struct {
	Epoch uint64 `json:"epoch"`
}

// Validate checks the epoch.
func (a TrustQuorumAbort) Validate() error {
	if a.Epoch == 0 {
		return fieldErr("epoch", "is required (the epoch being prepared)")
	}
	return nil
}

// UninitializedSled is a sled seen on the bootstrap network (by SeenBy,
// a member, at TimeSeen) that is not a member of the latest committed
// configuration.
type UninitializedSled struct {
	Part     string    `json:"part"`
	Serial   string    `json:"serial"`
	SeenBy   Baseboard `json:"seen_by"`
	TimeSeen time.Time `json:"time_seen"`
}

// RackSetupHandoff is the body of PUT /v1/rack-setup on Nexus's internal
// API: the rack-setup service hands over the rack it set up. With Lrtq the
// rack runs LRTQ over Members (Coordinator set it up) and Configuration is
// absent; otherwise Configuration is epoch 1 as committed on every member
// (Members and Coordinator must agree with it).
type RackSetupHandoff struct {
	RackID        uuid.UUID        `json:"rack_id"`
	Lrtq          bool             `json:"lrtq"`
	Coordinator   Baseboard        `json:"coordinator"`
	Members       []Baseboard      `json:"members"`
	Configuration *TQConfiguration `json:"configuration,omitempty"`
}

// Validate checks the handoff's shape; Nexus checks that it is
// consistent.
func (h RackSetupHandoff) Validate() error {
	if h.RackID == uuid.Nil {
		return fieldErr("rack_id", "is required")
	}
	if err := checkBaseboard("coordinator", h.Coordinator); err != nil {
		return err
	}
	for i, m := range h.Members {
		if err := checkBaseboard(fmt.Sprintf("members[%d]", i), m); err != nil {
			return err
		}
	}
	switch {
	case h.Lrtq && h.Configuration != nil:
		return fieldErr("configuration", "is for a rack set up with trust-quorum epoch 1, not LRTQ")
	case !h.Lrtq && h.Configuration == nil:
		return fieldErr("configuration", "is required: epoch 1 as committed")
	case !h.Lrtq:
		if _, err := h.Configuration.ToTrustQuorum(); err != nil {
			return err
		}
	}
	return nil
}

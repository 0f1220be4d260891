package model

import (
	"cmp"
	"time"

	"github.com/google/uuid"
)

// Rack is the rack this database governs, as rack setup handed it over.
type Rack struct {
	ID          uuid.UUID
	TimeCreated time.Time
	// Setup is how the trust quorum began: RackSetupTrustQuorum (epoch 1)
	// or RackSetupLrtq.
	Setup string
}

// How rack setup began the trust quorum.
const (
	RackSetupTrustQuorum = "trust_quorum"
	RackSetupLrtq        = "lrtq"
)

// TQState is a trust-quorum configuration's state in the database.
type TQState string

// Configuration states. preparing (or preparing_lrtq_upgrade) moves to
// committing once K+Z members acked the prepare, and committing to
// committed once every member acked the commit, or to committed_partially
// when a newer configuration starts after K+Z commit acks. Only a
// preparing configuration may be aborted.
const (
	TQPreparing            TQState = "preparing"
	TQPreparingLrtqUpgrade TQState = "preparing_lrtq_upgrade"
	TQCommitting           TQState = "committing"
	TQCommitted            TQState = "committed"
	TQCommittedPartially   TQState = "committed_partially"
	TQAborted              TQState = "aborted"
)

// Preparing reports whether s is one of the preparing states.
func (s TQState) Preparing() bool { return s == TQPreparing || s == TQPreparingLrtqUpgrade }

// Active reports whether a configuration in s is in progress (at most one
// per rack is).
func (s TQState) Active() bool { return s.Preparing() || s == TQCommitting }

// Committed reports whether Nexus decided to commit a configuration in s:
// from committing on, the decision is final.
func (s TQState) Committed() bool {
	return s == TQCommitting || s == TQCommitted || s == TQCommittedPartially
}

// TQMemberState is what Nexus has recorded of one member of an epoch.
type TQMemberState string

// Member states.
const (
	TQMemberUnacked   TQMemberState = "unacked"
	TQMemberPrepared  TQMemberState = "prepared"
	TQMemberCommitted TQMemberState = "committed"
)

// TQMember is one member of a configuration.
type TQMember struct {
	Baseboard Baseboard
	State     TQMemberState
	// ShareDigest (32 bytes) and X are the member's share as the
	// coordinator made it; empty until the configuration is recorded.
	ShareDigest   []byte
	X             int
	TimePrepared  *time.Time
	TimeCommitted *time.Time
}

// TQConfiguration is one epoch of a rack's trust quorum as Nexus records
// it. It holds no secret.
type TQConfiguration struct {
	RackID             uuid.UUID
	Epoch              uint64
	LastCommittedEpoch uint64
	State              TQState
	Threshold          int
	// CommitCrashTolerance is Z: Nexus commits once Threshold + Z members
	// acked the prepare.
	CommitCrashTolerance int
	Coordinator          Baseboard
	// Lrtq marks epoch 1 of a rack set up with LRTQ (no shares of the
	// trust quorum exist for it); LrtqUpgrade an epoch that upgrades one.
	Lrtq, LrtqUpgrade bool
	// Recorded is set once the coordinator's configuration (digests, x
	// coordinates, encrypted secrets) is recorded.
	Recorded bool
	// EncryptedSalt and EncryptedCiphertext are the encrypted chain of
	// earlier rack secrets (nil for a first epoch).
	EncryptedSalt, EncryptedCiphertext []byte
	// ChangeID is the operator request this epoch serves, Attempt which
	// attempt at it (an automatically aborted epoch is retried as the
	// next).
	ChangeID uuid.UUID
	Attempt  int

	TimeCreated      time.Time
	TimeLastProgress time.Time
	TimeCommitting   *time.Time
	TimeCommitted    *time.Time
	TimeAborted      *time.Time
	AbortReason      string

	// Members, sorted by baseboard.
	Members []TQMember
}

// Required is how many acks the configuration's current phase needs:
// K+Z prepare acks while preparing (and for an aborted one), every
// member's commit ack from committing on.
func (c *TQConfiguration) Required() int {
	if c.State.Committed() {
		return len(c.Members)
	}
	return c.Threshold + c.CommitCrashTolerance
}

// Acked counts the acks of the configuration's current phase: prepared
// members while preparing, committed ones from committing on.
func (c *TQConfiguration) Acked() int {
	n := 0
	for _, m := range c.Members {
		switch {
		case m.State == TQMemberCommitted:
			n++
		case m.State == TQMemberPrepared && !c.State.Committed():
			n++
		}
	}
	return n
}

// CommitAcks counts the members that acked the commit.
func (c *TQConfiguration) CommitAcks() int {
	n := 0
	for _, m := range c.Members {
		if m.State == TQMemberCommitted {
			n++
		}
	}
	return n
}

// Member returns the member b, if b is one.
func (c *TQConfiguration) Member(b Baseboard) (TQMember, bool) {
	for _, m := range c.Members {
		if m.Baseboard == b {
			return m, true
		}
	}
	return TQMember{}, false
}

// IsMember reports whether b is a member.
func (c *TQConfiguration) IsMember(b Baseboard) bool {
	_, ok := c.Member(b)
	return ok
}

// Baseboards lists the members' baseboards, sorted.
func (c *TQConfiguration) Baseboards() []Baseboard {
	out := make([]Baseboard, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.Baseboard
	}
	return out
}

// CommitCrashTolerance is Z for n members and threshold k (design: N ≤ 4
// → 0, 5–8 → 1, 9–15 → 2, 16–23 → 3, ≥ 24 → 4), capped so that K+Z never
// exceeds N.
func CommitCrashTolerance(n, k int) int {
	var z int
	switch {
	case n <= 4:
		z = 0
	case n <= 8:
		z = 1
	case n <= 15:
		z = 2
	case n <= 23:
		z = 3
	default:
		z = 4
	}
	return max(0, min(z, n-k))
}

// TQThreshold is the threshold Nexus uses for n members: N/2 + 1.
func TQThreshold(n int) int { return n/2 + 1 }

// CompareBaseboards orders baseboards by part, then serial (the order
// shares are assigned in).
func CompareBaseboards(a, b Baseboard) int {
	if c := cmp.Compare(a.Part, b.Part); c != 0 {
		return c
	}
	return cmp.Compare(a.Serial, b.Serial)
}

// TQNodeStatus is what the trust-quorum manager last saw of one node.
type TQNodeStatus struct {
	Baseboard Baseboard
	// The last attempt: when, by which Nexus, how (TQViaDirect or
	// "proxy PART:SERIAL") and its error ("" when the node answered).
	TimeObserved time.Time
	ObservedBy   uuid.UUID
	Via          string
	Error        string
	// TimeSeen and Seen are the last answer; nil until there was one.
	TimeSeen *time.Time
	Seen     *TQNodeView
}

// TQViaDirect says a node's status was read from its own sled agent.
const TQViaDirect = "direct"

// TQNodeView is a node's trust-quorum status as Nexus keeps it.
type TQNodeView struct {
	LatestCommittedEpoch uint64
	LatestConfigEpoch    uint64
	HasLrtq              bool
	// Expunged is set once the node learnt it was removed.
	Expunged *TQExpunged
	// CoordinatingEpoch is the epoch it coordinates (0: none) and
	// CoordinationState what it is doing about it.
	CoordinatingEpoch uint64
	CoordinationState string
	ConnectedPeers    []Baseboard
	Alarms            []TQAlarm
	LedgerGeneration  uint64
	Stopped           bool
	StoppedReason     string
	// StorageLock is the node's data disks' lock state (StorageLock*),
	// "" when it did not say.
	StorageLock, StorageLockReason string
}

// TQExpunged says a node learnt, from From, that it is not a member of
// Epoch.
type TQExpunged struct {
	Epoch uint64
	From  Baseboard
}

// TQAlarm is an alarm a node raised (conditions that must never happen).
type TQAlarm struct {
	Kind   string
	Epoch  uint64
	Peer   *Baseboard
	Detail string
	Time   time.Time
}

// TQUninitializedSled is a sled seen on the bootstrap network that is not
// a member of the latest committed configuration.
type TQUninitializedSled struct {
	Baseboard Baseboard
	// SeenBy is the member that reported it, at TimeSeen.
	SeenBy   Baseboard
	TimeSeen time.Time
}

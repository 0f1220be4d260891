package api

import (
	"encoding/hex"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/trustquorum"
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// The sled API's trust-quorum routes (under /trust-quorum/). Nexus drives
// them; the sled agent forwards each to its bootstrap agent. Conversion to
// and from the trustquorum package's types happens here, at the edge.

// Error codes of the trust-quorum routes.
const (
	// CodeForbiddenIdentity (403): the caller's identity may not do this
	// (mutations are for Nexus only).
	CodeForbiddenIdentity = "forbidden_identity"
	// CodeBusy (503): a bounded queue on the way was full; retry.
	CodeBusy = "busy"
	// CodeTrustQuorumStopped (503): the node stopped because no M.2 took
	// its state; see status.
	CodeTrustQuorumStopped = "trust_quorum_stopped"
	// CodeNoTrustQuorum (503): this sled agent runs without a bootstrap
	// agent.
	CodeNoTrustQuorum = "no_trust_quorum"
	// CodeDestinationNotConnected (503): the proxy has no bootstrap
	// connection to the destination.
	CodeDestinationNotConnected = "destination_not_connected"
	// CodeProxyConnectionLost (503): the bootstrap connection to the
	// destination closed before it answered.
	CodeProxyConnectionLost = "proxy_connection_lost"
	// CodeProxyTimeout (504): the destination did not answer in time.
	CodeProxyTimeout = "proxy_timeout"
	// CodeNoSledAgent (409): the destination cannot start a sled agent.
	CodeNoSledAgent = "no_sled_agent"

	// Trust-quorum refusals (409 unless noted).
	CodeNotPrepared                = "not_prepared"
	CodeStaleEpoch                 = "stale_epoch"
	CodeConflictingReconfiguration = "conflicting_reconfiguration"
	CodeLastCommittedEpochMismatch = "last_committed_epoch_mismatch"
	CodeNotAMember                 = "not_a_member"
	CodeExpunged                   = "expunged"
	CodeRackIDMismatch             = "rack_id_mismatch"
	CodeUpgradeFromLrtqRequired    = "upgrade_from_lrtq_required"
	CodeNoLrtq                     = "no_lrtq"
	CodeAlreadyUpgraded            = "already_upgraded"
	CodeMismatchedConfiguration    = "mismatched_configuration"
	CodeRebuildInProgress          = "rebuild_in_progress"
	CodeNotInitialized             = "not_initialized"
	CodeAlreadyInitialized         = "already_initialized"
	CodeSecretUnavailable          = "secret_unavailable"
	CodeNotCommitted               = "not_committed"
	CodeUnknownEpoch               = "unknown_epoch"
	// 400s from the node's own checks of a request.
	CodeInvalidMembership = "invalid_membership"
	CodeInvalidThreshold  = "invalid_threshold"
)

// TQMember is a member of a configuration.
type TQMember struct {
	Part        string `json:"part"`
	Serial      string `json:"serial"`
	ShareDigest string `json:"share_digest"`
	X           uint8  `json:"x"`
}

// TQEncryptedRackSecrets is the encrypted chain of earlier rack secrets.
type TQEncryptedRackSecrets struct {
	Salt       []byte `json:"salt"`
	Ciphertext []byte `json:"ciphertext"`
}

// TQConfiguration is one epoch's configuration. It holds no secret.
type TQConfiguration struct {
	RackID               uuid.UUID               `json:"rack_id"`
	Epoch                uint64                  `json:"epoch"`
	Coordinator          Baseboard               `json:"coordinator"`
	Members              []TQMember              `json:"members"`
	Threshold            uint8                   `json:"threshold"`
	EncryptedRackSecrets *TQEncryptedRackSecrets `json:"encrypted_rack_secrets,omitempty"`
}

// TQConfigurationFrom converts a trustquorum configuration (nil stays nil).
func TQConfigurationFrom(c *trustquorum.Configuration) *TQConfiguration {
	if c == nil {
		return nil
	}
	w := &TQConfiguration{
		RackID: uuid.UUID(c.RackID), Epoch: uint64(c.Epoch), Coordinator: BaseboardFrom(c.Coordinator),
		Members: make([]TQMember, 0, len(c.Members)), Threshold: c.Threshold,
	}
	for _, m := range c.Members {
		w.Members = append(w.Members, TQMember{Part: m.ID.Part, Serial: m.ID.Serial, ShareDigest: m.ShareDigest.String(), X: m.X})
	}
	if e := c.EncryptedRackSecrets; e != nil {
		w.EncryptedRackSecrets = &TQEncryptedRackSecrets{Salt: append([]byte(nil), e.Salt[:]...), Ciphertext: append([]byte(nil), e.Ciphertext...)}
	}
	return w
}

// ToTrustQuorum converts and validates the configuration.
func (w *TQConfiguration) ToTrustQuorum() (*trustquorum.Configuration, error) {
	if w == nil {
		return nil, fieldErr("configuration", "is required")
	}
	c := &trustquorum.Configuration{
		RackID: trustquorum.RackID(w.RackID), Epoch: trustquorum.Epoch(w.Epoch),
		Coordinator: w.Coordinator.TrustQuorum(), Threshold: w.Threshold,
	}
	for i, m := range w.Members {
		var d tqcrypto.Digest
		b, err := hex.DecodeString(m.ShareDigest)
		if err != nil || len(b) != len(d) {
			return nil, fieldErr(fmt.Sprintf("configuration.members[%d].share_digest", i), "must be 64 hex digits")
		}
		copy(d[:], b)
		c.Members = append(c.Members, trustquorum.Member{ID: trustquorum.BaseboardID{Part: m.Part, Serial: m.Serial}, ShareDigest: d, X: m.X})
	}
	if e := w.EncryptedRackSecrets; e != nil {
		enc := &trustquorum.EncryptedRackSecrets{Ciphertext: append([]byte(nil), e.Ciphertext...)}
		if len(e.Salt) != len(enc.Salt) {
			return nil, fieldErr("configuration.encrypted_rack_secrets.salt", "must be %d bytes", len(enc.Salt))
		}
		copy(enc.Salt[:], e.Salt)
		c.EncryptedRackSecrets = enc
	}
	if err := c.Validate(); err != nil {
		return nil, fieldErr("configuration", "%v", err)
	}
	return c, nil
}

// BaseboardFrom converts a trustquorum baseboard.
func BaseboardFrom(b trustquorum.BaseboardID) Baseboard {
	return Baseboard{Part: b.Part, Serial: b.Serial}
}

// TrustQuorum converts the baseboard.
func (b Baseboard) TrustQuorum() trustquorum.BaseboardID {
	return trustquorum.BaseboardID{Part: b.Part, Serial: b.Serial}
}

func baseboardsFrom(ids []trustquorum.BaseboardID) []Baseboard {
	out := make([]Baseboard, 0, len(ids))
	for _, id := range ids {
		out = append(out, BaseboardFrom(id))
	}
	return out
}

func checkBaseboard(field string, b Baseboard) error {
	if b.Part == "" || b.Serial == "" {
		return fieldErr(field, "needs a part and a serial")
	}
	return nil
}

// TQReconfigureRequest is POST /trust-quorum/reconfigure: coordinate a new
// configuration.
type TQReconfigureRequest struct {
	RackID             uuid.UUID   `json:"rack_id"`
	Epoch              uint64      `json:"epoch"`
	LastCommittedEpoch uint64      `json:"last_committed_epoch"`
	Members            []Baseboard `json:"members"`
	Threshold          uint8       `json:"threshold"`
}

// Validate checks the fields the node does not.
func (r TQReconfigureRequest) Validate() error {
	if r.Epoch == 0 {
		return fieldErr("epoch", "must be at least 1")
	}
	for i, m := range r.Members {
		if err := checkBaseboard(fmt.Sprintf("members[%d]", i), m); err != nil {
			return err
		}
	}
	return nil
}

// ToTrustQuorum converts the request.
func (r TQReconfigureRequest) ToTrustQuorum() trustquorum.ReconfigureMsg {
	m := trustquorum.ReconfigureMsg{RackID: trustquorum.RackID(r.RackID), Epoch: trustquorum.Epoch(r.Epoch),
		LastCommittedEpoch: trustquorum.Epoch(r.LastCommittedEpoch), Threshold: r.Threshold}
	for _, b := range r.Members {
		m.Members = append(m.Members, b.TrustQuorum())
	}
	return m
}

// TQLrtqUpgradeRequest is POST /trust-quorum/lrtq-upgrade.
type TQLrtqUpgradeRequest struct {
	RackID    uuid.UUID   `json:"rack_id"`
	Epoch     uint64      `json:"epoch"`
	Members   []Baseboard `json:"members"`
	Threshold uint8       `json:"threshold"`
}

// Validate checks the fields the node does not.
func (r TQLrtqUpgradeRequest) Validate() error {
	if r.Epoch < 2 {
		return fieldErr("epoch", "an LRTQ upgrade uses epoch 2 or later")
	}
	for i, m := range r.Members {
		if err := checkBaseboard(fmt.Sprintf("members[%d]", i), m); err != nil {
			return err
		}
	}
	return nil
}

// ToTrustQuorum converts the request.
func (r TQLrtqUpgradeRequest) ToTrustQuorum() trustquorum.LrtqUpgradeMsg {
	m := trustquorum.LrtqUpgradeMsg{RackID: trustquorum.RackID(r.RackID), Epoch: trustquorum.Epoch(r.Epoch), Threshold: r.Threshold}
	for _, b := range r.Members {
		m.Members = append(m.Members, b.TrustQuorum())
	}
	return m
}

// TQCommitRequest is POST /trust-quorum/commit, and with Destination set
// POST /trust-quorum/proxy/commit.
type TQCommitRequest struct {
	Destination *Baseboard `json:"destination,omitempty"`
	RackID      uuid.UUID  `json:"rack_id"`
	Epoch       uint64     `json:"epoch"`
}

// Validate checks the epoch and destination.
func (r TQCommitRequest) Validate() error {
	if r.Epoch == 0 {
		return fieldErr("epoch", "must be at least 1")
	}
	if r.Destination != nil {
		return checkBaseboard("destination", *r.Destination)
	}
	return nil
}

// TQPrepareAndCommitRequest is POST /trust-quorum/prepare-and-commit, and
// with Destination set POST /trust-quorum/proxy/prepare-and-commit.
type TQPrepareAndCommitRequest struct {
	Destination   *Baseboard       `json:"destination,omitempty"`
	Configuration *TQConfiguration `json:"configuration"`
}

// Validate checks that the configuration is there and well formed.
func (r TQPrepareAndCommitRequest) Validate() error {
	if r.Destination != nil {
		if err := checkBaseboard("destination", *r.Destination); err != nil {
			return err
		}
	}
	_, err := r.Configuration.ToTrustQuorum()
	return err
}

// TQDestinationRequest is POST /trust-quorum/proxy/start-sled-agent and
// GET /trust-quorum/proxy/status (query part and serial).
type TQDestinationRequest struct {
	Destination Baseboard `json:"destination"`
}

// Validate checks the destination.
func (r TQDestinationRequest) Validate() error { return checkBaseboard("destination", r.Destination) }

// TQCommitResult answers commit and prepare-and-commit: committed,
// pending (the member is rebuilding its share; ask again) or stale (the
// member committed a newer epoch).
type TQCommitResult struct {
	Status string `json:"status"`
}

// TQLoadRackSecretResult answers load-rack-secret: loaded, or pending
// while the node gathers shares (ask again). The secret never leaves the
// sled.
type TQLoadRackSecretResult struct {
	Status string `json:"status"`
	Epoch  uint64 `json:"epoch"`
}

// TQStartSledAgentResult answers proxy/start-sled-agent.
type TQStartSledAgentResult struct {
	// Started is false when the sled agent was already running.
	Started bool `json:"started"`
}

// TQCoordinatorStatus is GET /trust-quorum/coordinator-status (and the
// answer to reconfigure and lrtq-upgrade). State is never empty:
// not_coordinating, collecting_shares, collecting_lrtq_shares or
// preparing; Configuration is set while preparing.
type TQCoordinatorStatus struct {
	State         string           `json:"state"`
	Epoch         uint64           `json:"epoch"`
	Configuration *TQConfiguration `json:"configuration,omitempty"`
	Acked         []Baseboard      `json:"acked"`
}

// TQCoordinatorStatusFrom converts a coordinator status.
func TQCoordinatorStatusFrom(s trustquorum.CoordinatorStatus) TQCoordinatorStatus {
	return TQCoordinatorStatus{State: string(s.State), Epoch: uint64(s.Epoch),
		Configuration: TQConfigurationFrom(s.Config), Acked: baseboardsFrom(s.Acked)}
}

// TQAlarm is an alarm a node raised, with the peer that caused it.
type TQAlarm struct {
	Kind   string     `json:"kind"`
	Epoch  uint64     `json:"epoch"`
	Peer   *Baseboard `json:"peer,omitempty"`
	Detail string     `json:"detail"`
	Time   time.Time  `json:"time"`
}

// TQPeer is a connected bootstrap peer.
type TQPeer struct {
	Part         string    `json:"part"`
	Serial       string    `json:"serial"`
	ConnectionID uint64    `json:"connection_id"`
	Remote       string    `json:"remote"`
	Dialed       bool      `json:"dialed"`
	Since        time.Time `json:"since"`
}

// TQProxied is a proxied request in flight.
type TQProxied struct {
	Op           string    `json:"op"`
	Destination  Baseboard `json:"destination"`
	ConnectionID uint64    `json:"connection_id"`
	Started      time.Time `json:"started"`
}

// TQLedgerDevice is one M.2's copy of the trust-quorum ledger.
type TQLedgerDevice struct {
	Path       string `json:"path"`
	Present    bool   `json:"present"`
	Generation uint64 `json:"generation"`
	Error      string `json:"error,omitempty"`
}

// TQExpunged says the node learnt it is not a member of Epoch, from From.
type TQExpunged struct {
	Epoch uint64    `json:"epoch"`
	From  Baseboard `json:"from"`
}

// TQStatus is GET /trust-quorum/status (and proxy/status).
type TQStatus struct {
	Baseboard            Baseboard           `json:"baseboard"`
	RackID               *uuid.UUID          `json:"rack_id,omitempty"`
	LatestConfiguration  *TQConfiguration    `json:"latest_configuration,omitempty"`
	LatestCommittedEpoch uint64              `json:"latest_committed_epoch"`
	CommittedEpochs      []uint64            `json:"committed_epochs"`
	HasLrtq              bool                `json:"has_lrtq"`
	Expunged             *TQExpunged         `json:"expunged,omitempty"`
	Coordination         TQCoordinatorStatus `json:"coordination"`
	RebuildingShare      uint64              `json:"rebuilding_share_epoch"`
	ConnectedPeers       []TQPeer            `json:"connected_peers"`
	Alarms               []TQAlarm           `json:"alarms"`
	ProxiedInFlight      []TQProxied         `json:"proxied_in_flight"`
	ServingForOthers     int                 `json:"serving_for_others"`
	LedgerGeneration     uint64              `json:"ledger_generation"`
	Ledger               []TQLedgerDevice    `json:"ledger"`
	Stopped              bool                `json:"stopped"`
	StoppedReason        string              `json:"stopped_reason,omitempty"`
	PersistFailures      uint64              `json:"persist_failures"`
	LastPersistError     string              `json:"last_persist_error,omitempty"`
	// StorageLock is the data disks' lock state (locked, unlocked,
	// expunged; "" on a sled without data disks), StorageLockReason why
	// it is locked.
	StorageLock       string `json:"storage_lock,omitempty"`
	StorageLockReason string `json:"storage_lock_reason,omitempty"`
}

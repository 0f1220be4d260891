package bootstrap

import (
	"time"

	"github.com/rackplane/rackplane/trustquorum"
)

// Status is what the bootstrap agent reports about itself.
type Status struct {
	ID     trustquorum.BaseboardID `json:"id"`
	RackID *trustquorum.RackID     `json:"rack_id,omitempty"`
	// LatestConfig is the configuration with the highest epoch held.
	LatestConfig         *trustquorum.Configuration `json:"latest_config,omitempty"`
	LatestCommittedEpoch trustquorum.Epoch          `json:"latest_committed_epoch"`
	CommittedEpochs      []trustquorum.Epoch        `json:"committed_epochs"`
	HasLrtq              bool                       `json:"has_lrtq"`
	// LrtqInitDone: this sled set up LRTQ and every initial member
	// acknowledged its package.
	LrtqInitDone bool                        `json:"lrtq_init_done"`
	Expunged     *trustquorum.ExpungedMarker `json:"expunged,omitempty"`
	// Coordination is the coordination in progress here, if any.
	Coordination    trustquorum.CoordinatorStatus `json:"coordination"`
	RebuildingShare trustquorum.Epoch             `json:"rebuilding_share"`
	LoadingSecret   trustquorum.Epoch             `json:"loading_secret"`
	ConnectedPeers  []PeerConn                    `json:"connected_peers"`
	Alarms          []AlarmRecord                 `json:"alarms"`
	// ProxiedInFlight are requests this sled forwards that wait for their
	// destination; Serving counts requests it executes for others.
	ProxiedInFlight []ProxyCall  `json:"proxied_in_flight"`
	Serving         int          `json:"serving"`
	Ledger          LedgerStatus `json:"ledger"`
	// StorageLock is the data disks' lock state.
	StorageLock StorageLock `json:"storage_lock"`
	// Stopped is set when the node stopped (no M.2 took its state); the
	// configuration fields then show the state as last persisted.
	Stopped         bool   `json:"stopped"`
	StoppedReason   string `json:"stopped_reason,omitempty"`
	PersistFailures uint64 `json:"persist_failures"`
	LastPersistErr  string `json:"last_persist_error,omitempty"`
}

// PeerConn is a connected peer.
type PeerConn struct {
	ID     trustquorum.BaseboardID `json:"id"`
	ConnID uint64                  `json:"conn_id"`
	Remote string                  `json:"remote"`
	Dialed bool                    `json:"dialed"`
	Since  time.Time               `json:"since"`
}

// ProxyCall is a proxied request waiting for its destination.
type ProxyCall struct {
	Op          string                  `json:"op"`
	Destination trustquorum.BaseboardID `json:"destination"`
	ConnID      uint64                  `json:"conn_id"`
	Started     time.Time               `json:"started"`
}

// LedgerStatus is the ledger's latest generation and what each M.2 holds.
type LedgerStatus struct {
	Generation uint64         `json:"generation"`
	Devices    []LedgerDevice `json:"devices"`
}

// LedgerDevice is one M.2's copy of the ledger. Generation is the one it
// was last seen to hold (0: none).
type LedgerDevice struct {
	Path       string `json:"path"`
	Present    bool   `json:"present"`
	Generation uint64 `json:"generation"`
	Error      string `json:"error,omitempty"`
}

package bootstrap

import (
	"fmt"

	"github.com/rackplane/rackplane/trustquorum"
)

// Operations of requests on the bootstrap network. A sled may send the
// proxy operations (commit, prepare_and_commit, status, start_sled_agent)
// to another sled, which executes them itself and never forwards them.
// The rack-setup service may send initialize, commit (of epoch 1 only),
// status and start_sled_agent. Anything else is refused.
const (
	OpCommit           = "commit"
	OpPrepareAndCommit = "prepare_and_commit"
	OpStatus           = "status"
	OpStartSledAgent   = "start_sled_agent"
	OpInitialize       = "initialize"
)

// CommitRequest is the body of OpCommit.
type CommitRequest struct {
	RackID trustquorum.RackID `json:"rack_id"`
	Epoch  trustquorum.Epoch  `json:"epoch"`
}

// CommitResponse answers OpCommit and OpPrepareAndCommit.
type CommitResponse struct {
	// Status is committed, pending or stale (trustquorum.CommitStatus).
	Status string `json:"status"`
}

// PrepareAndCommitRequest is the body of OpPrepareAndCommit.
type PrepareAndCommitRequest struct {
	Config *trustquorum.Configuration `json:"configuration"`
}

// InitializeRequest is the body of OpInitialize: make the receiving sled
// coordinate epoch 1 over Members (or, with Lrtq, set up LRTQ over them).
type InitializeRequest struct {
	RackID  trustquorum.RackID        `json:"rack_id"`
	Members []trustquorum.BaseboardID `json:"members"`
	// Threshold defaults to N/2+1.
	Threshold uint8 `json:"threshold,omitempty"`
	Lrtq      bool  `json:"lrtq,omitempty"`
}

// StartSledAgentResponse answers OpStartSledAgent.
type StartSledAgentResponse struct {
	Started bool `json:"started"`
}

// ParseCommitStatus is the inverse of trustquorum.CommitStatus.String.
func ParseCommitStatus(s string) (trustquorum.CommitStatus, error) {
	for _, cs := range []trustquorum.CommitStatus{trustquorum.CommitCommitted, trustquorum.CommitPending, trustquorum.CommitStale} {
		if cs.String() == s {
			return cs, nil
		}
	}
	return 0, fmt.Errorf("%w: commit status %q", ErrInvalidRequest, s)
}

package bootstrap

import (
	"context"
	"errors"
	"fmt"

	"github.com/rackplane/rackplane/sledagent/bootstrap/bootnet"
	"github.com/rackplane/rackplane/trustquorum"
)

// Errors of the bootstrap agent. Trust-quorum refusals come back as the
// trustquorum package's sentinels (errors.Is works through proxies too).
var (
	// ErrBusy: a bounded queue is full (the node's, the proxy's, or the
	// destination's); nothing was done, try again later.
	ErrBusy = errors.New("bootstrap: busy; try again")
	// ErrStopped: the node stopped because its state could not be
	// persisted (or no M.2 is present); it acknowledges nothing until an
	// M.2 that takes the ledger arrives.
	ErrStopped = errors.New("bootstrap: trust-quorum node stopped")
	// ErrNotRunning: the agent is not running (not started, or shut down).
	ErrNotRunning = errors.New("bootstrap: agent not running")
	// ErrDestinationNotConnected: no bootstrap connection to the
	// destination of a proxied request.
	ErrDestinationNotConnected = errors.New("bootstrap: destination is not connected on the bootstrap network")
	// ErrProxyConnectionLost: the connection a proxied request was bound
	// to closed before the answer came.
	ErrProxyConnectionLost = errors.New("bootstrap: connection to the destination closed before it answered")
	// ErrForbidden: the caller's identity may not make this request.
	ErrForbidden = errors.New("bootstrap: not allowed for this identity")
	// ErrNoSledAgent: this process cannot start a sled agent.
	ErrNoSledAgent = errors.New("bootstrap: this sled has no sled agent to start")
	// ErrInvalidRequest: a request over the bootstrap network that does
	// not parse or makes no sense.
	ErrInvalidRequest = errors.New("bootstrap: invalid request")
	// ErrNoM2 is the reason a node is stopped when no M.2 holds its ledger.
	ErrNoM2 = errors.New("no M.2 device is present to hold the trust-quorum ledger")
)

// Remote error codes on the bootstrap network. Each maps to one sentinel
// so that a proxied refusal means the same thing as a local one.
var remoteCodes = []struct {
	code string
	err  error
}{
	{"busy", ErrBusy},
	{"stopped", ErrStopped},
	{"not_running", ErrNotRunning},
	{"forbidden", ErrForbidden},
	{"no_sled_agent", ErrNoSledAgent},
	{"invalid_request", ErrInvalidRequest},
	{"destination_not_connected", ErrDestinationNotConnected},
	{"invalid_membership", trustquorum.ErrInvalidMembership},
	{"invalid_threshold", trustquorum.ErrInvalidThreshold},
	{"not_a_member", trustquorum.ErrNotAMember},
	{"expunged", trustquorum.ErrExpunged},
	{"upgrade_from_lrtq_required", trustquorum.ErrUpgradeFromLrtqRequired},
	{"no_lrtq", trustquorum.ErrNoLrtq},
	{"already_upgraded", trustquorum.ErrAlreadyUpgraded},
	{"rack_id_mismatch", trustquorum.ErrRackIDMismatch},
	{"last_committed_epoch_mismatch", trustquorum.ErrLastCommittedEpochMismatch},
	{"stale_epoch", trustquorum.ErrStaleEpoch},
	{"conflicting_reconfiguration", trustquorum.ErrConflictingReconfiguration},
	{"not_prepared", trustquorum.ErrNotPrepared},
	{"mismatched_configuration", trustquorum.ErrMismatchedConfiguration},
	{"not_committed", trustquorum.ErrNotCommitted},
	{"unknown_epoch", trustquorum.ErrUnknownEpoch},
	{"not_initialized", trustquorum.ErrNotInitialized},
	{"already_initialized", trustquorum.ErrAlreadyInitialized},
	{"rebuild_in_progress", trustquorum.ErrRebuildInProgress},
	{"secret_unavailable", trustquorum.ErrSecretUnavailable},
	{"malformed", trustquorum.ErrMalformed},
	{"timeout", context.DeadlineExceeded},
}

// toRemote encodes err for the peer that asked.
func toRemote(err error) *bootnet.RemoteError {
	if err == nil {
		return nil
	}
	for _, rc := range remoteCodes {
		if errors.Is(err, rc.err) {
			return &bootnet.RemoteError{Code: rc.code, Message: err.Error()}
		}
	}
	return &bootnet.RemoteError{Code: "internal", Message: err.Error()}
}

// fromRemote decodes a peer's refusal back into the matching sentinel.
func fromRemote(re *bootnet.RemoteError) error {
	for _, rc := range remoteCodes {
		if rc.code == re.Code {
			return fmt.Errorf("%w (from the destination: %s)", rc.err, re.Message)
		}
	}
	return fmt.Errorf("the destination failed: %s (%s)", re.Message, re.Code)
}

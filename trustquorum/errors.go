package trustquorum

import (
	"errors"
	"fmt"
)

// Sentinel errors. Match them with errors.Is; errors carrying epochs are
// *EpochError values that unwrap to one of these.
var (
	ErrInvalidMembership          = errors.New("trustquorum: invalid membership")
	ErrInvalidThreshold           = errors.New("trustquorum: invalid threshold")
	ErrNotAMember                 = errors.New("trustquorum: node is not a member of the configuration")
	ErrExpunged                   = errors.New("trustquorum: node has been expunged")
	ErrUpgradeFromLrtqRequired    = errors.New("trustquorum: node runs LRTQ; upgrade from LRTQ first")
	ErrNoLrtq                     = errors.New("trustquorum: node holds no LRTQ share package")
	ErrAlreadyUpgraded            = errors.New("trustquorum: rack already runs the trust quorum")
	ErrRackIDMismatch             = errors.New("trustquorum: rack id mismatch")
	ErrLastCommittedEpochMismatch = errors.New("trustquorum: last committed epoch does not match the node's")
	ErrStaleEpoch                 = errors.New("trustquorum: epoch is not newer than one already seen")
	ErrConflictingReconfiguration = errors.New("trustquorum: a different reconfiguration exists for this epoch")
	ErrNotPrepared                = errors.New("trustquorum: configuration not prepared at this node")
	ErrMismatchedConfiguration    = errors.New("trustquorum: configuration differs from the one held for this epoch")
	ErrNotCommitted               = errors.New("trustquorum: epoch is not committed at this node")
	ErrUnknownEpoch               = errors.New("trustquorum: epoch is not a committed epoch of this rack")
	ErrNotInitialized             = errors.New("trustquorum: node has no configuration")
	ErrAlreadyInitialized         = errors.New("trustquorum: node already initialised")
	ErrRebuildInProgress          = errors.New("trustquorum: node is still rebuilding its share of a newer epoch")
	ErrSecretUnavailable          = errors.New("trustquorum: rack secret could not be reconstructed (see alarms)")

	// Decoding errors for untrusted bytes.
	ErrMalformed          = errors.New("trustquorum: malformed data")
	ErrUnsupportedVersion = errors.New("trustquorum: unsupported encoding version")
	ErrFrameTooLarge      = errors.New("trustquorum: frame too large")
)

// EpochError reports an epoch-related refusal with the numbers involved.
type EpochError struct {
	Err   error // one of the sentinels above
	Epoch Epoch // the epoch asked about
	Known Epoch // the epoch the node holds that caused the refusal
}

func (e *EpochError) Error() string {
	return fmt.Sprintf("%v (epoch %d, node has %d)", e.Err, e.Epoch, e.Known)
}

func (e *EpochError) Unwrap() error { return e.Err }

func epochErr(err error, epoch, known Epoch) error {
	return &EpochError{Err: err, Epoch: epoch, Known: known}
}

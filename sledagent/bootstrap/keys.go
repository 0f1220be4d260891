package bootstrap

import (
	"context"
	"fmt"
	"sync"

	"github.com/rackplane/rackplane/sledagent/storage"
	"github.com/rackplane/rackplane/trustquorum"
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// The agent is the storage's key source: it rebuilds the rack secret of
// an epoch from K members' shares (the node keeps it) and hands out only
// disk keys derived from it, so no rack secret leaves the node goroutine.
var _ storage.KeySource = (*Agent)(nil)

// Committed reports the rack id and the latest committed epoch (LRTQ's
// epoch for a rack still on LRTQ).
func (a *Agent) Committed(ctx context.Context) ([16]byte, uint64, bool, error) {
	type committed struct {
		rack  trustquorum.RackID
		epoch trustquorum.Epoch
	}
	v, err := a.do(ctx, "committed", true, func() (any, error) {
		st := a.nctx.PersistentState()
		if st.Expunged != nil {
			return nil, fmt.Errorf("%w: removed at epoch %d", trustquorum.ErrExpunged, st.Expunged.Epoch)
		}
		rack, _ := st.RackID()
		e := st.LatestCommittedEpoch()
		if e == 0 && st.Lrtq != nil {
			e = trustquorum.LrtqEpoch
		}
		return committed{rack, e}, nil
	})
	if err != nil {
		return [16]byte{}, 0, false, err
	}
	c := v.(committed)
	return c.rack, uint64(c.epoch), c.epoch != 0, nil
}

// DiskKey derives one disk's key for a committed epoch. Until K verified
// shares of the latest committed epoch are in it is storage.ErrPending
// (the node keeps asking its peers); a sled that learnt it was removed
// gets trustquorum.ErrExpunged.
func (a *Agent) DiskKey(ctx context.Context, epoch uint64, serial string) (*tqcrypto.Secret, error) {
	v, err := a.do(ctx, "disk_key", true, func() (any, error) {
		rack, ok := a.nctx.PersistentState().RackID()
		if !ok {
			return nil, trustquorum.ErrNotInitialized
		}
		secret, pending, err := a.node.LoadRackSecret(a.nctx, trustquorum.Epoch(epoch))
		switch {
		case err != nil:
			return nil, err
		case pending:
			return nil, storage.ErrPending
		}
		defer secret.Zero()
		return tqcrypto.DeriveDiskKey(secret, rack, serial)
	})
	if err != nil {
		return nil, err
	}
	return v.(*tqcrypto.Secret), nil
}

// StorageLock is the sled's storage lock as its owner reports it.
type StorageLock struct {
	// State is storage.Locked, storage.Unlocked or storage.Expunged
	// ("" where the sled has no data disks).
	State string `json:"state"`
	// Epoch is the one the data keys are wrapped under once unlocked.
	Epoch trustquorum.Epoch `json:"epoch,omitempty"`
	// Reason says why it is locked.
	Reason   string `json:"reason,omitempty"`
	Attempts uint64 `json:"attempts,omitempty"`
}

type lockState struct {
	mu sync.Mutex
	v  StorageLock
}

// SetStorageLock records the storage's lock state for status and metrics.
func (a *Agent) SetStorageLock(l StorageLock) {
	a.lock.mu.Lock()
	a.lock.v = l
	a.lock.mu.Unlock()
	for _, s := range []string{storage.Locked, storage.Unlocked, storage.Expunged} {
		v := 0.0
		if s == l.State {
			v = 1
		}
		a.metrics.storageLock.WithLabelValues(s).Set(v)
	}
}

// StorageLockState is the lock state last set.
func (a *Agent) StorageLockState() StorageLock { return a.storageLock() }

func (a *Agent) storageLock() StorageLock {
	a.lock.mu.Lock()
	defer a.lock.mu.Unlock()
	return a.lock.v
}

// Commits is signalled (without blocking: one pending signal at most)
// whenever the latest committed epoch may have changed, so the storage
// re-keys at once rather than at its next check.
func (a *Agent) Commits() <-chan struct{} { return a.commits }

func (a *Agent) noteCommitted() {
	e := a.nctx.PersistentState().LatestCommittedEpoch()
	if e == a.lastCommitted {
		return
	}
	a.lastCommitted = e
	select {
	case a.commits <- struct{}{}:
	default:
	}
}

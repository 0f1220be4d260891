package bootstrap

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/rackplane/rackplane/trustquorum"
)

// The trust-quorum API. Every call runs on the node goroutine; mutating
// calls answer only once what they changed is on an M.2. The sled API
// serves these to Nexus; proxied requests and the rack-setup service reach
// them over the bootstrap network.

// Reconfigure makes this sled coordinate a new configuration, and returns
// the coordination's status.
func (a *Agent) Reconfigure(ctx context.Context, msg trustquorum.ReconfigureMsg) (trustquorum.CoordinatorStatus, error) {
	v, err := a.do(ctx, "reconfigure", true, func() (any, error) {
		if err := a.node.CoordinateReconfiguration(a.nctx, msg); err != nil {
			return nil, err
		}
		return a.node.CoordinatorStatus(a.nctx), nil
	})
	return asCoordinatorStatus(v, err)
}

// LrtqUpgrade makes this sled coordinate the upgrade of an LRTQ rack.
func (a *Agent) LrtqUpgrade(ctx context.Context, msg trustquorum.LrtqUpgradeMsg) (trustquorum.CoordinatorStatus, error) {
	v, err := a.do(ctx, "lrtq_upgrade", true, func() (any, error) {
		if err := a.node.CoordinateUpgradeFromLrtq(a.nctx, msg); err != nil {
			return nil, err
		}
		return a.node.CoordinatorStatus(a.nctx), nil
	})
	return asCoordinatorStatus(v, err)
}

func asCoordinatorStatus(v any, err error) (trustquorum.CoordinatorStatus, error) {
	if err != nil {
		return trustquorum.CoordinatorStatus{}, err
	}
	return v.(trustquorum.CoordinatorStatus), nil
}

// Commit commits a prepared epoch.
func (a *Agent) Commit(ctx context.Context, rack trustquorum.RackID, epoch trustquorum.Epoch) (trustquorum.CommitStatus, error) {
	v, err := a.do(ctx, "commit", true, func() (any, error) {
		return a.node.Commit(a.nctx, rack, epoch)
	})
	return asCommitStatus(v, err)
}

// PrepareAndCommit commits cfg at a member that never saw its Prepare
// (pending until its share is rebuilt).
func (a *Agent) PrepareAndCommit(ctx context.Context, cfg *trustquorum.Configuration) (trustquorum.CommitStatus, error) {
	if cfg == nil {
		return 0, fmt.Errorf("%w: no configuration", ErrInvalidRequest)
	}
	cfg = cfg.Clone()
	v, err := a.do(ctx, "prepare_and_commit", true, func() (any, error) {
		return a.node.PrepareAndCommit(a.nctx, cfg)
	})
	return asCommitStatus(v, err)
}

func asCommitStatus(v any, err error) (trustquorum.CommitStatus, error) {
	if err != nil {
		return 0, err
	}
	return v.(trustquorum.CommitStatus), nil
}

// LoadRackSecret has the node gather K shares of its latest committed
// epoch (or of LRTQ) and rebuild the rack secret, which stays in the node;
// it reports the epoch and whether the secret is loaded yet (pending
// until the shares are in). Members that committed a newer epoch this
// sled is not a member of answer that it is expunged, which is how a
// removed sled learns it. A secret the node rebuilt before (to unlock the
// data disks) is forgotten first, so the members are always asked.
func (a *Agent) LoadRackSecret(ctx context.Context) (trustquorum.Epoch, bool, error) {
	type loaded struct {
		epoch trustquorum.Epoch
		done  bool
	}
	v, err := a.do(ctx, "load_rack_secret", true, func() (any, error) {
		st := a.nctx.PersistentState()
		e := st.LatestCommittedEpoch()
		if e == 0 && st.Lrtq != nil {
			e = trustquorum.LrtqEpoch
		}
		if !a.loadAsked {
			a.node.ClearSecrets(a.nctx)
			a.loadAsked = true
		}
		secret, pending, err := a.node.LoadRackSecret(a.nctx, e)
		if !pending {
			a.loadAsked = false
		}
		if secret != nil {
			secret.Zero()
		}
		return loaded{e, !pending}, err
	})
	if err != nil {
		return 0, false, err
	}
	l := v.(loaded)
	return l.epoch, l.done, nil
}

// CoordinatorStatus reports the coordination in progress here.
func (a *Agent) CoordinatorStatus(ctx context.Context) (trustquorum.CoordinatorStatus, error) {
	v, err := a.do(ctx, "coordinator_status", true, func() (any, error) {
		return a.node.CoordinatorStatus(a.nctx), nil
	})
	return asCoordinatorStatus(v, err)
}

// Status reports the agent's state; it works on a stopped node too.
func (a *Agent) Status(ctx context.Context) (Status, error) {
	v, err := a.do(ctx, "status", false, func() (any, error) { return a.status(), nil })
	if err != nil {
		return Status{}, err
	}
	return v.(Status), nil
}

// initialize is the rack-setup service's request: coordinate epoch 1 over
// the members, or set up LRTQ over them.
func (a *Agent) initialize(ctx context.Context, req InitializeRequest) (Status, error) {
	k := req.Threshold
	if k == 0 {
		k = trustquorum.LrtqThreshold(len(req.Members))
	}
	_, err := a.do(ctx, "initialize", true, func() (any, error) {
		if req.Lrtq {
			return nil, a.node.InitLrtq(a.nctx, req.RackID, req.Members)
		}
		return nil, a.node.CoordinateReconfiguration(a.nctx, trustquorum.ReconfigureMsg{
			RackID: req.RackID, Epoch: 1, Members: req.Members, Threshold: k,
		})
	})
	if err != nil {
		return Status{}, err
	}
	return a.Status(ctx)
}

// status runs on the node goroutine.
func (a *Agent) status() Status {
	s := Status{
		ID:              a.id,
		Alarms:          slices.Clone(a.alarms),
		ProxiedInFlight: a.proxyCalls(),
		Serving:         len(a.serving),
		PersistFailures: a.persistFailures,
		StorageLock:     a.storageLock(),
		LastPersistErr:  a.lastPersistErr,
		ConnectedPeers:  []PeerConn{},
		CommittedEpochs: []trustquorum.Epoch{},
		Coordination:    trustquorum.CoordinatorStatus{State: trustquorum.NotCoordinating, Acked: []trustquorum.BaseboardID{}},
	}
	if s.Alarms == nil {
		s.Alarms = []AlarmRecord{}
	}
	st := &a.persisted
	if a.stopped != nil {
		s.Stopped, s.StoppedReason = true, a.stopped.Error()
	} else {
		st = a.nctx.PersistentState()
		ns := a.node.Status(a.nctx)
		s.Coordination = a.node.CoordinatorStatus(a.nctx)
		s.RebuildingShare, s.LoadingSecret = ns.RebuildingShare, ns.LoadingSecret
		s.LrtqInitDone = a.node.LrtqInitDone()
	}
	if r, ok := st.RackID(); ok {
		s.RackID = &r
	}
	if c := st.LatestConfig(); c != nil {
		s.LatestConfig = c.Clone()
	}
	s.LatestCommittedEpoch = st.LatestCommittedEpoch()
	s.CommittedEpochs = append(s.CommittedEpochs, st.CommittedEpochs()...)
	s.HasLrtq = st.Lrtq != nil
	if st.Expunged != nil {
		e := *st.Expunged
		s.Expunged = &e
	}
	for _, p := range a.peers.peers() {
		c, _ := a.peers.current(p)
		s.ConnectedPeers = append(s.ConnectedPeers, PeerConn{ID: p, ConnID: c.ID(), Remote: c.Remote(), Dialed: c.Dialed(), Since: c.Since()})
	}
	slices.SortFunc(s.ConnectedPeers, func(x, y PeerConn) int { return x.ID.Compare(y.ID) })
	s.Ledger.Generation = a.gen
	present := a.presentDirs()
	for _, d := range a.cfg.M2.Devices() {
		dir := filepath.Join(d.Path, LedgerDir)
		s.Ledger.Devices = append(s.Ledger.Devices, LedgerDevice{
			Path: d.Path, Present: slices.Contains(present, dir), Generation: a.devGen[dir], Error: a.devErr[dir],
		})
	}
	return s
}

package trustquorum

import (
	"fmt"
	"io"
	"slices"

	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// LrtqThreshold is the threshold LRTQ used for n initial members.
func LrtqThreshold(n int) uint8 { return uint8(n/2 + 1) }

// NewLrtqPackages performs the LRTQ rack setup split: one secret, 255
// shares with K = N/2+1, and for each initial member (in sorted order) a
// package holding its own share, all 255 digests and its 255/N-1 spare
// shares encrypted under a key derived from the secret.
func NewLrtqPackages(rand io.Reader, rack RackID, members []BaseboardID) (map[BaseboardID]*LrtqSharePkg, error) {
	members = normaliseMembers(members)
	k := LrtqThreshold(len(members))
	if err := validateSizes(len(members), int(k)); err != nil {
		return nil, err
	}
	secret, err := tqcrypto.NewSecret(rand)
	if err != nil {
		return nil, err
	}
	defer secret.Zero()
	shares, err := tqcrypto.Split(secret, LrtqShares, int(k))
	if err != nil {
		return nil, err
	}
	digests := make([]tqcrypto.Digest, LrtqShares)
	for _, s := range shares {
		digests[s.X()-1] = s.Digest()
	}
	per := LrtqShares / len(members)
	out := map[BaseboardID]*LrtqSharePkg{}
	for i, m := range members {
		mine := shares[i*per : (i+1)*per]
		enc, err := tqcrypto.SealSpareShares(rand, secret, rack, m.String(), mine[1:])
		if err != nil {
			return nil, err
		}
		out[m] = &LrtqSharePkg{
			RackID:       rack,
			Threshold:    k,
			Share:        mine[0],
			ShareDigests: digests,
			Spares:       &EncryptedRackSecrets{Salt: enc.Salt, Ciphertext: enc.Ciphertext},
			Handouts:     map[BaseboardID]uint8{},
		}
	}
	return out, nil
}

// InitLrtq performs LRTQ rack setup from this node (the rack-setup sled):
// it keeps its own package and sends every other initial member its
// package, re-sending until each acknowledges. All packages are persisted
// (PersistentState.LrtqSetup) before any is sent, and a node restarted from
// that ledger resumes sending by itself. Asking again with the same rack and
// members is a no-op, so the rack-setup service may retry after a restart.
func (n *Node) InitLrtq(ctx *NodeCtx, rack RackID, members []BaseboardID) error {
	st := &ctx.state
	if st.Expunged != nil {
		return epochErr(ErrExpunged, LrtqEpoch, st.Expunged.Epoch)
	}
	members = normaliseMembers(members)
	if ls := st.LrtqSetup; ls != nil && ls.RackID == rack && slices.Equal(ls.Members, members) {
		return nil
	}
	if st.Lrtq != nil || st.LatestConfig() != nil || n.coord != nil {
		return ErrAlreadyInitialized
	}
	if _, ok := slices.BinarySearchFunc(members, n.id, BaseboardID.Compare); !ok {
		return ErrNotAMember
	}
	pkgs, err := NewLrtqPackages(n.rand, rack, members)
	if err != nil {
		return err
	}
	st.Lrtq = pkgs[n.id]
	delete(pkgs, n.id)
	st.LrtqSetup = &LrtqSetup{RackID: rack, Members: members, Pending: pkgs}
	ctx.changed = true
	n.lrtqInit = lrtqInitPending
	for _, m := range members {
		n.request(ctx, m, LrtqInitMsg{})
	}
	return nil
}

// lrtqInitStatus mirrors the persisted LrtqSetup for LrtqInitDone, which
// has no context to read it from.
type lrtqInitStatus int

const (
	lrtqInitNone lrtqInitStatus = iota
	lrtqInitPending
	lrtqInitDone
)

func lrtqInitStatusOf(st *PersistentState) lrtqInitStatus {
	switch {
	case st.LrtqSetup == nil:
		return lrtqInitNone
	case len(st.LrtqSetup.Pending) > 0:
		return lrtqInitPending
	}
	return lrtqInitDone
}

// LrtqInitDone reports whether this node performed LRTQ rack setup and every
// initial member acknowledged its package, or the rack has since moved to
// the trust quorum, which makes the packages moot (also after a restart).
func (n *Node) LrtqInitDone() bool {
	return n.lrtqInit == lrtqInitDone
}

func (n *Node) handleLrtqInitAck(ctx *NodeCtx, from BaseboardID) {
	ls := ctx.state.LrtqSetup
	if ls == nil {
		return
	}
	p, ok := ls.Pending[from]
	if !ok {
		return
	}
	// The member persisted its package before acking; this copy of its
	// share is no longer needed and must not outlive the setup.
	delete(ls.Pending, from)
	p.Share.Zero()
	ctx.changed = true
	n.lrtqInit = lrtqInitStatusOf(&ctx.state)
}

// LearnLrtq makes a sled added to an LRTQ rack ask initial members, one at
// a time, for a package until one arrives. The rack id comes with the
// request to add the sled; the learner has no other way to know it.
func (n *Node) LearnLrtq(ctx *NodeCtx, rack RackID) error {
	st := &ctx.state
	if st.Lrtq != nil || st.LatestConfig() != nil {
		return ErrAlreadyInitialized
	}
	if n.learning == nil {
		n.learning = &learnState{rack: rack}
		n.learnTick(ctx)
	}
	return nil
}

// learnTick moves the learner on to the next connected peer when the
// current one is gone or has not answered within its back-off.
func (n *Node) learnTick(ctx *NodeCtx) {
	le := n.learning
	if ctx.state.Lrtq != nil {
		n.learning = nil
		return
	}
	if le.peer != (BaseboardID{}) && ctx.connected[le.peer] {
		if r := n.retries[le.peer]; r != nil && n.now < r.next {
			return
		}
	}
	peers := ctx.connectedPeers()
	if len(peers) == 0 {
		le.peer = BaseboardID{}
		return
	}
	next := peers[0]
	for _, p := range peers {
		if p.Compare(le.peer) > 0 {
			next = p
			break
		}
	}
	le.peer = next
	n.request(ctx, next, LrtqLearnMsg{})
	// The rotation is timed by the current peer's retry.
	n.retries[next] = &retryState{backoff: n.retryBase, next: n.now + Instant(n.retryBase)}
}

func (n *Node) handleLrtqInit(ctx *NodeCtx, from BaseboardID, rack RackID, m LrtqInitMsg) {
	st := &ctx.state
	p := m.Pkg
	if p == nil || p.RackID != rack || p.Spares == nil || len(p.ShareDigests) != LrtqShares || p.VerifyShare(p.Share) != nil {
		return
	}
	ack := PeerMsg{RackID: rack, Body: LrtqInitAckMsg{}}
	if st.Lrtq != nil {
		if st.Lrtq.Share.Equal(p.Share) {
			ctx.send(from, ack) // a re-sent Init: ack again
		}
		return
	}
	if st.LatestConfig() != nil {
		return
	}
	st.Lrtq = clonePkg(p)
	st.Lrtq.Handouts = map[BaseboardID]uint8{}
	ctx.changed = true
	ctx.send(from, ack)
}

func clonePkg(p *LrtqSharePkg) *LrtqSharePkg {
	c := *p
	c.Share = p.Share.Clone()
	c.ShareDigests = slices.Clone(p.ShareDigests)
	if p.Spares != nil {
		s := *p.Spares
		s.Ciphertext = slices.Clone(s.Ciphertext)
		c.Spares = &s
	}
	c.Handouts = map[BaseboardID]uint8{}
	for k, v := range p.Handouts {
		c.Handouts[k] = v
	}
	return &c
}

func (n *Node) handleLrtqLearn(ctx *NodeCtx, from BaseboardID) {
	st := &ctx.state
	if st.Lrtq == nil || st.Lrtq.Spares == nil || st.LatestCommittedEpoch() != 0 {
		return
	}
	n.pendingLearners[from] = true
	if n.secrets[LrtqEpoch] != nil {
		n.serveLearners(ctx)
		return
	}
	// Handing out a spare needs the LRTQ secret, to open the spares.
	if n.load == nil {
		n.load = newLrtqCollector(st.Lrtq)
		n.load.add(n.id, st.Lrtq.Share)
		for _, peer := range ctx.connectedPeers() {
			n.request(ctx, peer, GetLrtqShareMsg{})
		}
	}
}

// serveLearners hands each waiting learner a spare share. The handout is
// recorded in the persistent state in the same step that queues the reply,
// so the driver's persist-before-send rule stores it before the learner can
// see it, and a learner asking twice gets the same share.
func (n *Node) serveLearners(ctx *NodeCtx) {
	st := &ctx.state
	secret := n.secrets[LrtqEpoch]
	if len(n.pendingLearners) == 0 || secret == nil || st.Lrtq == nil || st.Lrtq.Spares == nil {
		return
	}
	pkg := st.Lrtq
	spares, err := tqcrypto.OpenSpareShares(secret, pkg.RackID, n.id.String(),
		tqcrypto.EncryptedRackSecrets{Salt: pkg.Spares.Salt, Ciphertext: pkg.Spares.Ciphertext})
	if err != nil {
		ctx.raise(Alarm{Kind: AlarmRackSecretDecryptionFailed, Epoch: LrtqEpoch, Detail: "spare shares: " + err.Error()})
		return
	}
	defer func() {
		for _, s := range spares {
			s.Zero()
		}
	}()
	given := map[uint8]bool{}
	for _, x := range pkg.Handouts {
		given[x] = true
	}
	for _, learner := range sortedKeys(n.pendingLearners) {
		delete(n.pendingLearners, learner)
		x, ok := pkg.Handouts[learner]
		var share tqcrypto.Share
		for _, s := range spares {
			if (ok && s.X() == x) || (!ok && !given[s.X()]) {
				share = s
				break
			}
		}
		if share.IsZero() || pkg.VerifyShare(share) != nil {
			continue // out of spares; the learner will try another member
		}
		if !ok {
			pkg.Handouts[learner] = share.X()
			given[share.X()] = true
			ctx.changed = true
		}
		ctx.send(learner, PeerMsg{RackID: pkg.RackID, Body: LrtqLearnPkgMsg{Pkg: &LrtqSharePkg{
			RackID:       pkg.RackID,
			Threshold:    pkg.Threshold,
			Share:        share.Clone(),
			ShareDigests: slices.Clone(pkg.ShareDigests),
			Handouts:     map[BaseboardID]uint8{},
		}}})
	}
}

func (n *Node) handleLrtqLearnPkg(ctx *NodeCtx, from BaseboardID, rack RackID, m LrtqLearnPkgMsg) {
	st := &ctx.state
	p := m.Pkg
	if n.learning == nil || st.Lrtq != nil || st.LatestConfig() != nil || rack != n.learning.rack {
		return
	}
	if p == nil || p.RackID != rack || p.Spares != nil || len(p.ShareDigests) != LrtqShares || p.VerifyShare(p.Share) != nil {
		return
	}
	st.Lrtq = clonePkg(p)
	ctx.changed = true
	n.learning = nil
}

func (p *LrtqSharePkg) String() string {
	return fmt.Sprintf("LrtqSharePkg{rack=%s k=%d spares=%t handouts=%d}", p.RackID, p.Threshold, p.Spares != nil, len(p.Handouts))
}

package trustquorum

import (
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// HandleMessage processes a message from peer. from is the identity of the
// authenticated connection it arrived on. Messages for another rack, and
// every message once the node is expunged, are dropped.
func (n *Node) HandleMessage(ctx *NodeCtx, from BaseboardID, msg PeerMsg) {
	st := &ctx.state
	if st.Expunged != nil || from == n.id || msg.Body == nil {
		return
	}
	if rack, ok := st.RackID(); ok && rack != msg.RackID {
		return
	}
	if n.coord != nil && n.coord.msg.RackID != msg.RackID {
		return
	}
	switch b := msg.Body.(type) {
	case PrepareMsg:
		n.handlePrepare(ctx, from, msg.RackID, b)
	case PrepareAckMsg:
		n.handlePrepareAck(from, b)
	case GetShareMsg:
		n.handleGetShare(ctx, from, msg.RackID, b)
	case ShareMsg:
		n.handleShare(ctx, from, b)
	case GetLrtqShareMsg:
		n.handleGetLrtqShare(ctx, from, msg.RackID)
	case LrtqShareMsg:
		n.handleLrtqShare(ctx, from, b)
	case CommitAdvanceMsg:
		cfg := b.Config
		if cfg == nil || cfg.Validate() != nil || cfg.RackID != msg.RackID || !cfg.IsMember(from) {
			return
		}
		if !cfg.IsMember(n.id) {
			// Not ours to commit, but news: a newer epoch exists,
			// so an older coordination of ours was aborted.
			n.supersededBy(cfg.Epoch)
			return
		}
		_, _ = n.commitAdvance(ctx, cfg)
	case ExpungedMsg:
		n.handleExpunged(ctx, from, msg.RackID, b)
	case LrtqInitMsg:
		n.handleLrtqInit(ctx, from, msg.RackID, b)
	case LrtqInitAckMsg:
		n.handleLrtqInitAck(ctx, from)
	case LrtqLearnMsg:
		n.handleLrtqLearn(ctx, from)
	case LrtqLearnPkgMsg:
		n.handleLrtqLearnPkg(ctx, from, msg.RackID, b)
	}
}

func (n *Node) handlePrepare(ctx *NodeCtx, from BaseboardID, rack RackID, m PrepareMsg) {
	st := &ctx.state
	cfg := m.Config
	if cfg == nil || cfg.Validate() != nil || from != cfg.Coordinator || cfg.RackID != rack {
		return
	}
	me, ok := cfg.Member(n.id)
	if !ok || m.Share.IsZero() || tqcrypto.VerifyShare(m.Share, me.ShareDigest) != nil || m.Share.X() != me.X {
		return
	}
	if st.Lrtq == nil && st.LatestConfig() == nil && n.coord == nil && n.learning != nil {
		// A learner waiting for LRTQ that is added through the trust
		// quorum instead no longer needs a package.
		n.learning = nil
	}
	ack := PeerMsg{RackID: cfg.RackID, Body: PrepareAckMsg{Epoch: cfg.Epoch}}
	existing := st.Configs[cfg.Epoch]
	if existing != nil && !existing.Equal(cfg) {
		ctx.raise(Alarm{Kind: AlarmMismatchedConfigurations, Epoch: cfg.Epoch, Peer: from, Detail: "prepare differs from the held configuration"})
		return
	}
	if lc := st.LatestCommittedEpoch(); cfg.Epoch < lc || (cfg.Epoch == lc && existing == nil) {
		// A prepare for an epoch older than our commit: the coordinator
		// is behind, resending the prepare of an aborted (or already
		// superseded) epoch. Tell it about our commit so that it stops.
		// Always with CommitAdvance, even if it is not a member: a
		// coordinator of an aborted epoch may never have been a
		// committed member, and Expunged would lock it out of a rack
		// it was never part of. It learns its fate, if it has one, when
		// it asks for shares.
		if c := st.LatestCommittedConfig(); c != nil {
			ctx.send(from, PeerMsg{RackID: cfg.RackID, Body: CommitAdvanceMsg{Config: c.Clone()}})
		}
		return
	}
	if existing != nil {
		if _, ok := st.Shares[cfg.Epoch]; !ok {
			// We hold the configuration only because we learnt it
			// committed and are rebuilding our share: the prepare
			// hands it to us.
			st.Shares[cfg.Epoch] = m.Share.Clone()
			n.commit(ctx, cfg.Epoch)
		}
		ctx.send(from, ack)
		return
	}
	if c := n.coord; c != nil {
		switch {
		case c.epoch() == cfg.Epoch:
			// Someone else's configuration for the epoch we were
			// asked to coordinate: not ours to accept.
			return
		case c.epoch() < cfg.Epoch:
			n.cancelCoordination()
		}
		// A prepare of an older epoch than ours is persisted and acked
		// like any other (we have committed nothing newer): its
		// coordinator, which has not heard of our epoch, would
		// otherwise resend it to us for good.
	}
	st.Configs[cfg.Epoch] = cfg.Clone()
	st.Shares[cfg.Epoch] = m.Share.Clone()
	ctx.changed = true
	ctx.send(from, ack)
}

// supersededBy cancels a coordination of an epoch older than e: Nexus
// starts a new epoch only after giving up the previous one, so there is no
// point in resending its prepares or collecting for it.
func (n *Node) supersededBy(e Epoch) {
	if n.coord != nil && n.coord.epoch() < e {
		n.cancelCoordination()
	}
}

// replyNewer tells a peer that asked about an old epoch about our latest
// committed one: CommitAdvance if it is a member, Expunged if not.
func (n *Node) replyNewer(ctx *NodeCtx, to BaseboardID, rack RackID) {
	cfg := ctx.state.LatestCommittedConfig()
	if cfg == nil {
		return
	}
	if cfg.IsMember(to) {
		ctx.send(to, PeerMsg{RackID: rack, Body: CommitAdvanceMsg{Config: cfg.Clone()}})
	} else {
		ctx.send(to, PeerMsg{RackID: rack, Body: ExpungedMsg{Epoch: cfg.Epoch, Config: cfg.Clone()}})
	}
}

func (n *Node) handlePrepareAck(from BaseboardID, m PrepareAckMsg) {
	if c := n.coord; c != nil && c.config != nil && c.config.Epoch == m.Epoch && c.config.IsMember(from) {
		c.acked[from] = true
	}
}

func (n *Node) handleGetShare(ctx *NodeCtx, from BaseboardID, rack RackID, m GetShareMsg) {
	st := &ctx.state
	lc := st.LatestCommittedEpoch()
	if lc > m.Epoch || (lc == m.Epoch && !st.Configs[lc].IsMember(from)) {
		n.replyNewer(ctx, from, rack)
		return
	}
	cfg := st.Configs[m.Epoch]
	if cfg == nil || !cfg.IsMember(from) {
		// Unknown to us, or not committed: no grounds to call the
		// requester expunged. It will ask again.
		return
	}
	if s, ok := st.Shares[m.Epoch]; ok {
		// Shares of prepared but not yet committed epochs are sent too:
		// a requester only asks for an epoch it knows is committed.
		ctx.send(from, PeerMsg{RackID: rack, Body: ShareMsg{Epoch: m.Epoch, Share: s.Clone()}})
	}
}

func (n *Node) handleShare(ctx *NodeCtx, from BaseboardID, m ShareMsg) {
	if c := n.coord; c != nil && c.collect != nil && !c.upgrade && c.collect.epoch == m.Epoch {
		if c.collect.add(from, m.Share) {
			_ = n.maybeFinishCollect(ctx)
		}
	}
	if r := n.rebuild; r != nil && r.epoch == m.Epoch {
		if r.add(from, m.Share) {
			n.maybeFinishRebuild(ctx)
		}
	}
	if l := n.load; l != nil && l.config != nil && l.epoch == m.Epoch {
		if l.add(from, m.Share) {
			_ = n.maybeFinishLoad(ctx)
		}
	}
}

func (n *Node) handleGetLrtqShare(ctx *NodeCtx, from BaseboardID, rack RackID) {
	st := &ctx.state
	if st.LatestCommittedEpoch() != 0 {
		// Already on the trust quorum: the asker is behind. A member
		// added since LRTQ holds no LRTQ share but knows this as well.
		n.replyNewer(ctx, from, rack)
		return
	}
	if st.Lrtq == nil {
		return
	}
	ctx.send(from, PeerMsg{RackID: rack, Body: LrtqShareMsg{Share: st.Lrtq.Share.Clone()}})
}

func (n *Node) handleLrtqShare(ctx *NodeCtx, from BaseboardID, m LrtqShareMsg) {
	if c := n.coord; c != nil && c.collect != nil && c.upgrade {
		if c.collect.add(from, m.Share) {
			_ = n.maybeFinishCollect(ctx)
		}
	}
	if l := n.load; l != nil && l.config == nil {
		if l.add(from, m.Share) {
			_ = n.maybeFinishLoad(ctx)
		}
	}
}

// handleExpunged accepts Expunged only when it is news and comes from the
// right sled: the node must hold some configuration (LRTQ counts as epoch
// 1) — a sled with none was never part of the rack and cannot be removed
// from it — and the message must carry a configuration newer than anything
// the node has seen, that lists the sender and not the node. Anything else
// is a stale or confused reply and must not lock the node out for good.
func (n *Node) handleExpunged(ctx *NodeCtx, from BaseboardID, rack RackID, m ExpungedMsg) {
	st := &ctx.state
	seen := n.latestEpochSeen(ctx)
	cfg := m.Config
	if seen == 0 || cfg == nil || cfg.Epoch != m.Epoch || cfg.RackID != rack || cfg.Validate() != nil {
		return
	}
	if cfg.Epoch <= seen || !cfg.IsMember(from) || cfg.IsMember(n.id) {
		return
	}
	st.Expunged = &ExpungedMarker{Epoch: m.Epoch, From: from}
	ctx.changed = true
	n.stopEverything()
}

func (n *Node) stopEverything() {
	n.cancelCoordination()
	if n.rebuild != nil {
		n.rebuild.zero()
		n.rebuild = nil
	}
	if n.load != nil {
		n.load.zero()
		n.load = nil
	}
	for e, s := range n.secrets {
		s.Zero()
		delete(n.secrets, e)
	}
	n.learning = nil
	clear(n.pendingLearners)
	clear(n.retries)
}

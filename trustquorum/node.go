package trustquorum

import (
	"fmt"
	"io"
	"slices"

	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// Config configures a Node.
type Config struct {
	// Rand supplies every random byte the node uses (rack secrets, salts).
	// Tests pass a seeded generator; production passes crypto/rand.Reader.
	Rand io.Reader
	// RetryBase is the first re-send delay toward a peer; it doubles up to
	// RetryMax while the peer stays silent. Defaults 1s and 16s.
	RetryBase Duration
	RetryMax  Duration
}

// ReconfigureMsg is Nexus's request to coordinate a new configuration.
type ReconfigureMsg struct {
	RackID RackID
	Epoch  Epoch
	// LastCommittedEpoch is the epoch Nexus knows to be committed, 0 if none.
	LastCommittedEpoch Epoch
	Members            []BaseboardID
	Threshold          uint8
}

// LrtqUpgradeMsg is Nexus's request to move an LRTQ rack to the trust
// quorum.
type LrtqUpgradeMsg struct {
	RackID    RackID
	Epoch     Epoch
	Members   []BaseboardID
	Threshold uint8
}

// CommitStatus is the outcome of Commit and PrepareAndCommit.
type CommitStatus int

// Commit outcomes.
const (
	// CommitCommitted: the epoch is committed at this node (now or before).
	CommitCommitted CommitStatus = iota + 1
	// CommitPending: the node is rebuilding its share; ask again later.
	CommitPending
	// CommitStale: the node already committed a newer epoch.
	CommitStale
)

func (s CommitStatus) String() string {
	switch s {
	case CommitCommitted:
		return "committed"
	case CommitPending:
		return "pending"
	case CommitStale:
		return "stale"
	}
	return "unknown"
}

// Node is the trust-quorum state machine of one sled. It does no I/O: the
// driver calls its methods one at a time with the same NodeCtx and then acts
// on the context (persist, send). See the package documentation.
type Node struct {
	id        BaseboardID
	rand      io.Reader
	retryBase Duration
	retryMax  Duration
	now       Instant

	coord   *coordination
	rebuild *collector // our share of an epoch known committed
	load    *collector // shares of the latest committed epoch (or LRTQ)
	// learners waiting for the LRTQ secret so a spare can be handed out.
	pendingLearners map[BaseboardID]bool
	learning        *learnState
	lrtqInit        lrtqInitStatus

	secrets map[Epoch]*tqcrypto.Secret
	retries map[BaseboardID]*retryState
}

type coordination struct {
	msg     ReconfigureMsg
	upgrade bool
	collect *collector // nil once preparing
	// set once preparing:
	config *Configuration
	shares map[BaseboardID]tqcrypto.Share
	acked  map[BaseboardID]bool
}

func (c *coordination) epoch() Epoch { return c.msg.Epoch }

type learnState struct {
	rack RackID
	peer BaseboardID // the member currently asked
}

type retryState struct {
	next    Instant
	backoff Duration
}

// NewNode returns a node for the state in ctx. A node restarted from its
// ledger resumes what the ledger implies (rebuilding a share of an epoch it
// knows is committed, handing out unacknowledged LRTQ setup packages) and
// nothing else: coordination, secret loading and learning are volatile and
// must be asked for again.
func NewNode(ctx *NodeCtx, cfg Config) *Node {
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = Second
	}
	if cfg.RetryMax < cfg.RetryBase {
		cfg.RetryMax = 16 * cfg.RetryBase
	}
	n := &Node{
		id:              ctx.id,
		rand:            cfg.Rand,
		retryBase:       cfg.RetryBase,
		retryMax:        cfg.RetryMax,
		pendingLearners: map[BaseboardID]bool{},
		secrets:         map[Epoch]*tqcrypto.Secret{},
		retries:         map[BaseboardID]*retryState{},
	}
	st := &ctx.state
	// A ledger written before pruning (state version 1) still holds the
	// whole history; it is pruned now and stored pruned by the next
	// persist.
	if prune(st) {
		ctx.changed = true
	}
	// Unacknowledged LRTQ packages are re-sent as peers connect.
	n.lrtqInit = lrtqInitStatusOf(st)
	if e := st.LatestCommittedEpoch(); e != 0 && !st.Prepared(e) {
		ctx.raise(Alarm{Kind: AlarmCommittedConfigurationLost, Epoch: e, Detail: "commit without configuration or share"})
	}
	// A configuration without a share is only ever stored when the node
	// learnt that the epoch committed (CommitAdvance, PrepareAndCommit), so
	// the rebuild can resume without waiting for Nexus to ask again. The
	// newest such epoch is the one to rebuild, even if a later epoch has
	// been prepared since (that one may yet be aborted).
	if st.Expunged == nil {
		if e := pendingRebuild(st); e != 0 {
			n.rebuild = newCollector(st.Configs[e])
		}
	}
	return n
}

// pendingRebuild returns the newest epoch above the latest commit whose
// configuration the node holds without its share, 0 if none.
func pendingRebuild(st *PersistentState) Epoch {
	lc := st.LatestCommittedEpoch()
	var best Epoch
	for e := range st.Configs {
		if _, ok := st.Shares[e]; !ok && e > lc && e > best {
			best = e
		}
	}
	return best
}

// ID returns the node's identity.
func (n *Node) ID() BaseboardID { return n.id }

// ---------------------------------------------------------------------------
// API calls.

// CoordinateReconfiguration starts coordinating a new configuration. See the
// package documentation for the checks.
func (n *Node) CoordinateReconfiguration(ctx *NodeCtx, msg ReconfigureMsg) error {
	st := &ctx.state
	msg.Members = normaliseMembers(msg.Members)
	if err := n.checkCoordinate(ctx, msg.RackID, msg.Epoch, msg.Members, msg.Threshold); err != nil {
		return err
	}
	if done, err := n.sameCoordination(ctx, msg, false); done || err != nil {
		return err
	}
	if st.LrtqOnly() {
		return ErrUpgradeFromLrtqRequired
	}
	lc := st.LatestCommittedEpoch()
	if msg.LastCommittedEpoch != lc {
		return epochErr(ErrLastCommittedEpochMismatch, msg.LastCommittedEpoch, lc)
	}
	if n.rebuild != nil {
		return epochErr(ErrRebuildInProgress, msg.Epoch, n.rebuild.epoch)
	}
	if seen := n.latestEpochSeen(ctx); msg.Epoch <= seen {
		return epochErr(ErrStaleEpoch, msg.Epoch, seen)
	}
	n.cancelCoordination()
	n.coord = &coordination{msg: msg}
	if lc == 0 {
		// The first configuration of a rack has no older secret to
		// collect.
		return n.prepare(ctx, nil)
	}
	last := st.Configs[lc]
	n.coord.collect = newCollector(last)
	n.coord.collect.add(n.id, st.Shares[lc])
	if err := n.maybeFinishCollect(ctx); err != nil {
		return err
	}
	for _, peer := range last.MemberIDs() {
		n.request(ctx, peer, GetShareMsg{Epoch: lc})
	}
	return nil
}

// CoordinateUpgradeFromLrtq starts coordinating the first trust-quorum
// configuration of an LRTQ rack; it collects LRTQ shares instead of the
// shares of a committed epoch and encrypts only the LRTQ secret.
func (n *Node) CoordinateUpgradeFromLrtq(ctx *NodeCtx, msg LrtqUpgradeMsg) error {
	st := &ctx.state
	rm := ReconfigureMsg{RackID: msg.RackID, Epoch: msg.Epoch, Members: normaliseMembers(msg.Members), Threshold: msg.Threshold}
	if err := n.checkCoordinate(ctx, rm.RackID, rm.Epoch, rm.Members, rm.Threshold); err != nil {
		return err
	}
	if msg.Epoch <= LrtqEpoch {
		return epochErr(ErrStaleEpoch, msg.Epoch, LrtqEpoch)
	}
	if done, err := n.sameCoordination(ctx, rm, true); done || err != nil {
		return err
	}
	if st.Lrtq == nil && !st.LrtqRetired {
		return ErrNoLrtq
	}
	if lc := st.LatestCommittedEpoch(); lc != 0 {
		return epochErr(ErrAlreadyUpgraded, msg.Epoch, lc)
	}
	if n.rebuild != nil {
		return epochErr(ErrRebuildInProgress, msg.Epoch, n.rebuild.epoch)
	}
	if seen := n.latestEpochSeen(ctx); msg.Epoch <= seen {
		return epochErr(ErrStaleEpoch, msg.Epoch, seen)
	}
	n.cancelCoordination()
	n.coord = &coordination{msg: rm, upgrade: true, collect: newLrtqCollector(st.Lrtq)}
	n.coord.collect.add(n.id, st.Lrtq.Share)
	if err := n.maybeFinishCollect(ctx); err != nil {
		return err
	}
	// LRTQ shares are held by every initial member and learner, and the
	// new membership may include fewer than K of them (or none but this
	// node); LRTQ records no membership, so ask every peer.
	for _, peer := range ctx.connectedPeers() {
		n.request(ctx, peer, GetLrtqShareMsg{})
	}
	return nil
}

func normaliseMembers(m []BaseboardID) []BaseboardID {
	m = slices.Clone(m)
	sortIDs(m)
	return m
}

func (n *Node) checkCoordinate(ctx *NodeCtx, rack RackID, epoch Epoch, members []BaseboardID, k uint8) error {
	st := &ctx.state
	if st.Expunged != nil {
		return epochErr(ErrExpunged, epoch, st.Expunged.Epoch)
	}
	if err := validateSizes(len(members), int(k)); err != nil {
		return err
	}
	for i, m := range members {
		if !m.valid() || (i > 0 && members[i-1] == m) {
			return fmt.Errorf("%w: member ids must be distinct and non-empty", ErrInvalidMembership)
		}
	}
	if _, ok := slices.BinarySearchFunc(members, n.id, BaseboardID.Compare); !ok {
		return ErrNotAMember
	}
	if r, ok := st.RackID(); ok && r != rack {
		return ErrRackIDMismatch
	}
	return nil
}

// sameCoordination implements idempotency: an identical request for the
// epoch being (or already) coordinated is a no-op, a different one is an
// error.
func (n *Node) sameCoordination(ctx *NodeCtx, msg ReconfigureMsg, upgrade bool) (bool, error) {
	if c := n.coord; c != nil && c.epoch() == msg.Epoch {
		if c.upgrade == upgrade && c.msg.RackID == msg.RackID && c.msg.LastCommittedEpoch == msg.LastCommittedEpoch &&
			c.msg.Threshold == msg.Threshold && slices.Equal(c.msg.Members, msg.Members) {
			return true, nil
		}
		return true, epochErr(ErrConflictingReconfiguration, msg.Epoch, c.epoch())
	}
	if cfg := ctx.state.Configs[msg.Epoch]; cfg != nil && msg.Epoch > ctx.state.LatestCommittedEpoch() {
		if cfg.Coordinator == n.id && cfg.Threshold == msg.Threshold && slices.Equal(cfg.MemberIDs(), msg.Members) {
			// Persisted by an earlier incarnation of this coordinator.
			// The other members' shares died with it, so there is
			// nothing to resume; Nexus sees "not coordinating" and
			// moves on to a newer epoch.
			return true, nil
		}
		return true, epochErr(ErrConflictingReconfiguration, msg.Epoch, cfg.Epoch)
	}
	return false, nil
}

func (n *Node) latestEpochSeen(ctx *NodeCtx) Epoch {
	e := ctx.state.LatestEpochSeen()
	if n.coord != nil {
		e = max(e, n.coord.epoch())
	}
	return e
}

func (n *Node) cancelCoordination() {
	if c := n.coord; c != nil {
		if c.collect != nil {
			c.collect.zero()
		}
		for _, s := range c.shares {
			s.Zero()
		}
		n.coord = nil
	}
}

// maybeFinishCollect moves a coordination whose collector is complete on to
// the prepare phase.
func (n *Node) maybeFinishCollect(ctx *NodeCtx) error {
	c := n.coord
	if c == nil || c.collect == nil || !c.collect.done() {
		return nil
	}
	k := c.collect.threshold()
	secret, err := tqcrypto.Combine(c.collect.list(), k)
	collected := c.collect
	c.collect = nil
	defer collected.zero()
	if err != nil {
		ctx.raise(Alarm{Kind: AlarmReconstructionFailed, Epoch: collected.epoch, Detail: err.Error()})
		n.cancelCoordination()
		return fmt.Errorf("%w: %v", ErrSecretUnavailable, err)
	}
	defer secret.Zero()
	var olds []tqcrypto.EpochSecret
	if c.upgrade {
		olds = []tqcrypto.EpochSecret{{Epoch: uint64(LrtqEpoch), Secret: secret.Clone()}}
	} else {
		olds, err = n.secretChain(ctx, collected.config, secret)
		if err != nil {
			n.cancelCoordination()
			return err
		}
	}
	defer tqcrypto.ZeroAll(olds)
	return n.prepare(ctx, olds)
}

// secretChain returns every committed secret up to and including cfg's,
// decrypting the older ones with cfg's secret. A failure raises the alarm.
func (n *Node) secretChain(ctx *NodeCtx, cfg *Configuration, secret *tqcrypto.Secret) ([]tqcrypto.EpochSecret, error) {
	var olds []tqcrypto.EpochSecret
	if enc := cfg.EncryptedRackSecrets; enc != nil {
		var err error
		olds, err = tqcrypto.DecryptRackSecrets(secret, cfg.RackID, uint64(cfg.Epoch),
			tqcrypto.EncryptedRackSecrets{Salt: enc.Salt, Ciphertext: enc.Ciphertext})
		if err != nil {
			ctx.raise(Alarm{Kind: AlarmRackSecretDecryptionFailed, Epoch: cfg.Epoch, Detail: err.Error()})
			return nil, fmt.Errorf("%w: %v", ErrSecretUnavailable, err)
		}
	}
	return append(olds, tqcrypto.EpochSecret{Epoch: uint64(cfg.Epoch), Secret: secret.Clone()}), nil
}

// prepare makes the new secret, shares and configuration, persists our own
// share and the configuration, and sends Prepare to every other member.
func (n *Node) prepare(ctx *NodeCtx, olds []tqcrypto.EpochSecret) error {
	c := n.coord
	msg := c.msg
	secret, err := tqcrypto.NewSecret(n.rand)
	if err != nil {
		n.cancelCoordination()
		return err
	}
	defer secret.Zero()
	shares, err := tqcrypto.Split(secret, len(msg.Members), int(msg.Threshold))
	if err != nil {
		n.cancelCoordination()
		return err
	}
	cfg := &Configuration{RackID: msg.RackID, Epoch: msg.Epoch, Coordinator: n.id, Threshold: msg.Threshold}
	c.shares = map[BaseboardID]tqcrypto.Share{}
	for i, id := range msg.Members {
		cfg.Members = append(cfg.Members, Member{ID: id, ShareDigest: shares[i].Digest(), X: shares[i].X()})
		c.shares[id] = shares[i]
	}
	if len(olds) > 0 {
		enc, err := tqcrypto.EncryptRackSecrets(n.rand, secret, msg.RackID, uint64(msg.Epoch), olds)
		if err != nil {
			n.cancelCoordination()
			return err
		}
		cfg.EncryptedRackSecrets = &EncryptedRackSecrets{Salt: enc.Salt, Ciphertext: enc.Ciphertext}
	}
	c.config = cfg
	c.acked = map[BaseboardID]bool{n.id: true}
	ctx.state.Configs[cfg.Epoch] = cfg
	ctx.state.Shares[cfg.Epoch] = c.shares[n.id].Clone()
	ctx.changed = true
	for _, peer := range msg.Members {
		n.request(ctx, peer, PrepareMsg{})
	}
	return nil
}

// Commit commits a prepared epoch.
func (n *Node) Commit(ctx *NodeCtx, rack RackID, epoch Epoch) (CommitStatus, error) {
	st := &ctx.state
	if st.Expunged != nil {
		return 0, epochErr(ErrExpunged, epoch, st.Expunged.Epoch)
	}
	if r, ok := st.RackID(); ok && r != rack {
		return 0, ErrRackIDMismatch
	}
	lc := st.LatestCommittedEpoch()
	switch {
	case epoch < lc:
		return CommitStale, nil
	case epoch == lc:
		return CommitCommitted, nil
	case !st.Prepared(epoch):
		return 0, epochErr(ErrNotPrepared, epoch, st.LatestEpochSeen())
	}
	n.commit(ctx, epoch)
	return CommitCommitted, nil
}

func (n *Node) commit(ctx *NodeCtx, epoch Epoch) {
	ctx.state.Commits[epoch] = true
	ctx.changed = true
	prune(&ctx.state)
	n.lrtqInit = lrtqInitStatusOf(&ctx.state)
	if n.coord != nil && n.coord.epoch() <= epoch {
		n.cancelCoordination()
	}
	if n.rebuild != nil && n.rebuild.epoch <= epoch {
		n.rebuild.zero()
		n.rebuild = nil
	}
	if n.load != nil && n.load.epoch < epoch {
		// Loading an older epoch is pointless now; the caller's next
		// LoadRackSecret starts on the new one.
		n.load.zero()
		n.load = nil
	}
}

// prune drops from st what the protocol can no longer use once its latest
// commit L is in (see PersistentState): every configuration and share of an
// epoch below L, whether committed or aborted, and all LRTQ shares. It
// reports whether it dropped anything.
//
// Nothing dropped is ever asked for again. A GetShare or GetLrtqShare for
// an epoch below L is answered from L alone (CommitAdvance to a member of
// L, which then commits L or rebuilds its share of L from L's members;
// Expunged to anyone else), and a Prepare or CommitAdvance of an older
// epoch is stale by the same comparison; a coordinator of the next epoch
// collects shares of L itself, and the secrets of every epoch up to L
// travel encrypted in L's configuration. Epochs above L stay: one may be
// committed by Nexus already and asked for by the next coordinator.
func prune(st *PersistentState) bool {
	lc := st.LatestCommittedEpoch()
	if lc == 0 {
		return false
	}
	dropped := false
	for e := range st.Configs {
		if e < lc {
			delete(st.Configs, e)
			dropped = true
		}
	}
	for e, s := range st.Shares {
		if e < lc {
			s.Zero()
			delete(st.Shares, e)
			dropped = true
		}
	}
	if p := st.Lrtq; p != nil {
		p.Share.Zero()
		st.Lrtq = nil
		st.LrtqRetired = true
		dropped = true
	}
	if ls := st.LrtqSetup; ls != nil && len(ls.Pending) > 0 {
		for _, p := range ls.Pending {
			p.Share.Zero()
		}
		clear(ls.Pending)
		dropped = true
	}
	return dropped
}

// PrepareAndCommit commits cfg at a member that never saw its Prepare: the
// node stores the configuration, rebuilds its share from K other members
// and then commits. It returns CommitPending until that is done.
func (n *Node) PrepareAndCommit(ctx *NodeCtx, cfg *Configuration) (CommitStatus, error) {
	st := &ctx.state
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	if st.Expunged != nil {
		return 0, epochErr(ErrExpunged, cfg.Epoch, st.Expunged.Epoch)
	}
	if r, ok := st.RackID(); ok && r != cfg.RackID {
		return 0, ErrRackIDMismatch
	}
	if !cfg.IsMember(n.id) {
		return 0, ErrNotAMember
	}
	return n.commitAdvance(ctx, cfg)
}

// commitAdvance is the shared path of PrepareAndCommit and CommitAdvanceMsg.
func (n *Node) commitAdvance(ctx *NodeCtx, cfg *Configuration) (CommitStatus, error) {
	st := &ctx.state
	lc := st.LatestCommittedEpoch()
	if existing := st.Configs[cfg.Epoch]; existing != nil && !existing.Equal(cfg) {
		ctx.raise(Alarm{Kind: AlarmMismatchedConfigurations, Epoch: cfg.Epoch, Detail: "committed configuration differs from the held one"})
		return 0, epochErr(ErrMismatchedConfiguration, cfg.Epoch, cfg.Epoch)
	}
	switch {
	case cfg.Epoch < lc:
		return CommitStale, nil
	case cfg.Epoch == lc:
		return CommitCommitted, nil
	case st.Prepared(cfg.Epoch):
		n.commit(ctx, cfg.Epoch)
		return CommitCommitted, nil
	}
	if n.rebuild != nil && n.rebuild.epoch >= cfg.Epoch {
		// Already rebuilding this epoch, or a newer committed one (a
		// late CommitAdvance or a Nexus behind us): a rebuild never
		// goes back to an older epoch.
		return CommitPending, nil
	}
	if st.Configs[cfg.Epoch] == nil {
		st.Configs[cfg.Epoch] = cfg.Clone()
		ctx.changed = true
	}
	// A node never coordinates while rebuilding: whatever it coordinated
	// was built on an epoch older than this committed one.
	n.cancelCoordination()
	if n.rebuild != nil {
		n.rebuild.zero()
	}
	n.rebuild = newCollector(st.Configs[cfg.Epoch])
	for _, peer := range cfg.MemberIDs() {
		n.request(ctx, peer, GetShareMsg{Epoch: cfg.Epoch})
	}
	return CommitPending, nil
}

// maybeFinishRebuild rebuilds our share once K verified shares are in, then
// persists it with the commit.
func (n *Node) maybeFinishRebuild(ctx *NodeCtx) {
	r := n.rebuild
	if r == nil || !r.done() {
		return
	}
	n.rebuild = nil
	defer r.zero()
	me, _ := r.config.Member(n.id)
	share, err := tqcrypto.Rebuild(r.list(), r.threshold(), me.X, me.ShareDigest)
	if err != nil {
		ctx.raise(Alarm{Kind: AlarmShareRebuildFailed, Epoch: r.epoch, Detail: err.Error()})
		return
	}
	ctx.state.Shares[r.epoch] = share
	n.commit(ctx, r.epoch)
}

// LoadRackSecret returns the rack secret of epoch once K verified shares of
// the latest committed epoch are in. Until then it returns pending=true and
// keeps collecting; call again (for instance after the next Tick).
func (n *Node) LoadRackSecret(ctx *NodeCtx, epoch Epoch) (secret *tqcrypto.Secret, pending bool, err error) {
	st := &ctx.state
	if st.Expunged != nil {
		return nil, false, epochErr(ErrExpunged, epoch, st.Expunged.Epoch)
	}
	lc := st.LatestCommittedEpoch()
	var latest Epoch
	switch {
	case lc != 0:
		latest = lc
	case st.Lrtq != nil:
		latest = LrtqEpoch
	default:
		return nil, false, ErrNotInitialized
	}
	if epoch > latest || epoch == 0 {
		return nil, false, epochErr(ErrNotCommitted, epoch, latest)
	}
	s, ok := n.secrets[latest]
	if !ok {
		if n.load == nil || n.load.epoch != latest {
			if n.load != nil {
				n.load.zero()
			}
			if latest == lc {
				n.load = newCollector(st.Configs[lc])
				n.load.add(n.id, st.Shares[lc])
			} else {
				n.load = newLrtqCollector(st.Lrtq)
				n.load.add(n.id, st.Lrtq.Share)
			}
			var req MsgBody = GetShareMsg{Epoch: latest}
			if latest != lc {
				req = GetLrtqShareMsg{}
			}
			for _, peer := range n.loadPeers(ctx) {
				n.request(ctx, peer, req)
			}
		}
		if err := n.maybeFinishLoad(ctx); err != nil {
			return nil, false, err
		}
		if s, ok = n.secrets[latest]; !ok {
			return nil, true, nil
		}
	}
	if epoch == latest {
		return s.Clone(), false, nil
	}
	chain, err := n.secretChain(ctx, st.Configs[latest], s)
	if err != nil {
		return nil, false, err
	}
	defer tqcrypto.ZeroAll(chain)
	for _, es := range chain {
		if Epoch(es.Epoch) == epoch {
			return es.Secret.Clone(), false, nil
		}
	}
	return nil, false, epochErr(ErrUnknownEpoch, epoch, latest)
}

// loadPeers are the peers asked for shares while loading: the members of the
// epoch, or for LRTQ (whose membership is not recorded) every connected peer.
func (n *Node) loadPeers(ctx *NodeCtx) []BaseboardID {
	if n.load.config != nil {
		return n.load.config.MemberIDs()
	}
	return ctx.connectedPeers()
}

func (n *Node) maybeFinishLoad(ctx *NodeCtx) error {
	l := n.load
	if l == nil || !l.done() {
		return nil
	}
	n.load = nil
	defer l.zero()
	secret, err := tqcrypto.Combine(l.list(), l.threshold())
	if err != nil {
		ctx.raise(Alarm{Kind: AlarmReconstructionFailed, Epoch: l.epoch, Detail: err.Error()})
		return fmt.Errorf("%w: %v", ErrSecretUnavailable, err)
	}
	if l.config != nil && l.config.EncryptedRackSecrets != nil {
		// Decrypting the chain authenticates the reconstructed secret.
		chain, err := n.secretChain(ctx, l.config, secret)
		if err != nil {
			secret.Zero()
			return err
		}
		tqcrypto.ZeroAll(chain)
	}
	n.secrets[l.epoch] = secret
	n.serveLearners(ctx)
	return nil
}

// ClearSecrets forgets every reconstructed secret and stops collecting.
func (n *Node) ClearSecrets(ctx *NodeCtx) {
	for e, s := range n.secrets {
		s.Zero()
		delete(n.secrets, e)
	}
	if n.load != nil {
		n.load.zero()
		n.load = nil
	}
}

// ---------------------------------------------------------------------------
// Connections and time.

// OnConnect records that peer is connected and re-sends whatever is still
// outstanding toward it.
func (n *Node) OnConnect(ctx *NodeCtx, peer BaseboardID) {
	if peer == n.id {
		return
	}
	ctx.connect(peer)
	n.sendOutstanding(ctx, peer, true)
}

// OnDisconnect records that peer is gone.
func (n *Node) OnDisconnect(ctx *NodeCtx, peer BaseboardID) {
	ctx.disconnect(peer)
	delete(n.retries, peer)
}

// Tick advances the node's notion of time and re-sends outstanding messages
// to peers whose back-off has expired, so a message lost on a live
// connection cannot stall the protocol.
func (n *Node) Tick(ctx *NodeCtx, now Instant) {
	if now > n.now {
		n.now = now
	}
	if n.learning != nil {
		n.learnTick(ctx)
	}
	for _, peer := range ctx.connectedPeers() {
		r := n.retries[peer]
		if r == nil || n.now < r.next {
			continue
		}
		n.sendOutstanding(ctx, peer, false)
	}
}

// request sends a newly started activity's request to peer, and only that
// (re-sending everything outstanding would duplicate earlier requests),
// then makes sure a retry is scheduled. Requests are matched by kind (and
// epoch for GetShareMsg); the outstanding list supplies the contents, such
// as the peer's own share in a PrepareMsg.
func (n *Node) request(ctx *NodeCtx, peer BaseboardID, req MsgBody) {
	if peer == n.id || !ctx.connected[peer] {
		return
	}
	for _, m := range n.outstanding(ctx, peer) {
		if m.Body.Kind() == req.Kind() && (req.Kind() != "get_share" || sameRequest(m.Body, req)) {
			ctx.send(peer, m)
		}
	}
	if n.retries[peer] == nil {
		n.retries[peer] = &retryState{backoff: n.retryBase, next: n.now + Instant(n.retryBase)}
	}
}

// sendOutstanding sends everything owed to peer. fresh resets the back-off
// (a new request or a new connection); otherwise it doubles.
func (n *Node) sendOutstanding(ctx *NodeCtx, peer BaseboardID, fresh bool) {
	if peer == n.id || !ctx.connected[peer] {
		return
	}
	msgs := n.outstanding(ctx, peer)
	if len(msgs) == 0 {
		delete(n.retries, peer)
		return
	}
	for _, m := range msgs {
		ctx.send(peer, m)
	}
	r := n.retries[peer]
	if r == nil || fresh {
		r = &retryState{backoff: n.retryBase}
		n.retries[peer] = r
	} else {
		r.backoff = min(2*r.backoff, n.retryMax)
	}
	r.next = n.now + Instant(r.backoff)
}

// outstanding lists the requests still owed a reply by peer. It is computed
// from the node's activities rather than stored, so nothing is forgotten or
// sent after it stopped mattering.
func (n *Node) outstanding(ctx *NodeCtx, peer BaseboardID) []PeerMsg {
	st := &ctx.state
	rack, _ := st.RackID()
	if n.coord != nil {
		rack = n.coord.msg.RackID
	}
	var out []PeerMsg
	add := func(b MsgBody) { out = append(out, PeerMsg{RackID: rack, Body: b}) }
	if c := n.coord; c != nil {
		switch {
		case c.collect != nil && c.upgrade:
			if !c.collect.has(peer) {
				add(GetLrtqShareMsg{})
			}
		case c.collect != nil:
			if c.collect.config.IsMember(peer) && !c.collect.has(peer) {
				add(GetShareMsg{Epoch: c.collect.epoch})
			}
		case c.config != nil:
			if s, ok := c.shares[peer]; ok && !c.acked[peer] {
				add(PrepareMsg{Config: c.config.Clone(), Share: s.Clone()})
			}
		}
	}
	if r := n.rebuild; r != nil && r.config.IsMember(peer) && !r.has(peer) {
		add(GetShareMsg{Epoch: r.epoch})
	}
	if l := n.load; l != nil && !l.has(peer) {
		if l.config == nil {
			add(GetLrtqShareMsg{})
		} else if l.config.IsMember(peer) {
			add(GetShareMsg{Epoch: l.epoch})
		}
	}
	if ls := st.LrtqSetup; ls != nil && st.Expunged == nil {
		if p, ok := ls.Pending[peer]; ok {
			out = append(out, PeerMsg{RackID: ls.RackID, Body: LrtqInitMsg{Pkg: clonePkg(p)}})
		}
	}
	if le := n.learning; le != nil && le.peer == peer && st.Lrtq == nil {
		out = append(out, PeerMsg{RackID: le.rack, Body: LrtqLearnMsg{}})
	}
	return dedupe(out)
}

// dedupe drops repeated requests (the coordinator and the secret loader may
// both want shares of the same epoch).
func dedupe(msgs []PeerMsg) []PeerMsg {
	out := msgs[:0]
	for _, m := range msgs {
		dup := false
		for _, o := range out {
			if sameRequest(o.Body, m.Body) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, m)
		}
	}
	return out
}

func sameRequest(a, b MsgBody) bool {
	switch a := a.(type) {
	case GetShareMsg:
		bb, ok := b.(GetShareMsg)
		return ok && a == bb
	case GetLrtqShareMsg:
		_, ok := b.(GetLrtqShareMsg)
		return ok
	}
	return false
}

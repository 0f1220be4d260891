package trustquorum_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	tq "github.com/rackplane/rackplane/trustquorum"
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// The cluster simulation runs real Nodes on a simulated network, driven by a
// model of Nexus, through random weighted events drawn from a seed. Every
// event is first generated as a concrete Event (which node, which message
// index, which members) and then applied, so the event log alone replays a
// run step by step. Vault's shamir.Split draws its own randomness, so share
// bytes and x coordinates differ between runs; nothing in the node or in the
// simulator branches on them (shares are ordered by member, never by value),
// which is why a replay reproduces the same events and outcomes.
//
// Besides deliveries, drops, ticks, partitions and crashes (some of them
// long), the events include what review found the protocol mishandling:
// LRTQ rack setup through InitLrtq with the initiator crashing part-way,
// LRTQ upgrades to memberships that leave out LRTQ holders (down to fewer
// than the LRTQ threshold), thresholds other than N/2+1, connections
// replaced by newer ones whose disconnects then arrive stale (and must be
// dropped by the driver, as the runtime does), Expunged messages delivered
// to sleds with no configuration or from non-members, and CommitAdvance
// replies that arrive late, after newer epochs committed. The driver zeroes
// every frame and message it sends, as the runtime should.

// Event is one step of a simulation run, as written to the event log.
type Event struct {
	Kind        string `json:"kind"`
	Node        int    `json:"node,omitempty"`
	Peer        int    `json:"peer,omitempty"`
	Index       int    `json:"index,omitempty"`
	Dup         bool   `json:"dup,omitempty"`
	Members     []int  `json:"members,omitempty"`
	Coordinator int    `json:"coordinator,omitempty"`
	// Threshold is the K Nexus asks for (0: N/2+1).
	Threshold int   `json:"threshold,omitempty"`
	Delta     int64 `json:"delta,omitempty"`
	// Setup fields (first event only). An LRTQ rack is set up by the
	// node Coordinator, through InitLrtq.
	Seed     uint64 `json:"seed,omitempty"`
	Pool     int    `json:"pool,omitempty"`
	Lrtq     []int  `json:"lrtq,omitempty"`
	Learners []int  `json:"learners,omitempty"`
	// Summary is a digest of the state after the step; a replay must
	// reproduce it exactly.
	Summary string `json:"summary,omitempty"`
}

type simNode struct {
	id      tq.BaseboardID
	up      bool
	node    *tq.Node
	ctx     *tq.NodeCtx
	disk    []byte             // the ledger, as the driver persisted it
	state   tq.PersistentState // disk, decoded (kept to check invariants)
	boots   int
	removed bool // Nexus removed it from the rack
	fresh   bool // never part of any configuration or LRTQ
	learner bool // an LRTQ learner
	// maxRebuild is the newest epoch the node was ever seen rebuilding
	// (across incarnations): a rebuild never goes back.
	maxRebuild tq.Epoch
	// told is the newest epoch the node was told about by a CommitAdvance
	// (member or not): its coordinations of older epochs must stop.
	told tq.Epoch
	// sleepUntil: a long crash keeps the node down until this many
	// events are in the log.
	sleepUntil int
}

type inflight struct {
	from, to int
	conn     uint64 // the connection it travels on
	frame    []byte
}

// staleConn is a replaced connection whose disconnect has not been
// reported yet: the runtime sees it late and must drop it.
type staleConn struct {
	a, b int
	conn uint64
}

// rssModel is the rack-setup service of an LRTQ rack: it asked the
// initiator to set LRTQ up and waits until the initiator reports every
// package acknowledged.
type rssModel struct {
	initiator int
	members   []int
	done      bool
}

type sim struct {
	seed     uint64
	rng      *rand.Rand
	ids      []tq.BaseboardID
	nodes    []*simNode
	cut      map[[2]int]bool // partitioned pairs (lower index first)
	conns    map[[2]int]uint64
	nextConn uint64
	stale    []staleConn
	net      []inflight
	now      tq.Instant
	nx       *nexusModel
	rss      *rssModel
	// lrtqDigests are the 255 digests of the LRTQ secret, as first seen.
	lrtqDigests []tqcrypto.Digest
	// truths holds each committed epoch's secret (and LRTQ's), combined
	// from the ledgers as soon as K shares are in them: pruning removes
	// the shares of older epochs from the ledgers later, and a secret
	// loaded then is checked against what the ledgers held.
	truths   map[tq.Epoch]*tqcrypto.Secret
	log      []Event
	messages int // envelopes put on the network
	// quiescing is set for the final rounds, when every prepare still
	// sent for an epoch older than the final commit is a failure.
	quiescing bool
	// stats counts what happened (messages sent by kind, outcomes), so
	// the test can insist that the random runs exercise every path.
	stats map[string]int
}

// simFail is raised (as a panic, recovered by run) when an invariant or an
// API expectation fails, so that apply code stays linear.
type simFail struct{ err error }

func (s *sim) failf(format string, args ...any) {
	panic(simFail{fmt.Errorf(format, args...)})
}

func newSim(seed uint64) *sim {
	return &sim{seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), cut: map[[2]int]bool{},
		conns: map[[2]int]uint64{}, stats: map[string]int{}, truths: map[tq.Epoch]*tqcrypto.Secret{}}
}

// nodeRand gives each node incarnation its own deterministic stream.
func (s *sim) nodeRand(i, boot int) *rand.ChaCha8 {
	var k [32]byte
	binary.LittleEndian.PutUint64(k[0:], s.seed)
	binary.LittleEndian.PutUint64(k[8:], uint64(i))
	binary.LittleEndian.PutUint64(k[16:], uint64(boot))
	return rand.NewChaCha8(k)
}

func simID(i int) tq.BaseboardID {
	return tq.BaseboardID{Part: "sim", Serial: fmt.Sprintf("n%02d", i)}
}

func (s *sim) index(id tq.BaseboardID) int {
	i, ok := slices.BinarySearchFunc(s.ids, id, tq.BaseboardID.Compare)
	if !ok {
		s.failf("unknown node %s", id)
	}
	return i
}

func (s *sim) idxs(ids []tq.BaseboardID) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = s.index(id)
	}
	return out
}

func (s *sim) idsOf(idx []int) []tq.BaseboardID {
	out := make([]tq.BaseboardID, len(idx))
	for i, j := range idx {
		out[i] = s.ids[j]
	}
	return out
}

func pair(a, b int) [2]int {
	if a > b {
		a, b = b, a
	}
	return [2]int{a, b}
}

func (s *sim) linked(a, b int) bool {
	return a != b && s.nodes[a].up && s.nodes[b].up && !s.cut[pair(a, b)]
}

// ---------------------------------------------------------------------------
// The driver: what the sled agent's runtime does after every call.

// step finishes one call on node i: persist if changed (and check the
// ledger decodes to the same state), then put the envelopes on the network,
// encoded as the real bootstrap network would.
func (s *sim) step(i int) {
	n := s.nodes[i]
	if n.ctx.PersistentStateChanged() {
		old := n.state
		b, err := tq.EncodeState(n.ctx.PersistentState())
		if err != nil {
			s.failf("%s: encode state: %v", n.id, err)
		}
		st, err := tq.DecodeState(b)
		if err != nil {
			s.failf("%s: ledger does not decode: %v", n.id, err)
		}
		n.disk, n.state = b, st
		n.ctx.ClearPersistentStateChanged()
		s.checkLrtqPackages(i)
		if old.Expunged == nil && st.Expunged != nil {
			s.stats["expunged"]++
		}
		if old.Lrtq == nil && st.Lrtq != nil && n.learner {
			s.stats["learned"]++
		}
		for e := range st.Commits {
			if !old.Commits[e] {
				s.stats["commit"]++
				if _, ok := old.Shares[e]; !ok {
					s.stats["commit_by_rebuild"]++
				}
				if s.sleptThrough(i, old.LatestCommittedEpoch(), e) {
					s.stats["commit_across_pruned_epochs"]++
				}
			}
		}
	}
	scrubbed := false
	for _, env := range n.ctx.DrainEnvelopes() {
		if env.From != n.id {
			s.failf("%s: envelope from %s", n.id, env.From)
		}
		to := s.index(env.To)
		if !s.linked(i, to) {
			s.failf("%s: sent %s to unconnected %s", n.id, env.Msg, env.To)
		}
		if p, ok := env.Msg.Body.(tq.PrepareMsg); ok {
			s.checkPrepareSent(i, to, p.Config.Epoch)
		}
		frame, err := tq.EncodeMsg(env.Msg)
		if err != nil {
			s.failf("%s: encode %s: %v", n.id, env.Msg, err)
		}
		s.net = append(s.net, inflight{from: i, to: to, conn: s.conns[pair(i, to)], frame: slices.Clone(frame)})
		s.messages++
		s.stats["msg:"+env.Msg.Body.Kind()]++
		// Like a careful runtime, destroy what was sent: the frame and
		// every share, digest and ciphertext in the message.
		clear(frame)
		if scrubMsg(env.Msg) {
			scrubbed = true
		}
	}
	if scrubbed && !sameState(n.ctx.PersistentState(), &n.state) {
		s.failf("%s: zeroing sent envelopes changed the state it persisted", n.id)
	}
}

// sameState compares the parts of two states that an envelope could alias:
// shares, configurations and LRTQ packages. (Cheaper than encoding.)
func sameState(a, b *tq.PersistentState) bool {
	if len(a.Configs) != len(b.Configs) || len(a.Shares) != len(b.Shares) {
		return false
	}
	for e, c := range a.Configs {
		if o := b.Configs[e]; o == nil || !o.Equal(c) {
			return false
		}
	}
	for e, sh := range a.Shares {
		if !sh.Equal(b.Shares[e]) {
			return false
		}
	}
	samePkg := func(p, q *tq.LrtqSharePkg) bool {
		if p == nil || q == nil {
			return p == q
		}
		if !p.Share.Equal(q.Share) || !slices.Equal(p.ShareDigests, q.ShareDigests) || len(p.Handouts) != len(q.Handouts) {
			return false
		}
		if (p.Spares == nil) != (q.Spares == nil) || (p.Spares != nil && !bytes.Equal(p.Spares.Ciphertext, q.Spares.Ciphertext)) {
			return false
		}
		for l, x := range p.Handouts {
			if y, ok := q.Handouts[l]; !ok || x != y {
				return false
			}
		}
		return true
	}
	if !samePkg(a.Lrtq, b.Lrtq) {
		return false
	}
	if (a.LrtqSetup == nil) != (b.LrtqSetup == nil) {
		return false
	}
	if a.LrtqSetup != nil {
		if len(a.LrtqSetup.Pending) != len(b.LrtqSetup.Pending) {
			return false
		}
		for m, p := range a.LrtqSetup.Pending {
			if !samePkg(p, b.LrtqSetup.Pending[m]) {
				return false
			}
		}
	}
	return true
}

// checkPrepareSent: a coordinator never sends the prepare of an epoch
// older than one it knows of (from its ledger, or told by a CommitAdvance).
// During the final quiescence a prepare of an epoch older than the final
// commit may only go to expunged sleds, which never answer.
func (s *sim) checkPrepareSent(i, to int, e tq.Epoch) {
	n := s.nodes[i]
	if known := max(n.told, n.state.LatestEpochSeen(), n.state.LatestCommittedEpoch()); e < known {
		s.failf("%s sends the prepare of epoch %d although it knows of epoch %d", n.id, e, known)
	}
	if s.quiescing && e < s.nx.latestCommitted().epoch && s.nodes[to].state.Expunged == nil {
		s.failf("%s still resends the prepare of aborted epoch %d to %s after epoch %d committed",
			n.id, e, s.ids[to], s.nx.latestCommitted().epoch)
	}
}

func (s *sim) boot(i int) {
	n := s.nodes[i]
	st := tq.NewPersistentState()
	if n.disk != nil {
		var err error
		st, err = tq.DecodeState(n.disk)
		if err != nil {
			s.failf("%s: ledger: %v", n.id, err)
		}
	}
	n.boots++
	n.state = st
	n.ctx = tq.NewNodeCtx(n.id, st)
	n.node = tq.NewNode(n.ctx, tq.Config{Rand: s.nodeRand(i, n.boots), RetryBase: tq.Second, RetryMax: 8 * tq.Second})
	n.up = true
	for j := range s.nodes {
		if s.linked(i, j) {
			s.connectPair(i, j)
		}
	}
	s.step(i)
}

// connectPair reports a new connection between a and b to both. If they
// were connected already, the new connection replaces the old one: the old
// one's frames are lost, and its disconnect, when the runtime sees it, is
// stale.
func (s *sim) connectPair(a, b int) {
	p := pair(a, b)
	if old, ok := s.conns[p]; ok {
		s.net = slices.DeleteFunc(s.net, func(m inflight) bool { return m.conn == old })
		s.stale = append(s.stale, staleConn{a: p[0], b: p[1], conn: old})
	}
	s.nextConn++
	s.conns[p] = s.nextConn
	s.nodes[a].node.OnConnect(s.nodes[a].ctx, s.ids[b])
	s.step(a)
	s.nodes[b].node.OnConnect(s.nodes[b].ctx, s.ids[a])
	s.step(b)
}

// reportDisconnect is the runtime's handling of a closed connection: it
// reaches the nodes only if it is the pair's current connection. A
// replaced connection's late disconnect must be dropped, or the nodes would
// think a live peer gone.
func (s *sim) reportDisconnect(a, b int, conn uint64) {
	p := pair(a, b)
	if cur, ok := s.conns[p]; !ok || cur != conn {
		s.stats["stale_disconnect_dropped"]++
		return
	}
	delete(s.conns, p)
	s.dropBetween(a, b)
	for _, x := range [][2]int{{a, b}, {b, a}} {
		if n := s.nodes[x[0]]; n.up {
			n.node.OnDisconnect(n.ctx, s.ids[x[1]])
			s.step(x[0])
		}
	}
}

// dropBetween loses every message in flight between a and b: a connection
// that breaks takes its queued frames with it.
func (s *sim) dropBetween(a, b int) {
	s.net = slices.DeleteFunc(s.net, func(m inflight) bool {
		return (m.from == a && m.to == b) || (m.from == b && m.to == a)
	})
}

func (s *sim) dropNode(a int) {
	s.net = slices.DeleteFunc(s.net, func(m inflight) bool { return m.from == a || m.to == a })
}

// ---------------------------------------------------------------------------
// Setup.

type simParams struct {
	pool int // nodes available, at most 16
}

func (s *sim) setupEvent(p simParams) Event {
	ev := Event{Kind: "setup", Seed: s.seed, Pool: p.pool}
	if s.rng.IntN(2) == 0 {
		n0 := 3 + s.rng.IntN(min(6, p.pool-3))
		for i := range n0 {
			ev.Lrtq = append(ev.Lrtq, i)
		}
		ev.Coordinator = s.rng.IntN(n0)
		for i := n0; i < min(p.pool, n0+s.rng.IntN(3)); i++ {
			ev.Learners = append(ev.Learners, i)
		}
	}
	return ev
}

func (s *sim) applySetup(ev Event) {
	s.seed = ev.Seed
	s.nx = &nexusModel{nextEpoch: 1}
	binary.BigEndian.PutUint64(s.nx.rack[:], ev.Seed)
	s.nx.rack[8] = 0x42
	for i := range ev.Pool {
		s.ids = append(s.ids, simID(i))
		s.nodes = append(s.nodes, &simNode{id: simID(i), fresh: true})
	}
	for i := range s.nodes {
		s.boot(i)
	}
	if len(ev.Lrtq) > 0 {
		// The rack-setup service asks one initial member to set LRTQ
		// up; it may crash at any point after this step.
		s.rss = &rssModel{initiator: ev.Coordinator, members: ev.Lrtq}
		for _, i := range ev.Lrtq {
			s.nodes[i].fresh = false
		}
		for _, i := range ev.Learners {
			s.nodes[i].learner = true
			s.nodes[i].fresh = false
		}
		s.nx.lrtqMembers = s.idsOf(ev.Lrtq)
		s.nx.nextEpoch = 2
		n := s.nodes[ev.Coordinator]
		if err := n.node.InitLrtq(n.ctx, s.nx.rack, s.nx.lrtqMembers); err != nil {
			s.failf("lrtq setup: %v", err)
		}
		s.step(ev.Coordinator)
	}
	for _, i := range ev.Learners {
		if err := s.nodes[i].node.LearnLrtq(s.nodes[i].ctx, s.nx.rack); err != nil {
			s.failf("learn: %v", err)
		}
		s.step(i)
	}
}

// rssPoll is the rack-setup service checking on the initiator: done once
// it reports every package acknowledged; until then it asks again, which
// must be a no-op (the service cannot know whether the initiator restarted).
func (s *sim) rssPoll() {
	r := s.rss
	n := s.nodes[r.initiator]
	if r.done || !n.up {
		return
	}
	if n.node.LrtqInitDone() {
		r.done = true
		return
	}
	if err := n.node.InitLrtq(n.ctx, s.nx.rack, s.nx.lrtqMembers); err != nil {
		s.failf("%s: repeated lrtq setup: %v", n.id, err)
	}
	s.step(r.initiator)
}

func (s *sim) rssPending() bool { return s.rss != nil && !s.rss.done }

// ---------------------------------------------------------------------------
// Event generation: pick a kind by weight among those that apply now, then
// fill in its parameters from the current state.

func (s *sim) pick(xs []int) int { return xs[s.rng.IntN(len(xs))] }

func (s *sim) nextEvent() Event {
	type choice struct {
		w  int
		ev func() (Event, bool)
	}
	choices := []choice{
		{40, s.genDeliver},
		{3, s.genDrop},
		{8, func() (Event, bool) { return Event{Kind: "tick", Delta: int64(1 + s.rng.IntN(4000))}, true }},
		{3, s.genDisconnect},
		{5, s.genConnect},
		{2, s.genReplace},
		{2, s.genStaleDisconnect},
		{2, s.genCrash},
		{5, s.genRestart},
		{8, func() (Event, bool) { return Event{Kind: "nexus_poll"}, s.nx.active() != nil }},
		{10, s.genCommit},
		{4, s.genLoad},
		{4, s.genReconfigure},
		{4, s.genUpgrade},
		{1, func() (Event, bool) {
			a := s.nx.active()
			return Event{Kind: "abort"}, a != nil && a.state == nxPreparing
		}},
		{2, s.genLearn},
		{3, func() (Event, bool) { return Event{Kind: "rss_poll"}, s.rssPending() }},
		{2, s.genInjectExpunged},
		{2, s.genLateCommitAdvance},
	}
	total := 0
	for _, c := range choices {
		total += c.w
	}
	for {
		r := s.rng.IntN(total)
		for _, c := range choices {
			if r < c.w {
				if ev, ok := c.ev(); ok {
					return ev
				}
				break
			}
			r -= c.w
		}
	}
}

func (s *sim) genDeliver() (Event, bool) {
	if len(s.net) == 0 {
		return Event{}, false
	}
	return Event{Kind: "deliver", Index: s.rng.IntN(len(s.net)), Dup: s.rng.IntN(20) == 0}, true
}

func (s *sim) genDrop() (Event, bool) {
	if len(s.net) == 0 {
		return Event{}, false
	}
	return Event{Kind: "drop", Index: s.rng.IntN(len(s.net))}, true
}

func (s *sim) genDisconnect() (Event, bool) {
	a, b := s.rng.IntN(len(s.nodes)), s.rng.IntN(len(s.nodes))
	return Event{Kind: "disconnect", Node: a, Peer: b}, a != b && !s.cut[pair(a, b)]
}

// genReplace makes a new connection replace a live one (a redial after a
// suspected failure); the old one's disconnect is reported later, stale.
func (s *sim) genReplace() (Event, bool) {
	a, b := s.rng.IntN(len(s.nodes)), s.rng.IntN(len(s.nodes))
	return Event{Kind: "replace", Node: a, Peer: b}, s.linked(a, b)
}

func (s *sim) genStaleDisconnect() (Event, bool) {
	if len(s.stale) == 0 {
		return Event{}, false
	}
	return Event{Kind: "stale_disconnect", Index: s.rng.IntN(len(s.stale))}, true
}

// genInjectExpunged delivers an Expunged for the latest committed epoch,
// with its configuration, from a node to any other: mostly to nodes that
// hold no configuration at all (which must ignore it), sometimes claiming
// a sender that is not a member (Dup), which everyone must ignore.
func (s *sim) genInjectExpunged() (Event, bool) {
	last := s.nx.latestCommitted()
	if last == nil || last.config == nil {
		return Event{}, false
	}
	forged := s.rng.IntN(4) == 0
	var senders, fresh, others []int
	for i, n := range s.nodes {
		if !n.up {
			continue
		}
		if slices.Contains(last.members, n.id) != forged {
			senders = append(senders, i)
		}
		if n.state.LatestEpochSeen() == 0 {
			fresh = append(fresh, i)
		} else {
			others = append(others, i)
		}
	}
	to := fresh
	if len(to) == 0 || s.rng.IntN(3) == 0 {
		to = others
	}
	if len(senders) == 0 || len(to) == 0 {
		return Event{}, false
	}
	ev := Event{Kind: "inject_expunged", Node: s.pick(to), Peer: s.pick(senders), Dup: forged}
	return ev, ev.Node != ev.Peer && s.linked(ev.Node, ev.Peer)
}

func (s *sim) genConnect() (Event, bool) {
	var cuts [][2]int
	for p := range s.cut {
		cuts = append(cuts, p)
	}
	if len(cuts) == 0 {
		return Event{}, false
	}
	slices.SortFunc(cuts, func(x, y [2]int) int {
		if x[0] != y[0] {
			return x[0] - y[0]
		}
		return x[1] - y[1]
	})
	p := cuts[s.rng.IntN(len(cuts))]
	return Event{Kind: "connect", Node: p[0], Peer: p[1]}, true
}

func (s *sim) upNodes(up bool) []int {
	var out []int
	for i, n := range s.nodes {
		if n.up == up {
			out = append(out, i)
		}
	}
	return out
}

func (s *sim) genCrash() (Event, bool) {
	up := s.upNodes(true)
	if len(up) == 0 {
		return Event{}, false
	}
	// The initiator of an LRTQ setup is the interesting node to crash
	// while the setup is in progress.
	if s.rssPending() && s.nodes[s.rss.initiator].up && s.rng.IntN(2) == 0 {
		return Event{Kind: "crash", Node: s.rss.initiator}, true
	}
	// Now and then a sled stays down for a long while (Delta events),
	// so that it comes back behind by several epochs.
	ev := Event{Kind: "crash", Node: s.pick(up)}
	if s.rng.IntN(4) == 0 {
		ev.Delta = int64(50 + s.rng.IntN(250))
	}
	return ev, true
}

func (s *sim) genRestart() (Event, bool) {
	var down []int
	for _, i := range s.upNodes(false) {
		if s.nodes[i].sleepUntil <= len(s.log) {
			down = append(down, i)
		}
	}
	if len(down) == 0 {
		return Event{}, false
	}
	return Event{Kind: "restart", Node: s.pick(down)}, true
}

// genLateCommitAdvance delivers, late, a CommitAdvance that a member sent
// when its latest commit was an older epoch: a reply that sat in a slow
// queue while newer epochs committed. The receiver may be rebuilding its
// share of a newer epoch by now, and must not go back.
func (s *sim) genLateCommitAdvance() (Event, bool) {
	committed := s.nx.committedEpochs()
	if len(committed) == 0 {
		return Event{}, false
	}
	// The case that matters: a sled rebuilding epoch R that is also a
	// member of a committed epoch between its own commit and R. Aim at
	// it when there is one; otherwise any member of any committed epoch.
	to, c := -1, committed[s.rng.IntN(len(committed))]
	for i, n := range s.nodes {
		if !n.up {
			continue
		}
		r := n.node.Status(n.ctx).RebuildingShare
		for _, o := range committed {
			if r != 0 && o.epoch > n.state.LatestCommittedEpoch() && o.epoch < r && slices.Contains(o.members, s.ids[i]) {
				to, c = i, o
			}
		}
	}
	if c.config == nil {
		return Event{}, false
	}
	var from, members []int
	for _, id := range c.members {
		i := s.index(id)
		if n := s.nodes[i]; n.up && n.state.Commits[c.epoch] {
			from = append(from, i)
		}
		if s.nodes[i].up {
			members = append(members, i)
		}
	}
	if len(from) == 0 || len(members) == 0 {
		return Event{}, false
	}
	if to < 0 {
		to = s.pick(members)
	}
	ev := Event{Kind: "late_commit_advance", Node: to, Peer: s.pick(from), Index: int(c.epoch)}
	return ev, ev.Node != ev.Peer && s.linked(ev.Node, ev.Peer)
}

func (s *sim) genCommit() (Event, bool) {
	a := s.nx.active()
	if a == nil || a.state != nxCommitting {
		return Event{}, false
	}
	var todo []int
	for _, m := range a.members {
		if i := s.index(m); !a.committed[m] && s.nodes[i].up {
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return Event{}, false
	}
	return Event{Kind: "commit", Node: s.pick(todo)}, true
}

func (s *sim) genLoad() (Event, bool) {
	var cand []int
	for i, n := range s.nodes {
		if n.up && !n.fresh && n.state.Expunged == nil && (n.state.Lrtq != nil || len(n.state.Commits) > 0) {
			cand = append(cand, i)
		}
	}
	if len(cand) == 0 {
		return Event{}, false
	}
	return Event{Kind: "load_secret", Node: s.pick(cand)}, true
}

func (s *sim) genLearn() (Event, bool) {
	var cand []int
	for i, n := range s.nodes {
		if n.up && n.learner && n.state.Lrtq == nil && n.state.LatestConfig() == nil {
			cand = append(cand, i)
		}
	}
	if len(cand) == 0 {
		return Event{}, false
	}
	return Event{Kind: "lrtq_learn", Node: s.pick(cand)}, true
}

// genUpgrade starts the LRTQ upgrade once rack setup is done. The new
// membership is any non-empty subset of the LRTQ holders (so it may hold
// fewer than the LRTQ threshold of them) plus up to three new sleds; the
// coordinator holds an LRTQ package.
func (s *sim) genUpgrade() (Event, bool) {
	if s.nx.lrtqMembers == nil || s.rssPending() || s.nx.latestCommitted() != nil || s.nx.active() != nil {
		return Event{}, false
	}
	holders := s.lrtqHolders()
	members := slices.Clone(holders)
	if s.rng.IntN(3) != 0 {
		s.rng.Shuffle(len(members), func(a, b int) { members[a], members[b] = members[b], members[a] })
		members = members[:1+s.rng.IntN(len(members))]
	}
	coordinator := s.pick(members)
	fresh := s.freshNodes(nil)
	for add := s.rng.IntN(4); (add > 0 || len(members) < tq.MinMembers) && len(fresh) > 0; add-- {
		members = append(members, fresh[0])
		fresh = fresh[1:]
	}
	for _, h := range holders {
		if len(members) >= tq.MinMembers {
			break
		}
		if !slices.Contains(members, h) {
			members = append(members, h)
		}
	}
	if len(members) < tq.MinMembers {
		return Event{}, false
	}
	slices.Sort(members)
	return Event{Kind: "lrtq_upgrade", Members: members, Coordinator: coordinator, Threshold: s.pickThreshold(len(members))}, true
}

// pickThreshold is K for n members: Nexus's N/2+1 half the time, otherwise
// anything the protocol allows (2 <= K < N, K <= 31).
func (s *sim) pickThreshold(n int) int {
	if s.rng.IntN(2) == 0 {
		return n/2 + 1
	}
	return 2 + s.rng.IntN(min(n-1, tq.MaxThreshold)-1)
}

// freshNodes are the candidates for adding: sleds that never committed
// anything, hold no LRTQ package and are no learners, were never removed
// (an expunged sled needs a factory reset before it may rejoin) and are not
// in last. Members of aborted epochs count. The order is random.
func (s *sim) freshNodes(last *nexusConfig) []int {
	var fresh []int
	for i, n := range s.nodes {
		if !n.removed && !n.learner && n.state.Lrtq == nil && len(n.state.Commits) == 0 &&
			(last == nil || !slices.Contains(last.members, s.ids[i])) {
			fresh = append(fresh, i)
		}
	}
	s.rng.Shuffle(len(fresh), func(a, b int) { fresh[a], fresh[b] = fresh[b], fresh[a] })
	return fresh
}

// lrtqHolders are the initial members plus learners that hold a package.
func (s *sim) lrtqHolders() []int {
	var out []int
	for i, n := range s.nodes {
		if n.state.Lrtq != nil {
			out = append(out, i)
		}
	}
	return out
}

func (s *sim) genReconfigure() (Event, bool) {
	ok, _ := s.nx.canStart()
	if !ok {
		return Event{}, false
	}
	last := s.nx.latestCommitted()
	fresh := s.freshNodes(last)
	if last == nil {
		if s.nx.lrtqMembers != nil || len(fresh) < 3 {
			return Event{}, false
		}
		members := fresh[:3+s.rng.IntN(min(6, len(fresh)-2))]
		slices.Sort(members)
		return Event{Kind: "reconfigure", Members: members, Coordinator: s.pick(members), Threshold: s.pickThreshold(len(members))}, true
	}
	members := s.idxs(last.members)
	// Remove up to two, add up to two fresh nodes, stay within 3..16.
	members = s.removeRandom(members)
	for range s.rng.IntN(3) {
		if len(fresh) > 0 && len(members) < tq.MaxMembers {
			members = append(members, fresh[0])
			fresh = fresh[1:]
		}
	}
	slices.Sort(members)
	var coords []int
	for _, i := range members {
		if last.committed[s.ids[i]] {
			coords = append(coords, i)
		}
	}
	if len(coords) == 0 || slices.Equal(members, s.idxs(last.members)) {
		return Event{}, false
	}
	return Event{Kind: "reconfigure", Members: members, Coordinator: s.pick(coords), Threshold: s.pickThreshold(len(members))}, true
}

// removeRandom drops up to two members while keeping at least three.
func (s *sim) removeRandom(members []int) []int {
	members = slices.Clone(members)
	for range s.rng.IntN(3) {
		if len(members) > 3 {
			j := s.rng.IntN(len(members))
			members = append(members[:j], members[j+1:]...)
		}
	}
	return members
}

// ---------------------------------------------------------------------------
// Applying events.

func (s *sim) apply(ev Event) {
	switch ev.Kind {
	case "deliver":
		m := s.net[ev.Index]
		if !ev.Dup {
			s.net = slices.Delete(s.net, ev.Index, ev.Index+1)
		}
		msg, err := tq.DecodeMsg(m.frame)
		if err != nil {
			s.failf("decode frame: %v", err)
		}
		s.handle(m.from, m.to, msg)
	case "drop":
		s.net = slices.Delete(s.net, ev.Index, ev.Index+1)
	case "tick":
		s.now += tq.Instant(ev.Delta) * tq.Instant(tq.Millisecond)
		for _, i := range s.upNodes(true) {
			s.nodes[i].node.Tick(s.nodes[i].ctx, s.now)
			s.step(i)
		}
	case "disconnect":
		s.cut[pair(ev.Node, ev.Peer)] = true
		if conn, ok := s.conns[pair(ev.Node, ev.Peer)]; ok {
			s.reportDisconnect(ev.Node, ev.Peer, conn)
		}
		s.dropBetween(ev.Node, ev.Peer)
	case "replace":
		if s.linked(ev.Node, ev.Peer) {
			s.connectPair(ev.Node, ev.Peer)
			s.stats["connection_replaced"]++
		}
	case "stale_disconnect":
		sc := s.stale[ev.Index]
		s.stale = slices.Delete(s.stale, ev.Index, ev.Index+1)
		s.reportDisconnect(sc.a, sc.b, sc.conn)
	case "inject_expunged":
		s.injectExpunged(ev)
	case "late_commit_advance":
		c := s.nx.byEpoch(tq.Epoch(ev.Index))
		s.deliverDirect(ev.Peer, ev.Node, tq.PeerMsg{RackID: s.nx.rack, Body: tq.CommitAdvanceMsg{Config: c.config.Clone()}})
	case "rss_poll":
		s.rssPoll()
	case "connect":
		delete(s.cut, pair(ev.Node, ev.Peer))
		if s.linked(ev.Node, ev.Peer) {
			s.connectPair(ev.Node, ev.Peer)
		}
	case "crash":
		n := s.nodes[ev.Node]
		n.sleepUntil = len(s.log) + int(ev.Delta)
		if n.node.CoordinatorStatus(n.ctx).State != tq.NotCoordinating {
			s.stats["coordinator_crash"]++
		}
		if ls := n.state.LrtqSetup; ls != nil && len(ls.Pending) > 0 {
			s.stats["lrtq_setup_crash"]++
		}
		n.up = false
		for j := range s.nodes {
			if conn, ok := s.conns[pair(ev.Node, j)]; ok {
				s.reportDisconnect(ev.Node, j, conn)
			}
		}
		n.node, n.ctx = nil, nil
		s.dropNode(ev.Node)
	case "restart":
		s.boot(ev.Node)
	case "nexus_poll":
		s.nexusPoll()
	case "abort":
		s.nx.abort(s.nx.active())
	case "commit":
		s.nexusCommit(ev.Node)
	case "load_secret":
		s.loadSecret(ev.Node)
	case "catch_up":
		s.catchUpWithoutNexus()
	case "lrtq_learn":
		n := s.nodes[ev.Node]
		if err := n.node.LearnLrtq(n.ctx, s.nx.rack); err != nil {
			s.failf("%s: learn: %v", n.id, err)
		}
		s.step(ev.Node)
	case "reconfigure", "lrtq_upgrade":
		s.startConfig(ev)
	case "final":
		s.checkFinal()
	default:
		s.failf("unknown event %q", ev.Kind)
	}
}

// handle gives node to the message msg from from, as its runtime would.
func (s *sim) handle(from, to int, msg tq.PeerMsg) {
	n := s.nodes[to]
	if ca, ok := msg.Body.(tq.CommitAdvanceMsg); ok && ca.Config.IsMember(s.ids[from]) {
		n.told = max(n.told, ca.Config.Epoch)
		if r := n.node.Status(n.ctx).RebuildingShare; r > ca.Config.Epoch && ca.Config.Epoch > n.state.LatestCommittedEpoch() {
			s.stats["commit_advance_older_than_rebuild"]++
		}
	}
	n.node.HandleMessage(n.ctx, s.ids[from], msg)
	s.step(to)
}

// deliverDirect puts msg through the encoding and hands it to node to, as
// if it had just arrived from from.
func (s *sim) deliverDirect(from, to int, msg tq.PeerMsg) {
	frame, err := tq.EncodeMsg(msg)
	if err != nil {
		s.failf("encode: %v", err)
	}
	if msg, err = tq.DecodeMsg(frame); err != nil {
		s.failf("decode: %v", err)
	}
	s.handle(from, to, msg)
}

// injectExpunged hands node ev.Node an Expunged for the latest committed
// epoch from ev.Peer, as ev.Peer would send it. The node must ignore it
// unless it is real news from a member: it holds a configuration, none as
// new, is not a member, and the sender is.
func (s *sim) injectExpunged(ev Event) {
	last := s.nx.latestCommitted()
	n, from := s.nodes[ev.Node], s.ids[ev.Peer]
	msg := tq.PeerMsg{RackID: s.nx.rack, Body: tq.ExpungedMsg{Epoch: last.epoch, Config: last.config.Clone()}}
	seen := max(n.state.LatestEpochSeen(), n.node.CoordinatorStatus(n.ctx).Epoch)
	mustIgnore := seen == 0 || seen >= last.epoch || last.config.IsMember(n.id) || !last.config.IsMember(from)
	if !mustIgnore && !s.everCommittedMember(n.id) {
		// A sled whose only configurations are of aborted epochs would
		// take this as news, but no member ever sends it one: it asks
		// nobody for shares. Not a case to inject.
		return
	}
	if seen == 0 {
		s.stats["expunged_to_fresh"]++
	}
	was := n.state.Expunged
	s.deliverDirect(ev.Peer, ev.Node, msg)
	if mustIgnore && was == nil && n.state.Expunged != nil {
		s.failf("%s accepted an Expunged for epoch %d from %s it must ignore (seen %d)", n.id, last.epoch, from, seen)
	}
}

func (s *sim) startConfig(ev Event) {
	members := s.idsOf(ev.Members)
	coord := s.ids[ev.Coordinator]
	c := s.nx.begin(members, coord, ev.Kind == "lrtq_upgrade", ev.Threshold)
	if int(c.threshold) != len(members)/2+1 {
		s.stats["threshold_varied"]++
	}
	if c.upgrade {
		inside := 0
		for _, h := range s.lrtqHolders() {
			if slices.Contains(ev.Members, h) {
				inside++
			}
		}
		if inside < len(s.lrtqHolders()) {
			s.stats["lrtq_upgrade_partial"]++
		}
		if inside < int(tq.LrtqThreshold(len(s.nx.lrtqMembers))) {
			s.stats["lrtq_upgrade_below_k"]++
		}
	}
	if s.nx.rack == (tq.RackID{}) {
		s.failf("no rack id")
	}
	for _, m := range members {
		s.nodes[s.index(m)].fresh = false
	}
	n := s.nodes[ev.Coordinator]
	if !n.up {
		return // the call fails; the poll will abort
	}
	var err error
	if c.upgrade {
		err = n.node.CoordinateUpgradeFromLrtq(n.ctx, tq.LrtqUpgradeMsg{RackID: s.nx.rack, Epoch: c.epoch, Members: members, Threshold: c.threshold})
	} else {
		err = n.node.CoordinateReconfiguration(n.ctx, tq.ReconfigureMsg{RackID: s.nx.rack, Epoch: c.epoch, LastCommittedEpoch: c.lastCommitted, Members: members, Threshold: c.threshold})
	}
	if err != nil {
		s.failf("%s: coordinate epoch %d: %v", n.id, c.epoch, err)
	}
	// An identical call again must be a no-op.
	if c.upgrade {
		err = n.node.CoordinateUpgradeFromLrtq(n.ctx, tq.LrtqUpgradeMsg{RackID: s.nx.rack, Epoch: c.epoch, Members: members, Threshold: c.threshold})
	} else {
		err = n.node.CoordinateReconfiguration(n.ctx, tq.ReconfigureMsg{RackID: s.nx.rack, Epoch: c.epoch, LastCommittedEpoch: c.lastCommitted, Members: members, Threshold: c.threshold})
	}
	if err != nil {
		s.failf("%s: repeated coordinate epoch %d: %v", n.id, c.epoch, err)
	}
	s.step(ev.Coordinator)
	for _, m := range members {
		if i := s.index(m); s.nodes[i].removed {
			s.failf("removed node %s re-added", m)
		}
	}
}

func (s *sim) nexusPoll() {
	a := s.nx.active()
	if a == nil || a.state != nxPreparing {
		return
	}
	n := s.nodes[s.index(a.coordinator)]
	if !n.up {
		s.nx.abort(a)
		return
	}
	st := n.node.CoordinatorStatus(n.ctx)
	if st.Epoch != a.epoch || st.State == tq.NotCoordinating {
		// The coordinator lost its coordination (it restarted): abort,
		// as Nexus does after its timeout.
		s.nx.abort(a)
		return
	}
	if st.State != tq.Preparing {
		return
	}
	if a.config == nil {
		a.config = st.Config
	} else if !a.config.Equal(st.Config) {
		s.failf("coordinator changed configuration %d", a.epoch)
	}
	for _, id := range st.Acked {
		a.prepared[id] = true
	}
	if len(a.prepared) >= int(a.threshold)+a.z {
		a.state = nxCommitting
		// From here on the sleds left out are removed for good: the
		// members of the last committed epoch, or for an upgrade every
		// LRTQ holder.
		var before []tq.BaseboardID
		if last := s.nx.byEpoch(a.lastCommitted); last != nil {
			before = last.members
		} else if a.upgrade {
			before = s.idsOf(s.lrtqHolders())
		}
		for _, m := range before {
			if !slices.Contains(a.members, m) {
				s.nodes[s.index(m)].removed = true
			}
		}
	}
}

func (s *sim) nexusCommit(i int) {
	a := s.nx.active()
	n := s.nodes[i]
	id := s.ids[i]
	var status tq.CommitStatus
	var err error
	if a.prepared[id] {
		status, err = n.node.Commit(n.ctx, s.nx.rack, a.epoch)
		if errors.Is(err, tq.ErrNotPrepared) {
			s.failf("%s: acked prepare of %d but Commit says not prepared", id, a.epoch)
		}
	} else {
		status, err = n.node.Commit(n.ctx, s.nx.rack, a.epoch)
		if errors.Is(err, tq.ErrNotPrepared) {
			status, err = n.node.PrepareAndCommit(n.ctx, a.config)
		}
	}
	s.step(i)
	if err != nil {
		s.failf("%s: commit %d: %v", id, a.epoch, err)
	}
	switch status {
	case tq.CommitCommitted, tq.CommitStale:
		a.committed[id] = true
		if a.upgrade {
			s.stats["lrtq_upgrade_commit_ack"]++
		}
	case tq.CommitPending:
	default:
		s.failf("%s: commit status %v", id, status)
	}
	if len(a.committed) == len(a.members) {
		a.state = nxCommitted
	}
}

func (s *sim) loadSecret(i int) {
	n := s.nodes[i]
	e := n.ctx.PersistentState().LatestCommittedEpoch()
	if e == 0 {
		e = tq.LrtqEpoch
	}
	secret, pending, err := n.node.LoadRackSecret(n.ctx, e)
	s.step(i)
	switch {
	case errors.Is(err, tq.ErrExpunged):
	case err != nil:
		s.failf("%s: load secret %d: %v", n.id, e, err)
	case pending:
	default:
		s.checkSecret(e, secret)
	}
}

// ---------------------------------------------------------------------------
// Ground truth and invariants.

// truth is an epoch's secret as recorded by recordTruths.
func (s *sim) truth(e tq.Epoch) *tqcrypto.Secret {
	sec, ok := s.truths[e]
	if !ok {
		s.failf("ground truth of epoch %d was never recorded", e)
	}
	return sec
}

// recordTruths combines the secret of every epoch Nexus committed (and
// LRTQ's) that has none recorded yet, from the ledgers: K shares persisted
// by distinct members, each verified against the recorded digest. It runs
// after every step, so it sees each epoch while K+Z members hold its share,
// before any of them can have pruned it (that takes a newer commit).
func (s *sim) recordTruths() {
	if s.nx.lrtqMembers != nil && s.truths[tq.LrtqEpoch] == nil {
		var shares []tqcrypto.Share
		var k int
		seen := map[uint8]bool{}
		add := func(p *tq.LrtqSharePkg) {
			if p != nil && p.VerifyShare(p.Share) == nil && !seen[p.Share.X()] {
				seen[p.Share.X()] = true
				shares = append(shares, p.Share)
				k = int(p.Threshold)
			}
		}
		for _, n := range s.nodes {
			add(n.state.Lrtq)
			if ls := n.state.LrtqSetup; ls != nil {
				for _, p := range ls.Pending {
					add(p)
				}
			}
		}
		if k > 0 && len(shares) >= k {
			sec, err := tqcrypto.Combine(shares, k)
			if err != nil {
				s.failf("ground truth lrtq: %v", err)
			}
			s.truths[tq.LrtqEpoch] = sec
		}
	}
	for _, c := range s.nx.committedEpochs() {
		if s.truths[c.epoch] != nil {
			continue
		}
		if c.config == nil {
			s.failf("ground truth: nexus has no configuration %d", c.epoch)
		}
		shares := s.sharesHeld(c.config)
		if len(shares) < int(c.config.Threshold) {
			s.failf("ground truth %d: only %d shares in the ledgers when it committed", c.epoch, len(shares))
		}
		sec, err := tqcrypto.Combine(shares, int(c.config.Threshold))
		if err != nil {
			s.failf("ground truth %d: %v (%d shares)", c.epoch, err, len(shares))
		}
		s.truths[c.epoch] = sec
	}
}

// sharesHeld returns the shares of cfg's epoch that its members hold in
// their ledgers, each verified against the digest cfg records.
func (s *sim) sharesHeld(cfg *tq.Configuration) []tqcrypto.Share {
	var shares []tqcrypto.Share
	for _, m := range cfg.Members {
		if sh, ok := s.nodes[s.index(m.ID)].state.Shares[cfg.Epoch]; ok {
			if err := tqcrypto.VerifyShare(sh, m.ShareDigest); err != nil {
				s.failf("ledger of %s holds a bad share of %d", m.ID, cfg.Epoch)
			}
			shares = append(shares, sh)
		}
	}
	return shares
}

// sleptThrough reports whether node i, committing epoch e after its
// previous latest commit prev, was a member of an epoch Nexus committed
// in between but never committed it: it lagged, and caught up with peers
// that had pruned everything older than their own commits.
func (s *sim) sleptThrough(i int, prev, e tq.Epoch) bool {
	for _, c := range s.nx.committedEpochs() {
		if c.epoch > prev && c.epoch < e && slices.Contains(c.members, s.ids[i]) {
			return true
		}
	}
	return false
}

func (s *sim) checkSecret(e tq.Epoch, got *tqcrypto.Secret) {
	if want := s.truth(e); !want.Equal(got) {
		s.failf("loaded secret of epoch %d differs from the ground truth", e)
	}
}

func (s *sim) checkInvariants() {
	configs := map[tq.Epoch]*tq.Configuration{}
	for _, c := range s.nx.configs {
		if c.config != nil {
			configs[c.epoch] = c.config
		}
	}
	latest := s.nx.latestCommitted()
	for i, n := range s.nodes {
		st := &n.state
		for _, e := range slices.Sorted(mapKeys(st.Configs)) {
			c := st.Configs[e]
			if prev, ok := configs[e]; ok && !prev.Equal(c) {
				s.failf("configurations of epoch %d differ (%s)", e, n.id)
			}
			configs[e] = c
		}
		for e := range st.Commits {
			nc := s.nx.byEpoch(e)
			if nc == nil || nc.state == nxAborted || nc.state == nxPreparing {
				s.failf("%s committed epoch %d that Nexus did not commit", n.id, e)
			}
			// Nexus's configuration: the node's own may be pruned.
			if !slices.Contains(nc.members, n.id) {
				s.failf("%s committed epoch %d it is not a member of", n.id, e)
			}
		}
		if x := st.Expunged; x != nil && !s.everCommittedMember(n.id) {
			s.failf("%s was never a member of a committed epoch but is marked expunged", n.id)
		}
		if x := st.Expunged; x != nil {
			if c := s.nx.byEpoch(x.Epoch); c == nil || slices.Contains(c.members, n.id) || c.state == nxPreparing || c.state == nxAborted {
				s.failf("%s marked expunged at epoch %d wrongly", n.id, x.Epoch)
			}
		}
		if latest != nil && st.Expunged != nil && slices.Contains(latest.members, n.id) {
			s.failf("member %s of the latest committed epoch is expunged", n.id)
		}
		// The ledger is pruned to what the protocol can still use: the
		// latest commit, prepared, and nothing older (committed or
		// aborted), and no LRTQ share once the node committed. LRTQ is
		// retired only after Nexus committed the upgrade.
		lc := st.LatestCommittedEpoch()
		if lc != 0 {
			if !st.Prepared(lc) {
				s.failf("%s lost the configuration or share of its latest commit %d", n.id, lc)
			}
			for e := range st.Configs {
				if e < lc {
					s.failf("%s still holds the configuration of epoch %d below its commit %d", n.id, e, lc)
				}
			}
			for e := range st.Shares {
				if e < lc {
					s.failf("%s still holds its share of epoch %d below its commit %d", n.id, e, lc)
				}
			}
			if st.Lrtq != nil || (st.LrtqSetup != nil && len(st.LrtqSetup.Pending) > 0) {
				s.failf("%s still holds LRTQ shares after committing epoch %d", n.id, lc)
			}
		}
		if st.LrtqRetired && (lc == 0 || !s.upgradeCommitted()) {
			s.failf("%s retired LRTQ before the upgrade committed", n.id)
		}
		if !n.up {
			continue
		}
		// The node's view of its connections is the network's: a stale
		// disconnect never reached it.
		for j := range s.nodes {
			linked := s.linked(i, j)
			if _, ok := s.conns[pair(i, j)]; ok != linked {
				s.failf("sim: connection table out of step for %d-%d", i, j)
			}
			if n.ctx.IsConnected(s.ids[j]) != linked {
				s.failf("%s thinks its connection to %s is %t, the network says %t", n.id, s.ids[j], !linked, linked)
			}
		}
		if len(n.ctx.Alarms()) > 0 {
			s.failf("%s raised alarms: %v", n.id, n.ctx.Alarms())
		}
		if n.ctx.PersistentStateChanged() {
			s.failf("%s: state changed but not persisted", n.id)
		}
		status := n.node.Status(n.ctx)
		if status.Coordinating != 0 && status.RebuildingShare != 0 {
			s.failf("%s coordinates %d while rebuilding %d", n.id, status.Coordinating, status.RebuildingShare)
		}
		// A node rebuilds exactly the newest epoch above its commit
		// whose configuration it holds without a share (also right
		// after a restart), and never goes back to an older one.
		if st.Expunged == nil {
			if r, want := status.RebuildingShare, pendingRebuild(st); r != want {
				s.failf("%s rebuilds epoch %d, its ledger says %d", n.id, r, want)
			}
		}
		if r := status.RebuildingShare; r != 0 {
			if r <= lc || r < n.maxRebuild {
				s.failf("%s rebuilds epoch %d (committed %d, rebuilt up to %d before)", n.id, r, lc, n.maxRebuild)
			}
			n.maxRebuild = r
		}
		cs := n.node.CoordinatorStatus(n.ctx)
		if cs.State == "" {
			s.failf("%s: empty coordinator state", n.id)
		}
		if cs.State == tq.Preparing {
			for _, id := range cs.Acked {
				if !s.holdsPrepare(s.index(id), cs.Epoch) {
					s.failf("%s counts %s as acked for %d but its ledger lacks the prepare", n.id, id, cs.Epoch)
				}
			}
		}
		_ = i
	}
	s.checkLrtq()
	s.recordTruths()
	s.checkCatchUp()
	for _, c := range s.nx.configs {
		for id := range c.committed {
			st := &s.nodes[s.index(id)].state
			if !st.Commits[c.epoch] && st.LatestCommittedEpoch() < c.epoch {
				s.failf("Nexus counts %s committed at %d but its ledger lacks it", id, c.epoch)
			}
		}
		for id := range c.prepared {
			if !s.holdsPrepare(s.index(id), c.epoch) {
				s.failf("Nexus counts %s prepared at %d but its ledger lacks it", id, c.epoch)
			}
		}
	}
}

// checkCatchUp: pruning never leaves a lagging member without a way to
// catch up. Every node prunes an epoch only once it committed a newer one,
// and answers any request about an older epoch from its latest commit
// (whose configuration and share its ledger keeps, see above); that reply
// leads a lagging member, one commit at a time, to the newest epoch Nexus
// committed, whose share it then rebuilds from K members. So that epoch's
// secret must stay recoverable from the ledgers: at least K of its members
// hold a verified share of it, whatever the others pruned.
func (s *sim) checkCatchUp() {
	c := s.nx.latestCommitted()
	if c == nil || c.config == nil {
		return
	}
	if got := len(s.sharesHeld(c.config)); got < int(c.config.Threshold) {
		s.failf("only %d members hold a share of the newest committed epoch %d (K=%d): a lagging member could not catch up",
			got, c.epoch, c.config.Threshold)
	}
}

// upgradeCommitted reports whether Nexus committed an LRTQ upgrade.
func (s *sim) upgradeCommitted() bool {
	for _, c := range s.nx.committedEpochs() {
		if c.upgrade {
			return true
		}
	}
	return false
}

// pendingRebuild is the newest epoch above st's latest commit whose
// configuration st holds without its share, 0 if none.
func pendingRebuild(st *tq.PersistentState) tq.Epoch {
	var best tq.Epoch
	for e := range st.Configs {
		if _, ok := st.Shares[e]; !ok && e > st.LatestCommittedEpoch() {
			best = max(best, e)
		}
	}
	return best
}

// checkLrtqPackages runs whenever node i persists: every LRTQ package in
// any ledger is a share of the one LRTQ secret (the same 255 digests), and
// only the initiator keeps a setup record.
func (s *sim) checkLrtqPackages(i int) {
	n := s.nodes[i]
	one := func(p *tq.LrtqSharePkg) {
		if s.lrtqDigests == nil {
			s.lrtqDigests = slices.Clone(p.ShareDigests)
		} else if !slices.Equal(s.lrtqDigests, p.ShareDigests) {
			s.failf("%s holds a package of another LRTQ secret", n.id)
		}
	}
	if n.state.Lrtq != nil {
		one(n.state.Lrtq)
	}
	if ls := n.state.LrtqSetup; ls != nil {
		if s.rss == nil || i != s.rss.initiator {
			s.failf("%s holds an LRTQ setup record; only the initiator may", n.id)
		}
		for _, p := range ls.Pending {
			one(p)
		}
	}
}

// checkLrtq: from the moment setup starts every initial member's package is
// durable, in the member's ledger or in the initiator's, and once the
// initiator reports the setup done every member holds its own. The only
// exception is retirement: once the upgrade committed (checkInvariants
// makes sure of that), a ledger that committed a trust-quorum epoch drops
// the LRTQ shares it held, the member's own package or the initiator's
// pending ones.
func (s *sim) checkLrtq() {
	if s.rss == nil {
		return
	}
	init := &s.nodes[s.rss.initiator].state
	for _, i := range s.rss.members {
		st := &s.nodes[i].state
		_, pending := init.LrtqSetup.Pending[s.ids[i]]
		has := st.Lrtq != nil
		retired := st.LrtqRetired || init.LrtqRetired
		if !has && !pending && !retired {
			s.failf("the LRTQ package of %s is in no ledger", s.ids[i])
		}
		if s.rss.done && pending {
			s.failf("LRTQ setup reported done but the package of %s is still pending", s.ids[i])
		}
		if s.rss.done && !has && !retired {
			s.failf("LRTQ setup reported done but %s has no package", s.ids[i])
		}
	}
}

// holdsPrepare reports whether node i still holds what it acknowledged for
// epoch e: its configuration and share. The only excuse is pruning: once
// the node commits a newer epoch, e (committed there or not) is dropped
// from the ledger. That cannot happen while e is the epoch Nexus is
// preparing or committing (nothing newer exists).
func (s *sim) holdsPrepare(i int, e tq.Epoch) bool {
	st := &s.nodes[i].state
	if st.Prepared(e) {
		return true
	}
	if a := s.nx.active(); a != nil && a.epoch == e {
		return false
	}
	return st.LatestCommittedEpoch() > e
}

// everCommittedMember reports whether id was a member of an epoch Nexus
// committed, or held an LRTQ package.
func (s *sim) everCommittedMember(id tq.BaseboardID) bool {
	if st := &s.nodes[s.index(id)].state; st.Lrtq != nil || st.LrtqRetired {
		return true
	}
	for _, c := range s.nx.committedEpochs() {
		if slices.Contains(c.members, id) {
			return true
		}
	}
	return false
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// summary is a compact fingerprint of the observable state after a step.
func (s *sim) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "net=%d", len(s.net))
	for _, n := range s.nodes {
		if n.fresh && !n.up {
			continue
		}
		fmt.Fprintf(&b, " %d:%t/%d/%d", s.index(n.id), n.up, n.state.LatestEpochSeen(), n.state.LatestCommittedEpoch())
		if n.state.Expunged != nil {
			b.WriteString("x")
		}
	}
	if a := s.nx.active(); a != nil {
		fmt.Fprintf(&b, " nx=%d:%s:%d/%d", a.epoch, a.state, len(a.prepared), len(a.committed))
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// Running.

// runEvent applies one event, checks the invariants, and logs it.
func (s *sim) runEvent(ev Event) (err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(simFail)
			if !ok {
				panic(r)
			}
			err = f.err
			s.log = append(s.log, ev)
		}
	}()
	if ev.Kind == "setup" {
		s.applySetup(ev)
	} else {
		s.apply(ev)
	}
	s.checkInvariants()
	ev.Summary = s.summary()
	s.log = append(s.log, ev)
	return nil
}

// runRandom runs a seeded random simulation of the given length followed
// by the liveness phase.
func (s *sim) runRandom(p simParams, steps int) error {
	if err := s.runEvent(s.setupEvent(p)); err != nil {
		return err
	}
	for range steps {
		if err := s.runEvent(s.nextEvent()); err != nil {
			return err
		}
	}
	return s.liveness()
}

// liveness heals everything and drives Nexus until the final epoch is
// committed by all its members, then checks that they all load the same
// secret and that every earlier committed secret is recoverable from it.
func (s *sim) liveness() error {
	run := func(ev Event) error { return s.runEvent(ev) }
	for i, n := range s.nodes {
		if !n.up {
			if err := run(Event{Kind: "restart", Node: i}); err != nil {
				return err
			}
		}
	}
	for _, p := range slices.SortedFunc(mapKeys(s.cut), func(x, y [2]int) int {
		if x[0] != y[0] {
			return x[0] - y[0]
		}
		return x[1] - y[1]
	}) {
		if err := run(Event{Kind: "connect", Node: p[0], Peer: p[1]}); err != nil {
			return err
		}
	}
	// Before Nexus does anything more, the members that fell behind the
	// newest commit unlock by themselves from the peers' pruned ledgers.
	if err := run(Event{Kind: "catch_up"}); err != nil {
		return err
	}
	// drain delivers everything in flight (in order) and ticks once.
	drain := func() error {
		for len(s.net) > 0 {
			if err := run(Event{Kind: "deliver"}); err != nil {
				return err
			}
		}
		return run(Event{Kind: "tick", Delta: 1000})
	}
	for round := 0; ; round++ {
		if round > 200 {
			return fmt.Errorf("liveness: no progress after %d rounds: %s", round, s.summary())
		}
		if err := drain(); err != nil {
			return err
		}
		a := s.nx.active()
		switch {
		case a != nil && a.state == nxPreparing:
			if err := run(Event{Kind: "nexus_poll"}); err != nil {
				return err
			}
			if s.nx.active() != a {
				// Aborted: Nexus starts the same change again with
				// another coordinator.
				if err := s.restartAborted(a, run); err != nil {
					return err
				}
			}
			continue
		case a != nil && a.state == nxCommitting:
			for _, m := range a.members {
				if !a.committed[m] {
					if err := run(Event{Kind: "commit", Node: s.index(m)}); err != nil {
						return err
					}
				}
			}
			continue
		}
		if s.rssPending() {
			if err := run(Event{Kind: "rss_poll"}); err != nil {
				return err
			}
			continue
		}
		if s.nx.latestCommitted() == nil {
			// Nothing ever committed: run the first configuration (or
			// the LRTQ upgrade) now.
			ev, ok := s.genUpgrade()
			if !ok {
				ev, ok = s.genReconfigure()
			}
			if !ok {
				return fmt.Errorf("liveness: cannot start a first configuration")
			}
			if err := run(ev); err != nil {
				return err
			}
			continue
		}
		break
	}
	return run(Event{Kind: "final"})
}

// catchUpWithoutNexus is the "catch_up" event of liveness, run once every
// node is up and connected: every member of the newest epoch Nexus
// committed that lags behind it (its latest commit is older, or it still
// runs LRTQ) unlocks without Nexus, as in a cold boot (design §7). It asks
// the members of its own latest commit for shares; peers that pruned that
// epoch long ago answer with their own latest commit, which it follows
// (committing, or rebuilding its share from K members) until it holds a
// share it can use. Its load must finish, never stay pending for want of
// an answer, and give the true secret of the epoch it asked for. Its own
// deliveries and ticks are applied directly, as in checkFinal.
func (s *sim) catchUpWithoutNexus() {
	c := s.nx.latestCommitted()
	if c == nil {
		return
	}
	drain := func() {
		for len(s.net) > 0 {
			s.apply(Event{Kind: "deliver"})
			s.checkInvariants()
		}
		s.apply(Event{Kind: "tick", Delta: 1000})
		s.checkInvariants()
	}
	for _, m := range c.members {
		i := s.index(m)
		n := s.nodes[i]
		st := &n.state
		e := st.LatestCommittedEpoch()
		switch {
		case st.Expunged != nil || e >= c.epoch:
			continue
		case e == 0 && st.Lrtq == nil:
			// Never committed anything: only Nexus can bring it in.
			continue
		case e == 0:
			e = tq.LrtqEpoch
		}
		s.stats["lagging_member_unlocked"]++
		for try := 0; ; try++ {
			if try == 50 {
				s.failf("%s, behind at epoch %d, cannot unlock without Nexus (newest commit %d): %s", n.id, e, c.epoch, s.summary())
			}
			secret, pending, err := n.node.LoadRackSecret(n.ctx, e)
			s.step(i)
			if err != nil {
				s.failf("%s, behind at epoch %d: load: %v", n.id, e, err)
			}
			if !pending {
				s.checkSecret(e, secret)
				break
			}
			drain()
		}
		if n.state.LatestCommittedEpoch() > e {
			// It learnt of a newer commit from a peer and committed
			// it: the path through pruned ledgers.
			s.stats["lagging_member_caught_up"]++
		}
	}
}

func (s *sim) restartAborted(a *nexusConfig, run func(Event) error) error {
	members := s.idxs(a.members)
	var coords []int
	if last := s.nx.latestCommitted(); last != nil {
		for _, i := range members {
			if last.committed[s.ids[i]] {
				coords = append(coords, i)
			}
		}
	} else {
		for _, i := range members {
			// An upgrade's coordinator must hold an LRTQ package.
			if !a.upgrade || s.nodes[i].state.Lrtq != nil {
				coords = append(coords, i)
			}
		}
	}
	if len(coords) == 0 {
		return fmt.Errorf("liveness: no coordinator for retry")
	}
	kind := "reconfigure"
	if a.upgrade {
		kind = "lrtq_upgrade"
	}
	// Pick deterministically but not always the same node.
	c := coords[int(a.epoch)%len(coords)]
	return run(Event{Kind: kind, Members: members, Coordinator: c, Threshold: int(a.threshold)})
}

// checkFinal is the "final" event. Its own deliveries and ticks are
// applied directly rather than logged: they are a deterministic function of
// the state, so a replay of the "final" event repeats them.
func (s *sim) checkFinal() {
	final := s.nx.latestCommitted()
	drain := func() {
		for len(s.net) > 0 {
			s.apply(Event{Kind: "deliver"})
			s.checkInvariants()
		}
		s.apply(Event{Kind: "tick", Delta: 1000})
		s.checkInvariants()
	}
	load := func(i int, e tq.Epoch) *tqcrypto.Secret {
		n := s.nodes[i]
		for try := 0; try < 50; try++ {
			secret, pending, err := n.node.LoadRackSecret(n.ctx, e)
			s.step(i)
			if err != nil {
				s.failf("final: %s load %d: %v", n.id, e, err)
			}
			if !pending {
				return secret
			}
			drain()
		}
		s.failf("final: %s cannot load epoch %d", n.id, e)
		return nil
	}
	var first *tqcrypto.Secret
	for _, m := range final.members {
		i := s.index(m)
		if got := s.nodes[i].state.LatestCommittedEpoch(); got != final.epoch {
			s.failf("final: %s latest commit %d, want %d", m, got, final.epoch)
		}
		sec := load(i, final.epoch)
		if first == nil {
			first = sec
			s.checkSecret(final.epoch, sec)
		} else if !first.Equal(sec) {
			s.failf("final: members load different secrets")
		}
	}
	// Every earlier committed epoch (and LRTQ's) is recoverable.
	loader := s.index(final.members[len(final.members)-1])
	var older []tq.Epoch
	if s.nx.lrtqMembers != nil {
		older = append(older, tq.LrtqEpoch)
	}
	for _, c := range s.nx.committedEpochs() {
		if c.epoch != final.epoch {
			older = append(older, c.epoch)
		}
	}
	for _, e := range older {
		s.checkSecret(e, load(loader, e))
	}
	// Quiescence: with everyone up and connected, coordinators of epochs
	// older than the final commit hear of it within a retry or two and
	// stop. After that grace, a prepare of such an epoch may only still
	// go to an expunged sled (which never answers), and nobody may still
	// be collecting shares for one.
	s.now += tq.Instant(8 * tq.Second)
	for round := range 6 {
		s.quiescing = round >= 2
		s.apply(Event{Kind: "tick", Delta: 8000})
		s.checkInvariants()
		drain()
	}
	s.quiescing = false
	for _, n := range s.nodes {
		cs := n.node.CoordinatorStatus(n.ctx)
		if cs.State != tq.NotCoordinating && cs.State != tq.Preparing && cs.Epoch < final.epoch {
			s.failf("final: %s still %s for epoch %d after epoch %d committed", n.id, cs.State, cs.Epoch, final.epoch)
		}
	}
}

// writeLog renders the event log as JSON lines.
func (s *sim) writeLog() []byte {
	var b []byte
	for _, ev := range s.log {
		line, _ := json.Marshal(ev)
		b = append(append(b, line...), '\n')
	}
	return b
}

// replay re-runs a log step by step, checking that each step reproduces
// the recorded summary. logf, if not nil, is told about every step.
func replay(log []byte, logf func(format string, args ...any)) error {
	var s *sim
	for n, line := range strings.Split(strings.TrimSpace(string(log)), "\n") {
		var ev Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			return fmt.Errorf("line %d: %v", n+1, err)
		}
		if s == nil {
			if ev.Kind != "setup" {
				return fmt.Errorf("line 1: log does not start with setup")
			}
			s = newSim(ev.Seed)
		}
		want := ev.Summary
		ev.Summary = ""
		if err := s.runEvent(ev); err != nil {
			return fmt.Errorf("step %d (%s): %w", n+1, line, err)
		}
		got := s.log[len(s.log)-1].Summary
		if logf != nil {
			logf("step %d: %s -> %s", n+1, line, got)
		}
		if want != "" && got != want {
			return fmt.Errorf("step %d: replay diverged:\n got %s\nwant %s", n+1, got, want)
		}
	}
	if s == nil {
		return fmt.Errorf("empty log")
	}
	return nil
}

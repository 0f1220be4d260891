package trustquorum_test

import (
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

// Event is one step of a simulation run, as written to the event log.
type Event struct {
	Kind        string `json:"kind"`
	Node        int    `json:"node,omitempty"`
	Peer        int    `json:"peer,omitempty"`
	Index       int    `json:"index,omitempty"`
	Dup         bool   `json:"dup,omitempty"`
	Members     []int  `json:"members,omitempty"`
	Coordinator int    `json:"coordinator,omitempty"`
	Delta       int64  `json:"delta,omitempty"`
	// Setup fields (first event only).
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
}

type inflight struct {
	from, to int
	frame    []byte
}

type sim struct {
	seed     uint64
	rng      *rand.Rand
	ids      []tq.BaseboardID
	nodes    []*simNode
	cut      map[[2]int]bool // partitioned pairs (lower index first)
	net      []inflight
	now      tq.Instant
	nx       *nexusModel
	log      []Event
	messages int // envelopes put on the network
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
	return &sim{seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), cut: map[[2]int]bool{}, stats: map[string]int{}}
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
			}
		}
	}
	for _, env := range n.ctx.DrainEnvelopes() {
		if env.From != n.id {
			s.failf("%s: envelope from %s", n.id, env.From)
		}
		to := s.index(env.To)
		if !s.linked(i, to) {
			s.failf("%s: sent %s to unconnected %s", n.id, env.Msg, env.To)
		}
		frame, err := tq.EncodeMsg(env.Msg)
		if err != nil {
			s.failf("%s: encode %s: %v", n.id, env.Msg, err)
		}
		s.net = append(s.net, inflight{from: i, to: to, frame: frame})
		s.messages++
		s.stats["msg:"+env.Msg.Body.Kind()]++
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

func (s *sim) connectPair(a, b int) {
	s.nodes[a].node.OnConnect(s.nodes[a].ctx, s.ids[b])
	s.step(a)
	s.nodes[b].node.OnConnect(s.nodes[b].ctx, s.ids[a])
	s.step(b)
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
	if len(ev.Lrtq) > 0 {
		pkgs, err := tq.NewLrtqPackages(s.nodeRand(-1, 0), s.nx.rack, s.idsOf(ev.Lrtq))
		if err != nil {
			s.failf("lrtq setup: %v", err)
		}
		for _, i := range ev.Lrtq {
			st := tq.NewPersistentState()
			st.Lrtq = pkgs[s.ids[i]]
			b, err := tq.EncodeState(&st)
			if err != nil {
				s.failf("encode: %v", err)
			}
			s.nodes[i].disk = b
			s.nodes[i].fresh = false
		}
		for _, i := range ev.Learners {
			s.nodes[i].learner = true
			s.nodes[i].fresh = false
		}
		s.nx.lrtqMembers = s.idsOf(ev.Lrtq)
		s.nx.nextEpoch = 2
	}
	for i := range s.nodes {
		s.boot(i)
	}
	for _, i := range ev.Learners {
		if err := s.nodes[i].node.LearnLrtq(s.nodes[i].ctx, s.nx.rack); err != nil {
			s.failf("learn: %v", err)
		}
		s.step(i)
	}
}

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
	return Event{Kind: "crash", Node: s.pick(up)}, true
}

func (s *sim) genRestart() (Event, bool) {
	down := s.upNodes(false)
	if len(down) == 0 {
		return Event{}, false
	}
	return Event{Kind: "restart", Node: s.pick(down)}, true
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

func (s *sim) genUpgrade() (Event, bool) {
	if s.nx.lrtqMembers == nil || s.nx.latestCommitted() != nil || s.nx.active() != nil {
		return Event{}, false
	}
	members := s.lrtqHolders()
	return Event{Kind: "lrtq_upgrade", Members: members, Coordinator: s.pick(members)}, true
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
	// Candidates for adding: sleds that never committed anything, hold
	// no LRTQ package, and were never removed (an expunged sled needs a
	// factory reset before it may rejoin). Members of aborted epochs count.
	var fresh []int
	for i, n := range s.nodes {
		if !n.removed && !n.learner && n.state.Lrtq == nil && len(n.state.Commits) == 0 &&
			(last == nil || !slices.Contains(last.members, s.ids[i])) {
			fresh = append(fresh, i)
		}
	}
	s.rng.Shuffle(len(fresh), func(a, b int) { fresh[a], fresh[b] = fresh[b], fresh[a] })
	if last == nil {
		if s.nx.lrtqMembers != nil || len(fresh) < 3 {
			return Event{}, false
		}
		members := fresh[:3+s.rng.IntN(min(6, len(fresh)-2))]
		slices.Sort(members)
		return Event{Kind: "reconfigure", Members: members, Coordinator: s.pick(members)}, true
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
	return Event{Kind: "reconfigure", Members: members, Coordinator: s.pick(coords)}, true
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
		n := s.nodes[m.to]
		n.node.HandleMessage(n.ctx, s.ids[m.from], msg)
		s.step(m.to)
	case "drop":
		s.net = slices.Delete(s.net, ev.Index, ev.Index+1)
	case "tick":
		s.now += tq.Instant(ev.Delta) * tq.Instant(tq.Millisecond)
		for _, i := range s.upNodes(true) {
			s.nodes[i].node.Tick(s.nodes[i].ctx, s.now)
			s.step(i)
		}
	case "disconnect":
		wasLinked := s.linked(ev.Node, ev.Peer)
		s.cut[pair(ev.Node, ev.Peer)] = true
		s.dropBetween(ev.Node, ev.Peer)
		if wasLinked {
			for _, x := range [][2]int{{ev.Node, ev.Peer}, {ev.Peer, ev.Node}} {
				n := s.nodes[x[0]]
				n.node.OnDisconnect(n.ctx, s.ids[x[1]])
				s.step(x[0])
			}
		}
	case "connect":
		delete(s.cut, pair(ev.Node, ev.Peer))
		if s.linked(ev.Node, ev.Peer) {
			s.connectPair(ev.Node, ev.Peer)
		}
	case "crash":
		n := s.nodes[ev.Node]
		if n.node.CoordinatorStatus(n.ctx).State != tq.NotCoordinating {
			s.stats["coordinator_crash"]++
		}
		for j := range s.nodes {
			if s.linked(ev.Node, j) {
				s.nodes[j].node.OnDisconnect(s.nodes[j].ctx, n.id)
				s.step(j)
			}
		}
		n.up, n.node, n.ctx = false, nil, nil
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

func (s *sim) startConfig(ev Event) {
	members := s.idsOf(ev.Members)
	coord := s.ids[ev.Coordinator]
	c := s.nx.begin(members, coord, ev.Kind == "lrtq_upgrade")
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
		// From here on the sleds left out are removed for good.
		if last := s.nx.byEpoch(a.lastCommitted); last != nil {
			for _, m := range last.members {
				if !slices.Contains(a.members, m) {
					s.nodes[s.index(m)].removed = true
				}
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

// truth recomputes an epoch's secret from the ledgers: K shares persisted by
// distinct members, each verified against the recorded digest.
func (s *sim) truth(e tq.Epoch) *tqcrypto.Secret {
	if e == tq.LrtqEpoch && s.nx.lrtqMembers != nil {
		var shares []tqcrypto.Share
		var k int
		seen := map[uint8]bool{}
		for _, n := range s.nodes {
			if p := n.state.Lrtq; p != nil && p.VerifyShare(p.Share) == nil && !seen[p.Share.X()] {
				seen[p.Share.X()] = true
				shares = append(shares, p.Share)
				k = int(p.Threshold)
			}
		}
		sec, err := tqcrypto.Combine(shares, k)
		if err != nil {
			s.failf("ground truth lrtq: %v", err)
		}
		return sec
	}
	c := s.nx.byEpoch(e)
	if c == nil || c.config == nil {
		s.failf("ground truth: nexus has no configuration %d", e)
	}
	var shares []tqcrypto.Share
	for _, m := range c.config.Members {
		if sh, ok := s.nodes[s.index(m.ID)].state.Shares[e]; ok {
			if err := tqcrypto.VerifyShare(sh, m.ShareDigest); err != nil {
				s.failf("ledger of %s holds a bad share of %d", m.ID, e)
			}
			shares = append(shares, sh)
		}
	}
	sec, err := tqcrypto.Combine(shares, int(c.config.Threshold))
	if err != nil {
		s.failf("ground truth %d: %v (%d shares)", e, err, len(shares))
	}
	return sec
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
			if !st.Configs[e].IsMember(n.id) {
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
		if !n.up {
			continue
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

// holdsPrepare reports whether node i still holds what it acknowledged for
// epoch e: its configuration and share. The only excuse is pruning: once
// the node commits a newer epoch without having committed e, e can never
// commit there and is dropped from the ledger. That cannot happen while e
// is the epoch Nexus is preparing or committing (nothing newer exists).
func (s *sim) holdsPrepare(i int, e tq.Epoch) bool {
	st := &s.nodes[i].state
	if st.Prepared(e) {
		return true
	}
	if a := s.nx.active(); a != nil && a.epoch == e {
		return false
	}
	return st.LatestCommittedEpoch() > e && !st.Commits[e]
}

// everCommittedMember reports whether id was a member of an epoch Nexus
// committed, or held an LRTQ package.
func (s *sim) everCommittedMember(id tq.BaseboardID) bool {
	if s.nodes[s.index(id)].state.Lrtq != nil {
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
		coords = members
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
	return run(Event{Kind: kind, Members: members, Coordinator: c})
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

package trustquorum_test

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	tq "github.com/rackplane/rackplane/trustquorum"
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// cluster is a minimal fully connected set of nodes for unit tests.
type cluster struct {
	t     testing.TB
	rack  tq.RackID
	ids   []tq.BaseboardID
	nodes map[tq.BaseboardID]*tq.Node
	ctxs  map[tq.BaseboardID]*tq.NodeCtx
	net   []tq.Envelope
}

func uid(name string) tq.BaseboardID { return tq.BaseboardID{Part: "u", Serial: name} }

func newCluster(t testing.TB, names ...string) *cluster {
	c := &cluster{t: t, nodes: map[tq.BaseboardID]*tq.Node{}, ctxs: map[tq.BaseboardID]*tq.NodeCtx{}}
	copy(c.rack[:], "unit-test-rack!!")
	for i, n := range names {
		id := uid(n)
		c.ids = append(c.ids, id)
		c.ctxs[id] = tq.NewNodeCtx(id, tq.NewPersistentState())
		c.nodes[id] = tq.NewNode(c.ctxs[id], tq.Config{Rand: rand.NewChaCha8([32]byte{byte(i + 1)})})
	}
	for _, a := range c.ids {
		for _, b := range c.ids {
			if a != b {
				c.nodes[a].OnConnect(c.ctxs[a], b)
			}
		}
	}
	c.flush()
	return c
}

// flush moves every outbox to the network, as a driver would (persisting
// is implicit: the ctx holds the state).
func (c *cluster) flush() {
	for _, id := range c.ids {
		c.ctxs[id].ClearPersistentStateChanged()
		c.net = append(c.net, c.ctxs[id].DrainEnvelopes()...)
	}
}

// deliverAll delivers until the network is quiet, through the encoding.
func (c *cluster) deliverAll() {
	for i := 0; len(c.net) > 0; i++ {
		if i > 10000 {
			c.t.Fatal("network does not quiesce")
		}
		env := c.net[0]
		c.net = c.net[1:]
		c.handle(env.To, env.From, roundTrip(c.t, env.Msg))
	}
}

func (c *cluster) handle(to, from tq.BaseboardID, m tq.PeerMsg) {
	c.nodes[to].HandleMessage(c.ctxs[to], from, m)
	c.flush()
}

func roundTrip(t testing.TB, m tq.PeerMsg) tq.PeerMsg {
	t.Helper()
	b, err := tq.EncodeMsg(m)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tq.DecodeMsg(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (c *cluster) state(id tq.BaseboardID) *tq.PersistentState { return c.ctxs[id].PersistentState() }

// commitEpoch coordinates epoch on coord with all nodes of members and
// commits it everywhere.
func (c *cluster) commitEpoch(coord tq.BaseboardID, epoch, last tq.Epoch, members []tq.BaseboardID) *tq.Configuration {
	c.t.Helper()
	k := uint8(len(members)/2 + 1)
	if err := c.nodes[coord].CoordinateReconfiguration(c.ctxs[coord], tq.ReconfigureMsg{RackID: c.rack, Epoch: epoch, LastCommittedEpoch: last, Members: members, Threshold: k}); err != nil {
		c.t.Fatal(err)
	}
	c.flush()
	c.deliverAll()
	cs := c.nodes[coord].CoordinatorStatus(c.ctxs[coord])
	if cs.State != tq.Preparing || len(cs.Acked) != len(members) {
		c.t.Fatalf("coordinator status %+v", cs)
	}
	for _, m := range members {
		if st, err := c.nodes[m].Commit(c.ctxs[m], c.rack, epoch); err != nil || st != tq.CommitCommitted {
			c.t.Fatalf("commit %s: %v %v", m, st, err)
		}
	}
	c.flush()
	return cs.Config
}

// sent returns what node id has queued, and clears it.
func (c *cluster) sent(id tq.BaseboardID) []tq.Envelope {
	return c.ctxs[id].DrainEnvelopes()
}

func kinds(envs []tq.Envelope) []string {
	var out []string
	for _, e := range envs {
		out = append(out, e.To.Serial+":"+e.Msg.String())
	}
	return out
}

func msg(rack tq.RackID, b tq.MsgBody) tq.PeerMsg { return tq.PeerMsg{RackID: rack, Body: b} }

// preparedCluster has a committed epoch 1 over a..d and returns its config.
func preparedCluster(t *testing.T) (*cluster, *tq.Configuration) {
	c := newCluster(t, "a", "b", "c", "d", "e")
	cfg := c.commitEpoch(uid("a"), 1, 0, c.ids[:4])
	return c, cfg
}

func TestPrepareChecks(t *testing.T) {
	c, _ := preparedCluster(t)
	a, b, e := uid("a"), uid("b"), uid("e")
	// Build a real epoch-2 prepare for e by coordinating on a, but drop
	// what a sends so we can replay it with variations.
	if err := c.nodes[a].CoordinateReconfiguration(c.ctxs[a], tq.ReconfigureMsg{RackID: c.rack, Epoch: 2, LastCommittedEpoch: 1, Members: c.ids, Threshold: 3}); err != nil {
		t.Fatal(err)
	}
	c.flush()
	var prepE tq.PrepareMsg
	for i := 0; len(c.net) > 0 && i < 1000; i++ {
		env := c.net[0]
		c.net = c.net[1:]
		if p, ok := env.Msg.Body.(tq.PrepareMsg); ok && env.To == e {
			prepE = p
			continue
		}
		c.handle(env.To, env.From, env.Msg)
	}
	if prepE.Config == nil {
		t.Fatal("no prepare for e")
	}
	m := msg(c.rack, prepE)

	// From someone other than the coordinator: dropped.
	c.handle(e, b, m)
	if c.state(e).Configs[2] != nil || len(c.net) != 0 {
		t.Fatal("prepare from a non-coordinator accepted")
	}
	// Another rack: dropped.
	other := c.rack
	other[0] ^= 1
	c.handle(e, a, tq.PeerMsg{RackID: other, Body: prepE})
	if c.state(e).Configs[2] != nil {
		t.Fatal("prepare for another rack accepted")
	}
	// A share that does not match e's digest (b's share, say): dropped.
	forged := prepE
	forged.Share = c.state(b).Shares[2]
	c.handle(e, a, msg(c.rack, forged))
	if c.state(e).Configs[2] != nil {
		t.Fatal("prepare with a forged share accepted")
	}
	// The real one: persisted and acked.
	c.nodes[e].HandleMessage(c.ctxs[e], a, m)
	if !c.ctxs[e].PersistentStateChanged() || !c.state(e).Prepared(2) {
		t.Fatal("prepare not persisted")
	}
	if got := kinds(c.sent(e)); !slices.Equal(got, []string{"a:prepare_ack epoch=2"}) {
		t.Fatalf("sent %v", got)
	}
	c.ctxs[e].ClearPersistentStateChanged()
	// Again: acked again, nothing new to persist.
	c.nodes[e].HandleMessage(c.ctxs[e], a, m)
	if c.ctxs[e].PersistentStateChanged() || len(c.sent(e)) != 1 {
		t.Fatal("duplicate prepare not simply re-acked")
	}
	// A different configuration for the same epoch raises the alarm.
	alt := prepE.Config.Clone()
	alt.Threshold = 2
	c.handle(e, a, msg(c.rack, tq.PrepareMsg{Config: alt, Share: prepE.Share}))
	if al := c.ctxs[e].Alarms(); len(al) != 1 || al[0].Kind != tq.AlarmMismatchedConfigurations {
		t.Fatalf("alarms %v", al)
	}
}

func TestPrepareAckCountsOnlyMembersOfTheEpoch(t *testing.T) {
	c := newCluster(t, "a", "b", "c", "x")
	a := uid("a")
	if err := c.nodes[a].CoordinateReconfiguration(c.ctxs[a], tq.ReconfigureMsg{RackID: c.rack, Epoch: 1, Members: c.ids[:3], Threshold: 2}); err != nil {
		t.Fatal(err)
	}
	c.flush()
	c.net = nil
	c.handle(a, uid("x"), msg(c.rack, tq.PrepareAckMsg{Epoch: 1})) // not a member
	c.handle(a, uid("b"), msg(c.rack, tq.PrepareAckMsg{Epoch: 7})) // wrong epoch
	if acked := c.nodes[a].CoordinatorStatus(c.ctxs[a]).Acked; !slices.Equal(acked, []tq.BaseboardID{a}) {
		t.Fatalf("acked %v", acked)
	}
	c.handle(a, uid("b"), msg(c.rack, tq.PrepareAckMsg{Epoch: 1}))
	if acked := c.nodes[a].CoordinatorStatus(c.ctxs[a]).Acked; len(acked) != 2 {
		t.Fatalf("acked %v", acked)
	}
}

func TestGetShareReplies(t *testing.T) {
	c, cfg1 := preparedCluster(t)
	a, b, d, e := uid("a"), uid("b"), uid("d"), uid("e")
	// Member asks for a held share: Share.
	c.nodes[a].HandleMessage(c.ctxs[a], b, msg(c.rack, tq.GetShareMsg{Epoch: 1}))
	if got := kinds(c.sent(a)); !slices.Equal(got, []string{"b:share epoch=1"}) {
		t.Fatalf("got %v", got)
	}
	// Non-member asks for the latest committed epoch: Expunged.
	c.nodes[a].HandleMessage(c.ctxs[a], e, msg(c.rack, tq.GetShareMsg{Epoch: 1}))
	if got := kinds(c.sent(a)); !slices.Equal(got, []string{"e:expunged epoch=1"}) {
		t.Fatalf("got %v", got)
	}
	// Unknown epoch: nothing.
	c.nodes[a].HandleMessage(c.ctxs[a], b, msg(c.rack, tq.GetShareMsg{Epoch: 9}))
	if got := c.sent(a); len(got) != 0 {
		t.Fatalf("got %v", kinds(got))
	}
	// After epoch 2 (without d) commits, asking for 1 gets CommitAdvance
	// for members and Expunged for d. (b's share of 1 is taken now: its
	// ledger drops it when 2 commits.)
	share1 := c.state(b).Shares[1].Clone()
	c.commitEpoch(a, 2, 1, []tq.BaseboardID{a, b, uid("c"), e})
	c.nodes[a].HandleMessage(c.ctxs[a], b, msg(c.rack, tq.GetShareMsg{Epoch: 1}))
	c.nodes[a].HandleMessage(c.ctxs[a], d, msg(c.rack, tq.GetShareMsg{Epoch: 1}))
	if got := kinds(c.sent(a)); !slices.Equal(got, []string{"b:commit_advance epoch=2", "d:expunged epoch=2"}) {
		t.Fatalf("got %v", got)
	}
	// A Prepare for an epoch below the commit (a coordinator that fell
	// behind) is answered the same way, not acked.
	c.nodes[b].HandleMessage(c.ctxs[b], a, msg(c.rack, tq.PrepareMsg{Config: cfg1, Share: share1}))
	if got := kinds(c.sent(b)); !slices.Equal(got, []string{"a:commit_advance epoch=2"}) {
		t.Fatalf("stale prepare answered %v", got)
	}
}

func TestShareVerification(t *testing.T) {
	c, _ := preparedCluster(t)
	a, b, cc, d := uid("a"), uid("b"), uid("c"), uid("d")
	// K=3 for four members. a loads; feed shares by hand.
	if _, pending, err := c.nodes[a].LoadRackSecret(c.ctxs[a], 1); !pending || err != nil {
		t.Fatalf("pending=%v err=%v", pending, err)
	}
	c.sent(a)
	load := func() bool {
		s, pending, err := c.nodes[a].LoadRackSecret(c.ctxs[a], 1)
		if err != nil {
			t.Fatal(err)
		}
		c.sent(a)
		return s != nil && !pending
	}
	// c's share claimed by b: fails b's digest.
	c.handle(a, b, msg(c.rack, tq.ShareMsg{Epoch: 1, Share: c.state(cc).Shares[1]}))
	// b's genuine share, twice: counts once.
	c.handle(a, b, msg(c.rack, tq.ShareMsg{Epoch: 1, Share: c.state(b).Shares[1]}))
	c.handle(a, b, msg(c.rack, tq.ShareMsg{Epoch: 1, Share: c.state(b).Shares[1]}))
	// A tampered share from d.
	bad := c.state(d).Shares[1].Clone()
	bad.Expose()[3] ^= 1
	c.handle(a, d, msg(c.rack, tq.ShareMsg{Epoch: 1, Share: bad}))
	// A share of an epoch nobody is collecting.
	c.handle(a, d, msg(c.rack, tq.ShareMsg{Epoch: 5, Share: c.state(d).Shares[1]}))
	if load() {
		t.Fatal("secret loaded from fewer than K verified shares")
	}
	c.handle(a, cc, msg(c.rack, tq.ShareMsg{Epoch: 1, Share: c.state(cc).Shares[1]}))
	if !load() {
		t.Fatal("secret not loaded from K verified shares")
	}
	if al := c.ctxs[a].Alarms(); len(al) != 0 {
		t.Fatalf("alarms %v", al)
	}
}

func TestCommitAdvanceAndExpunged(t *testing.T) {
	c, cfg1 := preparedCluster(t)
	a, d, e := uid("a"), uid("d"), uid("e")
	// A CommitAdvance naming a node that is not a member is ignored.
	c.handle(e, a, msg(c.rack, tq.CommitAdvanceMsg{Config: cfg1}))
	if c.state(e).Configs[1] != nil {
		t.Fatal("non-member stored a configuration from CommitAdvance")
	}
	// A different configuration for a committed epoch raises the alarm.
	// (A changed digest, not a changed x: vault draws the x coordinates
	// at random, and a flipped one may collide with another member's and
	// make the configuration invalid, so dropped before any comparison.)
	alt := cfg1.Clone()
	alt.Members[0].ShareDigest[0] ^= 1
	c.handle(d, a, msg(c.rack, tq.CommitAdvanceMsg{Config: alt}))
	if al := c.ctxs[d].Alarms(); len(al) != 1 || al[0].Kind != tq.AlarmMismatchedConfigurations {
		t.Fatalf("alarms %v", al)
	}
	// A node with no configuration was never part of the rack: nobody
	// can expunge it, it ignores Expunged.
	c.handle(e, a, msg(c.rack, tq.ExpungedMsg{Epoch: 1}))
	if c.state(e).Expunged != nil || c.ctxs[e].PersistentStateChanged() {
		t.Fatal("a node without configurations accepted Expunged")
	}
	// The rack commits epoch 2 without d. Expunged reaches d only when
	// it is news (newer than d's epoch 1) from a member of the epoch that
	// left d out, with that epoch's configuration to show it.
	cfg2 := c.commitEpoch(a, 2, 1, []tq.BaseboardID{a, uid("b"), uid("c"), e})
	withD := cfg1.Clone()
	withD.Epoch = 2
	otherRack := cfg2.Clone()
	otherRack.RackID[0] ^= 1
	for _, tc := range []struct {
		name string
		from tq.BaseboardID
		m    tq.ExpungedMsg
	}{
		{"stale", a, tq.ExpungedMsg{Epoch: 1, Config: cfg1}},
		{"without configuration", a, tq.ExpungedMsg{Epoch: 2}},
		{"from a non-member", uid("z"), tq.ExpungedMsg{Epoch: 2, Config: cfg2}},
		{"naming the node a member", a, tq.ExpungedMsg{Epoch: 2, Config: withD}},
		{"epoch differs from the configuration", a, tq.ExpungedMsg{Epoch: 3, Config: cfg2}},
		{"configuration of another rack", a, tq.ExpungedMsg{Epoch: 2, Config: otherRack}},
	} {
		c.handle(d, tc.from, msg(c.rack, tc.m))
		if c.state(d).Expunged != nil {
			t.Fatalf("%s: Expunged accepted", tc.name)
		}
	}
	// A fresh node told about epoch 2 by a member still ignores it.
	f := uid("f")
	fctx := tq.NewNodeCtx(f, tq.NewPersistentState())
	fn := tq.NewNode(fctx, tq.Config{Rand: rand.NewChaCha8([32]byte{})})
	fn.HandleMessage(fctx, a, msg(c.rack, tq.ExpungedMsg{Epoch: 2, Config: cfg2}))
	if fctx.PersistentState().Expunged != nil || fctx.PersistentStateChanged() {
		t.Fatal("fresh node accepted Expunged")
	}
	c.handle(d, a, msg(c.rack, tq.ExpungedMsg{Epoch: 2, Config: cfg2}))
	if x := c.state(d).Expunged; x == nil || x.Epoch != 2 || x.From != a {
		t.Fatalf("expunged %+v", x)
	}
	// From then on everything is dropped or refused.
	c.handle(d, a, msg(c.rack, tq.GetShareMsg{Epoch: 2}))
	if len(c.net) != 0 {
		t.Fatal("expunged node answered")
	}
	var ee *tq.EpochError
	if _, err := c.nodes[d].Commit(c.ctxs[d], c.rack, 2); !errors.Is(err, tq.ErrExpunged) || !errors.As(err, &ee) || ee.Known != 2 {
		t.Fatalf("commit on expunged: %v", err)
	}
}

func TestLrtqShareDuplicatesCountOnce(t *testing.T) {
	// Seed 000: a spare handed out twice must not count twice.
	c := newCluster(t, "a", "b", "c", "d", "e")
	pkgs, err := tq.NewLrtqPackages(rand.NewChaCha8([32]byte{9}), c.rack, c.ids[:3])
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range c.ids[:3] {
		c.ctxs[id] = tq.NewNodeCtx(id, tq.PersistentState{Lrtq: pkgs[id]})
		c.nodes[id] = tq.NewNode(c.ctxs[id], tq.Config{Rand: rand.NewChaCha8([32]byte{1})})
	}
	a, b, cc := c.ids[0], c.ids[1], c.ids[2]
	// K = 2. a loads: its own share counts; b's share sent by b and by
	// c (as if c had been handed the same share) is still one share.
	if _, pending, err := c.nodes[a].LoadRackSecret(c.ctxs[a], tq.LrtqEpoch); !pending || err != nil {
		t.Fatal(pending, err)
	}
	bShare := pkgs[b].Share
	c.nodes[a].HandleMessage(c.ctxs[a], cc, msg(c.rack, tq.LrtqShareMsg{Share: pkgs[a].Share}))
	if s, _, _ := c.nodes[a].LoadRackSecret(c.ctxs[a], tq.LrtqEpoch); s != nil {
		t.Fatal("own share counted twice")
	}
	forged := bShare.Clone()
	forged.Expose()[0] ^= 1
	c.nodes[a].HandleMessage(c.ctxs[a], b, msg(c.rack, tq.LrtqShareMsg{Share: forged}))
	if s, _, _ := c.nodes[a].LoadRackSecret(c.ctxs[a], tq.LrtqEpoch); s != nil {
		t.Fatal("forged LRTQ share counted")
	}
	c.nodes[a].HandleMessage(c.ctxs[a], b, msg(c.rack, tq.LrtqShareMsg{Share: bShare}))
	s, pending, err := c.nodes[a].LoadRackSecret(c.ctxs[a], tq.LrtqEpoch)
	if s == nil || pending || err != nil {
		t.Fatal("LRTQ secret not loaded", pending, err)
	}
	want, err := tqcrypto.Combine([]tqcrypto.Share{pkgs[b].Share, pkgs[cc].Share}, 2)
	if err != nil || !want.Equal(s) {
		t.Fatal("LRTQ secret wrong")
	}
}

func TestLrtqLearnerGetsTheSameShareTwice(t *testing.T) {
	c := newCluster(t, "a", "b", "c", "l")
	a, l := c.ids[0], c.ids[3]
	if err := c.nodes[a].InitLrtq(c.ctxs[a], c.rack, c.ids[:3]); err != nil {
		t.Fatal(err)
	}
	c.flush()
	c.deliverAll()
	if !c.nodes[a].LrtqInitDone() {
		t.Fatal("init not acked")
	}
	ask := func() tq.Envelope {
		c.handle(a, l, msg(c.rack, tq.LrtqLearnMsg{}))
		for i := 0; i < 100; i++ {
			for j, env := range c.net {
				if _, ok := env.Msg.Body.(tq.LrtqLearnPkgMsg); ok {
					c.net = slices.Delete(c.net, j, j+1)
					return env
				}
			}
			env := c.net[0]
			c.net = c.net[1:]
			c.handle(env.To, env.From, env.Msg)
		}
		t.Fatal("no package")
		return tq.Envelope{}
	}
	first := ask().Msg.Body.(tq.LrtqLearnPkgMsg).Pkg.Share
	second := ask().Msg.Body.(tq.LrtqLearnPkgMsg).Pkg.Share
	if !first.Equal(second) {
		t.Fatal("learner got two different spares")
	}
	if h := c.state(a).Lrtq.Handouts; len(h) != 1 || h[l] != first.X() {
		t.Fatalf("handouts %v", h)
	}
	// The handout is in the persistent state that the driver stores
	// before the package goes out; the ledger carries it.
	b, err := tq.EncodeState(c.state(a))
	if err != nil {
		t.Fatal(err)
	}
	st, err := tq.DecodeState(b)
	if err != nil || st.Lrtq.Handouts[l] != first.X() {
		t.Fatalf("handout not in ledger: %v", err)
	}
	// A package that does not match the digests is refused by a learner.
	l2 := uid("z")
	ctx := tq.NewNodeCtx(l2, tq.NewPersistentState())
	n := tq.NewNode(ctx, tq.Config{Rand: rand.NewChaCha8([32]byte{})})
	n.OnConnect(ctx, a)
	if err := n.LearnLrtq(ctx, c.rack); err != nil {
		t.Fatal(err)
	}
	pkg := *c.state(a).Lrtq
	pkg.Spares = nil
	pkg.Share = first.Clone()
	pkg.Share.Expose()[1] ^= 1
	n.HandleMessage(ctx, a, msg(c.rack, tq.LrtqLearnPkgMsg{Pkg: &pkg}))
	if ctx.PersistentState().Lrtq != nil {
		t.Fatal("forged package accepted")
	}
}

func TestAPIErrors(t *testing.T) {
	c, cfg1 := preparedCluster(t)
	a, e := uid("a"), uid("e")
	other := c.rack
	other[1] ^= 1
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"commit other rack", second(c.nodes[a].Commit(c.ctxs[a], other, 1)), tq.ErrRackIDMismatch},
		{"commit unprepared", second(c.nodes[a].Commit(c.ctxs[a], c.rack, 3)), tq.ErrNotPrepared},
		{"prepare-and-commit non-member", second(c.nodes[e].PrepareAndCommit(c.ctxs[e], cfg1)), tq.ErrNotAMember},
		{"load uninitialised", third(c.nodes[e].LoadRackSecret(c.ctxs[e], 1)), tq.ErrNotInitialized},
		{"load future", third(c.nodes[a].LoadRackSecret(c.ctxs[a], 2)), tq.ErrNotCommitted},
		{"reconfigure other rack", c.nodes[a].CoordinateReconfiguration(c.ctxs[a], tq.ReconfigureMsg{RackID: other, Epoch: 2, LastCommittedEpoch: 1, Members: c.ids[:4], Threshold: 3}), tq.ErrRackIDMismatch},
		{"reconfigure duplicate members", c.nodes[a].CoordinateReconfiguration(c.ctxs[a], tq.ReconfigureMsg{RackID: c.rack, Epoch: 2, LastCommittedEpoch: 1, Members: []tq.BaseboardID{a, a, e}, Threshold: 2}), tq.ErrInvalidMembership},
		{"upgrade without lrtq", c.nodes[a].CoordinateUpgradeFromLrtq(c.ctxs[a], tq.LrtqUpgradeMsg{RackID: c.rack, Epoch: 2, Members: c.ids[:4], Threshold: 3}), tq.ErrNoLrtq},
		{"learn when initialised", c.nodes[a].LearnLrtq(c.ctxs[a], c.rack), tq.ErrAlreadyInitialized},
	}
	for _, tc := range cases {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	// A node rebuilding its share of a committed epoch refuses to
	// coordinate: whatever it would build on is already superseded.
	ledger, err := tq.EncodeState(c.state(uid("d")))
	if err != nil {
		t.Fatal(err)
	}
	cfg2 := c.commitEpoch(uid("b"), 2, 1, []tq.BaseboardID{uid("b"), uid("c"), uid("d"), e})
	old, err := tq.DecodeState(ledger)
	if err != nil {
		t.Fatal(err)
	}
	ctx := tq.NewNodeCtx(uid("d"), old)
	n := tq.NewNode(ctx, tq.Config{Rand: rand.NewChaCha8([32]byte{})})
	if st, err := n.PrepareAndCommit(ctx, cfg2); err != nil || st != tq.CommitPending {
		t.Fatalf("prepare-and-commit: %v %v", st, err)
	}
	err = n.CoordinateReconfiguration(ctx, tq.ReconfigureMsg{RackID: c.rack, Epoch: 4, LastCommittedEpoch: 1, Members: c.ids[:4], Threshold: 3})
	if !errors.Is(err, tq.ErrRebuildInProgress) {
		t.Fatalf("coordinate while rebuilding: %v", err)
	}
	// And the rebuild resumes after a restart from the ledger.
	n2 := tq.NewNode(ctx, tq.Config{Rand: rand.NewChaCha8([32]byte{})})
	if st := n2.Status(ctx); st.RebuildingShare != 2 {
		t.Fatalf("rebuild not resumed: %+v", st)
	}
}

func second[A any](_ A, err error) error { return err }

func third[A, B any](_ A, _ B, err error) error { return err }

func TestRebuildFailureAndDecryptionFailureRaiseAlarms(t *testing.T) {
	c, _ := preparedCluster(t)
	a, b, e := uid("a"), uid("b"), uid("e")
	members := []tq.BaseboardID{a, b, uid("c"), uid("d"), e}
	// Prepare epoch 2 without e (its prepare is dropped).
	if err := c.nodes[a].CoordinateReconfiguration(c.ctxs[a], tq.ReconfigureMsg{RackID: c.rack, Epoch: 2, LastCommittedEpoch: 1, Members: members, Threshold: 3}); err != nil {
		t.Fatal(err)
	}
	c.flush()
	for i := 0; len(c.net) > 0 && i < 1000; i++ {
		env := c.net[0]
		c.net = c.net[1:]
		if env.To != e {
			c.handle(env.To, env.From, env.Msg)
		}
	}
	cfg := c.nodes[a].CoordinatorStatus(c.ctxs[a]).Config
	// A configuration whose digest for e is wrong: the rebuilt share
	// does not match, so the rebuild alarm is raised and nothing commits.
	bad := cfg.Clone()
	for i := range bad.Members {
		if bad.Members[i].ID == e {
			bad.Members[i].ShareDigest[0] ^= 1
		}
	}
	if st, err := c.nodes[e].PrepareAndCommit(c.ctxs[e], bad); err != nil || st != tq.CommitPending {
		t.Fatal(st, err)
	}
	c.flush()
	c.deliverAll()
	if al := c.ctxs[e].Alarms(); len(al) != 1 || al[0].Kind != tq.AlarmShareRebuildFailed {
		t.Fatalf("alarms %v", al)
	}
	if c.state(e).Commits[2] {
		t.Fatal("committed without a share")
	}
	// A configuration whose encrypted chain was tampered with: the share
	// rebuilds, but loading the secret fails authentication.
	ctx := tq.NewNodeCtx(e, tq.NewPersistentState())
	n := tq.NewNode(ctx, tq.Config{Rand: rand.NewChaCha8([32]byte{})})
	c.ctxs[e], c.nodes[e] = ctx, n
	for _, p := range c.ids {
		if p != e {
			n.OnConnect(ctx, p)
		}
	}
	tampered := cfg.Clone()
	tampered.EncryptedRackSecrets.Ciphertext[0] ^= 1
	if st, err := n.PrepareAndCommit(ctx, tampered); err != nil || st != tq.CommitPending {
		t.Fatal(st, err)
	}
	c.flush()
	c.deliverAll()
	if !c.state(e).Commits[2] {
		t.Fatal("rebuild did not commit")
	}
	for range 3 {
		_, _, err := n.LoadRackSecret(ctx, 2)
		c.flush()
		c.deliverAll()
		if err != nil {
			if !errors.Is(err, tq.ErrSecretUnavailable) {
				t.Fatal(err)
			}
			break
		}
	}
	if al := ctx.Alarms(); len(al) != 1 || al[0].Kind != tq.AlarmRackSecretDecryptionFailed {
		t.Fatalf("alarms %v", al)
	}
}

func TestCommittedConfigurationLostAlarm(t *testing.T) {
	st := tq.NewPersistentState()
	st.Commits[3] = true
	ctx := tq.NewNodeCtx(uid("a"), st)
	tq.NewNode(ctx, tq.Config{})
	if al := ctx.Alarms(); len(al) != 1 || al[0].Kind != tq.AlarmCommittedConfigurationLost {
		t.Fatalf("alarms %v", al)
	}
}

// TestRebuildNeverRegresses: a node rebuilding its share of a committed
// epoch is not moved back to an older one by a late CommitAdvance or
// PrepareAndCommit, and a restart resumes the newest pending rebuild even
// when a newer epoch has been prepared meanwhile.
func TestRebuildNeverRegresses(t *testing.T) {
	c, _ := preparedCluster(t)
	a, b, d := uid("a"), uid("b"), uid("d")
	members := c.ids[:4]
	ledger1, err := tq.EncodeState(c.state(d))
	if err != nil {
		t.Fatal(err)
	}
	cfg2 := c.commitEpoch(a, 2, 1, members)
	cfg3 := c.commitEpoch(b, 3, 2, members)
	// d comes back from its epoch-1 ledger: it slept through 2 and 3.
	boot := func(ledger []byte) (*tq.NodeCtx, *tq.Node) {
		st, err := tq.DecodeState(ledger)
		if err != nil {
			t.Fatal(err)
		}
		ctx := tq.NewNodeCtx(d, st)
		n := tq.NewNode(ctx, tq.Config{Rand: rand.NewChaCha8([32]byte{4})})
		c.ctxs[d], c.nodes[d] = ctx, n
		for _, p := range c.ids {
			if p != d {
				n.OnConnect(ctx, p)
			}
		}
		return ctx, n
	}
	ctx, n := boot(ledger1)
	rebuilding := func(want tq.Epoch, what string) {
		t.Helper()
		if got := n.Status(ctx).RebuildingShare; got != want {
			t.Fatalf("%s: rebuilding %d, want %d", what, got, want)
		}
	}
	if st, err := n.PrepareAndCommit(ctx, cfg3); err != nil || st != tq.CommitPending {
		t.Fatalf("prepare-and-commit 3: %v %v", st, err)
	}
	rebuilding(3, "prepare-and-commit 3")
	// Drop d's share requests so that the rebuild stays pending.
	c.sent(d)
	if st, err := n.PrepareAndCommit(ctx, cfg2); err != nil || st != tq.CommitPending {
		t.Fatalf("prepare-and-commit 2: %v %v", st, err)
	}
	rebuilding(3, "late prepare-and-commit 2")
	n.HandleMessage(ctx, a, msg(c.rack, tq.CommitAdvanceMsg{Config: cfg2}))
	rebuilding(3, "late commit advance 2")
	if ctx.PersistentState().Configs[2] != nil {
		t.Fatal("stored the configuration of an epoch older than the rebuild")
	}
	c.sent(d)
	// a coordinates epoch 4 on 3; d, still rebuilding 3, prepares 4.
	if err := c.nodes[a].CoordinateReconfiguration(c.ctxs[a], tq.ReconfigureMsg{RackID: c.rack, Epoch: 4, LastCommittedEpoch: 3, Members: members, Threshold: 3}); err != nil {
		t.Fatal(err)
	}
	c.flush()
	c.deliverAll()
	if st := ctx.PersistentState(); !st.Prepared(4) || st.Prepared(3) || st.Configs[3] == nil {
		t.Fatal("d should hold epoch 4 prepared and epoch 3 without its share")
	}
	rebuilding(3, "after preparing 4")
	ledger, err := tq.EncodeState(ctx.PersistentState())
	if err != nil {
		t.Fatal(err)
	}
	ctx, n = boot(ledger)
	rebuilding(3, "after restart")
	n.Tick(ctx, tq.Instant(10*tq.Second))
	c.flush()
	c.deliverAll()
	if st := ctx.PersistentState(); !st.Commits[3] || st.LatestCommittedEpoch() != 3 || !st.Prepared(4) {
		t.Fatalf("rebuild of 3 did not finish: commits %v", st.CommittedEpochs())
	}
	rebuilding(0, "after the rebuild")
}

// TestOlderPrepareToANewerCoordinatorIsAcked: a node coordinating epoch 2
// still persists and acknowledges the late prepare of an aborted epoch 1.
// Silence would leave epoch 1's coordinator, which may never hear of
// epoch 2, resending that prepare to it for good.
func TestOlderPrepareToANewerCoordinatorIsAcked(t *testing.T) {
	c := newCluster(t, "a", "b", "c", "d")
	a, b := uid("a"), uid("b")
	if err := c.nodes[a].CoordinateReconfiguration(c.ctxs[a], tq.ReconfigureMsg{RackID: c.rack, Epoch: 1, Members: c.ids[:3], Threshold: 2}); err != nil {
		t.Fatal(err)
	}
	var late tq.Envelope
	for _, env := range c.sent(a) {
		if env.To == b {
			late = env
		}
	}
	if late.Msg.Body == nil {
		t.Fatal("no prepare for b")
	}
	// Nexus gives epoch 1 up and asks b to coordinate epoch 2.
	if err := c.nodes[b].CoordinateReconfiguration(c.ctxs[b], tq.ReconfigureMsg{RackID: c.rack, Epoch: 2, Members: c.ids[1:], Threshold: 2}); err != nil {
		t.Fatal(err)
	}
	c.sent(b)
	c.ctxs[b].ClearPersistentStateChanged()
	c.nodes[b].HandleMessage(c.ctxs[b], a, roundTrip(t, late.Msg))
	if !c.ctxs[b].PersistentStateChanged() || !c.state(b).Prepared(1) {
		t.Fatal("b did not persist the prepare of epoch 1")
	}
	if got := kinds(c.sent(b)); !slices.Equal(got, []string{"a:prepare_ack epoch=1"}) {
		t.Fatalf("b answered %v", got)
	}
	if cs := c.nodes[b].CoordinatorStatus(c.ctxs[b]); cs.State != tq.Preparing || cs.Epoch != 2 {
		t.Fatalf("b's own coordination changed: %+v", cs)
	}
}

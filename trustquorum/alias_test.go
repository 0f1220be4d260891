package trustquorum_test

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"

	tq "github.com/rackplane/rackplane/trustquorum"
)

// scrubbingDriver is a driver that, like a careful runtime, destroys what
// it sent: after encoding each envelope it zeroes the frame and every share,
// digest and ciphertext inside the message. The node's ledger state must not
// change because of it.
type scrubbingDriver struct {
	t     *testing.T
	ids   []tq.BaseboardID
	nodes map[tq.BaseboardID]*tq.Node
	ctxs  map[tq.BaseboardID]*tq.NodeCtx
	disk  map[tq.BaseboardID][]byte
	net   []scrubbedFrame
	rack  tq.RackID
	sent  int
}

type scrubbedFrame struct {
	from, to tq.BaseboardID
	frame    []byte
}

func newScrubbingDriver(t *testing.T, names ...string) *scrubbingDriver {
	d := &scrubbingDriver{t: t, nodes: map[tq.BaseboardID]*tq.Node{}, ctxs: map[tq.BaseboardID]*tq.NodeCtx{}, disk: map[tq.BaseboardID][]byte{}}
	copy(d.rack[:], "scrubbing-rack-1")
	for i, n := range names {
		id := uid(n)
		d.ids = append(d.ids, id)
		d.ctxs[id] = tq.NewNodeCtx(id, tq.NewPersistentState())
		d.nodes[id] = tq.NewNode(d.ctxs[id], tq.Config{Rand: rand.NewChaCha8([32]byte{byte(i + 10)})})
		d.disk[id], _ = tq.EncodeState(d.ctxs[id].PersistentState())
	}
	for _, a := range d.ids {
		for _, b := range d.ids {
			if a != b {
				d.nodes[a].OnConnect(d.ctxs[a], b)
			}
		}
		d.step(a)
	}
	return d
}

// step is the driver's work after a call on id: persist, send, scrub, and
// check the state still encodes to what was persisted.
func (d *scrubbingDriver) step(id tq.BaseboardID) {
	d.t.Helper()
	ctx := d.ctxs[id]
	if ctx.PersistentStateChanged() {
		b, err := tq.EncodeState(ctx.PersistentState())
		if err != nil {
			d.t.Fatal(err)
		}
		d.disk[id] = b
		ctx.ClearPersistentStateChanged()
	}
	for _, env := range ctx.DrainEnvelopes() {
		frame, err := tq.EncodeMsg(env.Msg)
		if err != nil {
			d.t.Fatal(err)
		}
		d.net = append(d.net, scrubbedFrame{from: id, to: env.To, frame: slices.Clone(frame)})
		clear(frame)
		scrubMsg(env.Msg)
		d.sent++
	}
	now, err := tq.EncodeState(ctx.PersistentState())
	if err != nil {
		d.t.Fatal(err)
	}
	if !bytes.Equal(now, d.disk[id]) {
		d.t.Fatalf("%s: scrubbing sent envelopes changed the node's ledger state", id)
	}
}

func scrubConfig(c *tq.Configuration) {
	if c == nil {
		return
	}
	for i := range c.Members {
		c.Members[i].ShareDigest = [32]byte{}
		c.Members[i].X = 0
	}
	if e := c.EncryptedRackSecrets; e != nil {
		clear(e.Ciphertext)
		e.Salt = [32]byte{}
	}
}

func scrubPkg(p *tq.LrtqSharePkg) {
	if p == nil {
		return
	}
	p.Share.Zero()
	clear(p.ShareDigests)
	if p.Spares != nil {
		clear(p.Spares.Ciphertext)
	}
	clear(p.Handouts)
}

// scrubMsg zeroes everything mutable in m and reports whether there was
// anything (a share, package or configuration).
func scrubMsg(m tq.PeerMsg) bool {
	switch b := m.Body.(type) {
	case tq.PrepareMsg:
		b.Share.Zero()
		scrubConfig(b.Config)
	case tq.ShareMsg:
		b.Share.Zero()
	case tq.LrtqShareMsg:
		b.Share.Zero()
	case tq.CommitAdvanceMsg:
		scrubConfig(b.Config)
	case tq.ExpungedMsg:
		scrubConfig(b.Config)
	case tq.LrtqInitMsg:
		scrubPkg(b.Pkg)
	case tq.LrtqLearnPkgMsg:
		scrubPkg(b.Pkg)
	default:
		return false
	}
	return true
}

func (d *scrubbingDriver) deliverAll() {
	d.t.Helper()
	for i := 0; len(d.net) > 0; i++ {
		if i > 100000 {
			d.t.Fatal("network does not quiesce")
		}
		f := d.net[0]
		d.net = d.net[1:]
		m, err := tq.DecodeMsg(f.frame)
		if err != nil {
			d.t.Fatal(err)
		}
		d.nodes[f.to].HandleMessage(d.ctxs[f.to], f.from, m)
		d.step(f.to)
	}
}

func (d *scrubbingDriver) call(id tq.BaseboardID, f func(n *tq.Node, ctx *tq.NodeCtx) error) {
	d.t.Helper()
	if err := f(d.nodes[id], d.ctxs[id]); err != nil {
		d.t.Fatalf("%s: %v", id, err)
	}
	d.step(id)
	d.deliverAll()
}

func (d *scrubbingDriver) commitAll(epoch tq.Epoch, members []tq.BaseboardID) {
	d.t.Helper()
	for _, m := range members {
		d.call(m, func(n *tq.Node, ctx *tq.NodeCtx) error {
			st, err := n.Commit(ctx, d.rack, epoch)
			if err == nil && st != tq.CommitCommitted {
				d.t.Fatalf("%s: commit %d: %v", m, epoch, st)
			}
			return err
		})
	}
}

func (d *scrubbingDriver) load(id tq.BaseboardID, e tq.Epoch) {
	d.t.Helper()
	for range 3 {
		s, pending, err := d.nodes[id].LoadRackSecret(d.ctxs[id], e)
		d.step(id)
		if err != nil {
			d.t.Fatalf("%s: load %d: %v", id, e, err)
		}
		if !pending {
			if s == nil {
				d.t.Fatalf("%s: no secret", id)
			}
			return
		}
		d.deliverAll()
	}
	d.t.Fatalf("%s: cannot load epoch %d", id, e)
}

// TestEnvelopesNeverAliasTheLedger drives every message kind that carries
// shares, packages or configurations through a driver that scrubs them
// after sending, and checks after every step that the persisted state is
// what the node still holds.
func TestEnvelopesNeverAliasTheLedger(t *testing.T) {
	d := newScrubbingDriver(t, "a", "b", "c", "d", "l", "n")
	a, b, c, dd, l, n := d.ids[0], d.ids[1], d.ids[2], d.ids[3], d.ids[4], d.ids[5]
	// LRTQ setup (Init carries packages) and a learner (LearnPkg).
	d.call(a, func(nd *tq.Node, ctx *tq.NodeCtx) error {
		return nd.InitLrtq(ctx, d.rack, []tq.BaseboardID{a, b, c, dd})
	})
	d.call(l, func(nd *tq.Node, ctx *tq.NodeCtx) error { return nd.LearnLrtq(ctx, d.rack) })
	if d.ctxs[l].PersistentState().Lrtq == nil {
		t.Fatal("learner got no package")
	}
	// LRTQ secret loads (LrtqShare) and the upgrade (Prepare).
	d.load(c, tq.LrtqEpoch)
	up := []tq.BaseboardID{a, b, c, l}
	d.call(b, func(nd *tq.Node, ctx *tq.NodeCtx) error {
		return nd.CoordinateUpgradeFromLrtq(ctx, tq.LrtqUpgradeMsg{RackID: d.rack, Epoch: 2, Members: up, Threshold: 3})
	})
	d.commitAll(2, up)
	// Kept for a late prepare of epoch 2 below: a's ledger drops epoch 2
	// once epoch 3 commits.
	ast := d.ctxs[a].PersistentState()
	stale := tq.PrepareMsg{Config: ast.Configs[2].Clone(), Share: ast.Shares[2].Clone()}
	// Shares of a committed epoch, a reconfiguration that removes c and
	// adds n, and the CommitAdvance and Expunged that follow.
	d.load(a, 2)
	next := []tq.BaseboardID{a, b, l, n}
	d.call(a, func(nd *tq.Node, ctx *tq.NodeCtx) error {
		return nd.CoordinateReconfiguration(ctx, tq.ReconfigureMsg{RackID: d.rack, Epoch: 3, LastCommittedEpoch: 2, Members: next, Threshold: 2})
	})
	d.commitAll(3, []tq.BaseboardID{a, b, n})
	d.call(l, func(nd *tq.Node, ctx *tq.NodeCtx) error {
		_, _, err := nd.LoadRackSecret(ctx, 2)
		return err
	})
	// c (removed at 3) and dd (left out of the upgrade) ask for shares
	// and are told they are expunged.
	for _, x := range []struct {
		id tq.BaseboardID
		e  tq.Epoch
	}{{c, 2}, {dd, tq.LrtqEpoch}} {
		d.call(x.id, func(nd *tq.Node, ctx *tq.NodeCtx) error {
			_, _, err := nd.LoadRackSecret(ctx, x.e)
			return err
		})
		if m := d.ctxs[x.id].PersistentState().Expunged; m == nil || m.Epoch != 3 {
			t.Fatalf("%s not expunged: %+v", x.id, m)
		}
	}
	// A late prepare of epoch 2 (its coordinator b resending) is answered
	// with a CommitAdvance of epoch 3 from a's ledger.
	if ast.Configs[2] != nil {
		t.Fatal("a still holds epoch 2 after committing 3")
	}
	before := d.sent
	d.nodes[a].HandleMessage(d.ctxs[a], b, msg(d.rack, stale))
	d.step(a)
	d.deliverAll()
	if d.sent != before+1 {
		t.Fatalf("stale prepare answered with %d messages", d.sent-before)
	}
	if d.ctxs[l].PersistentState().LatestCommittedEpoch() != 3 {
		t.Fatal("l did not advance to epoch 3")
	}
	d.load(n, 3)
	d.load(n, tq.LrtqEpoch)
	if d.sent < 50 {
		t.Fatalf("only %d envelopes sent; the flow is broken", d.sent)
	}
}

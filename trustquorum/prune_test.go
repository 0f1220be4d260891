package trustquorum_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	tq "github.com/rackplane/rackplane/trustquorum"
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// The ledgers under testdata/ledger were written by the code before
// pruning (state version 1), one file per node of a small rack:
//
//   - v1-lrtq-upgraded: LRTQ set up by a over a..d, d never acknowledging
//     its package (it is still pending in a's ledger, and d's ledger is
//     empty); upgraded at epoch 2 over a, b, c and e; epoch 3 committed;
//     epoch 4 prepared everywhere but never committed (its coordinator b
//     is gone with the restart).
//   - v1-rebuilding: epochs 1 to 3 committed over a..d, epoch 4 committed
//     without d, which was told by PrepareAndCommit and holds epoch 4's
//     configuration without its share (a rebuild to resume).
func loadFixture(t *testing.T, dir string) map[string]tq.PersistentState {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "ledger", dir, "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("fixture %s: %v", dir, err)
	}
	out := map[string]tq.PersistentState{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(`"version":1`)) {
			t.Fatalf("%s is not a version-1 ledger", p)
		}
		st, err := tq.DecodeState(bytes.TrimSpace(b))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out[strings.TrimSuffix(filepath.Base(p), ".json")] = st
	}
	return out
}

// bootCluster starts a node on each state, as a restart from its ledger
// does, connects them all, and returns which of them NewNode marked
// changed (to be persisted).
func bootCluster(t *testing.T, states map[string]tq.PersistentState) (*cluster, map[string]bool) {
	t.Helper()
	c := &cluster{t: t, nodes: map[tq.BaseboardID]*tq.Node{}, ctxs: map[tq.BaseboardID]*tq.NodeCtx{}}
	copy(c.rack[:], "unit-test-rack!!")
	changed := map[string]bool{}
	for i, name := range slices.Sorted(mapKeys(states)) {
		id := uid(name)
		c.ids = append(c.ids, id)
		c.ctxs[id] = tq.NewNodeCtx(id, states[name])
		c.nodes[id] = tq.NewNode(c.ctxs[id], tq.Config{Rand: rand.NewChaCha8([32]byte{byte(i + 11)})})
		changed[name] = c.ctxs[id].PersistentStateChanged()
		if al := c.ctxs[id].Alarms(); len(al) > 0 {
			t.Fatalf("%s: alarms on boot: %v", name, al)
		}
	}
	for _, a := range c.ids {
		for _, b := range c.ids {
			if a != b {
				c.nodes[a].OnConnect(c.ctxs[a], b)
			}
		}
	}
	c.flush()
	return c, changed
}

// persisted encodes id's state as the driver stores it and decodes it back,
// checking it is the current version.
func (c *cluster) persisted(id tq.BaseboardID) tq.PersistentState {
	c.t.Helper()
	b, err := tq.EncodeState(c.state(id))
	if err != nil {
		c.t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte(`{"version":2,`)) {
		c.t.Fatalf("%s: ledger written as %.20s", id, b)
	}
	st, err := tq.DecodeState(b)
	if err != nil {
		c.t.Fatalf("%s: the pruned ledger does not decode: %v", id, err)
	}
	return st
}

func combineHeld(t *testing.T, states map[string]tq.PersistentState, e tq.Epoch) *tqcrypto.Secret {
	t.Helper()
	var cfg *tq.Configuration
	var shares []tqcrypto.Share
	for _, st := range states {
		if sh, ok := st.Shares[e]; ok {
			cfg = st.Configs[e]
			shares = append(shares, sh)
		}
	}
	if cfg == nil || len(shares) < int(cfg.Threshold) {
		t.Fatalf("fixture holds %d shares of epoch %d", len(shares), e)
	}
	sec, err := tqcrypto.Combine(shares, int(cfg.Threshold))
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// loadAll loads epoch e at id, delivering and ticking until it is done.
func (c *cluster) loadAll(id tq.BaseboardID, e tq.Epoch) *tqcrypto.Secret {
	c.t.Helper()
	for try := 0; try < 20; try++ {
		sec, pending, err := c.nodes[id].LoadRackSecret(c.ctxs[id], e)
		c.flush()
		if err != nil {
			c.t.Fatalf("%s load %d: %v", id, e, err)
		}
		if !pending {
			return sec
		}
		c.deliverAll()
		c.nodes[id].Tick(c.ctxs[id], tq.Instant(try+1)*tq.Instant(20*tq.Second))
		c.flush()
		c.deliverAll()
	}
	c.t.Fatalf("%s cannot load epoch %d", id, e)
	return nil
}

func epochsOf[V any](m map[tq.Epoch]V) []tq.Epoch { return slices.Sorted(mapKeys(m)) }

// A ledger written before pruning loads, is pruned by NewNode (which asks
// for it to be persisted), and is then written as version 2; the rack
// carries on from it: the next epoch is built on the old shares, and every
// old secret, LRTQ's included, is still recoverable.
func TestVersion1LedgerAfterLrtqUpgrade(t *testing.T) {
	states := loadFixture(t, "v1-lrtq-upgraded")
	a0 := states["a"]
	if a0.Lrtq == nil || len(a0.LrtqSetup.Pending) != 1 || !slices.Equal(epochsOf(a0.Configs), []tq.Epoch{2, 3, 4}) {
		t.Fatalf("fixture a is not what it says: configs %v", epochsOf(a0.Configs))
	}
	// Ground truth from the old ledgers, before anything is pruned.
	var lrtqShares []tqcrypto.Share
	for _, name := range []string{"a", "b", "c"} {
		lrtqShares = append(lrtqShares, states[name].Lrtq.Share)
	}
	for _, p := range a0.LrtqSetup.Pending {
		lrtqShares = append(lrtqShares, p.Share)
	}
	want1, err := tqcrypto.Combine(lrtqShares, int(a0.Lrtq.Threshold))
	if err != nil {
		t.Fatal(err)
	}
	want2, want3 := combineHeld(t, states, 2), combineHeld(t, states, 3)

	c, changed := bootCluster(t, states)
	a, b, cc, d, e := uid("a"), uid("b"), uid("c"), uid("d"), uid("e")
	for name, want := range map[string]bool{"a": true, "b": true, "c": true, "d": false, "e": true} {
		if changed[name] != want {
			t.Errorf("%s: changed on boot %t, want %t", name, changed[name], want)
		}
	}
	for _, id := range []tq.BaseboardID{a, b, cc, e} {
		st := c.persisted(id)
		if !slices.Equal(epochsOf(st.Configs), []tq.Epoch{3, 4}) || !slices.Equal(epochsOf(st.Shares), []tq.Epoch{3, 4}) ||
			!slices.Equal(st.CommittedEpochs(), []tq.Epoch{2, 3}) {
			t.Fatalf("%s after boot: configs %v shares %v commits %v", id, epochsOf(st.Configs), epochsOf(st.Shares), st.CommittedEpochs())
		}
		if st.Lrtq != nil || st.LrtqRetired != (id != e) {
			t.Fatalf("%s: lrtq %v retired %t", id, st.Lrtq, st.LrtqRetired)
		}
	}
	if ls := c.persisted(a).LrtqSetup; ls == nil || len(ls.Members) != 4 || len(ls.Pending) != 0 {
		t.Fatalf("a's setup record: %+v", ls)
	}
	if !c.nodes[a].LrtqInitDone() {
		t.Fatal("LRTQ setup not done once the rack moved on")
	}
	if err := c.nodes[a].InitLrtq(c.ctxs[a], c.rack, c.ids[:4]); err != nil || c.ctxs[a].PersistentStateChanged() {
		t.Fatalf("a repeated InitLrtq is no longer a no-op: %v", err)
	}
	if err := c.nodes[b].CoordinateUpgradeFromLrtq(c.ctxs[b], tq.LrtqUpgradeMsg{RackID: c.rack, Epoch: 5, Members: c.ids, Threshold: 3}); !errors.Is(err, tq.ErrAlreadyUpgraded) {
		t.Fatalf("upgrade after the retirement: %v", err)
	}
	if st := c.persisted(d); len(st.Configs) != 0 || st.Lrtq != nil {
		t.Fatalf("d: %+v", st)
	}
	// Nexus gave epoch 4 up; epoch 5 is built on epoch 3's shares.
	members := []tq.BaseboardID{a, b, cc, e}
	cfg5 := c.commitEpoch(cc, 5, 3, members)
	for _, id := range members {
		st := c.persisted(id)
		if !slices.Equal(epochsOf(st.Configs), []tq.Epoch{5}) || !slices.Equal(st.CommittedEpochs(), []tq.Epoch{2, 3, 5}) {
			t.Fatalf("%s after epoch 5: configs %v commits %v", id, epochsOf(st.Configs), st.CommittedEpochs())
		}
	}
	// The chain in epoch 5 holds 1 (LRTQ), 2 and 3.
	for ep, want := range map[tq.Epoch]*tqcrypto.Secret{1: want1, 2: want2, 3: want3} {
		if got := c.loadAll(e, ep); !got.Equal(want) {
			t.Fatalf("secret of epoch %d differs from the old ledgers'", ep)
		}
	}
	if _, _, err := c.nodes[e].LoadRackSecret(c.ctxs[e], 4); !errors.Is(err, tq.ErrUnknownEpoch) {
		t.Fatalf("aborted epoch 4: %v", err)
	}
	// d, left out of the upgrade and never given LRTQ, stays out.
	if cfg5.IsMember(d) {
		t.Fatal("d in epoch 5")
	}
}

func TestVersion1LedgerWithPendingRebuild(t *testing.T) {
	states := loadFixture(t, "v1-rebuilding")
	want := map[tq.Epoch]*tqcrypto.Secret{}
	for ep := tq.Epoch(1); ep <= 4; ep++ {
		want[ep] = combineHeld(t, states, ep)
	}
	c, _ := bootCluster(t, states)
	d := uid("d")
	st := c.persisted(d)
	if !slices.Equal(epochsOf(st.Configs), []tq.Epoch{3, 4}) || !slices.Equal(epochsOf(st.Shares), []tq.Epoch{3}) {
		t.Fatalf("d after boot: configs %v shares %v", epochsOf(st.Configs), epochsOf(st.Shares))
	}
	if r := c.nodes[d].Status(c.ctxs[d]).RebuildingShare; r != 4 {
		t.Fatalf("d rebuilds %d, want 4", r)
	}
	// The others hold epoch 4 alone; d rebuilds its share from them.
	for _, id := range c.ids[:3] {
		if st := c.persisted(id); !slices.Equal(epochsOf(st.Configs), []tq.Epoch{4}) {
			t.Fatalf("%s after boot: configs %v", id, epochsOf(st.Configs))
		}
	}
	c.nodes[d].Tick(c.ctxs[d], tq.Instant(30*tq.Second))
	c.flush()
	c.deliverAll()
	if st := c.persisted(d); !slices.Equal(epochsOf(st.Configs), []tq.Epoch{4}) || !slices.Equal(st.CommittedEpochs(), []tq.Epoch{1, 2, 3, 4}) {
		t.Fatalf("d after its rebuild: configs %v commits %v", epochsOf(st.Configs), st.CommittedEpochs())
	}
	for ep := tq.Epoch(1); ep <= 4; ep++ {
		if got := c.loadAll(d, ep); !got.Equal(want[ep]) {
			t.Fatalf("secret of epoch %d differs from the old ledgers'", ep)
		}
	}
}

// A version-2 ledger is pruned: one that still holds epochs below its
// latest commit (a version-1 ledger relabelled) was not written by this
// code and is refused.
func TestVersion2LedgerMustBePruned(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "ledger", "v1-rebuilding", "a.json"))
	if err != nil {
		t.Fatal(err)
	}
	relabelled := bytes.Replace(b, []byte(`"version":1`), []byte(`"version":2`), 1)
	if _, err := tq.DecodeState(relabelled); !errors.Is(err, tq.ErrMalformed) {
		t.Fatalf("unpruned version-2 ledger: %v", err)
	}
	b, err = os.ReadFile(filepath.Join("testdata", "ledger", "v1-lrtq-upgraded", "b.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Pruned but for its LRTQ package.
	st, err := tq.DecodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	for ep := range st.Configs {
		if ep < 3 {
			delete(st.Configs, ep)
			delete(st.Shares, ep)
		}
	}
	enc, err := tq.EncodeState(&st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tq.DecodeState(enc); !errors.Is(err, tq.ErrMalformed) {
		t.Fatalf("version-2 ledger with an LRTQ package after a commit: %v", err)
	}
}

// TestLaggingMemberCatchesUpFromPrunedPeers: d sleeps through epochs 2 to
// 4, which commit without it while it is a member. Its peers prune
// everything but epoch 4, so nobody holds the epoch-1 shares it asks for
// when it comes back to unlock, without Nexus (a cold boot): they answer
// with epoch 4, d rebuilds its share of 4 from them and commits, and every
// older secret is still recoverable from epoch 4's chain.
func TestLaggingMemberCatchesUpFromPrunedPeers(t *testing.T) {
	c := newCluster(t, "a", "b", "c", "d", "e")
	a, d := uid("a"), uid("d")
	c.commitEpoch(a, 1, 0, c.ids)
	old, err := tq.EncodeState(c.state(d))
	if err != nil {
		t.Fatal(err)
	}
	// d is gone; epochs 2..4 over all five commit with the other four.
	for _, id := range c.ids {
		if id != d {
			c.nodes[id].OnDisconnect(c.ctxs[id], d)
		}
	}
	want := map[tq.Epoch]*tqcrypto.Secret{1: c.loadAll(a, 1)}
	for ep := tq.Epoch(2); ep <= 4; ep++ {
		coord := c.ids[int(ep)%4]
		if coord == d {
			coord = a
		}
		if err := c.nodes[coord].CoordinateReconfiguration(c.ctxs[coord], tq.ReconfigureMsg{RackID: c.rack, Epoch: ep, LastCommittedEpoch: ep - 1, Members: c.ids, Threshold: 3}); err != nil {
			t.Fatal(err)
		}
		c.flush()
		c.deliverAll()
		if cs := c.nodes[coord].CoordinatorStatus(c.ctxs[coord]); cs.State != tq.Preparing || len(cs.Acked) != 4 {
			t.Fatalf("epoch %d: %+v", ep, cs)
		}
		for _, id := range c.ids {
			if id != d {
				if st, err := c.nodes[id].Commit(c.ctxs[id], c.rack, ep); err != nil || st != tq.CommitCommitted {
					t.Fatalf("commit %d at %s: %v %v", ep, id, st, err)
				}
			}
		}
		c.flush()
		want[ep] = c.loadAll(a, ep)
	}
	for _, id := range c.ids {
		if st := c.state(id); id != d && !slices.Equal(epochsOf(st.Configs), []tq.Epoch{4}) {
			t.Fatalf("%s holds epochs %v", id, epochsOf(st.Configs))
		}
	}
	// d restarts from its ledger of epoch 1 and is connected again.
	st, err := tq.DecodeState(old)
	if err != nil {
		t.Fatal(err)
	}
	c.ctxs[d] = tq.NewNodeCtx(d, st)
	c.nodes[d] = tq.NewNode(c.ctxs[d], tq.Config{Rand: rand.NewChaCha8([32]byte{40})})
	for _, id := range c.ids {
		if id != d {
			c.nodes[id].OnConnect(c.ctxs[id], d)
			c.nodes[d].OnConnect(c.ctxs[d], id)
		}
	}
	c.flush()
	c.deliverAll()
	if got := c.loadAll(d, 1); !got.Equal(want[1]) {
		t.Fatal("d loads a wrong secret of epoch 1")
	}
	if st := c.state(d); st.LatestCommittedEpoch() != 4 || !slices.Equal(epochsOf(st.Configs), []tq.Epoch{4}) ||
		!slices.Equal(st.CommittedEpochs(), []tq.Epoch{1, 4}) {
		t.Fatalf("d did not catch up: configs %v commits %v", epochsOf(st.Configs), st.CommittedEpochs())
	}
	for ep := tq.Epoch(2); ep <= 4; ep++ {
		if got := c.loadAll(d, ep); !got.Equal(want[ep]) {
			t.Fatalf("d loads a wrong secret of epoch %d", ep)
		}
	}
	if al := c.ctxs[d].Alarms(); len(al) > 0 {
		t.Fatalf("alarms %v", al)
	}
}

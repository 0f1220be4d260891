package trustquorum_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"

	tq "github.com/rackplane/rackplane/trustquorum"
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// TestInteractions runs the datadriven scripts under testdata/interactions.
// Each script drives real Nodes through a flow step by step and records
// every message, persist and reply; run with -rewrite to regenerate the
// expected output after an intended change (and review the diff).
func TestInteractions(t *testing.T) {
	datadriven.Walk(t, "testdata/interactions", func(t *testing.T, path string) {
		env := newDDEnv()
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return env.run(t, d)
		})
	})
}

type ddNode struct {
	name  string
	id    tq.BaseboardID
	node  *tq.Node
	ctx   *tq.NodeCtx
	disk  []byte
	up    bool
	boots int
}

type ddMsg struct {
	from, to string
	frame    []byte
}

type ddEnv struct {
	rack    tq.RackID
	nodes   map[string]*ddNode
	names   []string
	net     []ddMsg
	cut     map[[2]string]bool
	now     tq.Instant
	secrets []*tqcrypto.Secret
	configs map[tq.Epoch]*tq.Configuration
	out     *strings.Builder
}

func newDDEnv() *ddEnv {
	e := &ddEnv{nodes: map[string]*ddNode{}, cut: map[[2]string]bool{}, configs: map[tq.Epoch]*tq.Configuration{}}
	copy(e.rack[:], "rackplane-test-1")
	return e
}

func ddID(name string) tq.BaseboardID { return tq.BaseboardID{Part: "tq", Serial: name} }

func (e *ddEnv) name(id tq.BaseboardID) string { return id.Serial }

func ddPair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

func (e *ddEnv) linked(a, b string) bool {
	return a != b && e.nodes[a].up && e.nodes[b].up && !e.cut[ddPair(a, b)]
}

func (e *ddEnv) printf(format string, args ...any) { fmt.Fprintf(e.out, format, args...) }

// after is the driver: persist if changed, then queue the envelopes.
func (e *ddEnv) after(t *testing.T, n *ddNode) {
	if n.ctx.PersistentStateChanged() {
		b, err := tq.EncodeState(n.ctx.PersistentState())
		if err != nil {
			t.Fatal(err)
		}
		n.disk = b
		n.ctx.ClearPersistentStateChanged()
		e.printf("  %s: persisted\n", n.name)
	}
	for _, env := range n.ctx.DrainEnvelopes() {
		frame, err := tq.EncodeMsg(env.Msg)
		if err != nil {
			t.Fatal(err)
		}
		e.net = append(e.net, ddMsg{from: n.name, to: e.name(env.To), frame: frame})
		e.printf("  %s -> %s: %s\n", n.name, e.name(env.To), env.Msg)
	}
	for _, a := range n.ctx.Alarms() {
		e.printf("  %s: ALARM %s\n", n.name, a)
	}
}

func (e *ddEnv) boot(t *testing.T, n *ddNode) {
	st := tq.NewPersistentState()
	if n.disk != nil {
		var err error
		if st, err = tq.DecodeState(n.disk); err != nil {
			t.Fatal(err)
		}
	}
	n.boots++
	var seed [32]byte
	copy(seed[:], n.name)
	seed[31] = byte(n.boots)
	n.ctx = tq.NewNodeCtx(n.id, st)
	n.node = tq.NewNode(n.ctx, tq.Config{Rand: rand.NewChaCha8(seed)})
	n.up = true
	for _, o := range e.names {
		if e.linked(n.name, o) {
			e.connect(t, n.name, o)
		}
	}
	e.after(t, n)
}

func (e *ddEnv) connect(t *testing.T, a, b string) {
	for _, x := range [][2]string{{a, b}, {b, a}} {
		n := e.nodes[x[0]]
		n.node.OnConnect(n.ctx, ddID(x[1]))
		e.after(t, n)
	}
}

func (e *ddEnv) dropWhere(f func(m ddMsg) bool) int {
	before := len(e.net)
	e.net = slices.DeleteFunc(e.net, f)
	return before - len(e.net)
}

func (e *ddEnv) node(t *testing.T, d *datadriven.TestData, key string) *ddNode {
	var name string
	d.ScanArgs(t, key, &name)
	n, ok := e.nodes[name]
	if !ok {
		d.Fatalf(t, "unknown node %s", name)
	}
	if !n.up {
		d.Fatalf(t, "node %s is down", name)
	}
	return n
}

func (e *ddEnv) ids(t *testing.T, d *datadriven.TestData, key string) []tq.BaseboardID {
	arg, ok := d.Arg(key)
	if !ok {
		d.Fatalf(t, "missing %s", key)
	}
	var out []tq.BaseboardID
	for _, v := range arg.Vals {
		out = append(out, ddID(v))
	}
	return out
}

func scanInt[T ~uint64 | ~uint8 | ~int64](t *testing.T, d *datadriven.TestData, key string) T {
	var v uint64
	d.ScanArgs(t, key, &v)
	return T(v)
}

// secretName gives each distinct secret a stable name (#1, #2, ...) so a
// script can show that two nodes loaded the same secret without printing it.
func (e *ddEnv) secretName(s *tqcrypto.Secret) string {
	for i, o := range e.secrets {
		if o.Equal(s) {
			return fmt.Sprintf("secret#%d", i+1)
		}
	}
	e.secrets = append(e.secrets, s)
	return fmt.Sprintf("secret#%d", len(e.secrets))
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return "error: " + err.Error()
}

func (e *ddEnv) run(t *testing.T, d *datadriven.TestData) string {
	var out strings.Builder
	e.out = &out
	switch d.Cmd {
	case "nodes":
		arg, _ := d.Arg("names")
		for _, name := range arg.Vals {
			n := &ddNode{name: name, id: ddID(name)}
			e.nodes[name] = n
			e.names = append(e.names, name)
		}
		slices.Sort(e.names)
		for _, name := range arg.Vals {
			e.boot(t, e.nodes[name])
		}
	case "lrtq-init":
		n := e.node(t, d, "node")
		e.printf("%s\n", errString(n.node.InitLrtq(n.ctx, e.rack, e.ids(t, d, "members"))))
		e.after(t, n)
	case "lrtq-init-done":
		n := e.node(t, d, "node")
		e.printf("%t\n", n.node.LrtqInitDone())
	case "lrtq-learn":
		n := e.node(t, d, "node")
		e.printf("%s\n", errString(n.node.LearnLrtq(n.ctx, e.rack)))
		e.after(t, n)
	case "reconfigure":
		n := e.node(t, d, "node")
		var last uint64
		d.MaybeScanArgs(t, "last", &last)
		err := n.node.CoordinateReconfiguration(n.ctx, tq.ReconfigureMsg{
			RackID: e.rack, Epoch: scanInt[tq.Epoch](t, d, "epoch"), LastCommittedEpoch: tq.Epoch(last),
			Members: e.ids(t, d, "members"), Threshold: scanInt[uint8](t, d, "threshold"),
		})
		e.printf("%s\n", errString(err))
		e.after(t, n)
	case "upgrade":
		n := e.node(t, d, "node")
		err := n.node.CoordinateUpgradeFromLrtq(n.ctx, tq.LrtqUpgradeMsg{
			RackID: e.rack, Epoch: scanInt[tq.Epoch](t, d, "epoch"),
			Members: e.ids(t, d, "members"), Threshold: scanInt[uint8](t, d, "threshold"),
		})
		e.printf("%s\n", errString(err))
		e.after(t, n)
	case "deliver":
		var from, to string
		d.MaybeScanArgs(t, "from", &from)
		d.MaybeScanArgs(t, "to", &to)
		match := func(m ddMsg) bool { return (from == "" || m.from == from) && (to == "" || m.to == to) }
		for steps := 0; ; steps++ {
			i := slices.IndexFunc(e.net, match)
			if i < 0 {
				break
			}
			if steps > 1000 {
				d.Fatalf(t, "deliver does not converge")
			}
			m := e.net[i]
			e.net = slices.Delete(e.net, i, i+1)
			msg, err := tq.DecodeMsg(m.frame)
			if err != nil {
				d.Fatalf(t, "decode: %v", err)
			}
			e.printf("%s -> %s: %s\n", m.from, m.to, msg)
			n := e.nodes[m.to]
			n.node.HandleMessage(n.ctx, ddID(m.from), msg)
			e.after(t, n)
		}
	case "drop":
		var from, to string
		d.MaybeScanArgs(t, "from", &from)
		d.MaybeScanArgs(t, "to", &to)
		k := e.dropWhere(func(m ddMsg) bool { return (from == "" || m.from == from) && (to == "" || m.to == to) })
		e.printf("dropped %d\n", k)
	case "net":
		for _, m := range e.net {
			msg, _ := tq.DecodeMsg(m.frame)
			e.printf("%s -> %s: %s\n", m.from, m.to, msg)
		}
	case "commit":
		n := e.node(t, d, "node")
		st, err := n.node.Commit(n.ctx, e.rack, scanInt[tq.Epoch](t, d, "epoch"))
		if err != nil {
			e.printf("%s\n", errString(err))
		} else {
			e.printf("%s\n", st)
		}
		e.after(t, n)
	case "prepare-and-commit":
		n := e.node(t, d, "node")
		epoch := scanInt[tq.Epoch](t, d, "epoch")
		cfg := e.configs[epoch]
		if cfg == nil {
			d.Fatalf(t, "no configuration recorded for epoch %d (run coordinator-status first)", epoch)
		}
		st, err := n.node.PrepareAndCommit(n.ctx, cfg)
		if err != nil {
			e.printf("%s\n", errString(err))
		} else {
			e.printf("%s\n", st)
		}
		e.after(t, n)
	case "coordinator-status":
		n := e.node(t, d, "node")
		cs := n.node.CoordinatorStatus(n.ctx)
		var acked []string
		for _, id := range cs.Acked {
			acked = append(acked, e.name(id))
		}
		e.printf("state=%s epoch=%d acked=%v\n", cs.State, cs.Epoch, acked)
		if cs.Config != nil {
			e.configs[cs.Epoch] = cs.Config
		}
	case "status":
		n := e.node(t, d, "node")
		s := n.node.Status(n.ctx)
		e.printf("seen=%d committed=%v lrtq=%t coordinating=%d rebuilding=%d loading=%d loaded=%v learning=%t",
			s.LatestConfigEpoch, s.CommittedEpochs, s.HasLrtq, s.Coordinating, s.RebuildingShare, s.LoadingSecret, s.SecretsLoaded, s.Learning)
		if s.Expunged != nil {
			e.printf(" expunged=%d(by %s)", s.Expunged.Epoch, e.name(s.Expunged.From))
		}
		e.printf(" alarms=%d\n", len(s.Alarms))
	case "ledger":
		var name string
		d.ScanArgs(t, "node", &name)
		n := e.nodes[name]
		st, err := tq.DecodeState(n.disk)
		if err != nil {
			d.Fatalf(t, "%v", err)
		}
		e.printf("configs=%v shares=%v commits=%v", slices.Sorted(mapKeys(st.Configs)), slices.Sorted(mapKeys(st.Shares)), st.CommittedEpochs())
		if st.Lrtq != nil {
			e.printf(" lrtq(spares=%t handouts=%d)", st.Lrtq.Spares != nil, len(st.Lrtq.Handouts))
		}
		if st.LrtqRetired {
			e.printf(" lrtq-retired")
		}
		if ls := st.LrtqSetup; ls != nil && len(ls.Pending) > 0 {
			var pending []string
			for _, id := range slices.SortedFunc(mapKeys(ls.Pending), tq.BaseboardID.Compare) {
				pending = append(pending, e.name(id))
			}
			e.printf(" lrtq-setup(pending=%v)", pending)
		}
		if st.Expunged != nil {
			e.printf(" expunged=%d", st.Expunged.Epoch)
		}
		e.printf("\n")
	case "load-secret":
		n := e.node(t, d, "node")
		s, pending, err := n.node.LoadRackSecret(n.ctx, scanInt[tq.Epoch](t, d, "epoch"))
		switch {
		case err != nil:
			e.printf("%s\n", errString(err))
		case pending:
			e.printf("pending\n")
		default:
			e.printf("%s\n", e.secretName(s))
		}
		e.after(t, n)
	case "clear-secrets":
		n := e.node(t, d, "node")
		n.node.ClearSecrets(n.ctx)
		e.printf("ok\n")
	case "crash":
		n := e.node(t, d, "node")
		for _, o := range e.names {
			if e.linked(n.name, o) {
				p := e.nodes[o]
				p.node.OnDisconnect(p.ctx, n.id)
				e.after(t, p)
			}
		}
		n.up, n.node, n.ctx = false, nil, nil
		k := e.dropWhere(func(m ddMsg) bool { return m.from == n.name || m.to == n.name })
		e.printf("crashed; %d messages lost\n", k)
	case "restart":
		var name string
		d.ScanArgs(t, "node", &name)
		e.boot(t, e.nodes[name])
	case "disconnect":
		var a, b string
		d.ScanArgs(t, "a", &a)
		d.ScanArgs(t, "b", &b)
		was := e.linked(a, b)
		e.cut[ddPair(a, b)] = true
		k := e.dropWhere(func(m ddMsg) bool { return (m.from == a && m.to == b) || (m.from == b && m.to == a) })
		if was {
			for _, x := range [][2]string{{a, b}, {b, a}} {
				n := e.nodes[x[0]]
				n.node.OnDisconnect(n.ctx, ddID(x[1]))
				e.after(t, n)
			}
		}
		e.printf("%d messages lost\n", k)
	case "connect":
		var a, b string
		d.ScanArgs(t, "a", &a)
		d.ScanArgs(t, "b", &b)
		delete(e.cut, ddPair(a, b))
		if e.linked(a, b) {
			e.connect(t, a, b)
		}
	case "tick":
		var ms int64
		d.ScanArgs(t, "ms", &ms)
		e.now += tq.Instant(ms) * tq.Instant(tq.Millisecond)
		for _, name := range e.names {
			if n := e.nodes[name]; n.up {
				n.node.Tick(n.ctx, e.now)
				e.after(t, n)
			}
		}
	default:
		d.Fatalf(t, "unknown command %s", d.Cmd)
	}
	if out.Len() == 0 {
		return "ok\n"
	}
	return out.String()
}

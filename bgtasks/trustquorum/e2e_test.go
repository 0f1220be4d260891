package trustquorum_test

// End-to-end tests: real Nexus instances, real sled processes (bootstrap
// agents on the bootstrap network with mutual TLS, sled agents), a real
// PostgreSQL, rack setup over the bootstrap network as rackdev does it.
// They assert on the state of the world: rows in the database, what every
// sled's own trust-quorum status says, the API's answers.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/bgtasks/trustquorum"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	tq "github.com/rackplane/rackplane/trustquorum"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// rack is a trust-quorum test rack with the helpers these tests share.
type rack struct{ *racktest.Rack }

// nexusConfig runs the manager with a short no-progress time, and with an
// hour's period: everything here moves through the task's triggers (the
// operator's request, the steps it records, its own follow-ups) and never
// by waiting for its period.
func nexusConfig(noProgress time.Duration) nexus.Config {
	return nexus.Config{
		Tasks: nexustasks.Registrar(nexustasks.Config{TrustQuorum: nexustasks.TrustQuorumConfig{
			NoProgress: noProgress, MaxAttempts: 3, FollowUp: 50 * time.Millisecond}}),
		TaskPeriods: map[string]time.Duration{trustquorum.Name: time.Hour},
	}
}

func newRack(t *testing.T, sleds, spares int, lrtq bool) *rack {
	t.Helper()
	return &rack{racktest.StartRack(t, racktest.RackConfig{Sleds: sleds, Spares: spares, TrustQuorum: true, Lrtq: lrtq,
		Nexus: nexusConfig(5 * time.Second)})}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (r *rack) board(i int) api.Baseboard { return racktest.Baseboard(r.Processes[i]) }

func (r *rack) boards(idx ...int) []api.Baseboard {
	var out []api.Baseboard
	for _, i := range idx {
		out = append(out, r.board(i))
	}
	return out
}

func span(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// waitEpoch waits until nx shows epoch in state and returns it.
func waitEpoch(t *testing.T, nx *racktest.Nexus, epoch uint64, state string) api.TrustQuorumConfig {
	t.Helper()
	var c api.TrustQuorumConfig
	racktest.WaitFor(t, 45*time.Second, fmt.Sprintf("epoch %d %s", epoch, state), func() error {
		var err error
		if c, err = nx.Client.TrustQuorumEpoch(context.Background(), epoch); err != nil {
			return err
		}
		if c.State != state {
			return fmt.Errorf("epoch %d is %s (%d of %d acked)", epoch, c.State, c.Acked, c.Required)
		}
		return nil
	})
	return c
}

// nodeStatus is sled i's trust-quorum status as its own bootstrap agent
// reports it.
func (r *rack) nodeStatus(i int) bootstrap.Status {
	r.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := r.Processes[i].Agent().Status(ctx)
	if err != nil {
		r.T.Fatalf("sled %d status: %v", i, err)
	}
	return st
}

// assertCommitted checks the world after epoch committed over members:
// the database has every member committed, and every member's own node
// holds the epoch committed with the configuration Nexus recorded.
func (r *rack) assertCommitted(nx *racktest.Nexus, epoch uint64, members []int) api.TrustQuorumConfig {
	r.T.Helper()
	c := waitEpoch(r.T.(*testing.T), nx, epoch, "committed")
	want := r.boards(members...)
	slices.SortFunc(want, func(a, b api.Baseboard) int { return compare(a, b) })
	var got []api.Baseboard
	for _, m := range c.Members {
		got = append(got, api.Baseboard{Part: m.Part, Serial: m.Serial})
		if m.State != "committed" || m.TimeCommitted == nil {
			r.T.Fatalf("epoch %d member %s/%s is %s", epoch, m.Part, m.Serial, m.State)
		}
	}
	if !slices.Equal(got, want) || c.Acked != len(members) || c.Required != len(members) {
		r.T.Fatalf("epoch %d members %v (%d/%d), want %v", epoch, got, c.Acked, c.Required, want)
	}
	if n := r.DB.Count(r.T, `SELECT count(*) FROM trust_quorum_member WHERE epoch = $1 AND state = 'committed'
		AND share_digest IS NOT NULL`, int64(epoch)); n != len(members) {
		r.T.Fatalf("%d committed members with digests in the database, want %d", n, len(members))
	}
	for _, i := range members {
		st := r.nodeStatus(i)
		if !slices.Contains(st.CommittedEpochs, tq.Epoch(epoch)) || st.LatestConfig == nil || uint64(st.LatestConfig.Epoch) < epoch {
			r.T.Fatalf("sled %d: committed %v, want %d", i, st.CommittedEpochs, epoch)
		}
		if len(st.Alarms) != 0 {
			r.T.Fatalf("sled %d raised alarms: %+v", i, st.Alarms)
		}
	}
	return c
}

func compare(a, b api.Baseboard) int {
	switch {
	case a.Part != b.Part:
		return cmpStr(a.Part, b.Part)
	default:
		return cmpStr(a.Serial, b.Serial)
	}
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// waitUninitialized waits until Nexus lists want as uninitialised (the
// manager records the peers members see; it is activated until it has).
func waitUninitialized(t *testing.T, nx *racktest.Nexus, want ...api.Baseboard) {
	t.Helper()
	racktest.WaitFor(t, 30*time.Second, "uninitialised sleds", func() error {
		list, err := nx.Client.SledsUninitialized(context.Background())
		if err != nil {
			return err
		}
		for _, w := range want {
			if !slices.ContainsFunc(list, func(u api.UninitializedSled) bool { return u.Part == w.Part && u.Serial == w.Serial }) {
				if err := nx.ActivateTask(trustquorum.Name, "test"); err != nil {
					return err
				}
				return fmt.Errorf("%s not listed in %+v", w, list)
			}
		}
		return nil
	})
}

// Rack setup hands epoch 1 to Nexus: committed, every member acked.
func TestRackSetupHandsEpoch1ToNexus(t *testing.T) {
	t.Parallel()
	r := newRack(t, 4, 0, false)
	st, err := r.Nexus.Client.TrustQuorumStatus(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.RackID == nil || [16]byte(*st.RackID) != r.RackID || st.Latest == nil || st.LatestCommitted == nil ||
		st.Latest.Epoch != 1 || st.LatestCommitted.Epoch != 1 {
		t.Fatalf("status after rack setup: %+v", st)
	}
	r.assertCommitted(r.Nexus, 1, span(0, 4))
	// The same handoff again changes nothing; rack setup happens once.
	if n := r.DB.Count(t, `SELECT count(*) FROM trust_quorum_configuration`); n != 1 {
		t.Fatalf("%d configurations", n)
	}
}

// A sled that runs only its bootstrap agent is listed as uninitialised,
// added by an operator, and committed through a member's proxy.
func TestAddSled(t *testing.T) {
	t.Parallel()
	r := newRack(t, 4, 1, false)
	spare := r.board(4)
	waitUninitialized(t, r.Nexus, spare)
	c, err := r.Nexus.Client.TrustQuorumMembership(ctxT(t), api.TrustQuorumMembership{Add: []api.Baseboard{spare}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Epoch != 2 || c.State != "preparing" || len(c.Members) != 5 || c.Attempt != 1 {
		t.Fatalf("the change: %+v", c)
	}
	r.assertCommitted(r.Nexus, 2, span(0, 5))
	if r.Processes[4].Server() != nil {
		t.Fatal("the spare started a sled agent")
	}
	// Nexus reached the spare only through a member.
	st, err := r.Nexus.Client.TrustQuorumStatus(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.Part == spare.Part && n.Serial == spare.Serial {
			if n.Via == "direct" || n.Status == nil || n.Status.LatestCommittedEpoch != 2 {
				t.Fatalf("the spare's node status: %+v", n)
			}
		}
	}
	if list, err := r.Nexus.Client.SledsUninitialized(ctxT(t)); err != nil || len(list) != 0 {
		t.Fatalf("uninitialised after the add: %+v %v", list, err)
	}
}

func isCode(err error, code string) error {
	if client.ErrorCode(err) != code {
		return fmt.Errorf("got %v, want %s", err, code)
	}
	return nil
}

var _ = errors.New
var _ = sledtest.BootstrapAddrs

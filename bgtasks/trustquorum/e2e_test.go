package trustquorum_test

// End-to-end tests: real Nexus instances, real sled processes (bootstrap
// agents on the bootstrap network with mutual TLS, sled agents), a real
// PostgreSQL, rack setup over the bootstrap network as rackdev does it.
// They assert on the state of the world: rows in the database, what every
// sled's own trust-quorum status says, the API's answers.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	prommodel "github.com/prometheus/common/model"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/bgtasks/trustquorum"
	"github.com/rackplane/rackplane/internal/rackpki"
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
	if c := cmp.Compare(a.Part, b.Part); c != 0 {
		return c
	}
	return cmp.Compare(a.Serial, b.Serial)
}

// waitUninitialized waits until Nexus lists want as uninitialised (the
// manager records the peers members see; it is activated until it has).
func waitUninitialized(t testing.TB, nx *racktest.Nexus, want ...api.Baseboard) {
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

// runOnce activates nx's manager and waits for that activation to finish;
// it returns the activation's status.
func runOnce(t *testing.T, nx *racktest.Nexus) trustquorum.Status {
	t.Helper()
	got := racktest.RunTask(t, nx, trustquorum.Name)
	var st trustquorum.Status
	if err := json.Unmarshal(got.Status, &st); err != nil {
		t.Fatalf("status %s: %v", got.Status, err)
	}
	return st
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
	// The same handoff again changes nothing; a different one is refused,
	// and only the rack-setup service may hand a rack over.
	handoff := r.Setup.Handoff(r.RackID)
	as := func(id rackpki.Identity) client.NexusInternal {
		c, err := client.NewNexusInternal(r.Nexus.InternalURL(), sledtest.HTTPClient(t, id))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rssc := as(rackpki.RSS())
	if c, created, err := rssc.RackSetupHandoff(ctxT(t), handoff); err != nil || created || c.Epoch != 1 || c.State != "committed" {
		t.Fatalf("the same handoff again: %+v created %v, %v", c, created, err)
	}
	other := handoff
	other.Configuration = api.TQConfigurationFrom(nil)
	if cfg, err := handoff.Configuration.ToTrustQuorum(); err == nil {
		cfg.Coordinator = cfg.Members[len(cfg.Members)-1].ID
		other.Configuration = api.TQConfigurationFrom(cfg)
		other.Coordinator = api.BaseboardFrom(cfg.Coordinator)
	}
	_, _, err = rssc.RackSetupHandoff(ctxT(t), other)
	if err := isCode(err, 409, api.CodeRackAlreadySetUp); err != nil {
		t.Fatalf("a different handoff: %v", err)
	}
	_, _, err = as(rackpki.Nexus("intruder")).RackSetupHandoff(ctxT(t), handoff)
	if err := isCode(err, 403, api.CodeForbiddenIdentity); err != nil {
		t.Fatalf("a handoff from a Nexus: %v", err)
	}
	_, _, err = as(rackpki.Sled("rackplane-sim", "SIM-0001")).RackSetupHandoff(ctxT(t), handoff)
	if err := isCode(err, 403, api.CodeForbiddenIdentity); err != nil {
		t.Fatalf("a handoff from a sled: %v", err)
	}
	if n := r.DB.Count(t, `SELECT count(*) FROM trust_quorum_configuration`); n != 1 {
		t.Fatalf("%d configurations", n)
	}
	for outcome, want := range map[string]int{"ok": 2, "refused": 3} {
		if n := r.DB.Count(t, `SELECT count(*) FROM audit_log WHERE action = 'rack.setup' AND outcome = $1`, outcome); n != want {
			t.Fatalf("%d rack setups %s in the audit log, want %d", n, outcome, want)
		}
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
	// Once committed, the manager asks the spare (through a member) to
	// start its sled agent; it unlocks and registers, and from then on
	// Nexus reads it directly.
	racktest.WaitProcessesRegistered(t, r.Nexus, r.Processes[4])
	runOnce(t, r.Nexus)
	st, err := r.Nexus.Client.TrustQuorumStatus(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.Part == spare.Part && n.Serial == spare.Serial {
			if n.Via != "direct" || n.Status == nil || n.Status.LatestCommittedEpoch != 2 || n.Status.StorageLock != "unlocked" {
				t.Fatalf("the spare's node status: %+v", n)
			}
		}
	}
	if list, err := r.Nexus.Client.SledsUninitialized(ctxT(t)); err != nil || len(list) != 0 {
		t.Fatalf("uninitialised after the add: %+v %v", list, err)
	}
	if got := gather(t, r.Nexus, "rackplane_trust_quorum_epoch_committed"); got != 2 {
		t.Fatalf("epoch committed metric %v, want 2", got)
	}
	if n := r.DB.Count(t, `SELECT count(*) FROM audit_log WHERE action = 'trust_quorum.membership'
		AND actor = 'racktest-admin' AND outcome = 'ok' AND target = 'trust quorum epoch 2'`); n != 1 {
		t.Fatal("the operator's change is not in the audit log")
	}
}

func isCode(err error, status int, code string) error {
	if client.StatusCode(err) != status || client.ErrorCode(err) != code {
		return fmt.Errorf("got %v, want %d %s", err, status, code)
	}
	return nil
}

// A removed sled learns that it is expunged, and Nexus stops asking it
// anything once it knows.
func TestRemoveSled(t *testing.T) {
	t.Parallel()
	r := newRack(t, 5, 0, false)
	gone := r.board(4)
	c, err := r.Nexus.Client.TrustQuorumMembership(ctxT(t), api.TrustQuorumMembership{Remove: []api.Baseboard{gone}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Epoch != 2 || len(c.Members) != 4 {
		t.Fatalf("the change: %+v", c)
	}
	r.assertCommitted(r.Nexus, 2, span(0, 4))
	racktest.WaitFor(t, 30*time.Second, "the removed sled to learn it is expunged", func() error {
		if x := r.nodeStatus(4).Expunged; x == nil || x.Epoch != 2 {
			return fmt.Errorf("expunged: %+v", x)
		}
		return nil
	})
	var seen api.TrustQuorumNode
	racktest.WaitFor(t, 30*time.Second, "Nexus to see it", func() error {
		st, err := r.Nexus.Client.TrustQuorumStatus(ctxT(t))
		if err != nil {
			return err
		}
		for _, n := range st.Nodes {
			if n.Part == gone.Part && n.Serial == gone.Serial && n.Status != nil && n.Status.Expunged != nil {
				seen = n
				return nil
			}
		}
		return errors.New("not yet")
	})
	if seen.Status.Expunged.Epoch != 2 {
		t.Fatalf("Nexus's view of the removed sled: %+v", seen.Status)
	}
	// It is not watched any more: two more runs leave its row alone.
	runOnce(t, r.Nexus)
	runOnce(t, r.Nexus)
	if n := r.DB.Count(t, `SELECT count(*) FROM trust_quorum_node_status WHERE serial_number = $1 AND time_observed = $2`,
		gone.Serial, seen.TimeObserved); n != 1 {
		t.Fatal("Nexus kept reading the removed sled's status after it knew")
	}
	// And it cannot come back.
	_, err = r.Nexus.Client.TrustQuorumMembership(ctxT(t), api.TrustQuorumMembership{Add: []api.Baseboard{gone}})
	if err := isCode(err, 409, api.CodeSledExpunged); err != nil {
		t.Fatal(err)
	}
}

// A rack set up with LRTQ is upgraded with one request; the coordinator
// is one of the LRTQ members, and every member ends on the trust quorum.
func TestLrtqUpgrade(t *testing.T) {
	t.Parallel()
	r := newRack(t, 4, 0, true)
	st, err := r.Nexus.Client.TrustQuorumStatus(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.LatestCommitted == nil || !st.LatestCommitted.Lrtq || st.LatestCommitted.Epoch != 1 ||
		len(st.LatestCommitted.Members) != 4 {
		t.Fatalf("after LRTQ rack setup: %+v", st.LatestCommitted)
	}
	_, err = r.Nexus.Client.TrustQuorumMembership(ctxT(t), api.TrustQuorumMembership{Remove: []api.Baseboard{r.board(3)}})
	if err := isCode(err, 409, api.CodeUpgradeFromLrtqRequired); err != nil {
		t.Fatal(err)
	}
	c, err := r.Nexus.Client.TrustQuorumLrtqUpgrade(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.Epoch != 2 || c.State != "preparing_lrtq_upgrade" || !c.LrtqUpgrade || c.LastCommittedEpoch != 1 ||
		!slices.Contains(r.boards(span(0, 4)...), c.Coordinator) {
		t.Fatalf("the upgrade: %+v", c)
	}
	c = r.assertCommitted(r.Nexus, 2, span(0, 4))
	// Once epoch 2 commits, a member's LRTQ share has done its work (the
	// LRTQ secret travels encrypted in epoch 2's configuration) and the
	// node retires it rather than keep secret material it will not use.
	for i := range 4 {
		if st := r.nodeStatus(i); st.HasLrtq || st.LatestCommittedEpoch != 2 ||
			st.LatestConfig.EncryptedRackSecrets == nil {
			t.Fatalf("sled %d after the upgrade: %+v", i, st)
		}
	}
	_, err = r.Nexus.Client.TrustQuorumLrtqUpgrade(ctxT(t))
	if err := isCode(err, 409, api.CodeAlreadyUpgraded); err != nil {
		t.Fatal(err)
	}
	// The upgraded rack changes membership as any other.
	if _, err := r.Nexus.Client.TrustQuorumMembership(ctxT(t), api.TrustQuorumMembership{Remove: []api.Baseboard{r.board(3)}}); err != nil {
		t.Fatal(err)
	}
	r.assertCommitted(r.Nexus, 3, span(0, 3))
}

// index is the process of baseboard b.
func (r *rack) index(b api.Baseboard) int {
	for i := range r.Processes {
		if r.board(i) == b {
			return i
		}
	}
	r.T.Fatalf("no sled %s", b)
	return -1
}

// markUnreachable records sled i as the liveness task records a sled that
// stopped registering, so Nexus does not pick it to coordinate.
func (r *rack) markUnreachable(i int) {
	b := r.board(i)
	if _, err := r.DB.Pool.Exec(context.Background(), `UPDATE sled SET state = 'unreachable'
		WHERE part_number = $1 AND serial_number = $2`, b.Part, b.Serial); err != nil {
		r.T.Fatal(err)
	}
}

// The coordinator dies mid-prepare: Nexus aborts the epoch once it stood
// still for its no-progress time and starts the same change at the next
// epoch with another coordinator, which commits.
func TestCoordinatorKilledMidPrepare(t *testing.T) {
	t.Parallel()
	testCoordinatorKilled(t, 1)
}

// The same with two Nexus instances on one database, both running the
// manager: every step is raced, and each happens once.
func TestTwoNexusRaceOnEveryStep(t *testing.T) {
	t.Parallel()
	testCoordinatorKilled(t, 2)
}

func testCoordinatorKilled(t *testing.T, nexuses int) {
	// Three members and two spares: adding both makes N = 5 (K = 3,
	// Z = 1), so the prepare needs 4 acks; with the spares down it stands
	// at 3, with the coordinator preparing, until it is killed.
	r := newRack(t, 3, 2, false)
	nxs := []*racktest.Nexus{r.Nexus}
	for range nexuses - 1 {
		nxs = append(nxs, racktest.StartNexus(t, r.DB.URL, nexusConfig(5*time.Second)))
	}
	waitUninitialized(t, r.Nexus, r.board(3), r.board(4))
	r.Processes[3].Stop()
	r.Processes[4].Stop()
	first, err := nxs[len(nxs)-1].Client.TrustQuorumMembership(ctxT(t), api.TrustQuorumMembership{Add: r.boards(3, 4)})
	if err != nil {
		t.Fatal(err)
	}
	racktest.WaitFor(t, 30*time.Second, "the prepare to stand at 3 acks", func() error {
		c, err := r.Nexus.Client.TrustQuorumEpoch(context.Background(), 2)
		if err != nil {
			return err
		}
		if c.Acked < 3 {
			return fmt.Errorf("%s, %d acked", c.State, c.Acked)
		}
		return nil
	})
	coord := r.index(first.Coordinator)
	r.Processes[coord].Stop()
	r.Processes[3].Start()
	r.Processes[4].Start()

	aborted := waitEpoch(t, r.Nexus, 2, "aborted")
	retry := waitEpoch(t, r.Nexus, 3, "committing")
	if !strings.Contains(aborted.AbortReason, "unreachable") || !strings.Contains(aborted.AbortReason, "retried as epoch 3") ||
		retry.Attempt != 2 || retry.ChangeID != first.ChangeID || retry.Coordinator == first.Coordinator {
		t.Fatalf("aborted %+v, retried as %+v", aborted, retry)
	}
	// The old coordinator comes back and is committed too.
	r.Processes[coord].Start()
	r.assertCommitted(r.Nexus, 3, span(0, 5))
	if n := r.DB.Count(t, `SELECT count(*) FROM trust_quorum_configuration`); n != 3 {
		t.Fatalf("%d epochs, want 3: the abort and the retry happened once", n)
	}
	if n := r.DB.Count(t, `SELECT count(*) FROM audit_log WHERE action = 'trust_quorum.abort' AND outcome = 'ok'`); n != 1 {
		t.Fatalf("%d aborts recorded in the audit log", n)
	}
	var aborts, retries float64
	for _, nx := range nxs {
		aborts += gather(t, nx, "rackplane_trust_quorum_aborts_total")
		retries += gather(t, nx, "rackplane_trust_quorum_retries_total")
	}
	if aborts != 1 || retries != 1 {
		t.Fatalf("metrics: %v aborts, %v retries across the Nexus instances", aborts, retries)
	}
	if nexuses > 1 {
		// Both ran the manager throughout.
		for _, nx := range nxs {
			if task, err := nx.Tasks().Task(trustquorum.Name, false); err != nil || task.Activations < 3 {
				t.Fatalf("Nexus %s: %+v %v", nx.ID(), task, err)
			}
		}
	}
}

// gather sums a metric of nx's registry as /metrics serves it.
func gather(t *testing.T, nx *racktest.Nexus, name string) float64 {
	t.Helper()
	req := nx.Request(t, "GET", "/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(prommodel.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	if mf := mfs[name]; mf != nil {
		for _, m := range mf.GetMetric() {
			total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return total
}

// A member is down when the epoch commits; it comes back later, and Nexus
// commits it with prepare-and-commit (it never prepared).
func TestMemberUnreachableDuringCommit(t *testing.T) {
	t.Parallel()
	r := newRack(t, 5, 1, false)
	waitUninitialized(t, r.Nexus, r.board(5))
	const down = 2
	r.Processes[down].Stop()
	r.markUnreachable(down)
	if _, err := r.Nexus.Client.TrustQuorumMembership(ctxT(t), api.TrustQuorumMembership{Add: r.boards(5)}); err != nil {
		t.Fatal(err)
	}
	// N = 6: K = 4, Z = 1; the five up members prepare it.
	c := waitEpoch(t, r.Nexus, 2, "committing")
	racktest.WaitFor(t, 30*time.Second, "every member but the one down to commit", func() error {
		var err error
		if c, err = r.Nexus.Client.TrustQuorumEpoch(context.Background(), 2); err != nil {
			return err
		}
		if c.Acked != 5 {
			return fmt.Errorf("%d committed", c.Acked)
		}
		return nil
	})
	_, err := r.Nexus.Client.TrustQuorumAbort(ctxT(t), 2)
	if err := isCode(err, 409, api.CodeTQCommitting); err != nil {
		t.Fatalf("abort of a committing epoch: %v", err)
	}
	if st := runOnce(t, r.Nexus); !slices.ContainsFunc(st.Commits, func(cr trustquorum.CommitRecord) bool {
		return cr.Member == model(r.board(down)) && cr.Op == trustquorum.OpPrepareAndCommit
	}) {
		t.Fatalf("no prepare-and-commit tried on the member that is down: %+v", st.Commits)
	}
	r.Processes[down].Start()
	r.assertCommitted(r.Nexus, 2, span(0, 6))
	b := r.board(down)
	if n := r.DB.Count(t, `SELECT count(*) FROM trust_quorum_member WHERE epoch = 2 AND part_number = $1
		AND serial_number = $2 AND state = 'committed' AND time_prepared IS NULL`, b.Part, b.Serial); n != 1 {
		t.Fatal("the member that was down is not recorded committed without a prepare")
	}
}

func model(b api.Baseboard) string { return b.Part + "/" + b.Serial }

// A committing epoch that K+Z members committed does not hold the rack
// up: a newer change starts, and the older one is committed partially
// (its straggler learns the commit from the newer epoch's members).
func TestNewerChangeSupersedesAPartialCommit(t *testing.T) {
	t.Parallel()
	r := newRack(t, 5, 1, false)
	waitUninitialized(t, r.Nexus, r.board(5))
	const down = 3
	r.Processes[down].Stop()
	r.markUnreachable(down)
	if _, err := r.Nexus.Client.TrustQuorumMembership(ctxT(t), api.TrustQuorumMembership{Add: r.boards(5)}); err != nil {
		t.Fatal(err)
	}
	// N = 6: K+Z = 5 members prepare it and commit it; one stays down.
	racktest.WaitFor(t, 30*time.Second, "5 commit acks of epoch 2", func() error {
		c, err := r.Nexus.Client.TrustQuorumEpoch(context.Background(), 2)
		if err != nil {
			return err
		}
		if c.State != "committing" || c.Acked != 5 {
			return fmt.Errorf("%s, %d acked", c.State, c.Acked)
		}
		return nil
	})
	c, err := r.Nexus.Client.TrustQuorumMembership(ctxT(t), api.TrustQuorumMembership{Remove: r.boards(down)})
	if err != nil {
		t.Fatal(err)
	}
	if c.Epoch != 3 || c.LastCommittedEpoch != 2 {
		t.Fatalf("the newer change: %+v", c)
	}
	partial := waitEpoch(t, r.Nexus, 2, "committed_partially")
	if partial.TimeCommitted == nil || partial.Acked != 5 || partial.Required != 6 {
		t.Fatalf("epoch 2: %+v", partial)
	}
	r.assertCommitted(r.Nexus, 3, []int{0, 1, 2, 4, 5})
	// The partially committed epoch stays so: nobody commits it further.
	runOnce(t, r.Nexus)
	if c, err := r.Nexus.Client.TrustQuorumEpoch(ctxT(t), 2); err != nil || c.State != "committed_partially" {
		t.Fatalf("epoch 2 later: %+v %v", c, err)
	}
}

// The Nexus driving a commit dies half-way; another Nexus on the same
// database, started later, finishes it.
func TestNexusKilledMidCommit(t *testing.T) {
	t.Parallel()
	r := newRack(t, 5, 1, false)
	waitUninitialized(t, r.Nexus, r.board(5))
	const down = 1
	r.Processes[down].Stop()
	r.markUnreachable(down)
	if _, err := r.Nexus.Client.TrustQuorumMembership(ctxT(t), api.TrustQuorumMembership{Add: r.boards(5)}); err != nil {
		t.Fatal(err)
	}
	waitEpoch(t, r.Nexus, 2, "committing")
	r.Nexus.Stop()
	r.Processes[down].Start()
	other := racktest.StartNexus(t, r.DB.URL, nexusConfig(5*time.Second))
	r.assertCommitted(other, 2, span(0, 6))
	st, err := other.Client.TrustQuorumStatus(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.ObservedBy != other.ID() {
			t.Fatalf("node %s/%s last observed by %s, not the surviving Nexus", n.Part, n.Serial, n.ObservedBy)
		}
	}
}

// Every refusal is a clear 4xx, and changes nothing.
func TestRequestsRefused(t *testing.T) {
	t.Parallel()
	r := newRack(t, 3, 0, false)
	nx := r.Nexus.Client
	ctx := ctxT(t)
	before := r.DB.Count(t, `SELECT count(*) FROM trust_quorum_configuration`)
	stranger := api.Baseboard{Part: "rackplane-sim", Serial: "NEVER-SEEN"}
	for name, c := range map[string]struct {
		req          api.TrustQuorumMembership
		status       int
		code         string
		wantInReason string
	}{
		"nothing":        {api.TrustQuorumMembership{}, 400, api.CodeInvalidField, "at least one"},
		"unknown":        {api.TrustQuorumMembership{Add: []api.Baseboard{stranger}}, 400, api.CodeTQUnknownBaseboard, "NEVER-SEEN"},
		"already":        {api.TrustQuorumMembership{Add: r.boards(0)}, 409, api.CodeTQAlreadyMember, "member"},
		"not a member":   {api.TrustQuorumMembership{Remove: []api.Baseboard{stranger}}, 409, api.CodeNotAMember, "NEVER-SEEN"},
		"too few":        {api.TrustQuorumMembership{Remove: r.boards(2)}, 400, api.CodeInvalidMembership, "3 to 32"},
		"named twice":    {api.TrustQuorumMembership{Add: r.boards(0), Remove: r.boards(0)}, 400, api.CodeInvalidField, "twice"},
		"malformed part": {api.TrustQuorumMembership{Add: []api.Baseboard{{Serial: "x"}}}, 400, api.CodeInvalidField, "part"},
	} {
		_, err := nx.TrustQuorumMembership(ctx, c.req)
		if bad := isCode(err, c.status, c.code); bad != nil {
			t.Errorf("%s: %v", name, bad)
		} else if !strings.Contains(err.Error(), c.wantInReason) {
			t.Errorf("%s: %q does not say %q", name, err, c.wantInReason)
		}
	}
	_, err := nx.TrustQuorumAbort(ctx, 1)
	if err := isCode(err, 409, api.CodeTQCommitting); err != nil {
		t.Errorf("abort of a committed epoch: %v", err)
	}
	_, err = nx.TrustQuorumAbort(ctx, 9)
	if err := isCode(err, 404, api.CodeNotFound); err != nil {
		t.Errorf("abort of an unknown epoch: %v", err)
	}
	_, err = nx.TrustQuorumEpoch(ctx, 9)
	if err := isCode(err, 404, api.CodeNotFound); err != nil {
		t.Errorf("an unknown epoch: %v", err)
	}
	_, err = nx.TrustQuorumLrtqUpgrade(ctx)
	if err := isCode(err, 409, api.CodeAlreadyUpgraded); err != nil {
		t.Errorf("upgrade of a trust-quorum rack: %v", err)
	}
	// A viewer may look but not change.
	viewer := nx.WithToken(r.Nexus.Token(t, "viewer", "viewer", 0))
	if _, err := viewer.TrustQuorumStatus(ctx); err != nil {
		t.Errorf("a viewer reading: %v", err)
	}
	_, err = viewer.TrustQuorumMembership(ctx, api.TrustQuorumMembership{Remove: r.boards(0)})
	if err := isCode(err, 403, api.CodeForbidden); err != nil {
		t.Errorf("a viewer changing: %v", err)
	}
	if after := r.DB.Count(t, `SELECT count(*) FROM trust_quorum_configuration`); after != before {
		t.Fatalf("%d configurations after refusals, %d before", after, before)
	}
	if st := runOnce(t, r.Nexus); st.Epoch != 1 || st.State != "committed" {
		t.Fatalf("the manager after refusals: %+v", st)
	}
}

// While a change is being prepared another is refused, and an operator
// may abort it; an operator's abort is not retried.
func TestOperatorAbort(t *testing.T) {
	t.Parallel()
	r := newRack(t, 3, 2, false)
	nx := r.Nexus.Client
	ctx := ctxT(t)
	waitUninitialized(t, r.Nexus, r.board(3), r.board(4))
	r.Processes[3].Stop()
	r.Processes[4].Stop()
	// N = 5 needs 4 prepare acks; with the spares down it stands at 3.
	if _, err := nx.TrustQuorumMembership(ctx, api.TrustQuorumMembership{Add: r.boards(3, 4)}); err != nil {
		t.Fatal(err)
	}
	_, err := nx.TrustQuorumMembership(ctx, api.TrustQuorumMembership{Remove: r.boards(0)})
	if err := isCode(err, 409, api.CodeTQInProgress); err != nil {
		t.Fatal(err)
	}
	_, err = nx.TrustQuorumAbort(ctx, 1)
	if err := isCode(err, 409, api.CodeTQNotLatest); err != nil {
		t.Fatal(err)
	}
	c, err := nx.TrustQuorumAbort(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if c.State != "aborted" || !strings.Contains(c.AbortReason, "racktest-admin") || c.TimeAborted == nil {
		t.Fatalf("aborted: %+v", c)
	}
	if again, err := nx.TrustQuorumAbort(ctx, 2); err != nil || again.State != "aborted" || *again.TimeAborted != *c.TimeAborted {
		t.Fatalf("aborting again: %+v %v", again, err)
	}
	runOnce(t, r.Nexus)
	if n := r.DB.Count(t, `SELECT count(*) FROM trust_quorum_configuration`); n != 2 {
		t.Fatalf("%d epochs: an operator's abort was retried", n)
	}
	// The rack moves on from the last committed epoch.
	r.Processes[3].Start()
	r.Processes[4].Start()
	waitUninitialized(t, r.Nexus, r.board(3), r.board(4))
	c, err = nx.TrustQuorumMembership(ctx, api.TrustQuorumMembership{Add: r.boards(3, 4)})
	if err != nil || c.Epoch != 3 || c.LastCommittedEpoch != 1 || c.Attempt != 1 {
		t.Fatalf("the next change: %+v %v", c, err)
	}
	r.assertCommitted(r.Nexus, 3, span(0, 5))
}

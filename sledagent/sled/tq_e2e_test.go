package sled_test

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/sledagent/bootstrap/bootnet"
	"github.com/rackplane/rackplane/sledagent/bootstrap/rss"
	"github.com/rackplane/rackplane/sledagent/ledger"
	"github.com/rackplane/rackplane/sledagent/sled"
	"github.com/rackplane/rackplane/trustquorum"
)

// assertCommitted checks, through the sled API, that every member holds
// epoch committed with the same configuration, and that its ledger on
// every present M.2 is at the latest generation.
func (r *rack) assertCommitted(members []int, cfg *api.TQConfiguration) {
	r.t.Helper()
	for _, i := range members {
		st := r.status(i)
		if st.LatestCommittedEpoch != cfg.Epoch || !slices.Contains(st.CommittedEpochs, cfg.Epoch) {
			r.t.Fatalf("sled %d: committed %v, want %d", i, st.CommittedEpochs, cfg.Epoch)
		}
		if st.LatestConfiguration == nil || st.LatestConfiguration.Coordinator != cfg.Coordinator ||
			!slices.Equal(st.LatestConfiguration.Members, cfg.Members) {
			r.t.Fatalf("sled %d holds another configuration: %+v", i, st.LatestConfiguration)
		}
		for _, d := range st.Ledger {
			if d.Present && d.Generation != st.LedgerGeneration {
				r.t.Fatalf("sled %d: M.2 %s at generation %d, latest %d", i, d.Path, d.Generation, st.LedgerGeneration)
			}
		}
		if len(st.Alarms) != 0 {
			r.t.Fatalf("sled %d raised alarms: %+v", i, st.Alarms)
		}
	}
}

func testReconfiguration(t *testing.T, n int) {
	r := newRack(t, n, rackOpts{})
	members := all(n)
	r.waitConnected(members...)
	// Epoch 1 from an uninitialised rack, then epoch 2 built on it (the
	// coordinator collects K shares of epoch 1 first).
	cfg1 := r.commitEpoch(0, 1, 0, members)
	r.assertCommitted(members, cfg1)
	cfg2 := r.commitEpoch(n-1, 2, 1, members)
	r.assertCommitted(members, cfg2)
	if cfg2.EncryptedRackSecrets == nil {
		t.Fatal("epoch 2 carries no encrypted secret of epoch 1")
	}
	for _, i := range members {
		if got := r.metric(i, "rackplane_trust_quorum_persist_failures_total"); got != 0 {
			t.Fatalf("sled %d: %v persist failures", i, got)
		}
	}
}

func TestReconfiguration5(t *testing.T)  { testReconfiguration(t, 5) }
func TestReconfiguration16(t *testing.T) { testReconfiguration(t, 16) }

// The coordinator's connection to one member is cut while that member's
// Prepare is on the wire: the coordinator redials, re-sends, and the epoch
// commits.
func TestConnectionResetMidPrepare(t *testing.T) {
	var fwd *forwarder
	var coord, member int
	r := newRack(t, 5, rackOpts{beforeRun: func(r *rack) {
		order := r.byAddr()
		coord, member = order[0], order[1]
		fwd = r.forward(coord, member)
	}})
	r.waitConnected(all(5)...)
	r.commitEpoch(coord, 1, 0, all(5))

	fwd.pause()
	r.reconfigure(coord, 2, 1, all(5))
	_, acked := r.waitAcked(coord, 2, 4)
	if slices.Contains(acked, r.sleds[member].id()) {
		t.Fatal("the member behind the paused wire acked; the test did not cut anything mid-prepare")
	}
	before := r.status(coord)
	fwd.reset()
	fwd.resume()
	cfg2, _ := r.waitAcked(coord, 2, 5)
	for _, i := range all(5) {
		r.commit(i, nil, cfg2)
	}
	r.assertCommitted(all(5), cfg2)
	after := r.status(coord)
	if connID(before, r.sleds[member].id()) >= connID(after, r.sleds[member].id()) {
		t.Fatalf("connection to the member was not replaced: %d then %d",
			connID(before, r.sleds[member].id()), connID(after, r.sleds[member].id()))
	}
}

func connID(st api.TQStatus, b api.Baseboard) uint64 {
	for _, p := range st.ConnectedPeers {
		if p.Part == b.Part && p.Serial == b.Serial {
			return p.ConnectionID
		}
	}
	return 0
}

// A member restarts between prepare and commit with one of its two M.2s
// gone: it comes back with its prepared state from the surviving M.2,
// commits, and the returning M.2 is brought up to date.
func TestMemberRestartsWithOneM2Gone(t *testing.T) {
	r := newRack(t, 4, rackOpts{})
	r.waitConnected(all(4)...)
	r.commitEpoch(0, 1, 0, all(4))
	r.reconfigure(1, 2, 1, all(4))
	cfg2, _ := r.waitAcked(1, 2, 4)

	m := r.sleds[3]
	m.stop()
	gone := m.cfg.Agent.M2Dirs[1]
	if err := os.Rename(gone, gone+".away"); err != nil {
		t.Fatal(err)
	}
	m.cfg.Agent.CreateM2Dirs = false // the M.2 is absent, not to be made
	m.restart()
	st := r.status(3)
	if st.LatestConfiguration == nil || st.LatestConfiguration.Epoch != 2 || st.LatestCommittedEpoch != 1 {
		t.Fatalf("restarted member: %+v", st)
	}
	if st.Ledger[0].Path != m.cfg.Agent.M2Dirs[0] || !st.Ledger[0].Present || st.Ledger[1].Present {
		t.Fatalf("ledger devices: %+v", st.Ledger)
	}
	for _, i := range all(4) {
		r.commit(i, nil, cfg2)
	}
	r.assertCommitted(all(4), cfg2)

	if err := os.Rename(gone+".away", gone); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the returning M.2 to get the ledger", func() error {
		st := r.status(3)
		if !st.Ledger[1].Present || st.Ledger[1].Generation != st.LedgerGeneration {
			return errors.New("not yet")
		}
		return nil
	})
	res, err := ledger.New[json.RawMessage](bootstrap.LedgerFile).Read([]string{filepath.Join(gone, bootstrap.LedgerDir)})
	if err != nil || !res.Found || res.Generation != r.status(3).LedgerGeneration {
		t.Fatalf("ledger on the returned M.2: %+v %v", res, err)
	}
}

// A peer that stops reading fills the coordinator's write queue: the
// coordinator closes that connection, redials, and the epoch commits.
func TestFullWriteQueue(t *testing.T) {
	var fwd *forwarder
	var coord, member int
	r := newRack(t, 5, rackOpts{
		beforeRun: func(r *rack) {
			order := r.byAddr()
			coord, member = order[0], order[1]
			fwd = r.forward(coord, member)
		},
		tweak: func(i int, c *sled.Config) {
			// A small queue, quick re-sends, and a silence timeout long
			// enough that the queue, not the silence, ends the connection.
			c.Bootstrap.WriteQueue, c.Bootstrap.SendBuffer = 4, 8<<10
			c.Bootstrap.NodeRetryBase, c.Bootstrap.NodeRetryMax = 20*time.Millisecond, 40*time.Millisecond
			c.Bootstrap.TickInterval = 20 * time.Millisecond
			c.Bootstrap.SilenceTimeout = time.Minute
		},
	})
	r.waitConnected(all(5)...)
	r.commitEpoch(coord, 1, 0, all(5))
	fwd.pause()
	r.reconfigure(coord, 2, 1, all(5))
	waitFor(t, 30*time.Second, "the coordinator's write queue to the member to fill", func() error {
		if r.metric(coord, "rackplane_bootstrap_connections_closed_total", "reason", "write_queue_full") == 0 {
			return errors.New("no connection closed for a full queue")
		}
		return nil
	})
	fwd.resume()
	cfg2, _ := r.waitAcked(coord, 2, 5)
	for _, i := range all(5) {
		r.commit(i, nil, cfg2)
	}
	r.assertCommitted(all(5), cfg2)
	if connID(r.status(coord), r.sleds[member].id()) == 0 {
		t.Fatal("the coordinator did not reconnect to the member")
	}
}

// Nexus commits, through a member, a sled that runs only its bootstrap
// agent, reads its status the same way, and has it start its sled agent.
func TestProxiedCommitToBootstrapOnlySled(t *testing.T) {
	const spare = 3
	r := newRack(t, 4, rackOpts{bootstrapOnly: map[int]bool{spare: true}})
	if r.sleds[spare].s.Server() != nil {
		t.Fatal("a bootstrap-only sled started its sled agent")
	}
	r.waitConnected(all(4)...)
	r.commitEpoch(0, 1, 0, []int{0, 1, 2})
	// Epoch 2 adds the spare; its Prepare travels on the bootstrap network.
	r.reconfigure(1, 2, 1, all(4))
	cfg2, _ := r.waitAcked(1, 2, 4)
	for _, i := range []int{0, 1, 2} {
		r.commit(i, nil, cfg2)
	}
	via := 2
	r.commit(spare, &via, cfg2)

	dest := r.sleds[spare].id()
	st, err := r.api(via, nil).TQStatus(ctxT(t), &dest)
	if err != nil || st.Baseboard != dest || st.LatestCommittedEpoch != 2 {
		t.Fatalf("proxied status: %+v %v", st, err)
	}
	if r.metric(via, "rackplane_trust_quorum_proxied_requests_total", "op", "commit", "outcome", "ok") != 1 {
		t.Fatal("proxied commit not counted")
	}
	res, err := r.api(via, nil).TQStartSledAgent(ctxT(t), dest)
	if err != nil || !res.Started {
		t.Fatalf("start sled agent: %+v %v", res, err)
	}
	if r.sleds[spare].s.Server() == nil {
		t.Fatal("no sled agent after start-sled-agent")
	}
	// Now Nexus reaches it directly.
	waitFor(t, 10*time.Second, "the spare's sled API", func() error {
		_, err := r.api(spare, nil).TQStatus(ctxT(t), nil)
		return err
	})
	r.assertCommitted(all(4), cfg2)
	if res, err := r.api(via, nil).TQStartSledAgent(ctxT(t), dest); err != nil || res.Started {
		t.Fatalf("second start: %+v %v", res, err)
	}
}

// A proxied request fails the moment its bootstrap connection drops, not
// when its deadline passes.
func TestProxiedRequestFailsWhenItsConnectionDrops(t *testing.T) {
	var fwd *forwarder
	var via, dest int
	r := newRack(t, 3, rackOpts{beforeRun: func(r *rack) {
		order := r.byAddr()
		via, dest = order[0], order[1]
		fwd = r.forward(via, dest)
	}})
	r.waitConnected(all(3)...)
	fwd.pause()
	d := r.sleds[dest].id()
	errc := make(chan error, 1)
	go func() {
		_, err := r.api(via, nil).TQStatus(ctxT(t), &d)
		errc <- err
	}()
	waitFor(t, 10*time.Second, "the proxied request to be in flight", func() error {
		st, err := r.sleds[via].s.Agent().Status(ctxT(t))
		if err != nil {
			return err
		}
		if len(st.ProxiedInFlight) != 1 || st.ProxiedInFlight[0].Destination.Serial != d.Serial {
			return errors.New("not in flight")
		}
		return nil
	})
	start := time.Now()
	fwd.reset()
	err := <-errc
	if client.ErrorCode(err) != api.CodeProxyConnectionLost || client.StatusCode(err) != http.StatusServiceUnavailable {
		t.Fatalf("proxied status after the drop: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the request failed %s after its connection dropped", took)
	}
	if r.metric(via, "rackplane_trust_quorum_proxied_requests_total", "op", "status", "outcome", "connection_lost") != 1 {
		t.Fatal("not counted as connection_lost")
	}
	fwd.resume()
}

// A sled whose certificate comes from another CA never becomes a peer.
func TestPeerFromAnotherCARefused(t *testing.T) {
	r := newRack(t, 3, rackOpts{})
	r.waitConnected(all(3)...)
	other := newRack(t, 1, rackOpts{})
	stranger := other.sleds[0]
	// It knows the rack's addresses, and the rack knows its address.
	stranger.s.Agent().SetPeers(append(r.addrs(), stranger.s.BootstrapAddr()))
	for _, s := range r.sleds {
		s.s.Agent().SetPeers(append(r.addrs(), stranger.s.BootstrapAddr()))
	}
	waitFor(t, 10*time.Second, "handshakes to be refused", func() error {
		refused := 0.0
		for i := range r.sleds {
			refused += r.metric(i, "rackplane_bootstrap_handshake_failures_total")
		}
		if refused == 0 {
			return errors.New("no refusal yet")
		}
		return nil
	})
	// (The stranger's serial, SIM-0001, is also a member's, so count.)
	for i := range r.sleds {
		if n := len(r.status(i).ConnectedPeers); n != 2 {
			t.Fatalf("sled %d has %d peers, want 2", i, n)
		}
	}
	if st, _ := stranger.s.Agent().Status(ctxT(t)); len(st.ConnectedPeers) != 0 {
		t.Fatalf("the stranger connected to %+v", st.ConnectedPeers)
	}
}

// Identity is the certificate's: a sled configured with another baseboard
// than its certificate does not start, and a sled that holds a valid
// certificate cannot act as another member (its acks count as its own).
func TestPeerCannotActAsAnotherBaseboard(t *testing.T) {
	var fwd *forwarder
	var coord, member int
	r := newRack(t, 4, rackOpts{beforeRun: func(r *rack) {
		order := r.byAddr()
		coord, member = order[0], order[1]
		fwd = r.forward(coord, member)
	}})
	cfg := r.sleds[0].cfg
	cfg.Agent.Baseboard = api.Baseboard{Part: "rackplane-sim", Serial: "SIM-9999"}
	cfg.Agent.DataDir, cfg.Bootstrap.ListenAddr = t.TempDir(), "127.0.0.2:0"
	if _, err := sled.New(cfg, logger(t)); !errors.Is(err, sled.ErrBaseboardMismatch) {
		t.Fatalf("a sled claiming SIM-9999 with SIM-0001's certificate: %v", err)
	}

	r.waitConnected(all(4)...)
	r.commitEpoch(coord, 1, 0, all(4))
	fwd.pause()
	r.reconfigure(coord, 2, 1, all(4))
	r.waitAcked(coord, 2, 3)

	// An impostor with a valid certificate of its own sends the ack the
	// paused member owes.
	imp, err := r.ca.Issue(rackpki.Sled("rackplane-sim", "SIM-IMPOSTOR"), rackpki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := bootnet.Dial(ctxT(t), r.sleds[coord].s.BootstrapAddr(), bootnet.DialOptions{Bundle: imp})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(bootnet.ErrShutdown)
	frame, err := trustquorum.EncodeMsg(trustquorum.PeerMsg{RackID: trustquorum.RackID(rackID), Body: trustquorum.PrepareAckMsg{Epoch: 2}})
	if err != nil {
		t.Fatal(err)
	}
	acksBefore := r.metric(coord, "rackplane_trust_quorum_messages_total", "direction", "received", "kind", "prepare_ack")
	if err := conn.Send(bootnet.KindMsg, frame); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the impostor's ack to arrive", func() error {
		if r.metric(coord, "rackplane_trust_quorum_messages_total", "direction", "received", "kind", "prepare_ack") <= acksBefore {
			return errors.New("not yet")
		}
		return nil
	})
	cs, err := r.api(coord, nil).TQCoordinatorStatus(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range cs.Acked {
		if a == r.sleds[member].id() || a.Serial == "SIM-IMPOSTOR" {
			t.Fatalf("acked %v: the impostor's ack counted", cs.Acked)
		}
	}
	if len(cs.Acked) != 3 {
		t.Fatalf("acked %v", cs.Acked)
	}
	fwd.resume()
	fwd.reset()
	r.waitAcked(coord, 2, 4)
}

// The rack-setup service sets the rack up over the bootstrap network
// before anything else exists, and Nexus then sees epoch 1 committed on
// every sled; with --lrtq it sets up LRTQ instead.
func TestRackSetupViaRSSClient(t *testing.T) {
	for _, lrtq := range []bool{false, true} {
		name := "trust_quorum"
		if lrtq {
			name = "lrtq"
		}
		t.Run(name, func(t *testing.T) {
			r := newRack(t, 4, rackOpts{})
			b, err := r.ca.Issue(rackpki.RSS(), rackpki.IssueOptions{})
			if err != nil {
				t.Fatal(err)
			}
			c, err := rss.Dial(ctxT(t), r.addrs(), rss.Options{Bundle: b, PollInterval: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r.waitConnected(all(4)...)
			res, err := c.SetupRack(ctxT(t), rss.SetupOptions{RackID: trustquorum.RackID(rackID), Lrtq: lrtq})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Members) != 4 {
				t.Fatalf("members %v", res.Members)
			}
			for i := range r.sleds {
				st := r.status(i)
				if lrtq {
					waitFor(t, 10*time.Second, "LRTQ packages", func() error {
						if !r.status(i).HasLrtq {
							return errors.New("no LRTQ package")
						}
						return nil
					})
					continue
				}
				if st.LatestCommittedEpoch != 1 || st.RackID == nil || *st.RackID != rackID {
					t.Fatalf("sled %d after rack setup: %+v", i, st)
				}
			}
			if lrtq {
				return
			}
			// Rack setup is done: a second run changes nothing, and the
			// rack-setup service may not go further.
			if _, err := c.SetupRack(ctxT(t), rss.SetupOptions{RackID: trustquorum.RackID(rackID)}); err != nil {
				t.Fatalf("second setup: %v", err)
			}
			// Nexus takes it from there.
			r.commitEpoch(2, 2, 1, all(4))
		})
	}
}

// The trust-quorum routes refuse callers without a verified rack identity,
// and mutations from anyone but Nexus; nothing changes when they do.
func TestTrustQuorumRoutesNeedNexusOverMutualTLS(t *testing.T) {
	r := newRack(t, 4, rackOpts{})
	r.waitConnected(all(4)...)
	r.commitEpoch(0, 1, 0, []int{0, 1, 2})
	members := r.ids(0, 1, 2)
	reconf := api.TQReconfigureRequest{RackID: rackID, Epoch: 2, LastCommittedEpoch: 1, Members: members, Threshold: 2}

	// There is no plain-HTTP way in: the listener speaks only TLS.
	plainURL := strings.Replace(r.sleds[3].s.Server().URL(), "https://", "http://", 1)
	if resp, err := http.Get(plainURL + "/trust-quorum/status"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP to the sled API: %d", resp.StatusCode)
		}
	}

	forbidden := func(err error, what string) {
		t.Helper()
		if client.ErrorCode(err) != api.CodeForbiddenIdentity || client.StatusCode(err) != http.StatusForbidden {
			t.Fatalf("%s: %v, want 403 %s", what, err, api.CodeForbiddenIdentity)
		}
	}
	rssB, err := r.ca.Issue(rackpki.RSS(), rackpki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string]*rackpki.Bundle{"a sled": r.sleds[1].bundle, "the rack-setup service": rssB} {
		c := r.api(0, httpClient(b))
		_, err := c.TQCommit(ctxT(t), api.TQCommitRequest{RackID: rackID, Epoch: 1})
		forbidden(err, name+" commits")
		_, err = c.TQReconfigure(ctxT(t), reconf)
		forbidden(err, name+" reconfigures")
		d := r.sleds[2].id()
		_, err = c.TQCommit(ctxT(t), api.TQCommitRequest{Destination: &d, RackID: rackID, Epoch: 1})
		forbidden(err, name+" proxies a commit")
		_, err = c.TQStartSledAgent(ctxT(t), d)
		forbidden(err, name+" starts a sled agent")
		_, err = c.TQLoadRackSecret(ctxT(t))
		forbidden(err, name+" has the rack secret loaded")
		// Reads are for any rack identity.
		if st, err := c.TQStatus(ctxT(t), nil); err != nil || st.LatestCommittedEpoch != 1 {
			t.Fatalf("%s reads status: %+v %v", name, st, err)
		}
		if st, err := c.TQStatus(ctxT(t), &d); err != nil || st.Baseboard != d {
			t.Fatalf("%s reads a proxied status: %+v %v", name, st, err)
		}
	}

	// No certificate, or one of another CA, does not get past the
	// handshake.
	otherCA, err := rackpki.NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreignNexus, err := otherCA.Issue(rackpki.Nexus("test-nexus"), rackpki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	noCert := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // the test checks the server refuses us
	}}}
	for name, hc := range map[string]*http.Client{"no certificate": noCert, "another CA's Nexus": httpClient(foreignNexus)} {
		if _, err := r.api(0, hc).TQReconfigure(ctxT(t), reconf); err == nil || client.StatusCode(err) != 0 {
			t.Fatalf("%s: got an HTTP answer: %v", name, err)
		}
	}

	// Nothing changed anywhere.
	for _, i := range []int{0, 1, 2} {
		st := r.status(i)
		if !slices.Equal(st.CommittedEpochs, []uint64{1}) || st.Coordination.State != "not_coordinating" {
			t.Fatalf("sled %d changed: %+v", i, st)
		}
	}
	if st, err := r.sleds[3].s.Agent().Status(ctxT(t)); err != nil || st.LatestConfig != nil {
		t.Fatalf("the sled outside the epoch changed: %+v %v", st, err)
	}
}

package bootstrap_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/sledagent/bootstrap/bootnet"
	"github.com/rackplane/rackplane/sledagent/bootstrap/rss"
	"github.com/rackplane/rackplane/sledagent/ledger"
	"github.com/rackplane/rackplane/trustquorum"
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// Three sleds commit two epochs through the agent API, each one's state
// lands in the ledger on both M.2s, and a restarted sled comes back with
// it.
func TestCommitPersistsOnEveryM2AndSurvivesRestart(t *testing.T) {
	r := newRack(t, 3, nil)
	r.waitConnected()
	r.commitEpoch(r.sleds[0], 1, 0, r.sleds)
	r.commitEpoch(r.sleds[1], 2, 1, r.sleds)
	for _, s := range r.sleds {
		st, err := s.agent.Status(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if st.LatestCommittedEpoch != 2 || len(st.CommittedEpochs) != 2 || st.LatestConfig.Epoch != 2 {
			t.Fatalf("%s: %+v", s.id(), st)
		}
		for _, d := range st.Ledger.Devices {
			if !d.Present || d.Generation != st.Ledger.Generation || d.Error != "" {
				t.Fatalf("%s ledger: %+v", s.id(), st.Ledger)
			}
		}
		// The ledger on disk decodes to the committed state.
		for _, m := range s.m2s {
			res, err := ledger.New[struct {
				State json.RawMessage `json:"state"`
			}](bootstrap.LedgerFile).Read([]string{filepath.Join(m, bootstrap.LedgerDir)})
			if err != nil || !res.Found {
				t.Fatalf("ledger on %s: %v", m, err)
			}
			ps, err := trustquorum.DecodeState(res.Value.State)
			if err != nil || ps.LatestCommittedEpoch() != 2 {
				t.Fatalf("ledger on %s: epoch %d %v", m, ps.LatestCommittedEpoch(), err)
			}
		}
	}
	// Each sled received a Prepare for each epoch it did not coordinate
	// (maybe more: a Prepare not acked in time is sent again).
	for i, want := range []float64{1, 1, 2} {
		if got := r.sleds[i].counter("rackplane_trust_quorum_messages_total", "direction", "received", "kind", "prepare"); got < want {
			t.Fatalf("%s received %v prepares, want at least %v", r.sleds[i].id(), got, want)
		}
	}
	r.sleds[2].restart()
	st, err := r.sleds[2].agent.Status(ctxT(t))
	if err != nil || st.LatestCommittedEpoch != 2 {
		t.Fatalf("after restart: %+v %v", st, err)
	}
	// And it takes part in the next epoch.
	r.waitConnected()
	r.commitEpoch(r.sleds[2], 3, 2, r.sleds)
}

// A persist that no M.2 takes stops the node: nothing it decided in that
// step leaves the sled, it acknowledges nothing afterwards, status and
// metrics say so, and it comes back from its ledger once an M.2 that
// takes it arrives.
func TestPersistFailureStopsTheNode(t *testing.T) {
	r := newRack(t, 3, nil)
	r.waitConnected()
	r.commitEpoch(r.sleds[0], 1, 0, r.sleds)
	a := r.sleds[0]

	// Both ledger directories of a become unwritable (a file where the
	// directory was); the watcher has not noticed anything.
	saved := t.TempDir()
	for i, m := range a.m2s {
		if err := os.Rename(filepath.Join(m, bootstrap.LedgerDir), filepath.Join(saved, string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(m, bootstrap.LedgerDir), []byte("not a directory"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	prepares := func(s *sled) float64 {
		return s.counter("rackplane_trust_quorum_messages_total", "direction", "received", "kind", "prepare")
	}
	before := []float64{prepares(r.sleds[1]), prepares(r.sleds[2])}

	// Epoch 2's coordinator first collects shares (nothing to persist),
	// then makes and persists its configuration: that persist fails.
	if _, err := a.agent.Reconfigure(ctxT(t), trustquorum.ReconfigureMsg{RackID: testRack, Epoch: 2, LastCommittedEpoch: 1,
		Members: r.ids(), Threshold: 2}); err != nil {
		t.Fatalf("reconfigure: %v", err)
	}
	var st bootstrap.Status
	waitFor(t, 10*time.Second, "the node to stop", func() error {
		var err error
		st, err = a.agent.Status(ctxT(t))
		if err != nil {
			return err
		}
		if !st.Stopped {
			return errors.New("not stopped")
		}
		return nil
	})
	if st.PersistFailures != 1 || st.LastPersistErr == "" || st.LatestConfig.Epoch != 1 || st.LatestCommittedEpoch != 1 {
		t.Fatalf("stopped status: %+v", st)
	}
	if a.counter("rackplane_trust_quorum_persist_failures_total") != 1 || a.counter("rackplane_trust_quorum_node_stopped") != 1 {
		t.Fatal("metrics do not show the failure")
	}
	if _, err := a.agent.Commit(ctxT(t), testRack, 1); !errors.Is(err, bootstrap.ErrStopped) {
		t.Fatalf("commit on a stopped node: %v", err)
	}
	if _, err := a.agent.CoordinatorStatus(ctxT(t)); !errors.Is(err, bootstrap.ErrStopped) {
		t.Fatalf("coordinator status on a stopped node: %v", err)
	}
	// No Prepare of epoch 2 reached anyone.
	time.Sleep(300 * time.Millisecond)
	for i, s := range r.sleds[1:] {
		if got := prepares(s); got != before[i] {
			t.Fatalf("%s received %v prepares, had %v", s.id(), got, before[i])
		}
		st, _ := s.agent.Status(ctxT(t))
		if st.LatestConfig.Epoch != 1 {
			t.Fatalf("%s holds epoch %d", s.id(), st.LatestConfig.Epoch)
		}
	}

	// The M.2s leave and come back, holding the old ledgers.
	for _, m := range a.m2s {
		if err := os.RemoveAll(m); err != nil {
			t.Fatal(err)
		}
	}
	a.w.Poll()
	for i, m := range a.m2s {
		if err := os.Mkdir(m, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(saved, string(rune('a'+i))), filepath.Join(m, bootstrap.LedgerDir)); err != nil {
			t.Fatal(err)
		}
	}
	a.w.Poll()
	waitFor(t, 10*time.Second, "the node to restart", func() error {
		st, err := a.agent.Status(ctxT(t))
		if err != nil {
			return err
		}
		if st.Stopped || st.LatestCommittedEpoch != 1 {
			return errors.New("still stopped")
		}
		return nil
	})
	if a.counter("rackplane_trust_quorum_node_stopped") != 0 {
		t.Fatal("stopped gauge still set")
	}
	r.commitEpoch(a, 2, 1, r.sleds)
}

// A sled with no M.2 present cannot know its state: the node waits,
// stopped, until one arrives.
func TestNoM2AtStartWaitsForOne(t *testing.T) {
	r := newRack(t, 3, nil)
	s := r.sleds[0]
	s.stop()
	for _, m := range s.m2s {
		if err := os.Rename(m, m+".away"); err != nil {
			t.Fatal(err)
		}
	}
	s.restart()
	st, err := s.agent.Status(ctxT(t))
	if err != nil || !st.Stopped || st.StoppedReason != bootstrap.ErrNoM2.Error() {
		t.Fatalf("status without M.2: %+v %v", st, err)
	}
	if _, err := s.agent.Reconfigure(ctxT(t), trustquorum.ReconfigureMsg{RackID: testRack, Epoch: 1, Members: r.ids(), Threshold: 2}); !errors.Is(err, bootstrap.ErrStopped) {
		t.Fatalf("reconfigure without M.2: %v", err)
	}
	if err := os.Rename(s.m2s[1]+".away", s.m2s[1]); err != nil {
		t.Fatal(err)
	}
	s.w.Poll()
	waitFor(t, 5*time.Second, "the node to start", func() error {
		st, err := s.agent.Status(ctxT(t))
		if err != nil {
			return err
		}
		if st.Stopped {
			return errors.New(st.StoppedReason)
		}
		return nil
	})
	r.waitConnected()
	r.commitEpoch(s, 1, 0, r.sleds)
}

// An alarm is persisted with the peer whose message raised it, and is
// still reported after a restart.
func TestAlarmsArePersistedWithTheirPeer(t *testing.T) {
	r := newRack(t, 3, nil)
	r.waitConnected()
	cfg := r.commitEpoch(r.sleds[0], 1, 0, r.sleds)
	target := r.sleds[1]

	// A rogue sled (a certificate from the rack CA) prepares a different
	// epoch 1 at the target, with itself as coordinator.
	rogueID := rackpki.Sled("test", "ROGUE")
	rogue, err := r.ca.Issue(rogueID, rackpki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	members := []trustquorum.BaseboardID{r.sleds[0].id(), target.id(), {Part: "test", Serial: "ROGUE"}}
	forged, share := forgeConfig(t, cfg.RackID, 1, members, members[2], target.id())
	conn, err := bootnet.Dial(ctxT(t), target.addr, bootnet.DialOptions{Bundle: rogue})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(bootnet.ErrShutdown)
	frame, err := trustquorum.EncodeMsg(trustquorum.PeerMsg{RackID: cfg.RackID, Body: trustquorum.PrepareMsg{Config: forged, Share: share}})
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Send(bootnet.KindMsg, frame); err != nil {
		t.Fatal(err)
	}
	check := func() error {
		st, err := target.agent.Status(ctxT(t))
		if err != nil {
			return err
		}
		for _, a := range st.Alarms {
			if a.Kind == trustquorum.AlarmMismatchedConfigurations && a.Peer == members[2] && a.Epoch == 1 {
				if st.LatestConfig.Equal(cfg) {
					return nil
				}
				return errors.New("the forged configuration replaced the held one")
			}
		}
		return errors.New("no alarm naming the rogue sled")
	}
	waitFor(t, 5*time.Second, "the alarm", check)
	if target.counter("rackplane_trust_quorum_alarms_total", "kind", string(trustquorum.AlarmMismatchedConfigurations)) != 1 {
		t.Fatal("alarm not counted")
	}
	target.restart()
	if err := check(); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}

// forgeConfig makes a well-formed configuration with fresh shares, and
// returns the share of who.
func forgeConfig(t *testing.T, rack trustquorum.RackID, epoch trustquorum.Epoch, members []trustquorum.BaseboardID,
	coord, who trustquorum.BaseboardID) (*trustquorum.Configuration, tqcrypto.Share) {
	t.Helper()
	secret, err := tqcrypto.NewSecret(randReader{})
	if err != nil {
		t.Fatal(err)
	}
	sorted := append([]trustquorum.BaseboardID(nil), members...)
	sortIDs(sorted)
	shares, err := tqcrypto.Split(secret, len(sorted), 2)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &trustquorum.Configuration{RackID: rack, Epoch: epoch, Coordinator: coord, Threshold: 2}
	var mine tqcrypto.Share
	for i, id := range sorted {
		cfg.Members = append(cfg.Members, trustquorum.Member{ID: id, ShareDigest: shares[i].Digest(), X: shares[i].X()})
		if id == who {
			mine = shares[i]
		}
	}
	return cfg, mine
}

// The rack-setup identity may only set the rack up, and a sled may not
// ask what only the rack-setup service may.
func TestRackSetupPermissions(t *testing.T) {
	r := newRack(t, 3, nil)
	r.waitConnected()
	rssBundle, err := r.ca.Issue(rackpki.RSS(), rackpki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := rss.Dial(ctxT(t), r.addrs, rss.Options{Bundle: rssBundle})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.Sleds()) != 3 {
		t.Fatalf("sleds %v", c.Sleds())
	}
	res, err := c.SetupRack(ctxT(t), rss.SetupOptions{RackID: testRack})
	if err != nil {
		t.Fatal(err)
	}
	if res.Config == nil || res.Config.Epoch != 1 || len(res.Config.Members) != 3 {
		t.Fatalf("setup: %+v", res)
	}
	for _, s := range r.sleds {
		st, err := c.Status(ctxT(t), s.id())
		if err != nil || st.LatestCommittedEpoch != 1 {
			t.Fatalf("%s after setup: %+v %v", s.id(), st, err)
		}
	}

	refused := func(err error, what string) {
		t.Helper()
		var re *bootnet.RemoteError
		if !errors.As(err, &re) || re.Code != "forbidden" {
			t.Fatalf("%s: %v, want forbidden", what, err)
		}
	}
	target := r.sleds[1]
	raw, err := bootnet.Dial(ctxT(t), target.addr, bootnet.DialOptions{Bundle: rssBundle})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close(bootnet.ErrShutdown)
	refused(raw.Call(ctxT(t), bootstrap.OpPrepareAndCommit, bootstrap.PrepareAndCommitRequest{Config: res.Config}, nil),
		"prepare-and-commit from the rack-setup service")
	refused(raw.Call(ctxT(t), bootstrap.OpCommit, bootstrap.CommitRequest{RackID: testRack, Epoch: 2}, nil),
		"commit of epoch 2 from the rack-setup service")
	refused(raw.Call(ctxT(t), "reconfigure", struct{}{}, nil), "reconfigure from the rack-setup service")

	// A sled may not initialise another.
	sledConn, err := bootnet.Dial(ctxT(t), target.addr, bootnet.DialOptions{Bundle: r.sleds[2].bundle})
	if err != nil {
		t.Fatal(err)
	}
	defer sledConn.Close(bootnet.ErrShutdown)
	refused(sledConn.Call(ctxT(t), bootstrap.OpInitialize, bootstrap.InitializeRequest{RackID: testRack, Members: r.ids()}, nil),
		"initialize from a sled")
	// And a trust-quorum message from the rack-setup service closes its
	// connection.
	frame, _ := trustquorum.EncodeMsg(trustquorum.PeerMsg{RackID: testRack, Body: trustquorum.GetShareMsg{Epoch: 1}})
	if err := raw.Send(bootnet.KindMsg, frame); err != nil {
		t.Fatal(err)
	}
	select {
	case <-raw.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the rack-setup service's peer message did not close its connection")
	}
	st, _ := target.agent.Status(ctxT(t))
	if st.LatestCommittedEpoch != 1 || len(st.CommittedEpochs) != 1 {
		t.Fatalf("refusals changed the state: %+v", st)
	}
}

package bootstrap_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/sledagent/m2"
	"github.com/rackplane/rackplane/trustquorum"
)

var testRack = trustquorum.RackID{0x52, 0x41, 0x43, 0x4b}

// rack is a set of real bootstrap agents on loopback with real TLS, each
// with two temp-dir M.2s. The watchers are polled by the tests, so M.2
// arrivals and departures happen exactly when a test says.
type rack struct {
	t     *testing.T
	ca    *rackpki.CA
	sleds []*sled
	addrs []string
	tweak func(*bootstrap.Config)
}

type sled struct {
	r      *rack
	bundle *rackpki.Bundle
	m2s    []string
	addr   string
	agent  *bootstrap.Agent
	w      *m2.Watcher
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func newRack(t *testing.T, n int, tweak func(*bootstrap.Config)) *rack {
	t.Helper()
	ca, err := rackpki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r := &rack{t: t, ca: ca, tweak: tweak}
	for i := range n {
		b, err := ca.Issue(rackpki.Sled("test", fmt.Sprintf("S%02d", i)), rackpki.IssueOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		s := &sled{r: r, bundle: b, m2s: []string{filepath.Join(dir, "m2-a"), filepath.Join(dir, "m2-b")}, addr: "127.0.0.1:0"}
		for _, d := range s.m2s {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.open(); err != nil {
			t.Fatal(err)
		}
		s.addr = s.agent.Addr()
		r.sleds = append(r.sleds, s)
		r.addrs = append(r.addrs, s.addr)
	}
	for _, s := range r.sleds {
		s.agent.SetPeers(r.addrs)
		s.run()
	}
	return r
}

func (s *sled) open() error {
	s.reg = prometheus.NewRegistry()
	var err error
	s.w, err = m2.NewWatcher(s.m2s, zerolog.Nop(), m2.Options{Registerer: s.reg, Marker: bootstrap.LedgerDir})
	if err != nil {
		return err
	}
	s.w.Poll()
	cfg := bootstrap.Config{
		Bundle: s.bundle, ListenAddr: s.addr, Peers: s.r.addrs, M2: s.w, Registerer: s.reg,
		Jitter: rand.New(rand.NewPCG(uint64(len(s.r.sleds)), 7)), BackoffMin: 20 * time.Millisecond,
		NodeRetryBase: 200 * time.Millisecond, TickInterval: 100 * time.Millisecond,
		Log: zerolog.New(zerolog.NewTestWriter(s.r.t)).Level(zerolog.WarnLevel),
	}
	if s.r.tweak != nil {
		s.r.tweak(&cfg)
	}
	s.agent, err = bootstrap.New(cfg)
	return err
}

func (s *sled) run() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan error, 1)
	go func() { s.done <- s.agent.Run(ctx) }()
	s.r.t.Cleanup(s.stop)
}

func (s *sled) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	if err := <-s.done; err != nil {
		s.r.t.Errorf("agent %s: %v", s.agent.ID(), err)
	}
	s.cancel = nil
}

// restart stops the agent and starts a new one on the same M.2s and
// address, as a sled process restart does.
func (s *sled) restart() {
	s.r.t.Helper()
	s.stop()
	if err := s.open(); err != nil {
		s.r.t.Fatalf("restart %s: %v", s.bundle.Identity, err)
	}
	s.run()
}

func (s *sled) id() trustquorum.BaseboardID { return s.agent.ID() }

func (r *rack) ids() []trustquorum.BaseboardID {
	var out []trustquorum.BaseboardID
	for _, s := range r.sleds {
		out = append(out, s.id())
	}
	return out
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitConnected waits until every sled sees every other.
func (r *rack) waitConnected() {
	r.t.Helper()
	waitFor(r.t, 10*time.Second, "every sled connected to every other", func() error {
		for _, s := range r.sleds {
			st, err := s.agent.Status(ctxT(r.t))
			if err != nil {
				return err
			}
			if len(st.ConnectedPeers) != len(r.sleds)-1 {
				return fmt.Errorf("%s sees %d peers", s.id(), len(st.ConnectedPeers))
			}
		}
		return nil
	})
}

// commitEpoch plays Nexus: coordinate epoch on coord over members, wait
// until all prepared, commit everywhere.
func (r *rack) commitEpoch(coord *sled, epoch, last trustquorum.Epoch, members []*sled) *trustquorum.Configuration {
	r.t.Helper()
	var ids []trustquorum.BaseboardID
	for _, m := range members {
		ids = append(ids, m.id())
	}
	msg := trustquorum.ReconfigureMsg{RackID: testRack, Epoch: epoch, LastCommittedEpoch: last, Members: ids,
		Threshold: trustquorum.LrtqThreshold(len(ids))}
	if _, err := coord.agent.Reconfigure(ctxT(r.t), msg); err != nil {
		r.t.Fatalf("reconfigure epoch %d on %s: %v", epoch, coord.id(), err)
	}
	cfg := r.waitAcked(coord, epoch, len(ids))
	for _, m := range members {
		waitFor(r.t, 10*time.Second, "commit on "+m.id().String(), func() error {
			cs, err := m.agent.Commit(ctxT(r.t), testRack, epoch)
			if err != nil {
				return err
			}
			if cs != trustquorum.CommitCommitted {
				return errors.New(cs.String())
			}
			return nil
		})
	}
	return cfg
}

func (r *rack) waitAcked(coord *sled, epoch trustquorum.Epoch, n int) *trustquorum.Configuration {
	r.t.Helper()
	var cfg *trustquorum.Configuration
	waitFor(r.t, 10*time.Second, fmt.Sprintf("%d acks of epoch %d", n, epoch), func() error {
		cs, err := coord.agent.CoordinatorStatus(ctxT(r.t))
		if err != nil {
			return err
		}
		if cs.State != trustquorum.Preparing || cs.Epoch != epoch || len(cs.Acked) < n {
			return fmt.Errorf("%s epoch %d, %d acked", cs.State, cs.Epoch, len(cs.Acked))
		}
		cfg = cs.Config
		return nil
	})
	return cfg
}

// counter reads a counter or gauge from a sled's registry; labels are
// name=value pairs.
func (s *sled) counter(name string, labels ...string) float64 {
	mfs, err := s.reg.Gather()
	if err != nil {
		s.r.t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matches(m, labels) {
				total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return total
}

func matches(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		ok := false
		for _, l := range m.GetLabel() {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

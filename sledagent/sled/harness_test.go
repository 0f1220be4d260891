package sled_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/sledagent/sled"
)

var rackID = uuid.MustParse("5ac0c0de-0000-4000-8000-000000000001")

// rack is a set of real sled processes in the test: bootstrap agents on
// 127.0.0.2 with TLS from a test CA, sled agents whose API serves mutual
// TLS, temp-dir M.2s. The test plays Nexus over the sled API with a Nexus
// certificate.
type rack struct {
	t     testing.TB
	ca    *rackpki.CA
	nexus *http.Client
	sleds []*tsled
}

type tsled struct {
	r      *rack
	i      int
	bundle *rackpki.Bundle
	cfg    sled.Config
	s      *sled.Sled
	peers  []string // this sled's peer list (forwarders may stand in)
	cancel context.CancelFunc
	done   chan error
}

type rackOpts struct {
	// bootstrapOnly sleds start without their sled agent.
	bootstrapOnly map[int]bool
	// tweak adjusts each sled's configuration.
	tweak func(i int, c *sled.Config)
	// beforeRun runs once every sled is made (addresses known) and
	// before any runs: forwarders are set up here.
	beforeRun func(r *rack)
	// m2Base, when set, holds the sleds' M.2 directories (the benchmark
	// can put them on tmpfs to take the disk out of the figures).
	m2Base string
}

func logger(t testing.TB) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(os.Getenv("RACKPLANE_TEST_LOG"))
	if err != nil || os.Getenv("RACKPLANE_TEST_LOG") == "" {
		// The sleds have no Nexus to register with; its warnings are noise.
		lvl = zerolog.ErrorLevel
	}
	return zerolog.New(zerolog.NewTestWriter(t)).Level(lvl).With().Timestamp().Logger()
}

func newRack(t testing.TB, n int, o rackOpts) *rack {
	t.Helper()
	ca, err := rackpki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nb, err := ca.Issue(rackpki.Nexus("test-nexus"), rackpki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := &rack{t: t, ca: ca, nexus: httpClient(nb)}
	// Nexus is not part of these tests: registration meets a listener
	// that refuses it (an address merely unused could be reused by a
	// sled's listener meanwhile).
	refuser := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no Nexus in this test", http.StatusServiceUnavailable)
	}))
	t.Cleanup(refuser.Close)
	for i := range n {
		b, err := ca.Issue(rackpki.Sled("rackplane-sim", fmt.Sprintf("SIM-%04d", i+1)), rackpki.IssueOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		m2Dir := dir
		if o.m2Base != "" {
			d, err := os.MkdirTemp(o.m2Base, "rackplane-m2-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(d) })
			m2Dir = d
		}
		cfg := sled.Config{
			Agent: sledagent.Config{
				DataDir: dir, ListenAddr: "127.0.0.1:0", RepoDepotAddr: "127.0.0.1:0", NexusURL: refuser.URL,
				M2Dirs: []string{filepath.Join(m2Dir, "m2-a"), filepath.Join(m2Dir, "m2-b")}, CreateM2Dirs: true,
				M2PollInterval: 100 * time.Millisecond, ScrubInterval: -1, ShutdownGrace: 2 * time.Second,
			},
			Identity: b,
			Bootstrap: bootstrap.Config{
				ListenAddr: "127.0.0.2:0", Jitter: rand.New(rand.NewPCG(uint64(i), 1)),
				BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second,
			},
			BootstrapOnly: o.bootstrapOnly[i],
		}
		if o.tweak != nil {
			o.tweak(i, &cfg)
		}
		ts := &tsled{r: r, i: i, bundle: b, cfg: cfg}
		ts.open()
		// Restarts listen where the first run did, so peers find them.
		ts.cfg.Bootstrap.ListenAddr = ts.s.BootstrapAddr()
		r.sleds = append(r.sleds, ts)
	}
	for _, s := range r.sleds {
		s.peers = r.addrs()
	}
	if o.beforeRun != nil {
		o.beforeRun(r)
	}
	for _, s := range r.sleds {
		s.s.Agent().SetPeers(s.peers)
		s.run()
	}
	return r
}

func (s *tsled) open() {
	s.r.t.Helper()
	var err error
	s.s, err = sled.New(s.cfg, logger(s.r.t).With().Str("sled", s.bundle.Identity.Serial).Logger())
	if err != nil {
		s.r.t.Fatalf("sled %d: %v", s.i, err)
	}
}

func (s *tsled) run() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan error, 1)
	go func() { s.done <- s.s.Run(ctx) }()
	s.r.t.Cleanup(s.stop)
}

func (s *tsled) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	if err := <-s.done; err != nil {
		s.r.t.Errorf("sled %d: %v", s.i, err)
	}
	s.cancel = nil
}

// restart stops the sled process and starts a new one on the same data
// dir, M.2 dirs and bootstrap address.
func (s *tsled) restart() {
	s.r.t.Helper()
	s.stop()
	s.open()
	s.s.Agent().SetPeers(s.peers)
	s.run()
}

func (r *rack) addrs() []string {
	var out []string
	for _, s := range r.sleds {
		out = append(out, s.s.BootstrapAddr())
	}
	return out
}

func (s *tsled) id() api.Baseboard { return s.s.Baseboard() }

// byAddr lists sled indexes from the highest bootstrap address down: a
// sled dials every sled after it in this order.
func (r *rack) byAddr() []int {
	idx := make([]int, len(r.sleds))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		return -compareAddr(r.sleds[a].s.BootstrapAddr(), r.sleds[b].s.BootstrapAddr())
	})
	return idx
}

func compareAddr(a, b string) int {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	if ha != hb {
		return compareStrings(ha, hb)
	}
	var x, y int
	fmt.Sscan(pa, &x)
	fmt.Sscan(pb, &y)
	return x - y
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func httpClient(b *rackpki.Bundle) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: b.ClientTLS(rackpki.OnlyKinds(rackpki.KindSled), nil),
	}}
}

// api is a client of sled i's API as Nexus (hc nil) or as hc.
func (r *rack) api(i int, hc *http.Client) client.SledAgent {
	r.t.Helper()
	if hc == nil {
		hc = r.nexus
	}
	srv := r.sleds[i].s.Server()
	if srv == nil {
		r.t.Fatalf("sled %d has no sled agent", i)
	}
	c, err := client.NewSledAgent(srv.URL(), hc)
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
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
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *rack) ids(idx ...int) []api.Baseboard {
	var out []api.Baseboard
	for _, i := range idx {
		out = append(out, r.sleds[i].id())
	}
	return out
}

func all(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func (r *rack) waitConnected(idx ...int) {
	r.t.Helper()
	waitFor(r.t, 15*time.Second, "sleds connected to each other", func() error {
		for _, i := range idx {
			st, err := r.sleds[i].s.Agent().Status(ctxT(r.t))
			if err != nil {
				return err
			}
			have := 0
			for _, p := range st.ConnectedPeers {
				for _, j := range idx {
					if j != i && r.sleds[j].id().Serial == p.ID.Serial {
						have++
					}
				}
			}
			if have != len(idx)-1 {
				return fmt.Errorf("sled %d sees %d of %d", i, have, len(idx)-1)
			}
		}
		return nil
	})
}

// reconfigure plays Nexus starting an epoch at coordinator coord.
func (r *rack) reconfigure(coord int, epoch, last uint64, members []int) {
	r.t.Helper()
	ids := r.ids(members...)
	_, err := r.api(coord, nil).TQReconfigure(ctxT(r.t), api.TQReconfigureRequest{RackID: rackID, Epoch: epoch,
		LastCommittedEpoch: last, Members: ids, Threshold: uint8(len(ids)/2 + 1)})
	if err != nil {
		r.t.Fatalf("reconfigure epoch %d at sled %d: %v", epoch, coord, err)
	}
}

// waitAcked polls coordinator-status until at least n members acked epoch
// and returns the configuration and the acks.
func (r *rack) waitAcked(coord int, epoch uint64, n int) (*api.TQConfiguration, []api.Baseboard) {
	r.t.Helper()
	var cs api.TQCoordinatorStatus
	waitFor(r.t, 20*time.Second, fmt.Sprintf("%d acks of epoch %d", n, epoch), func() error {
		var err error
		cs, err = r.api(coord, nil).TQCoordinatorStatus(ctxT(r.t))
		if err != nil {
			return err
		}
		if cs.State != "preparing" || cs.Epoch != epoch || len(cs.Acked) < n {
			return fmt.Errorf("%s epoch %d, %d acked", cs.State, cs.Epoch, len(cs.Acked))
		}
		return nil
	})
	return cs.Configuration, cs.Acked
}

// commit plays Nexus committing cfg at member i (through proxy when set):
// Commit, escalating to PrepareAndCommit on not_prepared, until committed.
func (r *rack) commit(i int, proxy *int, cfg *api.TQConfiguration) {
	r.t.Helper()
	via := i
	var dest *api.Baseboard
	if proxy != nil {
		via = *proxy
		d := r.sleds[i].id()
		dest = &d
	}
	c := r.api(via, nil)
	waitFor(r.t, 20*time.Second, fmt.Sprintf("commit of epoch %d at sled %d", cfg.Epoch, i), func() error {
		res, err := c.TQCommit(ctxT(r.t), api.TQCommitRequest{Destination: dest, RackID: rackID, Epoch: cfg.Epoch})
		if client.ErrorCode(err) == api.CodeNotPrepared {
			res, err = c.TQPrepareAndCommit(ctxT(r.t), api.TQPrepareAndCommitRequest{Destination: dest, Configuration: cfg})
		}
		if err != nil {
			return err
		}
		if res.Status != "committed" {
			return errors.New(res.Status)
		}
		return nil
	})
}

// commitEpoch is a whole reconfiguration as Nexus drives it.
func (r *rack) commitEpoch(coord int, epoch, last uint64, members []int) *api.TQConfiguration {
	r.t.Helper()
	r.reconfigure(coord, epoch, last, members)
	cfg, _ := r.waitAcked(coord, epoch, len(members))
	for _, m := range members {
		r.commit(m, nil, cfg)
	}
	return cfg
}

func (r *rack) status(i int) api.TQStatus {
	r.t.Helper()
	st, err := r.api(i, nil).TQStatus(ctxT(r.t), nil)
	if err != nil {
		r.t.Fatalf("status of sled %d: %v", i, err)
	}
	return st
}

// metric sums a counter or gauge of sled i; labels are name, value pairs.
func (r *rack) metric(i int, name string, labels ...string) float64 {
	return gather(r.t, r.sleds[i].s.Registry(), name, labels...)
}

func gather(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelsMatch(m, labels) {
				total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return total
}

func labelsMatch(m *dto.Metric, labels []string) bool {
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

// forwarder is a TCP relay standing in for the wire between two sleds, on
// 127.0.0.1 (below every sled's 127.0.0.2 address, so the sled whose peer
// list names it dials it). A test can pause it (bytes stop moving, and
// with its small receive buffer the sender's socket fills up) and reset
// it (every relayed connection is cut, as by a network fault).
type forwarder struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu     sync.Mutex
	cond   *sync.Cond
	paused bool
	pairs  []net.Conn
	closed bool
}

func newForwarder(t testing.TB, target string) *forwarder {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{t: t, ln: ln, target: target}
	f.cond = sync.NewCond(&f.mu)
	go f.serve()
	t.Cleanup(f.close)
	return f
}

func (f *forwarder) addr() string { return f.ln.Addr().String() }

func (f *forwarder) serve() {
	for {
		in, err := f.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", f.target)
		if err != nil {
			in.Close()
			continue
		}
		f.mu.Lock()
		f.pairs = append(f.pairs, in, out)
		f.mu.Unlock()
		go f.pump(in, out)
		go f.pump(out, in)
	}
}

func (f *forwarder) waitOpen() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.paused && !f.closed {
		f.cond.Wait()
	}
	return !f.closed
}

func (f *forwarder) pump(src, dst net.Conn) {
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, 4096)
	for f.waitOpen() {
		n, err := src.Read(buf)
		if n > 0 {
			if !f.waitOpen() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *forwarder) pause() {
	f.mu.Lock()
	f.paused = true
	f.mu.Unlock()
}

func (f *forwarder) resume() {
	f.mu.Lock()
	f.paused = false
	f.cond.Broadcast()
	f.mu.Unlock()
}

// reset cuts every relayed connection; new ones are relayed again.
func (f *forwarder) reset() {
	f.mu.Lock()
	pairs := f.pairs
	f.pairs = nil
	f.mu.Unlock()
	for _, c := range pairs {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // a reset, not a polite close
		}
		c.Close()
	}
}

func (f *forwarder) close() {
	f.mu.Lock()
	f.closed = true
	f.cond.Broadcast()
	f.mu.Unlock()
	f.ln.Close()
	f.reset()
}

// forward makes sled from reach sled to through a forwarder. from must
// have the higher bootstrap address (it is the one that dials).
func (r *rack) forward(from, to int) *forwarder {
	r.t.Helper()
	if compareAddr(r.sleds[from].s.BootstrapAddr(), r.sleds[to].s.BootstrapAddr()) <= 0 {
		r.t.Fatalf("sled %d does not dial sled %d", from, to)
	}
	f := newForwarder(r.t, r.sleds[to].s.BootstrapAddr())
	r.sleds[from].peers[to] = f.addr()
	return f
}

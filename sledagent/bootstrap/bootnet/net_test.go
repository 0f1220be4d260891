package bootnet

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/internal/rackpki"
)

type event struct {
	kind string // connected, message, request, disconnected
	conn *Conn
	body []byte
	req  *Request
}

// recorder is a Handler that queues every event for the test; it answers
// requests "echo" itself and can be made to stop reading.
type recorder struct {
	events chan event
	block  chan struct{} // Message blocks while this is open (nil: never)
}

func newRecorder() *recorder { return &recorder{events: make(chan event, 1000)} }

func (r *recorder) Connected(c *Conn) { r.events <- event{kind: "connected", conn: c} }
func (r *recorder) Disconnected(c *Conn) {
	r.events <- event{kind: "disconnected", conn: c}
}
func (r *recorder) Message(c *Conn, body []byte) {
	if r.block != nil {
		<-r.block
	}
	r.events <- event{kind: "message", conn: c, body: bytes.Clone(body)}
	clear(body)
}
func (r *recorder) Request(c *Conn, req *Request) {
	switch req.Op {
	case "echo":
		_ = c.Reply(req.ID, req.Body, nil)
	case "never":
		r.events <- event{kind: "request", conn: c, req: req}
	default:
		_ = c.Reply(req.ID, nil, &RemoteError{Code: "unknown_op", Message: req.Op})
	}
}

func (r *recorder) next(t *testing.T, kind string) event {
	t.Helper()
	for {
		select {
		case ev := <-r.events:
			if ev.kind == kind {
				return ev
			}
			if kind != "any" {
				t.Logf("skipping %s of connection %d while waiting for %s", ev.kind, ev.conn.ID(), kind)
				continue
			}
			return ev
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s event within 10s", kind)
		}
	}
}

type pki struct {
	ca *rackpki.CA
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca, err := rackpki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{ca: ca}
}

func (p *pki) issue(t *testing.T, id rackpki.Identity) *rackpki.Bundle {
	t.Helper()
	b, err := p.ca.Issue(id, rackpki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type node struct {
	net *Network
	rec *recorder
	reg *prometheus.Registry
}

// startNet runs a network for serial on addr ("127.0.0.1:0" for any port).
func startNet(t *testing.T, p *pki, serial, addr string, tweak func(*Config)) *node {
	t.Helper()
	rec := newRecorder()
	reg := prometheus.NewRegistry()
	cfg := Config{Bundle: p.issue(t, rackpki.Sled("test", serial)), ListenAddr: addr, Handler: rec,
		Registerer: reg, Rand: rand.New(rand.NewPCG(1, 2)), BackoffMin: 20 * time.Millisecond, Log: zerolog.Nop()}
	if tweak != nil {
		tweak(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return &node{net: n, rec: rec, reg: reg}
}

// pair starts two sleds that know each other; hi has the higher address
// and dials lo.
func pair(t *testing.T, p *pki, tweak func(*Config)) (hi, lo *node) {
	t.Helper()
	a := startNet(t, p, "A", "127.0.0.1:0", tweak)
	b := startNet(t, p, "B", "127.0.0.1:0", tweak)
	if CompareAddrs(a.net.Addr(), b.net.Addr()) > 0 {
		hi, lo = a, b
	} else {
		hi, lo = b, a
	}
	peers := []string{a.net.Addr(), b.net.Addr()}
	hi.net.SetPeers(peers)
	lo.net.SetPeers(peers)
	return hi, lo
}

func TestPairConnectsOnceAndTalks(t *testing.T) {
	p := newPKI(t)
	hi, lo := pair(t, p, nil)
	ch := hi.rec.next(t, "connected").conn
	cl := lo.rec.next(t, "connected").conn
	if !ch.Dialed() || cl.Dialed() {
		t.Fatalf("the higher address must dial: hi dialed=%v lo dialed=%v", ch.Dialed(), cl.Dialed())
	}
	if ch.Peer() != lo.net.Self() || cl.Peer() != hi.net.Self() {
		t.Fatalf("identities: hi sees %v, lo sees %v", ch.Peer(), cl.Peer())
	}
	if c, ok := lo.net.Peer(hi.net.Self()); !ok || c != cl {
		t.Fatal("Peer does not return the current connection")
	}
	if err := ch.Send(KindMsg, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if ev := lo.rec.next(t, "message"); string(ev.body) != "hello" || ev.conn != cl {
		t.Fatalf("message %q on connection %d", ev.body, ev.conn.ID())
	}
	var out string
	if err := cl.Call(context.Background(), "echo", "ping?", &out); err != nil || out != "ping?" {
		t.Fatalf("echo: %q %v", out, err)
	}
	var re *RemoteError
	if err := cl.Call(context.Background(), "what", nil, nil); !errors.As(err, &re) || re.Code != "unknown_op" {
		t.Fatalf("unknown op: %v", err)
	}
	// Only one connection per pair, however long they run.
	time.Sleep(100 * time.Millisecond)
	if n := len(hi.net.Conns()) + len(lo.net.Conns()); n != 2 {
		t.Fatalf("%d connection ends, want 2", n)
	}
	if d, a := value(hi.net.metrics.opened.WithLabelValues("dialed")), value(lo.net.metrics.opened.WithLabelValues("accepted")); d != 1 || a != 1 {
		t.Fatalf("opened: %v dialed at hi, %v accepted at lo", d, a)
	}
	if g := value(lo.net.metrics.open.WithLabelValues("sled")); g != 1 {
		t.Fatalf("open connections gauge %v", g)
	}
}

// A newer connection with a peer replaces the older one; the older one's
// disconnect still arrives, later, tagged with its own (lower) id, so the
// receiver can tell it is stale.
func TestNewerConnectionReplacesOlder(t *testing.T) {
	p := newPKI(t)
	// hi does not redial once its connection is replaced, so the events
	// below are all there is.
	hi, lo := pair(t, p, func(c *Config) { c.BackoffMin = time.Hour })
	first := lo.rec.next(t, "connected").conn
	hi.rec.next(t, "connected")

	// hi's identity connects again (as after a restart that left the old
	// connection half open at lo).
	again, err := Dial(context.Background(), lo.net.Addr(), DialOptions{Bundle: hi.net.cfg.Bundle, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close(ErrShutdown)
	// The late disconnect of the first may come before or after the
	// second's connect; both carry their connection.
	var second *Conn
	firstGone := false
	for second == nil || !firstGone {
		ev := lo.rec.next(t, "any")
		switch {
		case ev.kind == "connected" && second == nil:
			second = ev.conn
		case ev.kind == "disconnected" && ev.conn == first:
			firstGone = true
		default:
			t.Fatalf("unexpected %s of connection %d", ev.kind, ev.conn.ID())
		}
	}
	if second.ID() <= first.ID() || second.Peer() != first.Peer() {
		t.Fatalf("second connection %d (%v) after %d (%v)", second.ID(), second.Peer(), first.ID(), first.Peer())
	}
	if !errors.Is(first.Err(), ErrReplaced) {
		t.Fatalf("first connection closed with %v, want replaced", first.Err())
	}
	if c, _ := lo.net.Peer(hi.net.Self()); c != second {
		t.Fatalf("current connection %d, want the replacement %d", c.ID(), second.ID())
	}
	if v := value(lo.net.metrics.closed.WithLabelValues("replaced")); v != 1 {
		t.Fatalf("replaced closes: %v", v)
	}
}

// A peer that stops reading fills our write queue; the connection is then
// closed (the send says so, the disconnect is delivered), not the message
// dropped. The dialer then reconnects.
func TestFullWriteQueueClosesTheConnection(t *testing.T) {
	p := newPKI(t)
	hi, lo := pair(t, p, func(c *Config) { c.WriteQueue = 2 })
	lo.rec.block = make(chan struct{})
	c := hi.rec.next(t, "connected").conn
	lo.rec.next(t, "connected")
	big := bytes.Repeat([]byte{1}, 512<<10)
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		err = c.Send(KindMsg, bytes.Clone(big))
	}
	if !errors.Is(err, ErrQueueFull) || !errors.Is(c.Err(), ErrQueueFull) {
		t.Fatalf("send: %v; connection: %v", err, c.Err())
	}
	if ev := hi.rec.next(t, "disconnected"); ev.conn != c {
		t.Fatalf("disconnect of %d, want %d", ev.conn.ID(), c.ID())
	}
	if v := value(hi.net.metrics.closed.WithLabelValues("write_queue_full")); v != 1 {
		t.Fatalf("write_queue_full closes: %v", v)
	}
	close(lo.rec.block)
	if re := hi.rec.next(t, "connected").conn; re.ID() <= c.ID() || re.Peer() != c.Peer() {
		t.Fatalf("reconnected as %d to %v", re.ID(), re.Peer())
	}
}

// Nothing for the silence timeout closes a connection; time is the
// injected clock's.
func TestSilentConnectionIsClosed(t *testing.T) {
	p := newPKI(t)
	clk := clock.NewFake(time.Now())
	hi, lo := pair(t, p, func(c *Config) { c.Clock = clk; c.BackoffMin = time.Hour })
	ch := hi.rec.next(t, "connected").conn
	cl := lo.rec.next(t, "connected").conn
	// The keep-alive goroutines may not be waiting on the clock yet;
	// advance until they have seen the silence.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			clk.Advance(DefaultSilenceTimeout + time.Second)
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	// Both ends find the other silent; whichever closes first, the other
	// may see the close instead.
	if ev := hi.rec.next(t, "disconnected"); ev.conn != ch {
		t.Fatalf("disconnect of %d, want %d", ev.conn.ID(), ch.ID())
	}
	lo.rec.next(t, "disconnected")
	if !errors.Is(ch.Err(), ErrSilent) && !errors.Is(cl.Err(), ErrSilent) {
		t.Fatalf("closed with %v and %v, want one silent", ch.Err(), cl.Err())
	}
}

// Pings keep a quiet connection alive well past the silence timeout.
func TestPingsKeepAConnectionAlive(t *testing.T) {
	p := newPKI(t)
	hi, lo := pair(t, p, func(c *Config) { c.PingInterval = 20 * time.Millisecond; c.SilenceTimeout = 400 * time.Millisecond })
	c := hi.rec.next(t, "connected").conn
	lo.rec.next(t, "connected")
	time.Sleep(1200 * time.Millisecond)
	if err := c.Err(); err != nil {
		t.Fatalf("connection closed: %v", err)
	}
}

// A peer announcing a frame over 1 MiB is cut off.
func TestOversizedFrameClosesTheConnection(t *testing.T) {
	p := newPKI(t)
	lo := startNet(t, p, "L", "127.0.0.1:0", nil)
	tc := rawClient(t, p.issue(t, rackpki.Sled("test", "X")), lo.net.Addr())
	defer tc.Close()
	c := lo.rec.next(t, "connected").conn
	var h [4]byte
	binary.BigEndian.PutUint32(h[:], MaxFrameSize+1)
	if _, err := tc.Write(h[:]); err != nil {
		t.Fatal(err)
	}
	lo.rec.next(t, "disconnected")
	if !errors.Is(c.Err(), ErrFrameTooLarge) {
		t.Fatalf("closed with %v", c.Err())
	}
	// Whatever was sent before (a ping) drains, then the connection ends.
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, tc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the connection is still open")
	}
}

func rawClient(t *testing.T, b *rackpki.Bundle, addr string) *tls.Conn {
	t.Helper()
	tc, err := tls.Dial("tcp", addr, b.ClientTLS(rackpki.AnyIdentity, nil))
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// Only certificates of the rack CA, naming a sled or the rack-setup
// service, get a connection.
func TestHandshakeRefusesStrangers(t *testing.T) {
	p := newPKI(t)
	lo := startNet(t, p, "L", "127.0.0.1:0", nil)
	other := newPKI(t)
	for name, b := range map[string]*rackpki.Bundle{
		"another CA's sled": other.issue(t, rackpki.Sled("test", "A")),
		"a Nexus":           p.issue(t, rackpki.Nexus("n1")),
	} {
		tc, err := tls.Dial("tcp", lo.net.Addr(), b.ClientTLS(rackpki.AnyIdentity, nil))
		if err == nil {
			// TLS 1.3 reports the server's refusal on the first read.
			tc.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = tc.Read(make([]byte, 1))
			tc.Close()
		}
		if err == nil {
			t.Errorf("%s: connected", name)
		}
	}
	// The rack-setup service may connect.
	rss, err := Dial(context.Background(), lo.net.Addr(), DialOptions{Bundle: p.issue(t, rackpki.RSS()), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer rss.Close(ErrShutdown)
	if ev := lo.rec.next(t, "connected"); ev.conn.Peer() != rackpki.RSS() {
		t.Fatalf("connected %v", ev.conn.Peer())
	}
	// The server counts a refusal after the client has seen it.
	deadline := time.Now().Add(5 * time.Second)
	for value(lo.net.metrics.handshake.WithLabelValues("accepted")) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("handshake failures %v, want 2", value(lo.net.metrics.handshake.WithLabelValues("accepted")))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A dialer refuses a server from another CA too.
	stranger := startNet(t, other, "S", "127.0.0.1:0", nil)
	if _, err := Dial(context.Background(), stranger.net.Addr(), DialOptions{Bundle: p.issue(t, rackpki.RSS()), Log: zerolog.Nop()}); err == nil {
		t.Fatal("dialed a sled of another rack")
	}
}

// A call bound to a connection fails the moment the connection closes,
// not at its deadline; a deadline bounds it otherwise; too many in flight
// are refused at once.
func TestCallsEndWithTheirConnection(t *testing.T) {
	p := newPKI(t)
	hi, lo := pair(t, p, func(c *Config) { c.MaxCalls = 2 })
	c := hi.rec.next(t, "connected").conn
	lo.rec.next(t, "connected")

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := c.Call(ctx, "never", nil, nil)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	if ev := lo.rec.next(t, "request"); ev.req.TimeoutMS <= 0 || ev.req.TimeoutMS > 50 {
		t.Fatalf("the deadline did not travel with the request: %+v", ev.req)
	}

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Call(context.Background(), "never", nil, nil)
		}()
	}
	lo.rec.next(t, "request")
	lo.rec.next(t, "request")
	if err := c.Call(context.Background(), "echo", 1, nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("third call in flight: %v", err)
	}
	start := time.Now()
	c.Close(errors.New("test cut the wire"))
	wg.Wait()
	for _, err := range errs {
		if !errors.Is(err, ErrConnClosed) {
			t.Fatalf("pending call: %v", err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("pending calls took %s to fail", d)
	}
}

func TestCompareAddrs(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"127.0.0.1:2000", "127.0.0.1:10000", -1},
		{"127.0.0.2:1", "127.0.0.1:9", 1},
		{"[::1]:5", "[::1]:5", 0},
		{"sled-b:1", "sled-a:9", 1},
	} {
		if got := CompareAddrs(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareAddrs(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

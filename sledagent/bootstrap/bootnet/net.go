// Package bootnet is the bootstrap network: long-lived TCP connections with
// mutual TLS under the rack CA between the sleds of a rack, and from the
// rack-setup service to the sleds. Who is at the other end comes from the
// peer's verified certificate only.
//
// Each pair of sleds keeps one connection: the sled with the higher
// address dials the lower (addresses from configuration), and a newer
// connection with a peer replaces the older. Every connection has an id
// that grows with time, and every event (connected, frames, disconnected)
// names its connection, so that the receiver can drop the late events of
// a replaced connection.
//
// On a connection travel length-prefixed frames of at most 1 MiB: pings
// (every second; a connection silent for 10 s is closed), trust-quorum
// messages, and requests and answers matched by id (Conn.Call). Writes go
// through a bounded queue per connection; a full queue closes the
// connection instead of dropping a message, and frames are zeroed once
// written. Time and jitter are injected, so tests control them.
package bootnet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/rackpki"
)

// Defaults for Config and DialOptions fields left zero.
const (
	DefaultPingInterval     = time.Second
	DefaultSilenceTimeout   = 10 * time.Second
	DefaultWriteQueue       = 256
	DefaultMaxCalls         = 64
	DefaultBackoffMin       = 100 * time.Millisecond
	DefaultBackoffMax       = 5 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultSendBuffer       = 256 << 10
)

// Config configures a Network.
type Config struct {
	// Bundle is this sled's certificate, key and rack CA. Its identity
	// must be a sled's.
	Bundle *rackpki.Bundle
	// ListenAddr is the address to listen on ("127.0.0.1:0" picks a port).
	ListenAddr string
	// AdvertiseAddr is the address other sleds dial for this one, as it
	// appears in their peer lists; it decides which side of a pair
	// dials. Empty: the listener's address.
	AdvertiseAddr string
	// Handler receives every connection's events.
	Handler Handler
	// Clock times pings, silence, back-off and handshakes (nil: real).
	Clock clock.Clock
	// Rand jitters the reconnect back-off (nil: seeded from the runtime).
	Rand *rand.Rand
	// PingInterval, SilenceTimeout, WriteQueue (frames per connection),
	// MaxCalls (requests this side may have in flight per connection),
	// BackoffMin/Max (reconnect) and HandshakeTimeout default to the
	// Default* constants.
	PingInterval     time.Duration
	SilenceTimeout   time.Duration
	WriteQueue       int
	MaxCalls         int
	BackoffMin       time.Duration
	BackoffMax       time.Duration
	HandshakeTimeout time.Duration
	// SendBuffer bounds the kernel's send buffer per connection
	// (DefaultSendBuffer), so that a peer that stops reading fills the
	// write queue after a bounded amount of data instead of after the
	// several megabytes the kernel would otherwise let pile up.
	SendBuffer int
	// Registerer receives the connection metrics (nil: none).
	Registerer prometheus.Registerer
	Log        zerolog.Logger
}

func (c *Config) setDefaults() {
	if c.Clock == nil {
		c.Clock = clock.Real()
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.SilenceTimeout <= 0 {
		c.SilenceTimeout = DefaultSilenceTimeout
	}
	if c.WriteQueue <= 0 {
		c.WriteQueue = DefaultWriteQueue
	}
	if c.MaxCalls <= 0 {
		c.MaxCalls = DefaultMaxCalls
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = max(DefaultBackoffMax, c.BackoffMin)
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.SendBuffer <= 0 {
		c.SendBuffer = DefaultSendBuffer
	}
}

func (c *Config) tuneSocket(raw net.Conn) {
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(c.SendBuffer)
		_ = tc.SetNoDelay(true)
	}
}

// Network is this sled's end of the bootstrap network: a listener and a
// dialer toward every configured peer with a lower address.
type Network struct {
	cfg     Config
	self    rackpki.Identity
	ln      net.Listener
	advert  string
	metrics *metrics
	conn    connConfig
	log     zerolog.Logger

	serverTLS *tls.Config
	clientTLS *tls.Config

	randMu sync.Mutex

	mu      sync.Mutex
	running context.Context
	peers   map[rackpki.Identity]*Conn // the current connection per sled
	all     map[uint64]*Conn
	dialers map[string]context.CancelFunc
	want    []string
	wg      sync.WaitGroup
}

// ConnInfo describes one open connection.
type ConnInfo struct {
	ID     uint64
	Peer   rackpki.Identity
	Remote string
	Dialed bool
	Since  time.Time
}

// New opens the listener. Nothing is accepted or dialed until Run.
func New(cfg Config) (*Network, error) {
	cfg.setDefaults()
	if cfg.Bundle == nil || cfg.Bundle.Identity.Kind != rackpki.KindSled {
		return nil, errors.New("bootnet: a sled certificate is required")
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("bootnet: listen: %w", err)
	}
	n := &Network{
		cfg:     cfg,
		self:    cfg.Bundle.Identity,
		ln:      ln,
		advert:  cfg.AdvertiseAddr,
		metrics: m,
		log:     cfg.Log.With().Str("subsystem", "bootnet").Logger(),
		peers:   map[rackpki.Identity]*Conn{},
		all:     map[uint64]*Conn{},
		dialers: map[string]context.CancelFunc{},
	}
	if n.advert == "" {
		n.advert = ln.Addr().String()
	}
	// Sleds and the rack-setup service may connect; nobody else.
	n.serverTLS = cfg.Bundle.ServerTLS(rackpki.OnlyKinds(rackpki.KindSled, rackpki.KindRSS), n.now)
	n.clientTLS = cfg.Bundle.ClientTLS(rackpki.OnlyKinds(rackpki.KindSled), n.now)
	n.conn = connConfig{
		clock: cfg.Clock, ping: cfg.PingInterval, silence: cfg.SilenceTimeout,
		queueSize: cfg.WriteQueue, maxCalls: cfg.MaxCalls, handler: cfg.Handler,
		log: n.log, metrics: m, ended: n.unregister,
	}
	return n, nil
}

func (n *Network) now() time.Time { return n.cfg.Clock.Now() }

// Addr is the address this sled is dialed at (AdvertiseAddr, or the
// listener's).
func (n *Network) Addr() string { return n.advert }

// ListenAddr is the listener's address.
func (n *Network) ListenAddr() string { return n.ln.Addr().String() }

// Self is this sled's identity.
func (n *Network) Self() rackpki.Identity { return n.self }

// SetPeers sets the bootstrap addresses of the rack's sleds (this sled's
// own may be among them). Dialers start for the lower ones, now if Run is
// running, else when it starts; dialers of addresses no longer listed
// stop.
func (n *Network) SetPeers(addrs []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.want = slices.Clone(addrs)
	if n.running != nil {
		n.syncDialersLocked()
	}
}

func (n *Network) syncDialersLocked() {
	keep := map[string]bool{}
	for _, a := range n.want {
		a = strings.TrimSpace(a)
		if a == "" || CompareAddrs(n.advert, a) <= 0 {
			continue // ours, or the peer dials us
		}
		keep[a] = true
		if _, ok := n.dialers[a]; !ok {
			ctx, cancel := context.WithCancel(n.running)
			n.dialers[a] = cancel
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				n.dialLoop(ctx, a)
			}()
		}
	}
	for a, cancel := range n.dialers {
		if !keep[a] {
			cancel()
			delete(n.dialers, a)
		}
	}
}

// CompareAddrs orders bootstrap addresses: as IP and port when both parse,
// else as strings. The sled with the higher address dials the lower.
func CompareAddrs(a, b string) int {
	pa, errA := netip.ParseAddrPort(a)
	pb, errB := netip.ParseAddrPort(b)
	if errA == nil && errB == nil {
		return pa.Compare(pb)
	}
	return strings.Compare(a, b)
}

// Run accepts and dials until ctx is done, then closes every connection
// and waits for its goroutines.
func (n *Network) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n.mu.Lock()
	if n.running != nil {
		n.mu.Unlock()
		return errors.New("bootnet: Run called twice")
	}
	n.running = ctx
	n.syncDialersLocked()
	n.mu.Unlock()

	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		<-ctx.Done()
		n.ln.Close()
	}()
	n.log.Info().Str("listen", n.ListenAddr()).Str("advertise", n.advert).Msg("bootstrap network up")
	var err error
	for {
		var raw net.Conn
		raw, err = n.ln.Accept()
		if err != nil {
			break
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.accept(ctx, raw)
		}()
	}
	cancel()
	n.mu.Lock()
	conns := make([]*Conn, 0, len(n.all))
	for _, c := range n.all {
		conns = append(conns, c)
	}
	n.mu.Unlock()
	for _, c := range conns {
		c.Close(ErrShutdown)
	}
	n.wg.Wait()
	if ctx.Err() != nil && errors.Is(err, net.ErrClosed) {
		return nil
	}
	return fmt.Errorf("bootnet: accept: %w", err)
}

// Close releases the listener of a Network whose Run was never called.
func (n *Network) Close() error { return n.ln.Close() }

// Peer returns the current connection to the sled id, if any.
func (n *Network) Peer(id rackpki.Identity) (*Conn, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, ok := n.peers[id]
	return c, ok
}

// Conns lists the open connections, sleds and rack-setup service alike.
func (n *Network) Conns() []ConnInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]ConnInfo, 0, len(n.all))
	for _, c := range n.all {
		out = append(out, ConnInfo{ID: c.id, Peer: c.peer, Remote: c.remote, Dialed: c.dialed, Since: c.since})
	}
	slices.SortFunc(out, func(a, b ConnInfo) int { return compareUint(a.ID, b.ID) })
	return out
}

func compareUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (n *Network) accept(ctx context.Context, raw net.Conn) {
	n.cfg.tuneSocket(raw)
	tc := tls.Server(raw, n.serverTLS)
	if err := n.handshake(ctx, tc); err != nil {
		n.metrics.handshake.WithLabelValues("accepted").Inc()
		n.log.Warn().Err(err).Str("remote", raw.RemoteAddr().String()).Msg("bootstrap connection refused")
		raw.Close()
		return
	}
	n.establish(tc, raw, false)
}

// handshake runs the TLS handshake, bounded by the handshake timeout on
// the injected clock.
func (n *Network) handshake(ctx context.Context, tc *tls.Conn) error {
	return handshake(ctx, tc, n.cfg.Clock, n.cfg.HandshakeTimeout)
}

func handshake(ctx context.Context, tc *tls.Conn, clk clock.Clock, timeout time.Duration) error {
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-clk.After(timeout):
			cancel()
		case <-stop:
		}
	}()
	return tc.HandshakeContext(hctx)
}

// establish registers a handshaken connection and starts it. A sled's
// connection replaces the older one with the same sled.
func (n *Network) establish(tc *tls.Conn, raw net.Conn, dialed bool) *Conn {
	cs := tc.ConnectionState()
	peer, err := rackpki.PeerIdentity(&cs)
	if err != nil {
		raw.Close()
		return nil
	}
	c := newConn(tc, raw, peer, dialed, &n.conn)
	if peer == n.self {
		n.log.Warn().Str("remote", c.remote).Msg("connected to itself; check the bootstrap peer list and advertise address")
		raw.Close()
		return nil
	}
	n.mu.Lock()
	if n.running == nil || n.running.Err() != nil {
		n.mu.Unlock()
		raw.Close()
		return nil
	}
	var old *Conn
	if peer.Kind == rackpki.KindSled {
		old = n.peers[peer]
		n.peers[peer] = c
	}
	n.all[c.id] = c
	n.mu.Unlock()
	n.metrics.opened.WithLabelValues(direction(dialed)).Inc()
	n.metrics.open.WithLabelValues(string(peer.Kind)).Inc()
	if old != nil {
		old.Close(fmt.Errorf("%w (connection %d)", ErrReplaced, c.id))
	}
	c.log.Info().Bool("dialed", dialed).Msg("bootstrap connection up")
	if n.cfg.Handler != nil {
		n.cfg.Handler.Connected(c)
	}
	c.start()
	return c
}

// unregister forgets a connection whose reader stopped.
func (n *Network) unregister(c *Conn) {
	n.mu.Lock()
	delete(n.all, c.id)
	if n.peers[c.peer] == c {
		delete(n.peers, c.peer)
	}
	n.mu.Unlock()
	n.metrics.open.WithLabelValues(string(c.peer.Kind)).Dec()
}

// dialLoop keeps a connection to addr: dial, run until it closes, pause,
// dial again, backing off (with jitter) while dials fail or connections
// close before anything arrived on them.
func (n *Network) dialLoop(ctx context.Context, addr string) {
	backoff := n.cfg.BackoffMin
	for ctx.Err() == nil {
		c, err := n.dial(ctx, addr)
		if err != nil {
			n.log.Debug().Err(err).Str("addr", addr).Float64("retry_in_ms", logging.Millis(backoff)).Msg("bootstrap dial failed")
		} else {
			select {
			case <-c.Done():
			case <-ctx.Done():
				return
			}
			if c.heard() {
				// It worked: a fault, not a peer that refuses us.
				backoff = n.cfg.BackoffMin
			}
		}
		if err := n.cfg.Clock.Sleep(ctx, n.jitter(backoff)); err != nil {
			return
		}
		backoff = min(2*backoff, n.cfg.BackoffMax)
	}
}

// jitter spreads d over [d/2, 3d/2) so that sleds restarted together do
// not all redial in step.
func (n *Network) jitter(d time.Duration) time.Duration {
	n.randMu.Lock()
	f := n.cfg.Rand.Float64()
	n.randMu.Unlock()
	return time.Duration(float64(d) * (0.5 + f))
}

func (n *Network) dial(ctx context.Context, addr string) (*Conn, error) {
	var d net.Dialer
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-n.cfg.Clock.After(n.cfg.HandshakeTimeout):
			cancel()
		case <-dctx.Done():
		}
	}()
	raw, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	n.cfg.tuneSocket(raw)
	tc := tls.Client(raw, n.clientTLS)
	if err := tc.HandshakeContext(dctx); err != nil {
		n.metrics.handshake.WithLabelValues("dialed").Inc()
		n.log.Warn().Err(err).Str("addr", addr).Msg("bootstrap peer refused during the handshake")
		raw.Close()
		return nil, err
	}
	c := n.establish(tc, raw, true)
	if c == nil {
		return nil, fmt.Errorf("%w: %s", ErrRefused, addr)
	}
	return c, nil
}

// DialOptions configure Dial.
type DialOptions struct {
	// Bundle is the caller's certificate (the rack-setup service's).
	Bundle *rackpki.Bundle
	// Accept checks the server's identity (nil: any sled).
	Accept  rackpki.Accept
	Clock   clock.Clock
	Handler Handler
	// PingInterval, SilenceTimeout, WriteQueue, MaxCalls and
	// HandshakeTimeout as in Config.
	PingInterval     time.Duration
	SilenceTimeout   time.Duration
	WriteQueue       int
	MaxCalls         int
	HandshakeTimeout time.Duration
	Log              zerolog.Logger
}

// Dial opens one connection to a sled's bootstrap listener, for a party
// that is not a sled (the rack-setup service). It is not redialled.
func Dial(ctx context.Context, addr string, o DialOptions) (*Conn, error) {
	if o.Bundle == nil {
		return nil, errors.New("bootnet: a certificate is required")
	}
	cfg := Config{Clock: o.Clock, PingInterval: o.PingInterval, SilenceTimeout: o.SilenceTimeout,
		WriteQueue: o.WriteQueue, MaxCalls: o.MaxCalls, HandshakeTimeout: o.HandshakeTimeout}
	cfg.setDefaults()
	accept := o.Accept
	if accept == nil {
		accept = rackpki.OnlyKinds(rackpki.KindSled)
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bootnet: dial %s: %w", addr, err)
	}
	tc := tls.Client(raw, o.Bundle.ClientTLS(accept, cfg.Clock.Now))
	if err := handshake(ctx, tc, cfg.Clock, cfg.HandshakeTimeout); err != nil {
		raw.Close()
		return nil, fmt.Errorf("bootnet: handshake with %s: %w", addr, err)
	}
	cs := tc.ConnectionState()
	peer, err := rackpki.PeerIdentity(&cs)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("bootnet: %s: %w", addr, err)
	}
	m, _ := newMetrics(nil)
	c := newConn(tc, raw, peer, true, &connConfig{
		clock: cfg.Clock, ping: cfg.PingInterval, silence: cfg.SilenceTimeout, queueSize: cfg.WriteQueue,
		maxCalls: cfg.MaxCalls, handler: o.Handler, log: o.Log, metrics: m,
	})
	if o.Handler != nil {
		o.Handler.Connected(c)
	}
	c.start()
	return c, nil
}

// Package bootstrap is the bootstrap agent: the part of every sled process
// that runs from power-on, before and independently of the sled agent, and
// runs the trust-quorum protocol (package trustquorum) for the sled.
//
// One goroutine owns the trustquorum.Node and its NodeCtx. API calls (from
// the sled API, from proxied requests, from the rack-setup service),
// connection events and peer messages from the bootstrap network
// (package bootnet) and a Tick every second reach it over bounded
// channels. After each step it persists the state if it changed (a
// generation-numbered ledger on every present M.2), then hands the
// envelopes to their connections, then replies. A persist that no M.2
// took stops the node: it never acknowledges what it did not store. It
// starts again from the ledger when an M.2 arrives.
//
// The agent also forwards requests for sleds that Nexus cannot reach
// (proxying, over the bootstrap connection) and executes those other
// sleds forward to it, and serves the rack-setup service.
package bootstrap

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent/bootstrap/bootnet"
	"github.com/rackplane/rackplane/sledagent/ledger"
	"github.com/rackplane/rackplane/sledagent/m2"
	"github.com/rackplane/rackplane/trustquorum"
)

// Defaults for Config fields left zero.
const (
	DefaultTickInterval = time.Second
	DefaultQueueSize    = 256
	DefaultMaxProxied   = 64
	DefaultMaxServing   = 64
	// DefaultRequestTimeout bounds a request executed for another party
	// that named no deadline.
	DefaultRequestTimeout = 30 * time.Second
)

// Config configures an Agent.
type Config struct {
	// Bundle is the sled's certificate; its identity is the sled's
	// baseboard, and the only one the agent uses.
	Bundle *rackpki.Bundle
	// ListenAddr, AdvertiseAddr and Peers configure the bootstrap network
	// (see bootnet.Config); Peers may also be set later with SetPeers.
	ListenAddr    string
	AdvertiseAddr string
	Peers         []string
	// M2 is the sled's M.2 watcher, shared with the sled agent. The
	// ledger lives in LedgerDir on every present device.
	M2 *m2.Watcher
	// Clock times ticks, pings and back-off (nil: real).
	Clock clock.Clock
	// Rand supplies the node's random bytes (nil: crypto/rand).
	Rand io.Reader
	// Jitter jitters reconnects (nil: seeded from the runtime).
	Jitter *mathrand.Rand
	// Registerer receives the metrics (nil: none).
	Registerer prometheus.Registerer
	// StartSledAgent starts the sled agent if it is not running and
	// reports whether it started it now. Nil: there is none to start.
	StartSledAgent func(context.Context) (bool, error)
	// TickInterval is the time between Ticks (DefaultTickInterval).
	TickInterval time.Duration
	// NodeRetryBase and NodeRetryMax are the node's re-send back-off
	// (trustquorum defaults when zero).
	NodeRetryBase, NodeRetryMax time.Duration
	// QueueSize bounds the node's API and network channels.
	QueueSize int
	// MaxProxied bounds proxied requests in flight from this sled, and
	// MaxServing requests executed here for others; beyond, busy.
	MaxProxied, MaxServing int
	// Bootstrap-network tuning (bootnet defaults when zero).
	PingInterval, SilenceTimeout time.Duration
	WriteQueue, SendBuffer       int
	BackoffMin, BackoffMax       time.Duration

	Log zerolog.Logger
}

func (c *Config) setDefaults() {
	if c.Clock == nil {
		c.Clock = clock.Real()
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.TickInterval <= 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MaxProxied <= 0 {
		c.MaxProxied = DefaultMaxProxied
	}
	if c.MaxServing <= 0 {
		c.MaxServing = DefaultMaxServing
	}
}

// Agent is a sled's bootstrap agent.
type Agent struct {
	cfg     Config
	log     zerolog.Logger
	id      trustquorum.BaseboardID
	net     *bootnet.Network
	ledger  *ledger.Ledger[ledgerValue]
	metrics *metrics
	start   time.Time // Instants are measured from here

	// Owned by the node goroutine (and by New before it runs).
	node    *trustquorum.Node
	nctx    *trustquorum.NodeCtx
	peers   *peerTable[*bootnet.Conn]
	gen     uint64
	alarms  []AlarmRecord
	seen    int // how many of nctx.Alarms() are in alarms
	stopped error
	// persistedEnc is the state as last stored; once the node stops,
	// persisted is it decoded, for status.
	persistedEnc    []byte
	persisted       trustquorum.PersistentState
	devGen          map[string]uint64
	devErr          map[string]string
	persistFailures uint64
	lastPersistErr  string

	apiCh chan *call
	netCh chan netEvent
	m2Ch  chan struct{}

	devMu   sync.Mutex
	devices []string // ledger directories on present M.2s

	proxyMu  sync.Mutex
	proxySeq uint64
	proxies  map[uint64]ProxyCall
	serving  chan struct{}

	lock          lockState
	commits       chan struct{}
	lastCommitted trustquorum.Epoch // node goroutine
	// loadAsked: a LoadRackSecret call is gathering shares afresh (node
	// goroutine).
	loadAsked bool

	runMu   sync.Mutex
	runCtx  context.Context
	done    chan struct{} // closed when the node goroutine has stopped
	started bool
}

// call is one API call for the node goroutine.
type call struct {
	op string
	// live calls need a running node: they are refused on a stopped one
	// (even CoordinatorStatus, whose acks were not all persisted).
	live  bool
	fn    func() (any, error)
	reply chan callResult
}

type callResult struct {
	v   any
	err error
}

type netEventKind int

const (
	evConnected netEventKind = iota + 1
	evDisconnected
	evMessage
)

type netEvent struct {
	kind netEventKind
	conn *bootnet.Conn
	peer trustquorum.BaseboardID
	msg  trustquorum.PeerMsg
}

// New opens the bootstrap listener, starts using the M.2s the watcher
// reports, and loads the trust-quorum state from their ledger. A ledger
// that is present but cannot be read or decoded is an error: the sled must
// not start afresh and forget a share it holds.
func New(cfg Config) (*Agent, error) {
	cfg.setDefaults()
	if cfg.Bundle == nil {
		return nil, errors.New("bootstrap: the sled's certificate is required")
	}
	if cfg.Bundle.Identity.Kind != rackpki.KindSled {
		return nil, fmt.Errorf("bootstrap: the certificate names %s, not a sled", cfg.Bundle.Identity)
	}
	if cfg.M2 == nil {
		return nil, errors.New("bootstrap: an M.2 watcher is required")
	}
	ident := cfg.Bundle.Identity
	a := &Agent{
		cfg:     cfg,
		id:      trustquorum.BaseboardID{Part: ident.Part, Serial: ident.Serial},
		ledger:  ledger.New[ledgerValue](LedgerFile),
		start:   cfg.Clock.Now(),
		peers:   newPeerTable[*bootnet.Conn](),
		devGen:  map[string]uint64{},
		devErr:  map[string]string{},
		apiCh:   make(chan *call, cfg.QueueSize),
		netCh:   make(chan netEvent, cfg.QueueSize),
		m2Ch:    make(chan struct{}, 1),
		proxies: map[uint64]ProxyCall{},
		serving: make(chan struct{}, cfg.MaxServing),
		done:    make(chan struct{}),
		commits: make(chan struct{}, 1),
	}
	a.log = cfg.Log.With().Str("subsystem", "bootstrap").Str("baseboard", a.id.String()).Logger()
	var err error
	if a.metrics, err = newMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	a.net, err = bootnet.New(bootnet.Config{
		Bundle: cfg.Bundle, ListenAddr: cfg.ListenAddr, AdvertiseAddr: cfg.AdvertiseAddr,
		Handler: netHandler{a}, Clock: cfg.Clock, Rand: cfg.Jitter,
		PingInterval: cfg.PingInterval, SilenceTimeout: cfg.SilenceTimeout, WriteQueue: cfg.WriteQueue, SendBuffer: cfg.SendBuffer,
		BackoffMin: cfg.BackoffMin, BackoffMax: cfg.BackoffMax,
		Registerer: cfg.Registerer, Log: cfg.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	a.net.SetPeers(cfg.Peers)
	cfg.M2.Handle(a.deviceChanged)
	if err := a.load(); err != nil {
		a.net.Close()
		return nil, err
	}
	return a, nil
}

// ID is the sled's baseboard, from its certificate.
func (a *Agent) ID() trustquorum.BaseboardID { return a.id }

// Addr is the bootstrap address other sleds dial.
func (a *Agent) Addr() string { return a.net.Addr() }

// SetPeers sets the bootstrap addresses of the rack's sleds.
func (a *Agent) SetPeers(addrs []string) { a.net.SetPeers(addrs) }

// Network is the agent's bootstrap network.
func (a *Agent) Network() *bootnet.Network { return a.net }

// Run runs the node goroutine and the bootstrap network until ctx is done.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.runMu.Lock()
	if a.started {
		a.runMu.Unlock()
		return errors.New("bootstrap: Run called twice")
	}
	a.started, a.runCtx = true, ctx
	a.runMu.Unlock()

	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		defer close(a.done)
		a.loop(ctx)
	}()
	err := a.net.Run(ctx)
	cancel()
	<-loopDone
	a.log.Info().Msg("bootstrap agent stopped")
	return err
}

func (a *Agent) running() (context.Context, error) {
	a.runMu.Lock()
	defer a.runMu.Unlock()
	if !a.started || a.runCtx.Err() != nil {
		return nil, ErrNotRunning
	}
	return a.runCtx, nil
}

// loop is the node goroutine.
func (a *Agent) loop(ctx context.Context) {
	tick := a.cfg.Clock.After(a.cfg.TickInterval)
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-a.apiCh:
			a.handleCall(c)
		case ev := <-a.netCh:
			a.handleNet(ev)
		case <-a.m2Ch:
			a.reconcile()
		case <-tick:
			tick = a.cfg.Clock.After(a.cfg.TickInterval)
			if a.stopped == nil {
				a.node.Tick(a.nctx, a.now())
				_ = a.finish(nil)
			}
		}
	}
}

func (a *Agent) now() trustquorum.Instant {
	return trustquorum.Instant(a.cfg.Clock.Now().Sub(a.start))
}

// do runs fn on the node goroutine and returns its result once the state
// it produced is persisted and its envelopes are handed over. A call made
// before Run waits for it (or for ctx). A full queue is ErrBusy at once. A live call on a stopped node is
// ErrStopped without running.
func (a *Agent) do(ctx context.Context, op string, live bool, fn func() (any, error)) (any, error) {
	c := &call{op: op, live: live, fn: fn, reply: make(chan callResult, 1)}
	select {
	case a.apiCh <- c:
	default:
		return nil, ErrBusy
	}
	select {
	case r := <-c.reply:
		return r.v, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-a.done:
		return nil, ErrNotRunning
	}
}

func (a *Agent) handleCall(c *call) {
	if c.live && a.stopped != nil {
		c.reply <- callResult{err: a.stoppedErr()}
		return
	}
	v, err := c.fn()
	if a.stopped == nil {
		if perr := a.finish(nil); perr != nil {
			v, err = nil, perr
		}
	}
	c.reply <- callResult{v: v, err: err}
}

func (a *Agent) stoppedErr() error { return fmt.Errorf("%w: %w", ErrStopped, a.stopped) }

func (a *Agent) handleNet(ev netEvent) {
	switch ev.kind {
	case evConnected:
		// A connection that replaces an older one is reported with
		// OnConnect alone (the node re-sends everything outstanding, as
		// the older one's queue is lost); the older one's late disconnect
		// is dropped below.
		use, _ := a.peers.connected(ev.peer, ev.conn)
		if !use {
			a.log.Debug().Uint64("conn", ev.conn.ID()).Str("peer", ev.peer.String()).Msg("stale connect dropped")
			return
		}
		a.metrics.peers.Set(float64(len(a.peers.conns)))
		if a.stopped != nil {
			return
		}
		a.node.OnConnect(a.nctx, ev.peer)
	case evDisconnected:
		if !a.peers.disconnected(ev.peer, ev.conn) {
			a.log.Debug().Uint64("conn", ev.conn.ID()).Str("peer", ev.peer.String()).Msg("stale disconnect dropped")
			return
		}
		a.metrics.peers.Set(float64(len(a.peers.conns)))
		if a.stopped != nil {
			return
		}
		a.node.OnDisconnect(a.nctx, ev.peer)
	case evMessage:
		a.metrics.messages.WithLabelValues("received", ev.msg.Body.Kind()).Inc()
		if a.stopped != nil || !a.peers.isCurrent(ev.peer, ev.conn) {
			return
		}
		a.node.HandleMessage(a.nctx, ev.peer, ev.msg)
		peer := ev.peer
		_ = a.finish(&peer)
		return
	}
	_ = a.finish(nil)
}

// finish completes a step: alarms recorded, state persisted if changed
// (stopping the node if that fails), then envelopes handed to their
// connections. from is the peer whose message caused the step, for the
// alarms it raised.
func (a *Agent) finish(from *trustquorum.BaseboardID) error {
	if a.stopped != nil {
		return a.stoppedErr()
	}
	newAlarms := a.collectAlarms(from)
	if a.nctx.PersistentStateChanged() || newAlarms {
		if err := a.persist(); err != nil {
			// Nothing from this step may leave the sled. The envelopes
			// are dropped, not zeroed: their shares may be the state's.
			a.nctx.DrainEnvelopes()
			a.stop(err)
			return a.stoppedErr()
		}
		a.nctx.ClearPersistentStateChanged()
	}
	for _, env := range a.nctx.DrainEnvelopes() {
		a.send(env)
	}
	a.noteCommitted()
	return nil
}

func (a *Agent) send(env trustquorum.Envelope) {
	c, ok := a.peers.current(env.To)
	if !ok {
		return
	}
	frame, err := trustquorum.EncodeMsg(env.Msg)
	if err != nil {
		a.log.Error().Err(err).Str("peer", env.To.String()).Str("msg", env.Msg.String()).Msg("could not encode a peer message")
		return
	}
	// Send zeroes the encoded frame once written. A failure means the
	// connection closed; its disconnect is on its way to the node.
	if err := c.Send(bootnet.KindMsg, frame); err == nil {
		a.metrics.messages.WithLabelValues("sent", env.Msg.Body.Kind()).Inc()
	}
}

// stop stops the node after a failed persist.
func (a *Agent) stop(err error) {
	a.stopped = err
	a.persisted = trustquorum.NewPersistentState()
	if a.persistedEnc != nil {
		if st, derr := trustquorum.DecodeState(a.persistedEnc); derr == nil {
			a.persisted = st
		}
	}
	a.metrics.stopped.Set(1)
	a.log.Error().Err(err).Msg("trust-quorum state could not be persisted on any M.2; the node is stopped " +
		"and acknowledges nothing until an M.2 that takes the ledger arrives")
}

// collectAlarms moves alarms the node raised into the persisted list,
// naming the peer whose message caused them when the node did not.
func (a *Agent) collectAlarms(from *trustquorum.BaseboardID) bool {
	all := a.nctx.Alarms()
	added := false
	for _, al := range all[a.seen:] {
		if al.Peer == (trustquorum.BaseboardID{}) && from != nil {
			al.Peer = *from
		}
		if a.hasAlarm(al) {
			continue
		}
		a.alarms = append(a.alarms, AlarmRecord{Alarm: al, Time: a.cfg.Clock.Now().UTC()})
		a.metrics.alarms.WithLabelValues(string(al.Kind)).Inc()
		a.log.Error().Str("alarm", string(al.Kind)).Uint64("epoch", uint64(al.Epoch)).Str("peer", al.Peer.String()).
			Str("detail", al.Detail).Msg("trust-quorum alarm")
		added = true
	}
	a.seen = len(all)
	return added
}

func (a *Agent) hasAlarm(al trustquorum.Alarm) bool {
	for _, r := range a.alarms {
		if r.Kind == al.Kind && r.Epoch == al.Epoch && r.Peer == al.Peer {
			return true
		}
	}
	return false
}

// netHandler receives the bootstrap network's events. It runs on the
// connections' goroutines: it decodes messages there (so decoding is
// spread over connections) and blocks on the node's channel, which slows
// a peer down instead of dropping what it sent.
type netHandler struct{ a *Agent }

func peerID(c *bootnet.Conn) trustquorum.BaseboardID {
	p := c.Peer()
	return trustquorum.BaseboardID{Part: p.Part, Serial: p.Serial}
}

func (h netHandler) push(ev netEvent) {
	ctx, err := h.a.running()
	if err != nil {
		return
	}
	select {
	case h.a.netCh <- ev:
	case <-ctx.Done():
	}
}

func (h netHandler) Connected(c *bootnet.Conn) {
	if c.Peer().Kind == rackpki.KindSled {
		h.push(netEvent{kind: evConnected, conn: c, peer: peerID(c)})
	}
}

func (h netHandler) Disconnected(c *bootnet.Conn) {
	if c.Peer().Kind == rackpki.KindSled {
		h.push(netEvent{kind: evDisconnected, conn: c, peer: peerID(c)})
	}
}

func (h netHandler) Message(c *bootnet.Conn, body []byte) {
	defer clear(body)
	if c.Peer().Kind != rackpki.KindSled {
		// The rack-setup service is not a peer; it may only make
		// rack-setup requests.
		h.a.log.Warn().Str("peer", c.Peer().String()).Msg("trust-quorum message from a non-sled; closing its connection")
		c.Close(fmt.Errorf("%w: %s may not send trust-quorum messages", bootnet.ErrProtocol, c.Peer()))
		return
	}
	msg, err := trustquorum.DecodeMsg(body)
	if err != nil {
		h.a.metrics.decodeErrors.Inc()
		h.a.log.Warn().Err(err).Str("peer", c.Peer().String()).Msg("undecodable trust-quorum message dropped")
		return
	}
	h.push(netEvent{kind: evMessage, conn: c, peer: peerID(c), msg: msg})
}

func (h netHandler) Request(c *bootnet.Conn, r *bootnet.Request) {
	h.a.serveRequest(c, r)
}

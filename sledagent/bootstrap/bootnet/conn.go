package bootnet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/internal/rackpki"
)

// Reasons a connection closes. Conn.Err returns one of them (wrapped).
var (
	// ErrReplaced: a newer connection with the same peer took over.
	ErrReplaced = errors.New("bootnet: replaced by a newer connection to the same peer")
	// ErrQueueFull: the write queue was full. The connection is closed
	// rather than a message dropped, so the loss is seen (as a
	// disconnect) instead of silently stalling the protocol.
	ErrQueueFull = errors.New("bootnet: write queue full")
	// ErrSilent: nothing arrived for the silence timeout.
	ErrSilent = errors.New("bootnet: peer silent for too long")
	// ErrProtocol: the peer sent something this side does not speak.
	ErrProtocol = errors.New("bootnet: protocol error")
	// ErrShutdown: this side is shutting down.
	ErrShutdown = errors.New("bootnet: shutting down")
	// ErrPeerClosed: the peer closed the connection.
	ErrPeerClosed = errors.New("bootnet: closed by the peer")
	// ErrRefused: the peer may not use this connection (for instance a
	// sled that connected to itself).
	ErrRefused = errors.New("bootnet: connection refused")
)

// closeReason is the metrics label for why a connection closed.
func closeReason(err error) string {
	switch {
	case errors.Is(err, ErrReplaced):
		return "replaced"
	case errors.Is(err, ErrQueueFull):
		return "write_queue_full"
	case errors.Is(err, ErrSilent):
		return "silent"
	case errors.Is(err, ErrFrameTooLarge):
		return "frame_too_large"
	case errors.Is(err, ErrProtocol), errors.Is(err, ErrUnknownKind), errors.Is(err, ErrEmptyFrame):
		return "protocol_error"
	case errors.Is(err, ErrShutdown):
		return "shutdown"
	case errors.Is(err, ErrPeerClosed):
		return "peer_closed"
	case errors.Is(err, ErrRefused):
		return "refused"
	}
	return "io_error"
}

// Handler receives what arrives on connections. Its methods run on the
// connection's goroutines and may block (that slows the peer down through
// TCP flow control, which is the back-pressure wanted). For one
// connection, Connected comes first, then frames and requests in arrival
// order, then Disconnected exactly once.
//
// Every connection's events are delivered, including those of connections
// that were replaced: the receiver tells them apart by Conn.ID (a newer
// connection has a higher id) and drops what is stale.
type Handler interface {
	Connected(c *Conn)
	// Message is a KindMsg body; the handler owns it and zeroes it when
	// done, since it may carry share bytes.
	Message(c *Conn, body []byte)
	// Request must be answered with c.Reply (the handler may do so later,
	// from another goroutine).
	Request(c *Conn, r *Request)
	Disconnected(c *Conn)
}

// connConfig is what a connection needs from whoever made it.
type connConfig struct {
	clock     clock.Clock
	ping      time.Duration
	silence   time.Duration
	queueSize int
	maxCalls  int
	handler   Handler
	log       zerolog.Logger
	metrics   *metrics
	// ended runs once the reader has stopped, before Disconnected.
	ended func(*Conn)
}

// Conn is one authenticated bootstrap-network connection.
type Conn struct {
	id     uint64
	peer   rackpki.Identity
	remote string
	dialed bool
	since  time.Time
	nc     net.Conn // the TLS connection
	raw    net.Conn // the TCP connection under it
	cfg    *connConfig
	log    zerolog.Logger

	mu     sync.Mutex // guards closed and the queue's sends
	closed bool
	queue  chan []byte
	done   chan struct{}
	err    error

	lastRecv atomic.Int64 // unix nanoseconds on cfg.clock
	anyRecv  atomic.Bool

	callMu   sync.Mutex
	nextCall uint64
	pending  map[uint64]chan callResult
}

var connIDs atomic.Uint64

func newConn(nc, raw net.Conn, peer rackpki.Identity, dialed bool, cfg *connConfig) *Conn {
	c := &Conn{
		id:      connIDs.Add(1),
		peer:    peer,
		remote:  nc.RemoteAddr().String(),
		dialed:  dialed,
		since:   cfg.clock.Now(),
		nc:      nc,
		raw:     raw,
		cfg:     cfg,
		queue:   make(chan []byte, cfg.queueSize),
		done:    make(chan struct{}),
		pending: map[uint64]chan callResult{},
	}
	c.log = cfg.log.With().Uint64("conn", c.id).Str("peer", peer.String()).Str("remote", c.remote).Logger()
	c.lastRecv.Store(c.since.UnixNano())
	return c
}

// ID numbers connections in the order they were established: a newer
// connection to a peer has a higher id than an older one.
func (c *Conn) ID() uint64 { return c.id }

// Peer is the identity the peer's verified certificate names.
func (c *Conn) Peer() rackpki.Identity { return c.peer }

// Remote is the peer's network address.
func (c *Conn) Remote() string { return c.remote }

// Dialed reports whether this side dialed the connection.
func (c *Conn) Dialed() bool { return c.dialed }

// Since is when the connection was established.
func (c *Conn) Since() time.Time { return c.since }

// heard reports whether any frame arrived on the connection.
func (c *Conn) heard() bool { return c.anyRecv.Load() }

// Done is closed when the connection has closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err says why the connection closed (nil while it is open).
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Send queues a frame. It takes ownership of body and zeroes it. A full
// queue closes the connection (ErrQueueFull): the message is never dropped
// silently.
func (c *Conn) Send(kind Kind, body []byte) error {
	defer clear(body)
	frame, err := EncodeFrame(kind, body)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		err := c.err
		c.mu.Unlock()
		clear(frame)
		return fmt.Errorf("%w: %w", ErrConnClosed, err)
	}
	select {
	case c.queue <- frame:
		c.mu.Unlock()
		return nil
	default:
	}
	c.mu.Unlock()
	clear(frame)
	c.Close(fmt.Errorf("%w (%d frames waiting)", ErrQueueFull, c.cfg.queueSize))
	return fmt.Errorf("%w: %w", ErrConnClosed, ErrQueueFull)
}

// Close closes the connection for reason (kept as Err). Queued frames are
// zeroed, not sent; requests waiting for an answer on it fail at once.
func (c *Conn) Close(reason error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.err = true, reason
	c.mu.Unlock()
	close(c.done)
	// The TCP connection, not the TLS one: TLS's Close would first try to
	// send an alert, which blocks for seconds when the peer stopped
	// reading, and Close is called from the node's goroutine.
	_ = c.raw.Close()
	if c.cfg.metrics != nil {
		c.cfg.metrics.closed.WithLabelValues(closeReason(reason)).Inc()
	}
	lvl := zerolog.InfoLevel
	if errors.Is(reason, ErrShutdown) {
		lvl = zerolog.DebugLevel
	}
	c.log.WithLevel(lvl).AnErr("reason", reason).Msg("bootstrap connection closed")
}

// start runs the connection's goroutines. Connected has been delivered.
func (c *Conn) start() {
	go c.writeLoop()
	go c.keepAlive()
	go c.readLoop()
}

func (c *Conn) writeLoop() {
	for {
		select {
		case f := <-c.queue:
			_, err := c.nc.Write(f)
			clear(f)
			if err != nil {
				c.Close(fmt.Errorf("write: %w", err))
			}
		case <-c.done:
			for {
				select {
				case f := <-c.queue:
					clear(f)
				default:
					return
				}
			}
		}
	}
}

// keepAlive pings at once (so each side soon knows the other works) and
// then every ping interval, and closes a connection on which nothing
// arrived for the silence timeout, both on the injected clock.
func (c *Conn) keepAlive() {
	_ = c.Send(KindPing, nil)
	for {
		select {
		case <-c.done:
			return
		case <-c.cfg.clock.After(c.cfg.ping):
		}
		last := time.Unix(0, c.lastRecv.Load())
		if quiet := c.cfg.clock.Now().Sub(last); quiet >= c.cfg.silence {
			c.Close(fmt.Errorf("%w: nothing for %s", ErrSilent, quiet.Round(time.Millisecond)))
			return
		}
		_ = c.Send(KindPing, nil)
	}
}

func (c *Conn) readLoop() {
	defer func() {
		if c.cfg.ended != nil {
			c.cfg.ended(c)
		}
		if c.cfg.handler != nil {
			c.cfg.handler.Disconnected(c)
		}
	}()
	for {
		kind, body, err := ReadFrame(c.nc)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = ErrPeerClosed
			}
			c.Close(err)
			return
		}
		c.lastRecv.Store(c.cfg.clock.Now().UnixNano())
		c.anyRecv.Store(true)
		switch kind {
		case KindPing:
		case KindResponse:
			err = c.handleResponse(body)
			clear(body)
		case KindRequest:
			var r *Request
			r, err = decodeRequest(body)
			clear(body)
			if err == nil {
				if c.cfg.handler == nil {
					err = c.Reply(r.ID, nil, &RemoteError{Code: "forbidden", Message: "this side serves no requests"})
				} else {
					c.cfg.handler.Request(c, r)
				}
			}
		case KindMsg:
			if c.cfg.handler == nil {
				clear(body)
				err = fmt.Errorf("%w: unexpected message", ErrProtocol)
			} else {
				c.cfg.handler.Message(c, body)
			}
		}
		if err != nil && !errors.Is(err, ErrConnClosed) {
			c.Close(err)
			return
		}
	}
}

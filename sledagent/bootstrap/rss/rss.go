// Package rss is the rack-setup service's client of the bootstrap
// network: with the rack-setup identity (rackpki.RSS) it connects to every
// initial sled's bootstrap agent, asks one of them to coordinate epoch 1
// over all of them (or to set up LRTQ), commits epoch 1 on each member
// and can ask each to start its sled agent. That is all the rack-setup
// identity may do; the sleds refuse anything else from it. It then hands
// the rack to Nexus (HandOff), the one thing Nexus's internal API lets
// that identity do.
package rss

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/sledagent/bootstrap/bootnet"
	"github.com/rackplane/rackplane/trustquorum"
)

// Sled is a sled the client is connected to.
type Sled struct {
	Addr string
	ID   trustquorum.BaseboardID
}

// Client holds one bootstrap connection per sled.
type Client struct {
	opts  Options
	mu    sync.Mutex
	conns map[trustquorum.BaseboardID]*bootnet.Conn
	addrs map[trustquorum.BaseboardID]string
}

// Options configure a Client.
type Options struct {
	// Bundle is the rack-setup service's certificate.
	Bundle *rackpki.Bundle
	// PollInterval is how often SetupRack polls the coordinator (100 ms).
	PollInterval time.Duration
	Log          zerolog.Logger
	// Rand draws the jitter of redials to sleds not up yet (nil: seeded
	// from the operating system).
	Rand rand.Source
}

// Dial connects to the bootstrap agents at addrs, retrying each until ctx
// is done (sleds may still be starting).
func Dial(ctx context.Context, addrs []string, o Options) (*Client, error) {
	if o.Bundle == nil || o.Bundle.Identity.Kind != rackpki.KindRSS {
		return nil, errors.New("rss: the rack-setup service's certificate is required")
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 100 * time.Millisecond
	}
	c := &Client{opts: o, conns: map[trustquorum.BaseboardID]*bootnet.Conn{}, addrs: map[trustquorum.BaseboardID]string{}}
	for _, addr := range addrs {
		conn, err := dialRetry(ctx, addr, o)
		if err != nil {
			c.Close()
			return nil, err
		}
		id := trustquorum.BaseboardID{Part: conn.Peer().Part, Serial: conn.Peer().Serial}
		if _, dup := c.conns[id]; dup {
			conn.Close(bootnet.ErrShutdown)
			c.Close()
			return nil, fmt.Errorf("rss: %s and %s are the same sled %s", c.addrs[id], addr, id)
		}
		c.conns[id], c.addrs[id] = conn, addr
	}
	return c, nil
}

// dialRetry paces its redials of a sled that is not up yet: 50-100 ms at
// first, doubling to 1-2 s, so a sled that stays down is not dialled ten
// times a second for as long as the setup waits.
var dialRetryPolicy = backoff.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.5}

func dialRetry(ctx context.Context, addr string, o Options) (*bootnet.Conn, error) {
	retry := backoff.New(dialRetryPolicy, backoff.NewRand(o.Rand))
	for {
		conn, err := bootnet.Dial(ctx, addr, bootnet.DialOptions{Bundle: o.Bundle, Log: o.Log})
		if err == nil {
			return conn, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("rss: %s: %w (last attempt: %w)", addr, ctx.Err(), err)
		case <-time.After(retry.NextBackOff()):
		}
	}
}

// Close closes every connection.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close(bootnet.ErrShutdown)
	}
}

// Sleds lists the sleds connected, by baseboard.
func (c *Client) Sleds() []Sled {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Sled, 0, len(c.conns))
	for id, addr := range c.addrs {
		out = append(out, Sled{Addr: addr, ID: id})
	}
	slices.SortFunc(out, func(a, b Sled) int { return a.ID.Compare(b.ID) })
	return out
}

// ErrUnknownSled: the client has no connection to that sled.
var ErrUnknownSled = errors.New("rss: not connected to that sled")

func (c *Client) call(ctx context.Context, id trustquorum.BaseboardID, op string, req, resp any) error {
	c.mu.Lock()
	conn, ok := c.conns[id]
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownSled, id)
	}
	if err := conn.Call(ctx, op, req, resp); err != nil {
		// A sled's refusal is a *bootnet.RemoteError (errors.As).
		return fmt.Errorf("rss: %s %s: %w", op, id, err)
	}
	return nil
}

// Status fetches a sled's bootstrap status.
func (c *Client) Status(ctx context.Context, id trustquorum.BaseboardID) (bootstrap.Status, error) {
	var st bootstrap.Status
	err := c.call(ctx, id, bootstrap.OpStatus, struct{}{}, &st)
	return st, err
}

// Initialize asks the sled id to coordinate epoch 1 (or set up LRTQ).
func (c *Client) Initialize(ctx context.Context, id trustquorum.BaseboardID, req bootstrap.InitializeRequest) (bootstrap.Status, error) {
	var st bootstrap.Status
	err := c.call(ctx, id, bootstrap.OpInitialize, req, &st)
	return st, err
}

// Commit commits epoch 1 on the sled id.
func (c *Client) Commit(ctx context.Context, id trustquorum.BaseboardID, rack trustquorum.RackID) (trustquorum.CommitStatus, error) {
	var resp bootstrap.CommitResponse
	if err := c.call(ctx, id, bootstrap.OpCommit, bootstrap.CommitRequest{RackID: rack, Epoch: 1}, &resp); err != nil {
		return 0, err
	}
	return bootstrap.ParseCommitStatus(resp.Status)
}

// StartSledAgent asks the sled id to start its sled agent; it reports
// whether it started it now.
func (c *Client) StartSledAgent(ctx context.Context, id trustquorum.BaseboardID) (bool, error) {
	var resp bootstrap.StartSledAgentResponse
	err := c.call(ctx, id, bootstrap.OpStartSledAgent, struct{}{}, &resp)
	return resp.Started, err
}

// SetupOptions configure SetupRack.
type SetupOptions struct {
	RackID trustquorum.RackID
	// Lrtq sets the rack up with LRTQ instead of trust-quorum epoch 1.
	Lrtq bool
	// Coordinator is the sled asked to initialise (default: the first by
	// baseboard).
	Coordinator *trustquorum.BaseboardID
}

// SetupResult is what rack setup produced.
type SetupResult struct {
	Coordinator trustquorum.BaseboardID
	Members     []trustquorum.BaseboardID
	// Config is epoch 1's configuration (nil for LRTQ).
	Config *trustquorum.Configuration
	// LatestCommitted is the coordinator's latest committed epoch when
	// SetUpAndHandOff checked it (0 after SetupRack alone).
	LatestCommitted trustquorum.Epoch
}

// Handoff is what the rack-setup service hands Nexus once the rack is set
// up (Nexus's internal API, PUT /v1/rack-setup).
func (r *SetupResult) Handoff(rack trustquorum.RackID) api.RackSetupHandoff {
	h := api.RackSetupHandoff{RackID: uuid.UUID(rack), Lrtq: r.Config == nil, Coordinator: api.BaseboardFrom(r.Coordinator),
		Configuration: api.TQConfigurationFrom(r.Config)}
	for _, m := range r.Members {
		h.Members = append(h.Members, api.BaseboardFrom(m))
	}
	return h
}

// HandOff hands the rack set up (res) to the Nexus whose internal API is
// at nexusURL, presenting the rack-setup service's certificate. It
// reports whether Nexus recorded it now; the same handoff again is a
// no-op, a different one an error.
func (c *Client) HandOff(ctx context.Context, nexusURL string, rack trustquorum.RackID, res *SetupResult) (api.TrustQuorumConfig, bool, error) {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: c.opts.Bundle.ClientTLS(rackpki.OnlyKinds(rackpki.KindNexus), nil)}}
	defer hc.CloseIdleConnections()
	nx, err := client.NewNexusInternal(nexusURL, hc)
	if err != nil {
		return api.TrustQuorumConfig{}, false, err
	}
	cfg, created, err := nx.RackSetupHandoff(ctx, res.Handoff(rack))
	if err != nil {
		return cfg, false, fmt.Errorf("rss: hand the rack to Nexus: %w", err)
	}
	return cfg, created, nil
}

// SetupRack sets the rack up over every connected sled: epoch 1
// coordinated by one of them and committed on all once all have prepared
// (rack setup wants every initial sled in), or LRTQ packages delivered to
// all.
func (c *Client) SetupRack(ctx context.Context, o SetupOptions) (*SetupResult, error) {
	sleds := c.Sleds()
	res := &SetupResult{}
	for _, s := range sleds {
		res.Members = append(res.Members, s.ID)
	}
	if len(res.Members) < trustquorum.MinMembers {
		return nil, fmt.Errorf("rss: %d sleds; the trust quorum needs at least %d", len(res.Members), trustquorum.MinMembers)
	}
	res.Coordinator = res.Members[0]
	if o.Coordinator != nil {
		res.Coordinator = *o.Coordinator
	}
	st, err := c.Status(ctx, res.Coordinator)
	if err != nil {
		return nil, err
	}
	done := (o.Lrtq && st.HasLrtq) || (!o.Lrtq && st.LatestCommittedEpoch >= 1)
	if !done {
		if _, err := c.Initialize(ctx, res.Coordinator, bootstrap.InitializeRequest{RackID: o.RackID, Members: res.Members, Lrtq: o.Lrtq}); err != nil {
			return nil, err
		}
	}
	for {
		st, err := c.Status(ctx, res.Coordinator)
		if err != nil {
			return nil, err
		}
		if o.Lrtq && st.LrtqInitDone {
			return res, nil
		}
		if co := st.Coordination; !o.Lrtq && co.State == trustquorum.Preparing && co.Epoch == 1 && len(co.Acked) == len(res.Members) {
			res.Config = co.Config
			break
		}
		if !o.Lrtq && st.LatestCommittedEpoch >= 1 {
			// Set up already (an earlier run): commit wherever the
			// earlier run did not get to.
			res.Config = st.LatestConfig
			break
		}
		if o.Lrtq && done {
			return res, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("rss: waiting for every sled to prepare epoch 1: %w (coordinator: %s, %d of %d acked)",
				ctx.Err(), st.Coordination.State, len(st.Coordination.Acked), len(res.Members))
		case <-time.After(c.opts.PollInterval):
		}
	}
	for _, id := range res.Members {
		cs, err := c.Commit(ctx, id, o.RackID)
		if err != nil {
			return nil, err
		}
		// Stale: the rack has moved past epoch 1 since it was set up.
		if cs != trustquorum.CommitCommitted && cs != trustquorum.CommitStale {
			return nil, fmt.Errorf("rss: commit of epoch 1 on %s: %s", id, cs)
		}
	}
	return res, nil
}

// Handed says what SetUpAndHandOff did with Nexus.
type Handed int

const (
	// HandedNow: Nexus recorded the rack now.
	HandedNow Handed = iota
	// HandedAlready: Nexus had this rack recorded; nothing changed.
	HandedAlready
	// PastEpochOne: the sleds have committed epochs after 1, so the rack
	// was handed over long ago (or to another database) and there is no
	// epoch 1 left to hand over; Nexus was not asked.
	PastEpochOne
)

// SetUpAndHandOff is rack setup from start to end, as the rack-setup
// service runs it: SetupRack, then, unless the rack has moved past epoch
// 1, the handoff to the Nexus at nexusURL. Run again after an
// interruption it finishes what is left.
func (c *Client) SetUpAndHandOff(ctx context.Context, o SetupOptions, nexusURL string) (*SetupResult, Handed, error) {
	res, err := c.SetupRack(ctx, o)
	if err != nil {
		return nil, 0, err
	}
	st, err := c.Status(ctx, res.Coordinator)
	if err != nil {
		return res, 0, err
	}
	res.LatestCommitted = st.LatestCommittedEpoch
	if st.LatestCommittedEpoch > 1 {
		return res, PastEpochOne, nil
	}
	_, created, err := c.HandOff(ctx, nexusURL, o.RackID, res)
	if err != nil {
		return res, 0, err
	}
	if created {
		return res, HandedNow, nil
	}
	return res, HandedAlready, nil
}

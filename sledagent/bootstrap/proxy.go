package bootstrap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent/bootstrap/bootnet"
	"github.com/rackplane/rackplane/trustquorum"
)

// Proxying. Nexus reaches only sleds that run a sled agent; for one that
// runs only its bootstrap agent it asks a member to forward the request
// over the member's bootstrap connection to it. The request is bound to
// that connection: if it closes, the request fails at once. The
// destination executes the request itself and never forwards it again.

// ProxyCommit asks dest to commit epoch.
func (a *Agent) ProxyCommit(ctx context.Context, dest trustquorum.BaseboardID, rack trustquorum.RackID, epoch trustquorum.Epoch) (trustquorum.CommitStatus, error) {
	if dest == a.id {
		return a.Commit(ctx, rack, epoch)
	}
	var resp CommitResponse
	if err := a.proxy(ctx, dest, OpCommit, CommitRequest{RackID: rack, Epoch: epoch}, &resp); err != nil {
		return 0, err
	}
	return ParseCommitStatus(resp.Status)
}

// ProxyPrepareAndCommit asks dest to commit cfg, rebuilding its share.
func (a *Agent) ProxyPrepareAndCommit(ctx context.Context, dest trustquorum.BaseboardID, cfg *trustquorum.Configuration) (trustquorum.CommitStatus, error) {
	if dest == a.id {
		return a.PrepareAndCommit(ctx, cfg)
	}
	var resp CommitResponse
	if err := a.proxy(ctx, dest, OpPrepareAndCommit, PrepareAndCommitRequest{Config: cfg}, &resp); err != nil {
		return 0, err
	}
	return ParseCommitStatus(resp.Status)
}

// ProxyStatus fetches dest's status.
func (a *Agent) ProxyStatus(ctx context.Context, dest trustquorum.BaseboardID) (Status, error) {
	if dest == a.id {
		return a.Status(ctx)
	}
	var resp Status
	err := a.proxy(ctx, dest, OpStatus, struct{}{}, &resp)
	return resp, err
}

// ProxyStartSledAgent asks dest to start its sled agent; it reports
// whether dest started it now (false: it was running).
func (a *Agent) ProxyStartSledAgent(ctx context.Context, dest trustquorum.BaseboardID) (bool, error) {
	if dest == a.id {
		return a.StartSledAgent(ctx)
	}
	var resp StartSledAgentResponse
	err := a.proxy(ctx, dest, OpStartSledAgent, struct{}{}, &resp)
	return resp.Started, err
}

// StartSledAgent starts this sled's sled agent if it is not running.
func (a *Agent) StartSledAgent(ctx context.Context) (bool, error) {
	if a.cfg.StartSledAgent == nil {
		return false, ErrNoSledAgent
	}
	return a.cfg.StartSledAgent(ctx)
}

func (a *Agent) proxy(ctx context.Context, dest trustquorum.BaseboardID, op string, req, resp any) (err error) {
	defer func() { a.metrics.proxied.WithLabelValues(op, outcome(err)).Inc() }()
	c, ok := a.net.Peer(rackpki.Sled(dest.Part, dest.Serial))
	if !ok {
		return fmt.Errorf("%w: %s", ErrDestinationNotConnected, dest)
	}
	a.proxyMu.Lock()
	if len(a.proxies) >= a.cfg.MaxProxied {
		a.proxyMu.Unlock()
		return ErrBusy
	}
	a.proxySeq++
	seq := a.proxySeq
	a.proxies[seq] = ProxyCall{Op: op, Destination: dest, ConnID: c.ID(), Started: a.cfg.Clock.Now().UTC()}
	a.proxyMu.Unlock()
	defer func() {
		a.proxyMu.Lock()
		delete(a.proxies, seq)
		a.proxyMu.Unlock()
	}()
	err = c.Call(ctx, op, req, resp)
	var re *bootnet.RemoteError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &re):
		return fromRemote(re)
	case errors.Is(err, bootnet.ErrBusy):
		return fmt.Errorf("%w: too many requests in flight to %s", ErrBusy, dest)
	case errors.Is(err, bootnet.ErrConnClosed):
		return fmt.Errorf("%w (%s): %w", ErrProxyConnectionLost, dest, err)
	}
	return fmt.Errorf("proxy %s to %s: %w", op, dest, err)
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrBusy):
		return "busy"
	case errors.Is(err, ErrDestinationNotConnected):
		return "not_connected"
	case errors.Is(err, ErrProxyConnectionLost):
		return "connection_lost"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "timeout"
	case errors.Is(err, ErrForbidden):
		return "forbidden"
	}
	return "refused"
}

func (a *Agent) proxyCalls() []ProxyCall {
	a.proxyMu.Lock()
	defer a.proxyMu.Unlock()
	out := make([]ProxyCall, 0, len(a.proxies))
	for _, p := range a.proxies {
		out = append(out, p)
	}
	slices.SortFunc(out, func(x, y ProxyCall) int { return x.Started.Compare(y.Started) })
	return out
}

// allowed lists what each kind of caller may ask over the bootstrap
// network. The rack-setup service is not a peer: it may only set the rack
// up. Sleds may only forward what Nexus asked them to.
var allowed = map[rackpki.Kind][]string{
	rackpki.KindSled: {OpCommit, OpPrepareAndCommit, OpStatus, OpStartSledAgent},
	rackpki.KindRSS:  {OpInitialize, OpCommit, OpStatus, OpStartSledAgent},
}

// serveRequest executes a request from another party, on its own
// goroutine; when too many run already it answers busy at once.
func (a *Agent) serveRequest(c *bootnet.Conn, r *bootnet.Request) {
	select {
	case a.serving <- struct{}{}:
	default:
		a.metrics.served.WithLabelValues(r.Op, string(c.Peer().Kind), "busy").Inc()
		_ = c.Reply(r.ID, nil, toRemote(ErrBusy))
		return
	}
	go func() {
		defer func() { <-a.serving }()
		parent, err := a.running()
		if err != nil {
			_ = c.Reply(r.ID, nil, toRemote(err))
			return
		}
		timeout := r.Timeout()
		if timeout <= 0 {
			timeout = DefaultRequestTimeout
		}
		ctx, cancel := context.WithTimeout(parent, timeout)
		defer cancel()
		// The caller's connection going away ends the work too.
		go func() {
			select {
			case <-c.Done():
				cancel()
			case <-ctx.Done():
			}
		}()
		v, err := a.execute(ctx, c.Peer(), r)
		a.metrics.served.WithLabelValues(r.Op, string(c.Peer().Kind), outcome(err)).Inc()
		if err != nil {
			a.log.Info().Err(err).Str("op", r.Op).Str("caller", c.Peer().String()).Msg("bootstrap request refused")
		}
		_ = c.Reply(r.ID, v, toRemote(err))
	}()
}

func (a *Agent) execute(ctx context.Context, caller rackpki.Identity, r *bootnet.Request) (any, error) {
	if !slices.Contains(allowed[caller.Kind], r.Op) {
		return nil, fmt.Errorf("%w: %s may not ask for %q over the bootstrap network", ErrForbidden, caller, r.Op)
	}
	decode := func(v any) error {
		if err := json.Unmarshal(r.Body, v); err != nil {
			return fmt.Errorf("%w: %s body: %v", ErrInvalidRequest, r.Op, err)
		}
		return nil
	}
	switch r.Op {
	case OpCommit:
		var req CommitRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		if caller.Kind == rackpki.KindRSS && req.Epoch != 1 {
			return nil, fmt.Errorf("%w: rack setup commits only epoch 1, not %d", ErrForbidden, req.Epoch)
		}
		cs, err := a.Commit(ctx, req.RackID, req.Epoch)
		if err != nil {
			return nil, err
		}
		return CommitResponse{Status: cs.String()}, nil
	case OpPrepareAndCommit:
		var req PrepareAndCommitRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		cs, err := a.PrepareAndCommit(ctx, req.Config)
		if err != nil {
			return nil, err
		}
		return CommitResponse{Status: cs.String()}, nil
	case OpStatus:
		return a.Status(ctx)
	case OpStartSledAgent:
		started, err := a.StartSledAgent(ctx)
		if err != nil {
			return nil, err
		}
		return StartSledAgentResponse{Started: started}, nil
	case OpInitialize:
		var req InitializeRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		return a.initialize(ctx, req)
	}
	return nil, fmt.Errorf("%w: unknown op %q", ErrInvalidRequest, r.Op)
}

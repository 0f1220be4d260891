// Package sled assembles one sled process: the M.2 watcher, the bootstrap
// agent that runs from start (the trust quorum, on the bootstrap network),
// and the sled agent (the sled API Nexus drives), started at once or only
// when start-sled-agent arrives over the bootstrap network. The watcher
// and the metrics registry are the process's, shared by both agents.
package sled

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/sledagent/m2"
)

// Config configures a sled process.
type Config struct {
	// Agent configures the sled agent. Its M2, Metrics, TrustQuorum and
	// TLS fields are filled in here; Baseboard, when set, must agree with
	// the certificate.
	Agent sledagent.Config
	// Identity is the sled's certificate and the rack CA (required): the
	// bootstrap network, the sled API and the depot all use it.
	Identity *rackpki.Bundle
	// Bootstrap configures the bootstrap agent: ListenAddr, AdvertiseAddr,
	// Peers and tuning. Bundle, M2, Registerer, StartSledAgent, Clock and
	// Log are filled in.
	Bootstrap bootstrap.Config
	// BootstrapOnly starts only the bootstrap agent; the sled agent starts
	// when start-sled-agent arrives over the bootstrap network.
	BootstrapOnly bool
}

// Sled is a running sled process.
type Sled struct {
	cfg       Config
	log       zerolog.Logger
	reg       *prometheus.Registry
	watcher   *m2.Watcher
	agent     *bootstrap.Agent
	baseboard api.Baseboard

	mu      sync.Mutex
	server  *sledagent.Server
	runCtx  context.Context
	pending bool // a sled agent made before Run, to start with it
	errs    chan error
	wg      sync.WaitGroup
}

// ErrBaseboardMismatch: the configured baseboard is not the one the
// certificate names.
var ErrBaseboardMismatch = errors.New("sled: the baseboard given disagrees with the sled's certificate")

// New sets the sled up: M.2 watcher, bootstrap agent (listener open,
// ledger loaded) and, unless BootstrapOnly, the sled agent (listeners
// open). Nothing runs until Run.
func New(cfg Config, log zerolog.Logger) (*Sled, error) {
	s := &Sled{cfg: cfg, log: log, errs: make(chan error, 4)}
	if cfg.Identity == nil {
		return nil, errors.New("sled: the sled's certificate is required")
	}
	id := cfg.Identity.Identity
	if id.Kind != rackpki.KindSled {
		return nil, fmt.Errorf("sled: the certificate names %s, not a sled", id)
	}
	b := &s.cfg.Agent.Baseboard
	if (b.Part != "" && b.Part != id.Part) || (b.Serial != "" && b.Serial != id.Serial) {
		return nil, fmt.Errorf("%w: given %s, the certificate names %s", ErrBaseboardMismatch, b, id)
	}
	b.Part, b.Serial = id.Part, id.Serial
	s.baseboard = *b

	s.reg = prometheus.NewRegistry()
	ac := &s.cfg.Agent
	if ac.Clock == nil {
		ac.Clock = clock.Real()
	}
	if ac.M2PollInterval <= 0 {
		ac.M2PollInterval = sledagent.DefaultM2PollInterval
	}
	if ac.CreateM2Dirs {
		for _, d := range ac.M2Dirs {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, fmt.Errorf("sled: create M.2 dir: %w", err)
			}
		}
	}
	var err error
	// The bootstrap agent's ledger directory is the marker: an M.2 whose
	// directory was replaced by an empty one is a departure and an arrival.
	s.watcher, err = m2.NewWatcher(ac.M2Dirs, log, m2.Options{Budgets: ac.M2Budgets, Registerer: s.reg, Marker: bootstrap.LedgerDir})
	if err != nil {
		return nil, fmt.Errorf("sled: %w", err)
	}
	s.watcher.Poll()
	bc := cfg.Bootstrap
	bc.Bundle, bc.M2, bc.Registerer, bc.StartSledAgent, bc.Log = cfg.Identity, s.watcher, s.reg, s.startSledAgent, log
	if bc.Clock == nil {
		bc.Clock = ac.Clock
	}
	if s.agent, err = bootstrap.New(bc); err != nil {
		return nil, err
	}
	ac.M2, ac.Metrics, ac.TrustQuorum, ac.TLS = s.watcher, s.reg, s.agent, cfg.Identity
	if !cfg.BootstrapOnly {
		if s.server, err = sledagent.New(*ac, log); err != nil {
			s.agent.Network().Close()
			return nil, err
		}
		s.pending = true
	}
	return s, nil
}

// Agent is the bootstrap agent (nil without a certificate).
func (s *Sled) Agent() *bootstrap.Agent { return s.agent }

// Server is the sled agent, nil until it was started.
func (s *Sled) Server() *sledagent.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.server
}

// Baseboard is the sled's baseboard.
func (s *Sled) Baseboard() api.Baseboard {
	if s.agent == nil {
		return s.server.Baseboard()
	}
	return s.baseboard
}

// BootstrapAddr is the bootstrap address other sleds dial ("" without a
// bootstrap agent).
func (s *Sled) BootstrapAddr() string {
	if s.agent == nil {
		return ""
	}
	return s.agent.Addr()
}

// Registry is the sled's metrics registry.
func (s *Sled) Registry() *prometheus.Registry { return s.reg }

// Watcher is the sled's M.2 watcher (nil without a bootstrap agent).
func (s *Sled) Watcher() *m2.Watcher { return s.watcher }

// Run runs everything until ctx is done or a part fails.
func (s *Sled) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	s.runCtx = ctx
	if s.pending {
		s.goRun("sled agent", s.server.Run)
		s.pending = false
	}
	s.mu.Unlock()
	if s.agent != nil {
		s.goRun("M.2 watcher", func(ctx context.Context) error {
			s.watcher.Run(ctx, s.cfg.Agent.Clock, s.cfg.Agent.M2PollInterval)
			return nil
		})
		s.goRun("bootstrap agent", s.agent.Run)
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-s.errs:
	}
	cancel()
	s.wg.Wait()
	return err
}

// goRun runs fn under the Run context; mu is held.
func (s *Sled) goRun(name string, fn func(context.Context) error) {
	ctx := s.runCtx
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := fn(ctx); err != nil && ctx.Err() == nil {
			select {
			case s.errs <- fmt.Errorf("%s: %w", name, err):
			default:
			}
		}
	}()
}

// startSledAgent is the bootstrap agent's start-sled-agent hook.
func (s *Sled) startSledAgent(context.Context) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.server != nil {
		return false, nil
	}
	if s.runCtx == nil || s.runCtx.Err() != nil {
		return false, errors.New("sled: not running")
	}
	srv, err := sledagent.New(s.cfg.Agent, s.log)
	if err != nil {
		return false, fmt.Errorf("sled: start the sled agent: %w", err)
	}
	s.server = srv
	s.log.Info().Str("api", srv.URL()).Msg("sled agent started on request over the bootstrap network")
	s.goRun("sled agent", srv.Run)
	return true, nil
}

// Package sled assembles one sled process: the M.2 watcher, the bootstrap
// agent that runs from start (the trust quorum, on the bootstrap network),
// the data disks (package storage) and the sled agent (the sled API Nexus
// drives). The watcher and the metrics registry are the process's, shared
// by both agents.
//
// A sled with data disks starts its sled agent only once they are
// unlocked: it must be a committed member, and the bootstrap agent must
// have rebuilt the rack secret from K members' shares. Until then it stays
// locked, says so in its trust-quorum status, and keeps trying with
// back-off; once unlocked it re-keys the disks after every commit. A sled
// that was never unlocked and runs BootstrapOnly (a spare) waits for
// start-sled-agent over the bootstrap network before it tries. Without
// data disks the sled agent starts at once (or on start-sled-agent).
package sled

import (
	"bytes"
	"cmp"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/sledagent/m2"
	"github.com/rackplane/rackplane/sledagent/storage"
	"github.com/rackplane/rackplane/trustquorum"
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
	// when start-sled-agent arrives over the bootstrap network (or, with
	// data disks, at boot once they were unlocked before).
	BootstrapOnly bool
	// Storage configures the data disks; none (no Dirs): the sled agent
	// needs no unlock.
	Storage Storage
}

// Storage configures a sled's data disks.
type Storage struct {
	// Dirs are the data disks, one directory each.
	Dirs []string
	// Rand supplies data keys and nonces (nil: crypto/rand).
	Rand io.Reader
	// RetryMin and RetryMax pace unlock attempts while locked
	// (DefaultUnlockRetryMin, DefaultUnlockRetryMax); RekeyCheck is how
	// often an unlocked sled checks for a commit it was not told about
	// (DefaultRekeyCheck).
	RetryMin, RetryMax, RekeyCheck time.Duration
	// Jitter draws the retries' jitter (nil: seeded from the system).
	Jitter rand.Source
	// AfterNewWrap is the storage's crash-injection hook (tests).
	AfterNewWrap func(epoch uint64) error
}

// Defaults for Storage.
const (
	DefaultUnlockRetryMin = 200 * time.Millisecond
	DefaultUnlockRetryMax = 10 * time.Second
	DefaultRekeyCheck     = 30 * time.Second
)

// Sled is a running sled process.
type Sled struct {
	cfg       Config
	log       zerolog.Logger
	reg       *prometheus.Registry
	watcher   *m2.Watcher
	agent     *bootstrap.Agent
	baseboard api.Baseboard

	store *storage.Store // nil: no data disks

	mu      sync.Mutex
	server  *sledagent.Server
	runCtx  context.Context
	pending bool // a sled agent made before Run, to start with it
	// requested: start-sled-agent arrived; startedCh is closed when the
	// sled agent runs, wake nudges the unlock loop.
	requested bool
	startedCh chan struct{}
	wake      chan struct{}
	errs      chan error
	wg        sync.WaitGroup
}

// ErrBaseboardMismatch: the configured baseboard is not the one the
// certificate names.
var ErrBaseboardMismatch = errors.New("sled: the baseboard given disagrees with the sled's certificate")

// New sets the sled up: M.2 watcher, bootstrap agent (listener open,
// ledger loaded) and, unless BootstrapOnly, the sled agent (listeners
// open). Nothing runs until Run.
func New(cfg Config, log zerolog.Logger) (*Sled, error) {
	s := &Sled{cfg: cfg, log: log, errs: make(chan error, 4), startedCh: make(chan struct{}), wake: make(chan struct{}, 1)}
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
	if sc := &s.cfg.Storage; len(sc.Dirs) > 0 {
		if sc.Rand == nil {
			sc.Rand = crand.Reader
		}
		if s.store, err = storage.Open(storage.Config{Dirs: sc.Dirs, Rand: sc.Rand, Log: log, AfterNewWrap: sc.AfterNewWrap}); err != nil {
			s.agent.Network().Close()
			return nil, fmt.Errorf("sled: %w", err)
		}
		s.agent.SetStorageLock(bootstrap.StorageLock{State: storage.Locked, Reason: "not unlocked yet"})
	}
	if !cfg.BootstrapOnly && s.store == nil {
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
		close(s.startedCh)
		s.pending = false
	}
	if s.store != nil {
		s.goRun("storage unlock", s.unlockLoop)
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

// startSledAgent is the bootstrap agent's start-sled-agent hook. With
// data disks it asks the unlock loop to unlock and start the sled agent,
// and waits (bounded by ctx) until it runs.
func (s *Sled) startSledAgent(ctx context.Context) (bool, error) {
	if s.store == nil {
		return s.startServer(uuid.Nil, "on request over the bootstrap network")
	}
	s.mu.Lock()
	if s.server != nil {
		s.mu.Unlock()
		return false, nil
	}
	if s.runCtx == nil || s.runCtx.Err() != nil {
		s.mu.Unlock()
		return false, errors.New("sled: not running")
	}
	s.requested = true
	s.mu.Unlock()
	s.nudge()
	select {
	case <-s.startedCh:
		return true, nil
	case <-ctx.Done():
		st := s.agent.StorageLockState()
		return false, fmt.Errorf("sled: the sled agent waits for the data disks to unlock (%s: %s): %w", st.State, st.Reason, ctx.Err())
	}
}

// startServer starts the sled agent (id: the one the data disks keep, or
// zero for the data dir's). It reports whether it started it now.
func (s *Sled) startServer(id uuid.UUID, why string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.server != nil {
		return false, nil
	}
	if s.runCtx == nil || s.runCtx.Err() != nil {
		return false, errors.New("sled: not running")
	}
	cfg := s.cfg.Agent
	cfg.ID = id
	srv, err := sledagent.New(cfg, s.log)
	if err != nil {
		return false, fmt.Errorf("sled: start the sled agent: %w", err)
	}
	s.server = srv
	s.log.Info().Str("api", srv.URL()).Msg("sled agent started " + why)
	s.goRun("sled agent", srv.Run)
	close(s.startedCh)
	return true, nil
}

func (s *Sled) nudge() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Storage is the sled's data disks (nil without).
func (s *Sled) Storage() *storage.Store { return s.store }

// unlockLoop unlocks the data disks and starts the sled agent, then
// re-keys after every commit, until ctx is done or the sled is expunged.
func (s *Sled) unlockLoop(ctx context.Context) error {
	sc := s.cfg.Storage
	retry := backoff.New(backoff.Policy{Initial: cmp.Or(sc.RetryMin, DefaultUnlockRetryMin),
		Max: cmp.Or(sc.RetryMax, DefaultUnlockRetryMax), Jitter: 0.5}, backoff.NewRand(sc.Jitter))
	clk := s.cfg.Agent.Clock
	var attempts uint64
	for {
		wait := cmp.Or(sc.RekeyCheck, DefaultRekeyCheck)
		s.mu.Lock()
		want := s.requested || !s.cfg.BootstrapOnly || s.store.Formatted()
		s.mu.Unlock()
		unlocked, _ := s.store.Unlocked()
		switch {
		case !want:
			// A spare: nothing to unlock until it is asked to start.
			s.agent.SetStorageLock(bootstrap.StorageLock{State: storage.Locked,
				Reason: "a spare: waiting to be added to the trust quorum and asked to start its sled agent"})
			wait = time.Hour
		default:
			attempts++
			err := s.store.Unlock(ctx, s.agent, s.newState)
			if ctx.Err() != nil {
				return nil
			}
			switch {
			case err == nil:
				_, epoch := s.store.Unlocked()
				if !unlocked {
					s.log.Info().Uint64("epoch", epoch).Uint64("attempts", attempts).Msg("data disks unlocked")
				}
				attempts = 0
				retry.Reset()
				s.agent.SetStorageLock(bootstrap.StorageLock{State: storage.Unlocked, Epoch: trustquorum.Epoch(epoch)})
				st, _ := s.store.State()
				s.dropClearID(st.SledID)
				if _, err := s.startServer(st.SledID, "once the data disks were unlocked"); err != nil {
					return err
				}
			case errors.Is(err, trustquorum.ErrExpunged):
				s.log.Warn().Err(err).Msg("this sled was removed from the trust quorum: its data disks stay locked for good")
				s.agent.SetStorageLock(bootstrap.StorageLock{State: storage.Expunged, Reason: err.Error(), Attempts: attempts})
				return nil
			case unlocked:
				// Unlocked, but the re-key to a new epoch is not done
				// (its shares are still coming, or it failed): it is
				// tried again with back-off.
				lvl := s.log.Debug()
				if !errors.Is(err, storage.ErrPending) {
					lvl = s.log.Warn()
				}
				lvl.Err(err).Msg("the data disks are not re-keyed to the latest epoch yet; retrying")
				wait = retry.NextBackOff()
			default:
				lvl := s.log.Debug()
				if attempts == 1 || attempts%20 == 0 {
					lvl = s.log.Info()
				}
				lvl.Err(err).Uint64("attempts", attempts).Msg("data disks locked; retrying")
				s.agent.SetStorageLock(bootstrap.StorageLock{State: storage.Locked, Reason: lockReason(err), Attempts: attempts})
				wait = retry.NextBackOff()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-s.agent.Commits():
		case <-clk.After(wait):
		}
	}
}

// lockReason says why the disks are locked, in an operator's words.
func lockReason(err error) string {
	switch {
	case errors.Is(err, storage.ErrPending):
		return "gathering the rack secret's shares from the members"
	case errors.Is(err, storage.ErrNoEpoch):
		return "not a committed member of the trust quorum yet"
	case errors.Is(err, storage.ErrWrongKey):
		return "the data keys do not open with the rack's key: " + err.Error()
	}
	return err.Error()
}

// dropClearID removes the data dir's copy of the sled id once the data
// disks keep it sealed.
func (s *Sled) dropClearID(id uuid.UUID) {
	p := filepath.Join(s.cfg.Agent.DataDir, sledagent.IDFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return
	}
	if got, err := uuid.ParseBytes(bytes.TrimSpace(b)); err == nil && got == id {
		if err := os.Remove(p); err != nil {
			s.log.Warn().Err(err).Msg("could not remove the data dir's copy of the sled id")
		}
	}
}

// newState is a fresh sled's state: its sled id, adopting the one an
// earlier sled agent kept in its data dir (which is then removed, so it
// lives only sealed).
func (s *Sled) newState() storage.SledState {
	p := filepath.Join(s.cfg.Agent.DataDir, sledagent.IDFile)
	if b, err := os.ReadFile(p); err == nil {
		if id, err := uuid.ParseBytes(bytes.TrimSpace(b)); err == nil {
			return storage.SledState{SledID: id}
		}
	}
	id, err := uuid.NewRandomFromReader(s.cfg.Storage.Rand)
	if err != nil {
		id = uuid.New()
	}
	return storage.SledState{SledID: id}
}

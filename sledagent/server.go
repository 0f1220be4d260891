// Package sledagent is the sled agent: the part of each sled process that
// Nexus drives. It serves the sled API (the artifact store, and the
// trust-quorum routes it forwards to the sled's bootstrap agent), the repo
// depot other sleds copy artifacts from, and /metrics; it watches the M.2
// devices (or shares the process's watcher), and registers the sled and
// its inventory with Nexus on start, on change and periodically.
package sledagent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/fsutil"
	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/reqid"
	"github.com/rackplane/rackplane/sledagent/artifacts"
	"github.com/rackplane/rackplane/sledagent/m2"
)

// Config is everything a sled agent needs to start.
type Config struct {
	// DataDir holds the sled's identity and other local state.
	DataDir string
	// ID is the sled's id when its owner keeps it (a sled process keeps
	// it sealed on its data disks); zero: it is kept in DataDir/sled-id.
	ID uuid.UUID
	// ListenAddr is the sled API's listen address (":12345").
	ListenAddr string
	// RepoDepotAddr is the repo depot's listen address (":12348").
	RepoDepotAddr string
	// AdvertiseHost is the host Nexus and other sleds use to reach this
	// sled. Empty means the listen host, or this machine's hostname when
	// listening on all interfaces.
	AdvertiseHost string
	// NexusURL is the base URL of Nexus's internal API.
	NexusURL string
	// Baseboard is the sled's hardware identity. An empty serial is
	// derived from the sled id (simulated sleds have no real baseboard).
	Baseboard api.Baseboard
	// RegisterInterval is how often the sled re-registers with Nexus.
	RegisterInterval time.Duration
	// M2Dirs are the directories standing in for the sled's M.2 devices.
	// A device is present while its directory exists.
	M2Dirs []string
	// CreateM2Dirs creates the M.2 directories that are missing at start
	// (dev racks and tests, where nothing else provides them). Without it a
	// missing directory is an absent device, used once it appears.
	CreateM2Dirs bool
	// M2PollInterval is how often the M.2 directories are checked for
	// arrival and departure.
	M2PollInterval time.Duration
	// M2Budgets caps the bytes an M.2 may hold, by directory: simulates
	// small or full devices (tests). Absent means the file system's limit.
	M2Budgets map[string]int64
	// ScrubInterval is the least time between the starts of two scrub
	// passes; the scrub runs at start and then continuously at ScrubRate
	// (negative: only scrubs asked for over the API).
	ScrubInterval time.Duration
	// ScrubRate bounds scrub reads, in bytes per second.
	ScrubRate int64
	// ArtifactReconcileInterval is how often unwanted artifacts are deleted
	// and missing copies filled from a sibling M.2 even without a trigger.
	ArtifactReconcileInterval time.Duration
	// MaxConcurrentCopies bounds copy-from-depot transfers.
	MaxConcurrentCopies int
	// Clock tells time for the M.2 poll, scrub, registration and copy
	// back-off, and the times the sled reports (nil: the real clock).
	Clock clock.Clock
	// Rand draws the jitter of registration and copy retries (nil: seeded
	// from the operating system), so that sleds failing together do not
	// retry together.
	Rand rand.Source
	// ShutdownGrace bounds how long shutdown waits for in-flight requests.
	ShutdownGrace time.Duration

	// M2 is an M.2 watcher the sled process already runs and polls, shared
	// with its bootstrap agent. Nil: the sled agent makes and polls its own
	// from M2Dirs.
	M2 *m2.Watcher
	// Metrics is the sled's registry, shared with the bootstrap agent and
	// the watcher (nil: a new one).
	Metrics *prometheus.Registry
	// TLS is the sled's certificate (naming its baseboard) and the rack CA
	// (required). The sled API and the repo depot serve mutual TLS with
	// it: a client must present a certificate of the rack CA, and what it
	// may do is decided from the identity that certificate names. The
	// sled presents it to Nexus when it registers and to other depots when
	// it copies from them, and accepts only a Nexus (registration) or a
	// sled or Nexus (copy sources) on the other end.
	TLS *rackpki.Bundle
	// TrustQuorum is the bootstrap agent the /trust-quorum/ routes
	// forward to (nil: they answer no_trust_quorum).
	TrustQuorum TrustQuorum
}

// IDFile in DataDir keeps the sled id of a sled agent whose owner does
// not keep it.
const IDFile = "sled-id"

// Defaults for Config fields left empty.
const (
	DefaultListenAddr       = ":12345"
	DefaultRepoDepotAddr    = ":12348"
	DefaultNexusURL         = "https://127.0.0.1:12221"
	DefaultRegisterInterval = 30 * time.Second
	DefaultBaseboardPart    = "rackplane-sim"
	DefaultM2PollInterval   = 2 * time.Second
	DefaultScrubInterval    = artifacts.DefaultScrubInterval
	DefaultScrubRate        = artifacts.DefaultScrubRate
	DefaultReconcile        = time.Minute
	DefaultMaxCopies        = 4
)

func (c *Config) setDefaults() {
	if c.ListenAddr == "" {
		c.ListenAddr = DefaultListenAddr
	}
	if c.RepoDepotAddr == "" {
		c.RepoDepotAddr = DefaultRepoDepotAddr
	}
	if c.NexusURL == "" {
		c.NexusURL = DefaultNexusURL
	}
	if c.RegisterInterval == 0 {
		c.RegisterInterval = DefaultRegisterInterval
	}
	if c.Baseboard.Part == "" {
		c.Baseboard.Part = DefaultBaseboardPart
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.M2PollInterval <= 0 {
		c.M2PollInterval = DefaultM2PollInterval
	}
	if c.ScrubInterval == 0 {
		c.ScrubInterval = DefaultScrubInterval
	}
	if c.ScrubRate <= 0 {
		c.ScrubRate = DefaultScrubRate
	}
	if c.ArtifactReconcileInterval <= 0 {
		c.ArtifactReconcileInterval = DefaultReconcile
	}
	if c.MaxConcurrentCopies <= 0 {
		c.MaxConcurrentCopies = DefaultMaxCopies
	}
	if c.Clock == nil {
		c.Clock = clock.Real()
	}
}

// Server is a running sled agent.
type Server struct {
	cfg   Config
	id    uuid.UUID
	log   zerolog.Logger
	nexus client.NexusInternal

	apiLn   net.Listener
	depotLn net.Listener
	api     chi.Router
	depot   chi.Router

	metrics *prometheus.Registry
	m2      *m2.Watcher
	ownM2   bool // the watcher is ours to poll
	store   *artifacts.Store
	tq      TrustQuorum

	rnd         *backoff.Rand
	registerNow chan struct{}
	regMu       sync.Mutex
	reg         RegistrationStatus
}

// RegistrationStatus is what the sled knows about its last registration.
type RegistrationStatus struct {
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
}

// New loads (or creates) the sled's identity and opens its listeners.
func New(cfg Config, log zerolog.Logger) (_ *Server, err error) {
	cfg.setDefaults()
	if cfg.DataDir == "" {
		return nil, errors.New("sled agent: a data directory is required")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("sled agent: data dir: %w", err)
	}
	id := cfg.ID
	if id == uuid.Nil {
		if id, err = fsutil.LoadOrCreateUUID(filepath.Join(cfg.DataDir, IDFile)); err != nil {
			return nil, fmt.Errorf("sled agent: identity: %w", err)
		}
	}
	if cfg.TLS == nil {
		return nil, errors.New("sled agent: the sled's certificate is required (--tls-dir, or --tls-cert, --tls-key and --tls-ca)")
	}
	if cid := cfg.TLS.Identity; cid.Kind != rackpki.KindSled {
		return nil, fmt.Errorf("sled agent: the certificate names %s, not a sled", cid)
	} else if (cfg.Baseboard.Part != DefaultBaseboardPart && cfg.Baseboard.Part != cid.Part) ||
		(cfg.Baseboard.Serial != "" && cfg.Baseboard.Serial != cid.Serial) {
		return nil, fmt.Errorf("sled agent: the baseboard given (%s) is not the one the certificate names (%s)", cfg.Baseboard, cid)
	}
	// The sled is who its certificate says it is.
	cfg.Baseboard = api.Baseboard{Part: cfg.TLS.Identity.Part, Serial: cfg.TLS.Identity.Serial}
	nexus, err := client.NewNexusInternal(cfg.NexusURL, &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: cfg.TLS.ClientTLS(rackpki.OnlyKinds(rackpki.KindNexus), cfg.Clock.Now)}})
	if err != nil {
		return nil, fmt.Errorf("sled agent: --nexus-url: %w", err)
	}
	s := &Server{
		cfg:         cfg,
		id:          id,
		log:         log.With().Str("sled_id", id.String()).Logger(),
		nexus:       nexus,
		rnd:         backoff.NewRand(cfg.Rand),
		registerNow: make(chan struct{}, 1),
		metrics:     cfg.Metrics,
		tq:          cfg.TrustQuorum,
	}
	if s.metrics == nil {
		s.metrics = prometheus.NewRegistry()
	}
	if err := s.openArtifactStore(); err != nil {
		return nil, err
	}
	if s.apiLn, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
		s.store.Close()
		return nil, fmt.Errorf("sled agent: sled API: %w", err)
	}
	if s.depotLn, err = net.Listen("tcp", cfg.RepoDepotAddr); err != nil {
		s.apiLn.Close()
		s.store.Close()
		return nil, fmt.Errorf("sled agent: repo depot: %w", err)
	}
	// Any identity of the rack CA may connect; what it may do is decided
	// per route from the verified certificate.
	s.apiLn = tls.NewListener(s.apiLn, cfg.TLS.ServerTLS(rackpki.AnyIdentity, cfg.Clock.Now))
	s.depotLn = tls.NewListener(s.depotLn, cfg.TLS.ServerTLS(rackpki.AnyIdentity, cfg.Clock.Now))
	s.api = s.apiRouter()
	s.depot = s.depotRouter()
	return s, nil
}

// openArtifactStore sets up M.2 discovery and the artifact store, and
// brings the M.2s present now into use before any request is served: each
// gets the newest artifact config ledger, and tmp/ leftovers are removed.
func (s *Server) openArtifactStore() error {
	cfg := s.cfg
	if len(cfg.M2Dirs) == 0 {
		s.log.Warn().Msg("no --m2 directory given: the sled cannot store artifacts")
	}
	if cfg.CreateM2Dirs {
		for _, d := range cfg.M2Dirs {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("sled agent: create M.2 dir: %w", err)
			}
		}
	}
	var err error
	if s.m2 = cfg.M2; s.m2 == nil {
		s.ownM2 = true
		s.m2, err = m2.NewWatcher(cfg.M2Dirs, s.log, m2.Options{Budgets: cfg.M2Budgets, Registerer: s.metrics,
			Marker: artifacts.UpdateDir})
		if err != nil {
			return fmt.Errorf("sled agent: %w", err)
		}
	}
	s.store, err = artifacts.New(s.log, artifacts.Options{
		Clock:               cfg.Clock,
		Rand:                s.rnd,
		Registerer:          s.metrics,
		Budgets:             cfg.M2Budgets,
		OnChange:            s.TriggerRegistration,
		ReconcileInterval:   cfg.ArtifactReconcileInterval,
		ScrubInterval:       cfg.ScrubInterval,
		ScrubRate:           cfg.ScrubRate,
		MaxConcurrentCopies: cfg.MaxConcurrentCopies,
		HTTPClient:          copyClient(cfg.TLS, cfg.Clock.Now),
	})
	if err != nil {
		return fmt.Errorf("sled agent: %w", err)
	}
	s.m2.Handle(s.store.DeviceChanged)
	// The store's own change callback fires inside the handler, before
	// the watcher reports the device; this one, after it.
	s.m2.OnChange(s.TriggerRegistration)
	s.m2.Poll()
	return nil
}

// ID is the sled's id.
func (s *Server) ID() uuid.UUID { return s.id }

// Baseboard is the sled's hardware identity.
func (s *Server) Baseboard() api.Baseboard { return s.cfg.Baseboard }

// Address is host:port of the sled API as Nexus should dial it.
func (s *Server) Address() string { return s.advertise(s.apiLn) }

// URL is the sled API's base URL.
func (s *Server) URL() string { return s.scheme() + s.Address() }

// DepotURL is the repo depot's base URL.
func (s *Server) DepotURL() string { return s.scheme() + s.advertise(s.depotLn) }

func (s *Server) scheme() string { return "https://" }

func (s *Server) advertise(ln net.Listener) string {
	addr := ln.Addr().(*net.TCPAddr)
	host := s.cfg.AdvertiseHost
	if host == "" {
		host = addr.IP.String()
		if addr.IP.IsUnspecified() {
			if h, err := os.Hostname(); err == nil {
				host = h
			} else {
				host = "127.0.0.1"
			}
		}
	}
	return net.JoinHostPort(host, fmt.Sprint(addr.Port))
}

func (s *Server) depotPort() int { return s.depotLn.Addr().(*net.TCPAddr).Port }

// Run serves the sled API and the depot and keeps the sled registered with
// Nexus until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	s.log.Info().Str("api", s.URL()).Str("depot", s.DepotURL()).Str("baseboard", s.cfg.Baseboard.String()).
		Msg("sled agent serving")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var bg sync.WaitGroup
	loops := []func(context.Context){s.registerLoop, s.store.Run}
	if s.ownM2 {
		loops = append(loops, func(ctx context.Context) { s.m2.Run(ctx, s.cfg.Clock, s.cfg.M2PollInterval) })
	}
	for _, fn := range loops {
		bg.Add(1)
		go func() {
			defer bg.Done()
			fn(ctx)
		}()
	}
	err := httpx.ServeAll(ctx, s.cfg.ShutdownGrace, s.log,
		httpx.Listener{Ln: s.apiLn, Handler: s.api},
		httpx.Listener{Ln: s.depotLn, Handler: s.depot})
	cancel() // a listener that failed on its own stops the background work too
	bg.Wait()
	s.log.Info().Msg("sled agent stopped")
	return err
}

// apiRouter serves the sled API and depotRouter the repo depot, each
// through the routes generated from its OpenAPI document.
func (s *Server) apiRouter() chi.Router {
	r := httpx.NewRouter(s.log.With().Str("api", "sled").Logger())
	r.Use(onlyNexusChanges)
	s.store.Mount(r, agentHandlers{s: s, metrics: promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{})})
	return r
}

func (s *Server) depotRouter() chi.Router {
	r := httpx.NewRouter(s.log.With().Str("api", "repo_depot").Logger())
	s.store.MountDepot(r, agentHandlers{s: s})
	return r
}

// APIRouter is the sled API's router (tests walk its routes).
func (s *Server) APIRouter() chi.Routes { return s.api }

// DepotRouter is the repo depot's router (tests walk its routes).
func (s *Server) DepotRouter() chi.Routes { return s.depot }

// agentHandlers are the operations the agent serves itself
// (artifacts.Agent).
type agentHandlers struct {
	s       *Server
	metrics http.Handler
}

func (a agentHandlers) Metrics(w http.ResponseWriter, r *http.Request) { a.metrics.ServeHTTP(w, r) }

func (a agentHandlers) Healthz(w http.ResponseWriter, r *http.Request) {
	st := a.s.Registration()
	check := "ok"
	switch {
	case st.LastSuccess.IsZero() && st.LastError != "":
		check = "not registered yet: " + st.LastError
	case st.LastSuccess.IsZero():
		check = "not registered yet"
	case st.LastError != "":
		check = fmt.Sprintf("last registration at %s; latest attempt failed: %s",
			st.LastSuccess.Format(time.RFC3339), st.LastError)
	}
	httpx.WriteJSON(w, http.StatusOK, api.Health{Status: "ok", Checks: map[string]string{"nexus_registration": check}})
}

// Registration reports the state of registration with Nexus.
func (s *Server) Registration() RegistrationStatus {
	s.regMu.Lock()
	defer s.regMu.Unlock()
	return s.reg
}

// TriggerRegistration asks for a registration as soon as possible (for
// example because something the sled reports has changed).
func (s *Server) TriggerRegistration() {
	select {
	case s.registerNow <- struct{}{}:
	default:
	}
}

// registrationRetry paces registration after a failure. The ceiling is
// short so that a sled that started before Nexus shows up within seconds
// of Nexus starting; the jitter spreads the sleds out after a Nexus
// restart, when all of them fail at once.
var registrationRetry = backoff.Policy{Initial: 250 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.5}

// registerLoop registers on start, then every RegisterInterval, retrying
// failures sooner with back-off (never later than RegisterInterval). A
// change the sled wants to report (TriggerRegistration) registers at once
// while registrations succeed; after a failure it waits for the back-off
// like everything else, so a sled whose state keeps changing while Nexus
// refuses it does not retry at the rate of its changes.
func (s *Server) registerLoop(ctx context.Context) {
	retry := backoff.New(registrationRetry, s.rnd)
	for {
		next := s.cfg.RegisterInterval
		triggers := s.registerNow
		if err := s.registerOnce(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			next = min(retry.NextBackOff(), s.cfg.RegisterInterval)
			// The trigger stays pending; the retry reports it.
			triggers = nil
		} else {
			retry.Reset()
		}
		t := s.cfg.Clock.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-triggers:
			t.Stop()
		case <-t.C():
		}
	}
}

func (s *Server) registerOnce(parent context.Context) error {
	// A change reported before this attempt is reported by it.
	select {
	case <-s.registerNow:
	default:
	}
	ctx, cancel := context.WithTimeout(reqid.With(parent, reqid.New()), 10*time.Second)
	defer cancel()
	gen := s.store.Generation()
	complete := s.store.Complete()
	reg := api.SledRegistration{
		Baseboard:          s.cfg.Baseboard,
		SledAgentAddress:   s.Address(),
		RepoDepotPort:      s.depotPort(),
		M2s:                s.m2.Devices(),
		ArtifactGeneration: &gen,
		ArtifactsComplete:  &complete,
	}
	_, err := s.nexus.SledRegister(ctx, s.id, reg)
	if err != nil && parent.Err() != nil {
		// Shutting down: not a registration failure worth reporting.
		return err
	}
	now := s.cfg.Clock.Now()
	s.regMu.Lock()
	first := s.reg.LastSuccess.IsZero()
	s.reg.LastAttempt = now
	if err != nil {
		s.reg.LastError = err.Error()
	} else {
		s.reg.LastError, s.reg.LastSuccess = "", now
	}
	s.regMu.Unlock()
	log := s.log.With().Str("request_id", reqid.From(ctx)).Str("nexus", s.cfg.NexusURL).Logger()
	switch {
	case err != nil:
		log.Warn().Err(err).Msg("registration with nexus failed")
	case first:
		log.Info().Msg("registered with nexus")
	default:
		log.Debug().Msg("registration refreshed")
	}
	return err
}

// copyClient fetches artifacts from other depots. It presents the sled's
// certificate and accepts only a sled's or a Nexus's on the other end: a
// copy request naming any other URL fails its handshake, so the sled
// cannot be pointed at an arbitrary server.
func copyClient(b *rackpki.Bundle, now func() time.Time) *http.Client {
	t := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConnsPerHost:   4,
		TLSClientConfig:       b.ClientTLS(rackpki.OnlyKinds(rackpki.KindSled, rackpki.KindNexus), now),
	}
	return &http.Client{Transport: httpsOnly{t}}
}

// httpsOnly refuses any request that would not be verified: a plain-HTTP
// URL would skip the certificate check that makes a copy source a depot of
// the rack.
type httpsOnly struct{ next http.RoundTripper }

func (h httpsOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" {
		return nil, fmt.Errorf("copy source %s is not a depot of the rack: sources are fetched over mutual TLS only", r.URL.Redacted())
	}
	return h.next.RoundTrip(r)
}

// onlyNexusChanges is the sled API's authorisation: every caller has a
// verified certificate of the rack CA (the listener's handshake demanded
// one), any of them may read, and only a Nexus may change anything — push
// an artifact config or an artifact, ask for a copy or a scrub, or touch
// the trust quorum. Identity comes from the certificate, never the body.
func onlyNexusChanges(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := rackpki.PeerIdentity(r.TLS)
		if err != nil {
			httpx.WriteError(w, r, fault.New(fault.Forbidden, api.CodeMTLSRequired,
				"the sled API needs mutual TLS with a certificate of the rack CA"))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && id.Kind != rackpki.KindNexus {
			httpx.WriteError(w, r, fault.New(fault.Forbidden, api.CodeForbiddenIdentity,
				"only Nexus may change what a sled holds or does; the caller is %s", id))
			return
		}
		next.ServeHTTP(w, r)
	})
}

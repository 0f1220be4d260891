// Package artifacts is the sled agent's artifact store: the artifact
// config Nexus pushes (ledgered on every present M.2), artifacts streamed in
// by Nexus or copied from another depot (written to every present M.2 at
// once, hashed as they are written), the repo depot other sleds copy from,
// and the background work that keeps the M.2s right: deleting what the
// config no longer wants, filling a device that arrived late (or lost a
// copy) from its sibling, and scrubbing stored copies at a bounded rate.
//
// Each M.2 holds an update/ area: artifacts named by lowercase SHA-256 hex,
// a tmp/ folder for writes in progress, and the artifact-config ledger.
//
// Locking: mu guards the config and the set of devices in use; it is held
// for writing while the config ledger is written and while a device is
// brought into use, so a config change and a device arrival never miss each
// other (seed 000). Renames into update/ and unlinks from it happen under
// mu held for reading, after re-checking the config, and under fileMu, so
// the delete reconciler never removes a hash the config wants and a scrub
// never removes a good copy that replaced the corrupt one it read.
package artifacts

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/sledagent/ledger"
)

// Layout of an M.2 device directory.
const (
	UpdateDir  = "update"
	TmpDir     = "tmp"
	ConfigFile = "artifact-config.json"
)

// Scrub defaults: every stored byte is re-read continuously at 8 MiB/s
// (a sled holding 3 releases of 3 GiB on each of 2 M.2s is checked every
// 40 minutes, a small one at most once a minute).
const (
	DefaultScrubInterval = time.Minute
	DefaultScrubRate     = 8 << 20
)

// Options configure a Store. Zero values take the defaults.
type Options struct {
	// Clock tells time for scheduling, pacing and status (default: real).
	Clock clock.Clock
	// Registerer receives the store's metrics (nil: none).
	Registerer prometheus.Registerer
	// Budgets caps the bytes each device may hold (see m2.Options).
	Budgets map[string]int64
	// OnChange is called (without locks held) when the config generation,
	// the set of devices in use or what they hold of the config changes,
	// so the sled can re-register.
	OnChange func()

	// ReconcileInterval is how often deletes, local fills and ledger
	// repair run even when nothing triggered them (default 1 min).
	ReconcileInterval time.Duration
	// ScrubInterval is the least time between the starts of two scrub
	// passes: the scrub runs at start and then continuously, pass after
	// pass at ScrubRate, but a store that reads in less than this waits
	// for it (default DefaultScrubInterval; negative: only passes asked
	// for with TriggerScrub). Reads for copies are checked whatever it is.
	ScrubInterval time.Duration
	// ScrubRate bounds scrub reads in bytes per second (default
	// DefaultScrubRate).
	ScrubRate int64

	// MaxConcurrentCopies bounds copy-from-depot transfers (default 4).
	MaxConcurrentCopies int
	// CopyRetention is how long finished copies stay listed (default 15 min).
	CopyRetention time.Duration
	// CopyAttempts is how many attempts in a row may fail without moving
	// the transfer forward before a copy gives up (default 6).
	CopyAttempts int
	// CopyIdleTimeout aborts (and then resumes) a transfer that received
	// nothing for this long (default 30 s).
	CopyIdleTimeout time.Duration
	// CopyBackoff is the ceiling of the first retry delay, doubled per
	// failure up to 5 s (default 100 ms); each delay is at least half its
	// ceiling, the rest drawn from Rand.
	CopyBackoff time.Duration
	// CopyCooldown is how long copies from a source wait after a copy from
	// it failed, doubled per failed copy in a row up to CopyCooldownMax
	// (defaults DefaultCopyCooldown, DefaultCopyCooldownMax); each wait is
	// at least half of that, the rest drawn from Rand.
	CopyCooldown, CopyCooldownMax time.Duration
	// Rand draws the copy retries' jitter (nil: seeded from the operating
	// system). The store draws from it under its own lock.
	Rand rand.Source
	// HTTPClient fetches from depots (default: one with connect and
	// response-header timeouts but no whole-transfer timeout).
	HTTPClient *http.Client
}

func (o *Options) setDefaults() {
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	if o.OnChange == nil {
		o.OnChange = func() {}
	}
	if o.ReconcileInterval <= 0 {
		o.ReconcileInterval = time.Minute
	}
	if o.ScrubInterval == 0 {
		o.ScrubInterval = DefaultScrubInterval
	}
	if o.ScrubRate <= 0 {
		o.ScrubRate = DefaultScrubRate
	}
	if o.MaxConcurrentCopies <= 0 {
		o.MaxConcurrentCopies = 4
	}
	if o.CopyRetention <= 0 {
		o.CopyRetention = 15 * time.Minute
	}
	if o.CopyAttempts <= 0 {
		o.CopyAttempts = 6
	}
	if o.CopyIdleTimeout <= 0 {
		o.CopyIdleTimeout = 30 * time.Second
	}
	if o.CopyBackoff <= 0 {
		o.CopyBackoff = 100 * time.Millisecond
	}
	if o.CopyCooldown <= 0 {
		o.CopyCooldown = DefaultCopyCooldown
	}
	if o.CopyCooldownMax <= 0 {
		o.CopyCooldownMax = DefaultCopyCooldownMax
	}
	if o.HTTPClient == nil {
		o.HTTPClient = defaultHTTPClient()
	}
}

// device is an M.2 in use.
type device struct {
	path string // the M.2 directory
	dir  string // its update/ area
	tmp  string // update/tmp
}

func newDevice(path string) *device {
	dir := filepath.Join(path, UpdateDir)
	return &device{path: path, dir: dir, tmp: filepath.Join(dir, TmpDir)}
}

func (d *device) file(sha string) string { return filepath.Join(d.dir, sha) }

// holds reports whether the device has a stored copy of sha. Every stored
// copy was verified before it was renamed into place, and the scrub
// removes copies that rotted since.
func (d *device) holds(sha string) bool {
	info, err := os.Stat(d.file(sha))
	return err == nil && info.Mode().IsRegular()
}

// Store is the artifact store of one sled.
type Store struct {
	log     zerolog.Logger
	opts    Options
	clk     clock.Clock
	metrics *metrics
	ledger  *ledger.Ledger[[]string]

	mu     sync.RWMutex
	gen    uint64
	wanted map[string]bool
	list   []string // sorted
	active []*device

	fileMu sync.Mutex

	reconcileNow chan struct{}
	scrubNow     chan struct{}
	copies       *copier
	scrub        *scrubber

	// ctx outlives requests: copies continue after the reply.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a store with no device in use; devices are added through
// DeviceChanged (an m2.Handler).
func New(log zerolog.Logger, opts Options) (*Store, error) {
	opts.setDefaults()
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		log:          log.With().Str("subsystem", "artifacts").Logger(),
		opts:         opts,
		clk:          opts.Clock,
		metrics:      m,
		ledger:       ledger.New[[]string](ConfigFile),
		wanted:       map[string]bool{},
		list:         []string{},
		reconcileNow: make(chan struct{}, 1),
		scrubNow:     make(chan struct{}, 1),
		ctx:          ctx,
		cancel:       cancel,
	}
	s.copies = newCopier(s)
	s.scrub = newScrubber(s)
	return s, nil
}

// Run does the background work (reconcile, scrub) until ctx is done, then
// stops the copies in flight and waits for them.
func (s *Store) Run(ctx context.Context) {
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.reconcileLoop() }()
	go func() { defer s.wg.Done(); s.scrubLoop() }()
	select {
	case <-ctx.Done():
	case <-s.ctx.Done():
	}
	s.stop()
}

// Close stops the background work of a store that Run never ran.
func (s *Store) Close() { s.stop() }

// stop cancels the background work and the copies, refuses new copies
// (requests still being served during the listeners' shutdown grace may
// ask for them), and waits for everything to finish.
func (s *Store) stop() {
	s.cancel()
	s.copies.stop()
	s.wg.Wait()
}

// Config returns the artifact config the sled holds.
func (s *Store) Config() api.ArtifactConfig {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return api.ArtifactConfig{Generation: s.gen, Artifacts: slices.Clone(s.list)}
}

// Generation is the artifact config generation the sled holds.
func (s *Store) Generation() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.gen
}

// Devices lists the M.2 directories in use.
func (s *Store) Devices() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, len(s.active))
	for i, d := range s.active {
		out[i] = d.path
	}
	return out
}

func (s *Store) activeLocked() []*device { return slices.Clone(s.active) }

func (s *Store) isActiveLocked(d *device) bool { return slices.Contains(s.active, d) }

func updateDirs(devs []*device) []string {
	out := make([]string, len(devs))
	for i, d := range devs {
		out[i] = d.dir
	}
	return out
}

// setConfigLocked replaces the in-memory config (mu held for writing).
func (s *Store) setConfigLocked(gen uint64, list []string) {
	s.gen, s.list = gen, list
	s.wanted = make(map[string]bool, len(list))
	for _, h := range list {
		s.wanted[h] = true
	}
	s.metrics.generation.Set(float64(gen))
}

// DeviceChanged is the m2.Handler that brings a device into use or takes it
// out. Bringing one in clears its tmp/ leftovers, then, under the config
// lock, reconciles the config ledger across it and the devices already in
// use (the highest generation wins and is written wherever it is missing)
// before the device is used, so it can never miss the config (seed 000).
// Its artifacts are then filled from a sibling by the reconciler, without
// waiting for Nexus.
func (s *Store) DeviceChanged(path string, present bool) error {
	if !present {
		s.mu.Lock()
		before := len(s.active)
		s.active = slices.DeleteFunc(s.active, func(d *device) bool { return d.path == path })
		removed := len(s.active) < before
		s.mu.Unlock()
		if removed {
			s.log.Warn().Str("m2", path).Msg("M.2 out of use; the artifact store continues on the others")
			s.opts.OnChange()
		}
		return nil
	}
	d := newDevice(path)
	if err := prepare(d); err != nil {
		return err
	}
	if n, err := s.ledger.RemoveTemps(d.dir); err != nil {
		return fmt.Errorf("clear ledger temps on %s: %w", path, err)
	} else if n > 0 {
		s.log.Info().Str("m2", path).Int("files", n).Msg("removed interrupted ledger writes")
	}

	s.mu.Lock()
	if slices.ContainsFunc(s.active, func(o *device) bool { return o.path == path }) {
		s.mu.Unlock()
		return nil
	}
	devs := append(s.activeLocked(), d)
	if err := s.reconcileLedgerLocked(devs, d); err != nil {
		s.mu.Unlock()
		return err
	}
	s.active = devs
	gen := s.gen
	s.mu.Unlock()

	s.log.Info().Str("m2", path).Uint64("generation", gen).Msg("M.2 in use by the artifact store")
	s.TriggerReconcile()
	s.opts.OnChange()
	return nil
}

// prepare creates update/ and update/tmp on a present device and removes
// what interrupted writes left in tmp/, except partial copies from depots
// (partial.go), which a copy resumes. It never creates the device
// directory itself: a device whose directory is gone is absent.
func prepare(d *device) error {
	for _, dir := range []string{d.dir, d.tmp} {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("prepare %s: %w", dir, err)
		}
	}
	entries, err := os.ReadDir(d.tmp)
	if err != nil {
		return fmt.Errorf("prepare %s: %w", d.tmp, err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	keep := keepPartials(names)
	for _, e := range entries {
		if keep[e.Name()] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(d.tmp, e.Name())); err != nil {
			return fmt.Errorf("clear %s: %w", d.tmp, err)
		}
	}
	return nil
}

// reconcileLedgerLocked makes every device in devs hold the newest config:
// the highest generation among the ledgers and the one in memory. When
// must is not nil, failing to write it there is an error (the device is
// not brought into use without the config). mu is held for writing.
func (s *Store) reconcileLedgerLocked(devs []*device, must *device) error {
	res, err := s.ledger.Read(updateDirs(devs))
	for _, p := range res.Problems {
		s.log.Error().Err(p.Err).Str("dir", p.Dir).Msg("artifact config ledger unreadable or not rewritable on this M.2")
	}
	if err != nil {
		s.log.Error().Err(err).Msg("no artifact config ledger could be read; keeping the config in memory")
	}
	if len(res.Rewritten) > 0 {
		s.log.Info().Strs("dirs", res.Rewritten).Uint64("generation", res.Generation).
			Msg("artifact config ledger brought up to date on M.2s that held an older one or none")
	}
	switch {
	case res.Found && res.Generation > s.gen:
		s.log.Info().Uint64("generation", res.Generation).Uint64("previous", s.gen).Str("source", res.Source).
			Int("artifacts", len(res.Value)).Msg("artifact config loaded from ledger")
		list := slices.Clone(res.Value)
		slices.Sort(list)
		s.setConfigLocked(res.Generation, list)
	case s.gen > 0 && (!res.Found || res.Generation < s.gen):
		// The devices hold less than memory (those that had it are gone).
		w, err := s.ledger.Write(updateDirs(devs), ledger.Record[[]string]{Generation: s.gen, Value: s.list})
		for _, f := range w.Failed {
			s.log.Error().Err(f.Err).Str("dir", f.Dir).Uint64("generation", s.gen).Msg("could not write artifact config ledger")
		}
		if err != nil && must != nil {
			return fmt.Errorf("write artifact config to %s: %w", must.path, err)
		}
	}
	if must != nil && s.gen > 0 {
		// The device must hold the config before it is used.
		rec, err := s.ledger.Read([]string{must.dir})
		if err != nil || !rec.Found || rec.Generation != s.gen {
			return fmt.Errorf("artifact config generation %d could not be ledgered on %s (read back: found=%v generation=%d err=%v)",
				s.gen, must.path, rec.Found, rec.Generation, err)
		}
	}
	return nil
}

// PutConfig applies a config Nexus pushed: a higher generation replaces
// the current one once it is ledgered on every present M.2 (at least one
// must take it); the same generation with the same contents is a no-op;
// anything else is a config_generation conflict. It returns the config held
// afterwards and whether it changed.
func (s *Store) PutConfig(ctx context.Context, cfg api.ArtifactConfig) (api.ArtifactConfig, bool, error) {
	cfg = cfg.Sorted()
	log := zerolog.Ctx(ctx)
	s.mu.Lock()
	held := api.ArtifactConfig{Generation: s.gen, Artifacts: slices.Clone(s.list)}
	switch {
	case cfg.Generation < s.gen:
		s.mu.Unlock()
		return held, false, generationConflict(api.CodeConfigGeneration, s.gen,
			"the sled holds artifact config generation %d; refusing older generation %d", s.gen, cfg.Generation)
	case cfg.Generation == s.gen && slices.Equal(cfg.Artifacts, s.list):
		s.mu.Unlock()
		return held, false, nil
	case cfg.Generation == s.gen:
		s.mu.Unlock()
		return held, false, generationConflict(api.CodeConfigGeneration, s.gen,
			"the sled already holds artifact config generation %d with different artifacts (%s); "+
				"a changed config needs a higher generation", s.gen, describeDiff(s.list, cfg.Artifacts))
	}
	devs := s.activeLocked()
	if len(devs) == 0 {
		s.mu.Unlock()
		return held, false, fault.New(fault.Unavailable, api.CodeNoM2,
			"no M.2 device is present, so artifact config generation %d cannot be ledgered; the sled still holds generation %d",
			cfg.Generation, s.gen)
	}
	w, err := s.ledger.Write(updateDirs(devs), ledger.Record[[]string]{Generation: cfg.Generation, Value: cfg.Artifacts})
	if err != nil {
		s.mu.Unlock()
		return held, false, fault.Wrap(err, fault.Unavailable, api.CodeM2WriteFailed,
			"artifact config generation %d could not be ledgered on any M.2: %v; the sled still holds generation %d",
			cfg.Generation, errors.Join(dirErrors(w.Failed)...), s.gen)
	}
	added, removed := diffCounts(s.list, cfg.Artifacts)
	prev := s.gen
	s.setConfigLocked(cfg.Generation, cfg.Artifacts)
	s.mu.Unlock()

	for _, f := range w.Failed {
		log.Warn().Err(f.Err).Str("dir", f.Dir).Uint64("generation", cfg.Generation).
			Msg("artifact config not ledgered on this M.2; the reconciler retries")
	}
	log.Info().Uint64("generation", cfg.Generation).Uint64("previous", prev).Int("artifacts", len(cfg.Artifacts)).
		Int("added", added).Int("removed", removed).Strs("ledgered_on", w.Written).Msg("artifact config accepted")
	s.TriggerReconcile()
	s.opts.OnChange()
	return cfg, true, nil
}

func dirErrors(ds []ledger.DirError) []error {
	out := make([]error, len(ds))
	for i, d := range ds {
		out[i] = d
	}
	return out
}

// diffCounts counts hashes only in b (added) and only in a (removed); both
// are sorted.
func diffCounts(a, b []string) (added, removed int) {
	onlyA, onlyB := diff(a, b)
	return len(onlyB), len(onlyA)
}

func diff(a, b []string) (onlyA, onlyB []string) {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i] < b[j]):
			onlyA = append(onlyA, a[i])
			i++
		case i == len(a) || b[j] < a[i]:
			onlyB = append(onlyB, b[j])
			j++
		default:
			i, j = i+1, j+1
		}
	}
	return onlyA, onlyB
}

func describeDiff(held, req []string) string {
	onlyHeld, onlyReq := diff(held, req)
	short := func(hs []string) string {
		if len(hs) == 0 {
			return "none"
		}
		out := hs[0]
		if len(hs) > 1 {
			out += fmt.Sprintf(" and %d more", len(hs)-1)
		}
		return out
	}
	return fmt.Sprintf("only in the request: %s; only held: %s", short(onlyReq), short(onlyHeld))
}

// Complete counts the config's artifacts held on every device in use.
func (s *Store) Complete() int {
	l := s.List()
	n := 0
	for _, c := range l.Artifacts {
		if l.M2Present > 0 && c >= l.M2Present {
			n++
		}
	}
	return n
}

// List returns every hash of the current config with the number of devices
// in use holding a copy.
func (s *Store) List() api.ArtifactList {
	s.mu.RLock()
	gen, list, devs := s.gen, s.list, s.activeLocked()
	s.mu.RUnlock()
	out := api.ArtifactList{Generation: gen, M2Present: len(devs), Artifacts: make(map[string]int, len(list))}
	for _, h := range list {
		n := 0
		for _, d := range devs {
			if d.holds(h) {
				n++
			}
		}
		out.Artifacts[h] = n
	}
	out.Copying = s.copies.inFlight(gen)
	return out
}

// admit checks that a write or copy of sha at generation gen is one the
// sled wants, and returns the devices in use.
func (s *Store) admit(sha string, gen uint64) ([]*device, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if gen != s.gen {
		return nil, generationConflict(api.CodeGenerationMismatch, s.gen,
			"the request carries artifact config generation %d but the sled holds generation %d", gen, s.gen)
	}
	if !s.wanted[sha] {
		return nil, fault.Invalidf(api.CodeArtifactNotInConfig,
			"artifact %s is not in the sled's artifact config (generation %d, %d artifacts); put a config listing it first",
			sha, s.gen, len(s.list))
	}
	if len(s.active) == 0 {
		return nil, fault.New(fault.Unavailable, api.CodeNoM2,
			"no M.2 device is present on this sled; nothing can be stored until one appears")
	}
	return s.activeLocked(), nil
}

func split(devs []*device, sha string) (holders, lacking []*device) {
	for _, d := range devs {
		if d.holds(sha) {
			holders = append(holders, d)
		} else {
			lacking = append(lacking, d)
		}
	}
	return holders, lacking
}

func paths(devs []*device) []string {
	out := make([]string, len(devs))
	for i, d := range devs {
		out[i] = d.path
	}
	return out
}

// TriggerReconcile asks the reconciler to run soon.
func (s *Store) TriggerReconcile() {
	select {
	case s.reconcileNow <- struct{}{}:
	default:
	}
}

// generationConflict is a conflict about artifact config generations: its
// body also carries the generation the sled holds (held_generation, as in
// api.GenerationConflict), which Nexus and the replication task read.
func generationConflict(code string, held uint64, format string, args ...any) *fault.Error {
	return fault.Conflictf(code, format, args...).With("held_generation", held)
}

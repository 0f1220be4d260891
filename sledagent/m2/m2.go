// Package m2 finds a sled's M.2 devices. In this project each device is a
// directory named on the command line (--m2 DIR, normally twice); a device
// is present while its directory exists. Devices may be absent at start,
// appear later, vanish at run time and come back, so a Watcher polls them
// and tells its handlers about every arrival and departure, and reports
// each device's free space for the sled's inventory and metrics.
package m2

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/clock"
)

// Handler is told that the device at path arrived (present) or left. An
// arrival handler that fails leaves the device absent, so the arrival is
// retried at the next poll; departure handlers cannot refuse.
type Handler func(path string, present bool) error

// Options configure a Watcher.
type Options struct {
	// Budgets caps the bytes a device may hold, by device path: a way to
	// simulate a small or full device without privileges (tests and dev
	// racks). Zero or absent means only the file system's own limit.
	Budgets map[string]int64
	// Registerer receives the per-device metrics (nil: none).
	Registerer prometheus.Registerer
	// Marker, when set, is a path inside each device that its arrival
	// handlers create. A device in use whose marker is gone was replaced
	// (say removed and recreated between two polls, which may reuse the
	// inode) and is handled as a departure and a fresh arrival.
	Marker string
}

// Watcher tracks the presence and free space of a sled's M.2 devices.
type Watcher struct {
	log     zerolog.Logger
	paths   []string
	budgets map[string]int64
	marker  string

	// pollMu serialises polls, so handlers see one event at a time and
	// in order for each device.
	pollMu   sync.Mutex
	handlers []Handler
	// changed are told after a poll in which a device arrived or left,
	// once Devices reports it (handlers run before it does).
	changed []func()

	mu    sync.Mutex
	state map[string]*device

	presentGauge *prometheus.GaugeVec
	freeGauge    *prometheus.GaugeVec
}

type device struct {
	present bool
	// ident is the directory's identity when it arrived; a directory
	// removed and recreated between two polls is a departure and arrival.
	ident       os.FileInfo
	free, total uint64
	err         string
}

// NewWatcher watches the device directories in paths. Nothing is probed
// until the first Poll.
func NewWatcher(paths []string, log zerolog.Logger, opts Options) (*Watcher, error) {
	w := &Watcher{log: log.With().Str("subsystem", "m2").Logger(), budgets: opts.Budgets, marker: opts.Marker,
		state: map[string]*device{}}
	for _, p := range paths {
		if p == "" {
			return nil, errors.New("m2: an empty device path was given")
		}
		clean := filepath.Clean(p)
		if _, dup := w.state[clean]; dup {
			return nil, fmt.Errorf("m2: device %s is given twice", clean)
		}
		w.paths = append(w.paths, clean)
		w.state[clean] = &device{}
	}
	w.presentGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "rackplane_sled_m2_present", Help: "1 when the M.2 device is present and in use, 0 otherwise.",
	}, []string{"m2"})
	w.freeGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "rackplane_sled_m2_free_bytes", Help: "Free space on the M.2 device (0 when absent).",
	}, []string{"m2"})
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{w.presentGauge, w.freeGauge} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("m2: register metrics: %w", err)
			}
		}
	}
	for _, p := range w.paths {
		w.presentGauge.WithLabelValues(p).Set(0)
		w.freeGauge.WithLabelValues(p).Set(0)
	}
	return w, nil
}

// OnChange registers fn to be called after every poll in which a device
// arrived or left, once Devices reports the change. Reporting the devices
// elsewhere (a sled's registration) belongs here rather than in a
// Handler: a handler runs before the device's state changes, so what it
// triggers could read the old state and miss the change.
func (w *Watcher) OnChange(fn func()) {
	w.pollMu.Lock()
	defer w.pollMu.Unlock()
	w.changed = append(w.changed, fn)
}

// Handle adds a handler; handlers run in the order added, on the polling
// goroutine. A handler added after polling began (one sled process shares a
// watcher between its bootstrap agent, running from start, and its sled
// agent, started later) is told at once about every device already in use.
// If it refuses one, every handler is told the device left and the next
// poll retries the arrival for all, so all handlers always agree on which
// devices are present.
func (w *Watcher) Handle(h Handler) {
	w.pollMu.Lock()
	defer w.pollMu.Unlock()
	w.handlers = append(w.handlers, h)
	for _, p := range w.Present() {
		if err := h(p, true); err != nil {
			w.log.Error().Err(err).Str("m2", p).Msg("M.2 device refused by a new handler; retrying at the next poll")
			w.depart(p, err, false)
			w.setState(p, func(d *device) { d.err = err.Error() })
			w.refreshSpace(p)
		}
	}
}

// Present lists the devices in use, in configured order.
func (w *Watcher) Present() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, p := range w.paths {
		if w.state[p].present {
			out = append(out, p)
		}
	}
	return out
}

// Devices reports every configured device, in configured order.
func (w *Watcher) Devices() []api.M2Device {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]api.M2Device, 0, len(w.paths))
	for _, p := range w.paths {
		d := w.state[p]
		out = append(out, api.M2Device{Path: p, Present: d.present, FreeBytes: d.free, TotalBytes: d.total, Error: d.err})
	}
	return out
}

// Run polls every interval, as clk tells time, until ctx is done.
func (w *Watcher) Run(ctx context.Context, clk clock.Clock, interval time.Duration) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-clk.After(interval):
			w.Poll()
		}
	}
}

// Poll probes every device once, runs the handlers for each arrival and
// departure, refreshes free space, and reports whether any device arrived
// or left.
func (w *Watcher) Poll() (changed bool) {
	w.pollMu.Lock()
	defer w.pollMu.Unlock()
	for _, p := range w.paths {
		info, probeErr := probe(p)
		w.mu.Lock()
		d := w.state[p]
		wasPresent, oldIdent := d.present, d.ident
		w.mu.Unlock()

		replaced := wasPresent && info != nil && (!os.SameFile(oldIdent, info) || w.markerGone(p))
		if wasPresent && (info == nil || replaced) {
			w.depart(p, probeErr, replaced)
			changed = true
		}
		if info != nil && (!wasPresent || replaced) {
			if err := w.arrive(p); err != nil {
				w.log.Error().Err(err).Str("m2", p).Msg("M.2 device present but could not be put to use; retrying at the next poll")
				w.setState(p, func(d *device) { d.err = err.Error() })
			} else {
				w.setState(p, func(d *device) { d.present, d.ident, d.err = true, info, "" })
				w.log.Info().Str("m2", p).Msg("M.2 device in use")
				changed = true
			}
		}
		if info == nil && probeErr != nil && !errors.Is(probeErr, fs.ErrNotExist) {
			w.setState(p, func(d *device) { d.err = probeErr.Error() })
		} else if info == nil {
			w.setState(p, func(d *device) { d.err = "" })
		}
		w.refreshSpace(p)
	}
	if changed {
		for _, fn := range w.changed {
			fn()
		}
	}
	return changed
}

func (w *Watcher) markerGone(path string) bool {
	if w.marker == "" {
		return false
	}
	_, err := os.Lstat(filepath.Join(path, w.marker))
	return errors.Is(err, fs.ErrNotExist)
}

// probe returns the directory's identity, or nil when it is not there.
func probe(path string) (os.FileInfo, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", path)
	}
	return info, nil
}

func (w *Watcher) arrive(path string) error {
	for i, h := range w.handlers {
		if err := h(path, true); err != nil {
			// Undo the handlers that accepted it, so all agree it is absent.
			for _, prev := range w.handlers[:i] {
				_ = prev(path, false)
			}
			return err
		}
	}
	return nil
}

func (w *Watcher) depart(path string, why error, replaced bool) {
	w.setState(path, func(d *device) { d.present, d.ident = false, nil })
	ev := w.log.Warn().Str("m2", path)
	if replaced {
		ev.Msg("M.2 device directory was replaced; treating it as removed and re-added")
	} else {
		ev.AnErr("cause", why).Msg("M.2 device is gone; continuing on the others")
	}
	for _, h := range w.handlers {
		_ = h(path, false)
	}
}

func (w *Watcher) setState(path string, fn func(*device)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fn(w.state[path])
}

func (w *Watcher) refreshSpace(path string) {
	w.mu.Lock()
	present := w.state[path].present
	w.mu.Unlock()
	var free, total uint64
	if present {
		var err error
		free, total, err = Space(path, w.budgets[path])
		if err != nil {
			w.log.Debug().Err(err).Str("m2", path).Msg("could not read M.2 free space")
		}
	}
	w.setState(path, func(d *device) { d.free, d.total = free, total })
	pv := 0.0
	if present {
		pv = 1
	}
	w.presentGauge.WithLabelValues(path).Set(pv)
	w.freeGauge.WithLabelValues(path).Set(float64(free))
}

// Space returns the free and total bytes of the device at path: the file
// system's, or, when budget > 0, what is left of the budget.
func Space(path string, budget int64) (free, total uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	free, total = uint64(st.Bavail)*uint64(st.Bsize), uint64(st.Blocks)*uint64(st.Bsize)
	if budget <= 0 {
		return free, total, nil
	}
	used, err := Usage(path)
	if err != nil {
		return 0, 0, err
	}
	left := uint64(max(budget-used, 0))
	return min(free, left), min(total, uint64(budget)), nil
}

// Usage sums the sizes of the regular files under path.
func Usage(path string) (int64, error) {
	var used int64
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != path {
				return nil // removed while we walked
			}
			return err
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				used += info.Size()
			}
		}
		return nil
	})
	return used, err
}

// ErrNoSpace is how a device reports that it is full. It wraps ENOSPC, so
// a budget exhausted and a real file system full look the same.
var ErrNoSpace = fmt.Errorf("no space left on the M.2 device: %w", syscall.ENOSPC)

// IsNoSpace reports whether err means a device ran out of space.
func IsNoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) }

// CheckBudget returns ErrNoSpace when writing extra more bytes under path
// would exceed budget (never when budget is 0).
func CheckBudget(path string, budget, extra int64) error {
	if budget <= 0 {
		return nil
	}
	used, err := Usage(path)
	if err != nil {
		return err
	}
	if used+extra > budget {
		return fmt.Errorf("%s holds %d bytes of its %d-byte budget, %d more do not fit: %w",
			path, used, budget, extra, ErrNoSpace)
	}
	return nil
}

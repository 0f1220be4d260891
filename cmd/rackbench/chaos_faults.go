package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/rackplane/rackplane/nexus/depot"
	"github.com/rackplane/rackplane/sledagent/artifacts"
)

// relay is a TCP relay on loopback in front of a listener, which a fault
// cuts: every connection through it is closed, and new ones are refused
// (closed as soon as accepted) until the cut ends.
type relay struct {
	name   string
	target string
	ln     net.Listener

	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	downUntil time.Time
	closed    bool
}

func newRelay(name, target string) (*relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rl := &relay{name: name, target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	go rl.serve()
	return rl, nil
}

func (rl *relay) Addr() string { return rl.ln.Addr().String() }

func (rl *relay) serve() {
	for {
		c, err := rl.ln.Accept()
		if err != nil {
			return
		}
		rl.mu.Lock()
		down := time.Now().Before(rl.downUntil) || rl.closed
		rl.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		go rl.pipe(c)
	}
}

func (rl *relay) pipe(c net.Conn) {
	up, err := net.DialTimeout("tcp", rl.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !rl.track(c, up) {
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		// One side is done: close both, as a cut link would.
		dst.Close()
		src.Close()
	}
	go cp(up, c)
	go cp(c, up)
	wg.Wait()
	rl.mu.Lock()
	delete(rl.conns, c)
	delete(rl.conns, up)
	rl.mu.Unlock()
}

func (rl *relay) track(cs ...net.Conn) bool {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.closed || time.Now().Before(rl.downUntil) {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		rl.conns[c] = struct{}{}
	}
	return true
}

// Cut closes every connection and refuses new ones for d. It returns how
// many connections it cut.
func (rl *relay) Cut(d time.Duration) int {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	rl.downUntil = time.Now().Add(d)
	n := len(rl.conns) / 2
	for c := range rl.conns {
		c.Close()
	}
	return n
}

func (rl *relay) Close() {
	rl.mu.Lock()
	rl.closed = true
	for c := range rl.conns {
		c.Close()
	}
	rl.mu.Unlock()
	rl.ln.Close()
}

// Fault kinds.
const (
	faultKillSled   = "kill-sled"
	faultKillNexus  = "kill-nexus"
	faultRestartPG  = "restart-postgres"
	faultRemoveM2   = "remove-m2"
	faultCorrupt    = "corrupt-artifact"
	faultCutDB      = "cut-database"
	faultCutNexus   = "cut-nexus-internal"
	faultTQAdd      = "tq-add"
	faultTQRemove   = "tq-remove"
	faultHoldSled   = "kill-sled-hold"
	faultHoldNexus  = "kill-nexus-hold"
	faultKillTwoSld = "kill-two-sleds"
)

// allFaultKinds lists every kind a schedule may hold.
var allFaultKinds = []string{faultKillSled, faultHoldSled, faultKillTwoSld, faultKillNexus, faultHoldNexus,
	faultRestartPG, faultRemoveM2, faultCorrupt, faultCutDB, faultCutNexus, faultTQAdd, faultTQRemove}

// fault is one entry of the schedule: at At after the start, Kind on
// Target (an index), lasting For (how long the fault holds before it is
// undone, where that means anything).
type fault struct {
	At     time.Duration
	Kind   string
	Target int
	Second int
	For    time.Duration
	// Restore, for remove-m2: put the same directory back (true) or a new,
	// empty one (a replaced device).
	Restore bool
}

func (f fault) String() string {
	s := fmt.Sprintf("%8s  %-18s", f.At.Round(time.Millisecond), f.Kind)
	switch f.Kind {
	case faultKillSled, faultHoldSled, faultTQAdd, faultTQRemove:
		s += fmt.Sprintf(" sled-%d", f.Target)
	case faultKillTwoSld:
		s += fmt.Sprintf(" sled-%d sled-%d", f.Target, f.Second)
	case faultKillNexus, faultHoldNexus:
		s += fmt.Sprintf(" nexus-%d", f.Target)
	case faultRemoveM2:
		what := "a new empty directory"
		if f.Restore {
			what = "the same directory"
		}
		s += fmt.Sprintf(" sled-%d m2-%c, back as %s", f.Target, 'a'+rune(f.Second), what)
	case faultCorrupt:
		s += fmt.Sprintf(" sled-%d m2-%c", f.Target, 'a'+rune(f.Second))
	}
	if f.For > 0 {
		s += fmt.Sprintf(" for %s", f.For.Round(time.Millisecond))
	}
	return s
}

// schedule draws the run's faults from the seed: kinds by weight, gaps
// exponential around the mean. Trust-quorum membership changes (two sleds
// added, then one removed) are spread over the run when tq is set.
func schedule(o chaosOptions) []fault {
	rng := rand.New(rand.NewPCG(o.seed, 0xc4a05))
	kinds := []struct {
		kind   string
		weight int
	}{
		{faultKillSled, 5}, {faultHoldSled, 2}, {faultKillTwoSld, 1}, {faultKillNexus, 3}, {faultHoldNexus, 1},
		{faultRestartPG, 2}, {faultRemoveM2, 3}, {faultCorrupt, 4}, {faultCutDB, 2}, {faultCutNexus, 2},
	}
	total := 0
	for _, k := range kinds {
		total += k.weight
	}
	var out []fault
	at := time.Duration(0)
	for {
		at += time.Duration(rng.ExpFloat64() * float64(o.gap))
		if at >= o.duration {
			break
		}
		w := rng.IntN(total)
		var kind string
		for _, k := range kinds {
			if w < k.weight {
				kind = k.kind
				break
			}
			w -= k.weight
		}
		f := fault{At: at, Kind: kind}
		switch kind {
		case faultKillSled:
			f.Target = rng.IntN(o.sleds)
		case faultHoldSled:
			f.Target, f.For = rng.IntN(o.sleds), jitter(rng, 5*time.Second, 20*time.Second)
		case faultKillTwoSld:
			f.Target = rng.IntN(o.sleds)
			f.Second = (f.Target + 1 + rng.IntN(o.sleds-1)) % o.sleds
		case faultKillNexus:
			f.Target = rng.IntN(o.nexuses)
		case faultHoldNexus:
			f.Target, f.For = rng.IntN(o.nexuses), jitter(rng, 5*time.Second, 20*time.Second)
		case faultRestartPG:
			f.For = jitter(rng, time.Second, 15*time.Second)
		case faultRemoveM2:
			f.Target, f.Second, f.For, f.Restore = rng.IntN(o.sleds), rng.IntN(2), jitter(rng, 2*time.Second, 20*time.Second), rng.IntN(2) == 0
		case faultCorrupt:
			f.Target, f.Second = rng.IntN(o.sleds), rng.IntN(2)
		case faultCutDB, faultCutNexus:
			f.For = jitter(rng, 500*time.Millisecond, 5*time.Second)
		}
		out = append(out, f)
	}
	if o.tq {
		// The rack is set up over all but the last two sleds; they join,
		// one at a time, and then the first setup member leaves.
		n := o.sleds
		out = append(out,
			fault{At: o.duration / 5, Kind: faultTQAdd, Target: n - 2},
			fault{At: 2 * o.duration / 5, Kind: faultTQAdd, Target: n - 1},
			fault{At: 3 * o.duration / 5, Kind: faultTQRemove, Target: 0})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}

func jitter(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

// faultRun injects a schedule into a rack and counts what it did.
type faultRun struct {
	r   *chaosRack
	w   io.Writer
	rng *rand.Rand
	wg  sync.WaitGroup

	mu       sync.Mutex
	injected map[string]int
	lastEnd  time.Time
	tq       *tqWorkload
}

func (fr *faultRun) logf(format string, args ...any) {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	fmt.Fprintf(fr.w, "%s  "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05.000")}, args...)...)
}

// ended records that a fault's effect is over (its process back, its
// directory restored) at now.
func (fr *faultRun) ended() {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	if now := time.Now(); now.After(fr.lastEnd) {
		fr.lastEnd = now
	}
}

// inject starts fault f; one that lasts undoes itself on a goroutine.
func (fr *faultRun) inject(ctx context.Context, f fault) {
	r := fr.r
	fr.mu.Lock()
	fr.injected[f.Kind]++
	fr.mu.Unlock()
	fr.logf("fault %s", f)
	later := func(d time.Duration, fn func()) {
		fr.wg.Add(1)
		go func() {
			defer fr.wg.Done()
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
			fn()
			fr.ended()
		}()
	}
	kill := func(name string, c interface{ Signal(os.Signal) error }) {
		if err := c.Signal(syscall.SIGKILL); err != nil {
			fr.logf("  %s: %v (restarting already)", name, err)
		}
	}
	switch f.Kind {
	case faultKillSled:
		kill(r.sleds[f.Target].name, r.sleds[f.Target].child)
	case faultKillTwoSld:
		kill(r.sleds[f.Target].name, r.sleds[f.Target].child)
		kill(r.sleds[f.Second].name, r.sleds[f.Second].child)
	case faultHoldSled:
		c := r.sleds[f.Target].child
		c.Hold()
		kill(r.sleds[f.Target].name, c)
		later(f.For, func() { c.Release(); fr.logf("  sled-%d released", f.Target) })
	case faultKillNexus:
		kill(r.nexus[f.Target].name, r.nexus[f.Target].child)
	case faultHoldNexus:
		c := r.nexus[f.Target].child
		c.Hold()
		kill(r.nexus[f.Target].name, c)
		later(f.For, func() { c.Release(); fr.logf("  nexus-%d released", f.Target) })
	case faultRestartPG:
		r.pgMu.Lock()
		r.pg.Stop()
		later(f.For, func() {
			defer r.pgMu.Unlock()
			if err := r.pg.Start(context.WithoutCancel(ctx)); err != nil {
				fr.logf("  postgres did not start again: %v", err)
				return
			}
			fr.logf("  postgres started again")
		})
	case faultCutDB:
		fr.logf("  cut %d connections", r.dbRelay.Cut(f.For))
		later(f.For, func() {})
	case faultCutNexus:
		fr.logf("  cut %d connections", r.nexusRelay.Cut(f.For))
		later(f.For, func() {})
	case faultRemoveM2:
		dir := r.sleds[f.Target].m2[f.Second]
		gone := dir + ".removed"
		if err := os.Rename(dir, gone); err != nil {
			fr.logf("  %v", err)
			return
		}
		later(f.For, func() {
			// A sled restarted meanwhile made the directory again
			// (--m2-create); the device put back replaces it.
			if err := os.RemoveAll(dir); err != nil {
				fr.logf("  %v", err)
			}
			var err error
			if f.Restore {
				err = os.Rename(gone, dir)
			} else {
				err = os.RemoveAll(gone)
				if err == nil {
					err = os.Mkdir(dir, 0o755)
				}
			}
			if err != nil {
				fr.logf("  restoring %s: %v", dir, err)
			} else {
				fr.logf("  sled-%d m2-%c back", f.Target, 'a'+rune(f.Second))
			}
		})
	case faultCorrupt:
		sha, off, err := corruptOne(fr.rng, r.sleds[f.Target].m2[f.Second])
		if err != nil {
			fr.logf("  %v", err)
			return
		}
		fr.logf("  flipped byte %d of %s", off, sha)
	case faultTQAdd, faultTQRemove:
		fr.tq.change(ctx, f, fr)
	}
	fr.ended()
}

// corruptOne flips one byte of one artifact stored in the M.2 directory.
func corruptOne(rng *rand.Rand, m2 string) (string, int64, error) {
	dir := filepath.Join(m2, artifacts.UpdateDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", 0, fmt.Errorf("nothing to corrupt: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && depot.ValidHash(e.Name()) {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return "", 0, errors.New("nothing to corrupt: no artifact stored")
	}
	sort.Strings(names)
	name := names[rng.IntN(len(names))]
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR, 0)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return "", 0, fmt.Errorf("%s: empty or unreadable (%v)", name, err)
	}
	off := rng.Int64N(fi.Size())
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		return "", 0, err
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		return "", 0, err
	}
	return name, off, nil
}

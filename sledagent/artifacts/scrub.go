package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/clock"
)

// maxFindings bounds the recent corrupt copies kept in the scrub status.
const maxFindings = 32

// scrubber holds the scrub's status.
type scrubber struct {
	s       *Store
	mu      sync.Mutex
	status  api.ScrubStatus
	running bool
}

func newScrubber(s *Store) *scrubber {
	interval := s.opts.ScrubInterval
	if interval < 0 {
		interval = 0
	}
	return &scrubber{s: s, status: api.ScrubStatus{
		RateBytesPerSecond: s.opts.ScrubRate,
		IntervalSeconds:    interval.Seconds(),
		Recent:             []api.ScrubFinding{},
	}}
}

func (sc *scrubber) record(f api.ScrubFinding) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.status.CorruptFound++
	sc.status.Recent = append([]api.ScrubFinding{f}, sc.status.Recent...)
	if len(sc.status.Recent) > maxFindings {
		sc.status.Recent = sc.status.Recent[:maxFindings]
	}
}

// ScrubStatus reports the scrub's schedule, progress and findings.
func (s *Store) ScrubStatus() api.ScrubStatus {
	s.scrub.mu.Lock()
	defer s.scrub.mu.Unlock()
	st := s.scrub.status
	st.Running = s.scrub.running
	st.Recent = append([]api.ScrubFinding{}, st.Recent...)
	return st
}

// TriggerScrub asks for a scrub pass now (a no-op while one runs).
func (s *Store) TriggerScrub() {
	select {
	case s.scrubNow <- struct{}{}:
	default:
	}
}

// scrubLoop scrubs continuously: a pass at start, then pass after pass,
// each reading at ScrubRate, a new one starting no sooner than
// ScrubInterval after the one before it started (so a small store is not
// re-read in a tight loop), and at once when triggered. A negative
// ScrubInterval leaves only triggered passes.
func (s *Store) scrubLoop() {
	for {
		if s.opts.ScrubInterval < 0 {
			select {
			case <-s.ctx.Done():
				return
			case <-s.scrubNow:
			}
		}
		start := s.clk.Now()
		if _, err := s.Scrub(s.ctx); err != nil && s.ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("scrub pass stopped early")
		}
		if s.opts.ScrubInterval < 0 {
			continue
		}
		var next <-chan time.Time
		if wait := s.opts.ScrubInterval - s.clk.Now().Sub(start); wait > 0 {
			next = s.clk.After(wait)
		}
		if next == nil {
			select {
			case <-s.ctx.Done():
				return
			default:
			}
			continue
		}
		select {
		case <-s.ctx.Done():
			return
		case <-next:
		case <-s.scrubNow:
		}
	}
}

// ScrubResult counts what one pass did.
type ScrubResult struct {
	Files, Bytes, Corrupt int64
}

// Scrub re-hashes every stored copy on every device in use, reading at
// most ScrubRate bytes per second, and removes the copies whose contents
// no longer match their name, reporting each at once (metrics, the scrub
// status, the log, and a re-registration that tells Nexus the sled lost
// a copy); the reconciler then refills it from a sibling, or Nexus
// re-replicates it.
func (s *Store) Scrub(ctx context.Context) (ScrubResult, error) {
	sc := s.scrub
	sc.mu.Lock()
	if sc.running {
		sc.mu.Unlock()
		return ScrubResult{}, errors.New("a scrub pass is already running")
	}
	sc.running = true
	sc.status.LastStarted = s.clk.Now()
	sc.mu.Unlock()

	res, err := s.scrubPass(ctx)

	sc.mu.Lock()
	sc.running = false
	sc.status.FilesChecked += res.Files
	sc.status.BytesChecked += res.Bytes
	sc.status.LastError = ""
	if err != nil {
		sc.status.LastError = err.Error()
	} else {
		sc.status.Passes++
		sc.status.LastFinished = s.clk.Now()
		s.metrics.scrubPasses.Inc()
	}
	sc.mu.Unlock()
	s.log.Info().Int64("files", res.Files).Int64("bytes", res.Bytes).Int64("corrupt", res.Corrupt).AnErr("error", err).
		Msg("scrub pass finished")
	return res, err
}

func (s *Store) scrubPass(ctx context.Context) (ScrubResult, error) {
	var res ScrubResult
	s.mu.RLock()
	devs := s.activeLocked()
	s.mu.RUnlock()
	p := pacer{clk: s.clk, rate: s.opts.ScrubRate, start: s.clk.Now()}
	buf := make([]byte, chunkSize)
	for _, d := range devs {
		entries, err := os.ReadDir(d.dir)
		if err != nil {
			s.log.Warn().Err(err).Str("m2", d.path).Msg("scrub cannot list M.2 update area")
			continue
		}
		for _, e := range entries {
			sha := e.Name()
			if !e.Type().IsRegular() || api.CheckSHA256(sha) != nil {
				continue
			}
			got, n, info, err := s.scrubFile(ctx, d, sha, buf, &p)
			res.Bytes += n
			s.metrics.scrubBytes.Add(float64(n))
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			if err != nil {
				// Deleted or replaced under us: not corruption.
				s.log.Debug().Err(err).Str("sha256", sha).Str("m2", d.path).Msg("scrub skipped a copy")
				continue
			}
			res.Files++
			s.metrics.scrubFiles.Inc()
			if got != sha {
				res.Corrupt++
				s.removeCorrupt(d, sha, info, "scrub", fmt.Sprintf("scrub found sha256 %s over %d bytes", got, n))
			}
		}
	}
	return res, nil
}

func (s *Store) scrubFile(ctx context.Context, d *device, sha string, buf []byte, p *pacer) (string, int64, os.FileInfo, error) {
	f, err := os.Open(d.file(sha))
	if err != nil {
		return "", 0, nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", 0, nil, err
	}
	h := sha256.New()
	var n int64
	for {
		m, rerr := f.Read(buf)
		h.Write(buf[:m])
		n += int64(m)
		if err := p.add(ctx, int64(m)); err != nil {
			return "", n, info, err
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return "", n, info, rerr
		}
	}
	return hex.EncodeToString(h.Sum(nil)), n, info, nil
}

// pacer keeps a reader at or under rate bytes per second: after each
// chunk it sleeps until the time the bytes read so far should have taken.
type pacer struct {
	clk   clock.Clock
	rate  int64
	start time.Time
	done  int64
}

func (p *pacer) add(ctx context.Context, n int64) error {
	p.done += n
	due := time.Duration(float64(p.done) / float64(p.rate) * float64(time.Second))
	if wait := due - p.clk.Now().Sub(p.start); wait > 0 {
		return p.clk.Sleep(ctx, wait)
	}
	return ctx.Err()
}

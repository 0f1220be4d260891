package artifacts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fsutil"
)

// reconcileLoop runs Reconcile when triggered (config change, device
// arrival, corrupt copy removed, write finished) and every
// ReconcileInterval.
func (s *Store) reconcileLoop() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.reconcileNow:
		case <-s.clk.After(s.opts.ReconcileInterval):
		}
		s.Reconcile(s.ctx)
	}
}

// ReconcileResult counts what one reconcile pass did.
type ReconcileResult struct {
	Deleted int
	Filled  int
}

// Reconcile brings the devices in use to the config: it rewrites the
// config ledger where it is missing or old, deletes copies the config does
// not want, and fills each device with the wanted artifacts that a sibling
// holds (a local, verified copy; no Nexus needed).
func (s *Store) Reconcile(ctx context.Context) ReconcileResult {
	s.mu.Lock()
	_ = s.reconcileLedgerLocked(s.activeLocked(), nil)
	s.mu.Unlock()
	res := ReconcileResult{Deleted: s.deleteUnwanted()}
	res.Filled = s.fillFromSiblings(ctx)
	return res
}

// deleteUnwanted removes every stored copy whose hash the config does not
// want, and partial copies of such hashes. The config is re-checked under its lock immediately before each
// unlink, so a hash that a newer config wants again is never deleted.
func (s *Store) deleteUnwanted() int {
	s.mu.RLock()
	devs := s.activeLocked()
	s.mu.RUnlock()
	deleted := 0
	for _, d := range devs {
		entries, err := os.ReadDir(d.dir)
		if err != nil {
			s.log.Warn().Err(err).Str("m2", d.path).Msg("cannot list M.2 update area")
			continue
		}
		n := 0
		for _, e := range entries {
			sha := e.Name()
			if !e.Type().IsRegular() || api.CheckSHA256(sha) != nil {
				continue // tmp/, the ledger, and anything not ours
			}
			if s.deleteIfUnwanted(d, sha) {
				n++
			}
		}
		if n > 0 {
			if err := fsutil.SyncDir(d.dir); err != nil {
				s.log.Warn().Err(err).Str("m2", d.path).Msg("fsync of update directory failed after deletes")
			}
		}
		deleted += n
		s.removeUnwantedPartials(d)
	}
	return deleted
}

func (s *Store) deleteIfUnwanted(d *device, sha string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.wanted[sha] {
		return false
	}
	s.fileMu.Lock()
	err := os.Remove(d.file(sha))
	s.fileMu.Unlock()
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false
	case err != nil:
		s.log.Error().Err(err).Str("sha256", sha).Uint64("generation", s.gen).Str("m2", d.path).
			Msg("could not delete artifact the config no longer wants")
		return false
	}
	s.metrics.deleted.Inc()
	s.log.Info().Str("sha256", sha).Uint64("generation", s.gen).Str("m2", d.path).
		Msg("artifact deleted: not in the artifact config")
	return true
}

// fillFromSiblings copies each wanted artifact that some devices in use
// lack from one that holds it. Hashes a copy-from-depot is already
// handling are left to it.
func (s *Store) fillFromSiblings(ctx context.Context) int {
	s.mu.RLock()
	list, devs := s.list, s.activeLocked()
	s.mu.RUnlock()
	if len(devs) < 2 {
		return 0
	}
	filled := 0
	for _, sha := range list {
		if ctx.Err() != nil {
			return filled
		}
		holders, lacking := split(devs, sha)
		if len(holders) == 0 || len(lacking) == 0 || s.copies.busy(sha) {
			continue
		}
		res, _, err := s.localCopy(ctx, sha, holders, lacking, nil)
		if err != nil {
			s.log.Warn().Err(err).Str("sha256", sha).Strs("to", paths(lacking)).Msg("local fill from sibling M.2 failed")
			continue
		}
		filled += len(res.written)
	}
	return filled
}

// localCopy copies sha from the first holder whose copy verifies to every
// device in lacking. A holder whose copy does not verify is corrupt: it is
// removed (and counted) and the next holder is tried. progress, when not
// nil, is told the bytes copied so far.
func (s *Store) localCopy(ctx context.Context, sha string, holders, lacking []*device, progress func(int64)) (commitResult, string, error) {
	log := s.log.With().Str("sha256", sha).Logger()
	var lastErr error
	for _, h := range holders {
		f, err := os.Open(h.file(sha))
		if err != nil {
			lastErr = err
			continue
		}
		info, err := f.Stat()
		if err != nil {
			f.Close()
			lastErr = err
			continue
		}
		sp := s.openSpool(sha, "local", lacking)
		if sp.live() == 0 {
			f.Close()
			return commitResult{failed: sp.failures()}, h.path, &allFailedError{sp.failures()}
		}
		_, err = sp.readFrom(&ctxReader{ctx: ctx, r: f, progress: progress})
		f.Close()
		if err != nil {
			sp.abort()
			return commitResult{failed: sp.failures()}, h.path, fmt.Errorf("copy from %s: %w", h.path, err)
		}
		res, err := sp.commit(&log)
		var mismatch *hashMismatchError
		if errors.As(err, &mismatch) {
			s.removeCorrupt(h, sha, info, "local_copy",
				fmt.Sprintf("copy to a sibling M.2 found sha256 %s over %d bytes", mismatch.got, mismatch.n))
			lastErr = fmt.Errorf("copy on %s is corrupt: %w", h.path, err)
			continue
		}
		return res, h.path, err
	}
	if lastErr == nil {
		lastErr = errors.New("no M.2 holds a copy")
	}
	return commitResult{}, "", lastErr
}

// removeCorrupt deletes the copy of sha on d if it is still the file that
// was found corrupt (info), not a good copy renamed over it since.
func (s *Store) removeCorrupt(d *device, sha string, info os.FileInfo, foundBy, detail string) {
	s.fileMu.Lock()
	cur, err := os.Stat(d.file(sha))
	removed := false
	if err == nil && os.SameFile(cur, info) {
		err = os.Remove(d.file(sha))
		removed = err == nil
	}
	s.fileMu.Unlock()
	gen := s.Generation()
	log := s.log.With().Str("sha256", sha).Uint64("generation", gen).Str("m2", d.path).Str("found_by", foundBy).Logger()
	if !removed {
		log.Info().AnErr("cause", err).Msg("corrupt copy was already replaced or removed")
		return
	}
	_ = fsutil.SyncDir(d.dir)
	s.metrics.corrupt.WithLabelValues(foundBy).Inc()
	s.scrub.record(api.ScrubFinding{SHA256: sha, M2: d.path, Time: s.clk.Now(), Detail: detail + "; copy removed"})
	log.Error().Str("detail", detail).Msg("artifact deleted: stored copy is corrupt; it will be re-replicated")
	s.opts.OnChange()
	s.TriggerReconcile()
}

// chunkSize is the unit of every artifact copy loop.
const chunkSize = 1 << 20

// ctxReader stops a copy when ctx is done and reports progress.
type ctxReader struct {
	ctx      context.Context
	r        io.Reader
	n        int64
	progress func(int64)
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil && n > 0 {
		c.progress(c.n)
	}
	return n, err
}

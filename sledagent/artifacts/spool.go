package artifacts

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/fsutil"
	"github.com/rackplane/rackplane/sledagent/m2"
)

// spool receives one artifact's bytes and writes them to a temp file on
// each target device at once, hashing as it goes. A device that fails is
// dropped (its temp removed) and the others carry on; nothing reaches an
// artifact's final name until commit has checked the hash.
type spool struct {
	s       *Store
	sha     string
	source  string // metrics label and log field: put, depot, local
	targets []*target
	h       hash.Hash
	n       int64
	// from is the source URL of a copy whose temp files are kept across
	// restarts (partial.go); "" for the others.
	from string
	// length is the artifact's length when known (-1: not yet).
	length int64
	// resumed counts the bytes found in partial copies and not fetched
	// again (until a reset throws them away).
	resumed int64
}

type target struct {
	dev     *device
	f       *os.File
	tmp     string
	meta    string // the partial copy's description, kept beside tmp ("" for a plain temp)
	err     error  // why the device was dropped
	closed  bool   // committed or aborted: the temp file is gone or renamed
	written int64
}

// discard removes the target's files.
func (t *target) discard() {
	os.Remove(t.tmp)
	if t.meta != "" {
		os.Remove(t.meta)
	}
}

func (t *target) live() bool { return t.err == nil && !t.closed }

// openSpool creates a temp file for sha on each of devs. Temp names are
// unique, so concurrent writers of one hash never share a file.
func (s *Store) openSpool(sha, source string, devs []*device) *spool {
	sp := &spool{s: s, sha: sha, source: source, h: sha256.New(), length: -1}
	for _, d := range devs {
		t := &target{dev: d}
		f, err := os.CreateTemp(d.tmp, sha+"-*")
		if err != nil {
			t.err = fmt.Errorf("create temp file: %w", err)
		} else {
			t.f, t.tmp = f, f.Name()
		}
		sp.targets = append(sp.targets, t)
	}
	return sp
}

func (sp *spool) live() int {
	n := 0
	for _, t := range sp.targets {
		if t.live() {
			n++
		}
	}
	return n
}

// fail drops a target, freeing its space at once.
func (sp *spool) fail(t *target, err error) {
	if !t.live() {
		return
	}
	t.err = err
	if t.f != nil {
		t.f.Close()
		t.discard()
	}
	sp.s.log.Warn().Err(err).Str("sha256", sp.sha).Str("m2", t.dev.path).Str("source", sp.source).
		Int64("bytes_written", t.written).Msg("M.2 dropped from an artifact write")
}

// Write hashes p and writes it to every live target, all at once (each
// device and the hash on its own goroutine, so a chunk costs the slowest of
// them, not their sum). It fails only when no target is left (and there
// were targets to begin with).
func (sp *spool) Write(p []byte) (int, error) {
	sp.n += int64(len(p))
	if len(sp.targets) == 0 {
		sp.h.Write(p)
		return len(p), nil
	}
	sp.eachLive(func(t *target) error { return sp.writeTarget(t, p) }, func() { sp.h.Write(p) })
	if sp.live() == 0 {
		return 0, &allFailedError{sp.failures()}
	}
	return len(p), nil
}

// eachLive runs fn on every live target at once, and also (when not nil)
// runs on the calling goroutine meanwhile, then drops the targets fn failed on.
func (sp *spool) eachLive(fn func(*target) error, also func()) {
	errs := make([]error, len(sp.targets))
	var wg sync.WaitGroup
	for i, t := range sp.targets {
		if !t.live() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(t)
		}()
	}
	if also != nil {
		also()
	}
	wg.Wait()
	for i, t := range sp.targets {
		if errs[i] != nil {
			sp.fail(t, errs[i])
		}
	}
}

func (sp *spool) writeTarget(t *target, p []byte) error {
	if budget := sp.s.opts.Budgets[t.dev.path]; budget > 0 {
		if err := m2.CheckBudget(t.dev.path, budget, int64(len(p))); err != nil {
			return err
		}
	}
	n, err := t.f.Write(p)
	t.written += int64(n)
	sp.s.metrics.bytesWritten.WithLabelValues(sp.source).Add(float64(n))
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// readFrom copies r into the spool in whole chunks: network reads return a
// few KiB at a time, and gathering them into 1 MiB writes keeps the
// per-device syscall count (and the cost per byte) down. It returns the
// bytes taken and the first read or write error (io.EOF is not one).
func (sp *spool) readFrom(r io.Reader) (int64, error) {
	buf := make([]byte, chunkSize)
	var total int64
	for {
		n := 0
		var rerr error
		for n < len(buf) && rerr == nil {
			var m int
			m, rerr = r.Read(buf[n:])
			n += m
		}
		if n > 0 {
			if _, err := sp.Write(buf[:n]); err != nil {
				return total, err
			}
			total += int64(n)
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// reset empties every live target and the hash, for a source that answered
// a resumed request with the whole artifact.
func (sp *spool) reset() error {
	sp.h.Reset()
	sp.n, sp.resumed = 0, 0
	for _, t := range sp.targets {
		if !t.live() {
			continue
		}
		if err := t.f.Truncate(0); err != nil {
			sp.fail(t, fmt.Errorf("truncate: %w", err))
			continue
		}
		if _, err := t.f.Seek(0, 0); err != nil {
			sp.fail(t, fmt.Errorf("seek: %w", err))
		}
		t.written = 0
	}
	if len(sp.targets) > 0 && sp.live() == 0 {
		return &allFailedError{sp.failures()}
	}
	return nil
}

// abort removes every temp file.
func (sp *spool) abort() {
	for _, t := range sp.targets {
		if t.live() {
			t.f.Close()
			t.discard()
			t.closed = true
		}
	}
}

func (sp *spool) failures() []api.M2Failure {
	var out []api.M2Failure
	for _, t := range sp.targets {
		if t.err != nil {
			out = append(out, api.M2Failure{M2: t.dev.path, Error: t.err.Error(), Full: m2.IsNoSpace(t.err)})
		}
	}
	return out
}

func (sp *spool) sum() string { return hex.EncodeToString(sp.h.Sum(nil)) }

// hashMismatchError says the bytes received are not the artifact named.
type hashMismatchError struct {
	want, got string
	n         int64
}

func (e *hashMismatchError) Error() string {
	return fmt.Sprintf("the %d bytes received have sha256 %s, not %s", e.n, e.got, e.want)
}

// allFailedError says no device could take the artifact.
type allFailedError struct{ failed []api.M2Failure }

func (e *allFailedError) Error() string {
	var parts []string
	for _, f := range e.failed {
		parts = append(parts, f.M2+": "+f.Error)
	}
	return "no M.2 could store the artifact (" + strings.Join(parts, "; ") + ")"
}

// asFault is the answer for a write no device took: insufficient storage
// when every device was full, unavailable otherwise.
func (e *allFailedError) asFault() *fault.Error {
	full := len(e.failed) > 0
	for _, f := range e.failed {
		full = full && f.Full
	}
	if full {
		return fault.Wrap(e, fault.InsufficientStorage, api.CodeInsufficientStorage, "%s", e.Error())
	}
	return fault.Wrap(e, fault.Unavailable, api.CodeM2WriteFailed, "%s", e.Error())
}

// commitResult is what a commit stored.
type commitResult struct {
	written    []string
	failed     []api.M2Failure
	generation uint64
}

// commit checks the hash and, when it matches, makes the artifact durable
// on each live target: fsync, then, under the config lock held for reading
// (re-checking that the config still wants the hash and the device is
// still in use) and fileMu, rename into place; then fsync each directory.
// A mismatch, or a hash the config dropped meanwhile, keeps nothing. log
// carries the artifact's sha256 (and, for copies, the generation) already.
func (sp *spool) commit(log *zerolog.Logger) (commitResult, error) {
	var res commitResult
	if got := sp.sum(); got != sp.sha {
		sp.abort()
		return res, &hashMismatchError{want: sp.sha, got: got, n: sp.n}
	}
	// fsync the devices in parallel: each waits on its own hardware.
	sp.eachLive(func(t *target) error {
		err := t.f.Sync()
		if cerr := t.f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		return nil
	}, nil)

	s := sp.s
	s.mu.RLock()
	res.generation = s.gen
	if !s.wanted[sp.sha] {
		s.mu.RUnlock()
		sp.abort()
		return res, generationConflict(api.CodeGenerationMismatch, res.generation,
			"artifact %s left the sled's artifact config (now generation %d) while it was being written; nothing was kept",
			sp.sha, res.generation)
	}
	s.fileMu.Lock()
	var renamed []*target
	for _, t := range sp.targets {
		if !t.live() {
			continue
		}
		if !s.isActiveLocked(t.dev) {
			sp.fail(t, errors.New("the M.2 went out of use during the write"))
			continue
		}
		if err := os.Rename(t.tmp, t.dev.file(sp.sha)); err != nil {
			sp.fail(t, fmt.Errorf("rename into place: %w", err))
			continue
		}
		if t.meta != "" {
			os.Remove(t.meta)
		}
		t.closed = true
		renamed = append(renamed, t)
	}
	s.fileMu.Unlock()
	s.mu.RUnlock()

	for _, t := range renamed {
		if err := fsutil.SyncDir(t.dev.dir); err != nil {
			log.Warn().Err(err).Str("m2", t.dev.path).Msg("fsync of update directory failed")
		}
		res.written = append(res.written, t.dev.path)
		log.Info().Str("m2", t.dev.path).
			Int64("bytes", sp.n).Str("source", sp.source).Msg("artifact stored")
	}
	res.failed = sp.failures()
	if len(sp.targets) > 0 && len(renamed) == 0 {
		return res, &allFailedError{res.failed}
	}
	if len(renamed) > 0 {
		s.metrics.stored.WithLabelValues(sp.source).Add(float64(len(renamed)))
		s.opts.OnChange()
	}
	return res, nil
}

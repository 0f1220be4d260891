package artifacts

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sync"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
)

// Partial copies. A copy from a depot writes into update/tmp/<sha>.partial
// on each target M.2, described by <sha>.partial.json (the hash, the
// source, the length once known). Neither name is an artifact's: nothing
// that lists artifacts looks in tmp/, and nothing there is ever renamed
// into update/ before the whole file has hashed to its name. When the
// sled agent stops (or is killed) mid-copy the files stay; the next copy
// of that hash from the same source re-hashes what is there and asks the
// source only for the rest. A partial copy from another source, of
// another hash, longer than the artifact, or that disagrees with its
// sibling M.2's is discarded.

const (
	partialSuffix = ".partial"
	metaSuffix    = ".partial.json"
)

// partialName matches what partial copies leave in tmp/.
var partialName = regexp.MustCompile(`^([0-9a-f]{64})\.partial(\.json)?$`)

func (d *device) partial(sha string) string { return filepath.Join(d.tmp, sha+partialSuffix) }
func (d *device) partialMeta(sha string) string {
	return filepath.Join(d.tmp, sha+metaSuffix)
}

// partialMeta describes a partial copy.
type partialMeta struct {
	SHA256 string `json:"sha256"`
	Source string `json:"source"`
	// Length is the artifact's length, -1 until a response said it.
	Length int64 `json:"length"`
}

func writeMeta(path string, m partialMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readMeta(path string) (partialMeta, error) {
	var m partialMeta
	b, err := os.ReadFile(path)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// keepPartials is prepare's filter for tmp/: partial copies with their
// description survive a restart, everything else in tmp/ (interrupted
// PUTs, local copies, a half-written description) goes.
func keepPartials(names []string) map[string]bool {
	has := map[string]bool{}
	for _, n := range names {
		has[n] = true
	}
	keep := map[string]bool{}
	for _, n := range names {
		m := partialName.FindStringSubmatch(n)
		if m == nil {
			continue
		}
		if has[m[1]+partialSuffix] && has[m[1]+metaSuffix] {
			keep[n] = true
		}
	}
	return keep
}

// candidate is a usable partial copy on one device.
type candidate struct {
	dev  *device
	size int64
	meta partialMeta
	h    hash.Hash
}

// openPartial opens the spool of a copy of sha from src onto devs. When
// partial copies of sha from src are there, the copy resumes: the spool
// covers the devices holding one, at the length they agree on, hashed
// from their bytes (a device without one is filled from its sibling once
// the copy is stored). Otherwise every device gets a new partial copy.
func (s *Store) openPartial(sha, src string, devs []*device, log *zerolog.Logger) *spool {
	var cands []*candidate
	for _, d := range devs {
		c, why := usablePartial(d, sha, src)
		if c != nil {
			cands = append(cands, c)
			continue
		}
		if why != "" {
			log.Info().Str("m2", d.path).Str("reason", why).Msg("partial copy discarded")
		}
		os.Remove(d.partial(sha))
		os.Remove(d.partialMeta(sha))
	}
	if sp := s.resume(sha, src, cands, log); sp != nil {
		return sp
	}
	for _, c := range cands {
		os.Remove(c.dev.partial(sha))
		os.Remove(c.dev.partialMeta(sha))
	}
	sp := &spool{s: s, sha: sha, source: "depot", h: sha256.New(), from: src, length: -1}
	for _, d := range devs {
		t := &target{dev: d, tmp: d.partial(sha), meta: d.partialMeta(sha)}
		f, err := os.OpenFile(t.tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err == nil {
			if err = writeMeta(t.meta, partialMeta{SHA256: sha, Source: src, Length: -1}); err != nil {
				f.Close()
				os.Remove(t.tmp)
			}
		}
		if err != nil {
			t.err = fmt.Errorf("create partial copy: %w", err)
		} else {
			t.f = f
		}
		sp.targets = append(sp.targets, t)
	}
	return sp
}

// usablePartial returns d's partial copy of sha if it can be resumed from
// src, or why it cannot ("" when there is none).
func usablePartial(d *device, sha, src string) (*candidate, string) {
	info, err := os.Stat(d.partial(sha))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ""
	}
	if err != nil {
		return nil, err.Error()
	}
	meta, err := readMeta(d.partialMeta(sha))
	switch {
	case err != nil:
		return nil, "its description is unreadable: " + err.Error()
	case meta.SHA256 != sha:
		return nil, fmt.Sprintf("it is a copy of %s", meta.SHA256)
	case meta.Source != src:
		return nil, fmt.Sprintf("it came from %s, this copy from %s", meta.Source, src)
	case meta.Length >= 0 && info.Size() > meta.Length:
		return nil, fmt.Sprintf("it holds %d bytes of a %d-byte artifact", info.Size(), meta.Length)
	case info.Size() == 0:
		return nil, "it is empty"
	}
	return &candidate{dev: d, size: info.Size(), meta: meta}, ""
}

// resume makes the spool of a resumed copy from cands, or returns nil
// when they cannot be resumed together (their bytes differ, or one cannot
// be read).
func (s *Store) resume(sha, src string, cands []*candidate, log *zerolog.Logger) *spool {
	if len(cands) == 0 {
		return nil
	}
	n := cands[0].size
	length := int64(-1)
	for _, c := range cands {
		n = min(n, c.size)
		if c.meta.Length >= 0 {
			length = c.meta.Length
		}
	}
	// Re-hash what each holds, up to the length they all have, at once.
	errs := make([]error, len(cands))
	var wg sync.WaitGroup
	for i, c := range cands {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.h = sha256.New()
			f, err := os.Open(c.dev.partial(sha))
			if err != nil {
				errs[i] = err
				return
			}
			defer f.Close()
			_, errs[i] = io.CopyN(c.h, f, n)
		}()
	}
	wg.Wait()
	var sum []byte
	for i, c := range cands {
		if errs[i] != nil {
			log.Warn().Err(errs[i]).Str("m2", c.dev.path).Msg("partial copy unreadable; starting over")
			return nil
		}
		got := c.h.Sum(nil)
		if sum != nil && string(got) != string(sum) {
			log.Warn().Int64("bytes", n).Msg("partial copies on the M.2s disagree; starting over")
			return nil
		}
		sum = got
	}
	sp := &spool{s: s, sha: sha, source: "depot", h: cands[0].h, n: n, from: src, length: length, resumed: n}
	for _, c := range cands {
		t := &target{dev: c.dev, tmp: c.dev.partial(sha), meta: c.dev.partialMeta(sha), written: n}
		f, err := os.OpenFile(t.tmp, os.O_RDWR, 0)
		if err == nil {
			if err = f.Truncate(n); err == nil {
				_, err = f.Seek(n, io.SeekStart)
			}
			if err != nil {
				f.Close()
			}
		}
		if err != nil {
			t.err = fmt.Errorf("reopen partial copy: %w", err)
			t.discard()
		} else {
			t.f = f
		}
		sp.targets = append(sp.targets, t)
	}
	if sp.live() == 0 {
		return nil
	}
	return sp
}

// setLength records the artifact's length in the partial copies'
// descriptions, once a response has said it.
func (sp *spool) setLength(n int64) {
	if sp.from == "" || n < 0 || n == sp.length {
		return
	}
	sp.length = n
	for _, t := range sp.targets {
		if !t.live() || t.meta == "" {
			continue
		}
		if err := writeMeta(t.meta, partialMeta{SHA256: sp.sha, Source: sp.from, Length: n}); err != nil {
			sp.fail(t, fmt.Errorf("describe partial copy: %w", err))
		}
	}
}

// suspend closes a copy that stops before it is complete (the sled agent
// stopping, or a source that keeps failing) and keeps its partial copies
// for the next copy of the hash to resume, unless they hold nothing.
func (sp *spool) suspend() {
	if sp.n == 0 || sp.from == "" {
		sp.abort()
		return
	}
	for _, t := range sp.targets {
		if t.live() {
			t.f.Close()
			t.closed = true
		}
	}
}

// removeUnwantedPartials removes partial copies that no copy is writing
// and none will resume: of hashes the config no longer wants, or that the
// device already holds (stored some other way meanwhile), so they do not
// pile up.
func (s *Store) removeUnwantedPartials(d *device) {
	entries, err := os.ReadDir(d.tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		m := partialName.FindStringSubmatch(e.Name())
		if m == nil || api.CheckSHA256(m[1]) != nil {
			continue
		}
		s.mu.RLock()
		wanted := s.wanted[m[1]]
		s.mu.RUnlock()
		if (wanted && !d.holds(m[1])) || s.copies.busy(m[1]) {
			continue
		}
		if err := os.Remove(filepath.Join(d.tmp, e.Name())); err == nil && m[2] == "" {
			s.log.Info().Str("sha256", m[1]).Str("m2", d.path).Bool("wanted", wanted).
				Msg("partial copy removed: the artifact is stored here already, or no longer wanted")
		}
	}
}

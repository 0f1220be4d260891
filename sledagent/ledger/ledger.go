// Package ledger keeps a small value durably on every M.2 a sled has: any
// JSON-serialisable value with a generation, written atomically (temp file,
// fsync, rename, fsync of the directory) to each device directory given.
//
// A read takes the highest generation found on any device and rewrites the
// devices that hold an older one, none, or a damaged file, so a device that
// was absent or behind catches up as soon as it is read together with its
// sibling. A write succeeds when at least one device took it and reports
// which did not. Deciding whether a generation may replace another is the
// caller's business; the ledger only stores and compares.
package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/rackplane/rackplane/internal/fsutil"
)

// ErrNoDevices is returned by Write when it is given no directory.
var ErrNoDevices = errors.New("no M.2 device is present")

// Ledger is one named ledger: a file of that name in each device directory.
type Ledger[T any] struct {
	name string
}

// New returns the ledger stored as name (a plain file name) in each
// directory passed to Read and Write.
func New[T any](name string) *Ledger[T] {
	if name == "" || strings.ContainsRune(name, filepath.Separator) || strings.HasPrefix(name, fsutil.TempPrefix) {
		panic(fmt.Sprintf("ledger: bad file name %q", name))
	}
	return &Ledger[T]{name: name}
}

// Record is a ledgered value and its generation.
type Record[T any] struct {
	Generation uint64
	Value      T
}

// envelope is the file format. Checksum covers the generation and the
// value's bytes, so a flipped bit (which JSON might still parse, say in a
// digit of the generation) reads as damage instead of as another record.
type envelope struct {
	Generation uint64          `json:"generation"`
	Value      json.RawMessage `json:"value"`
	Checksum   string          `json:"checksum"`
}

func checksum(gen uint64, value []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%d\n", gen)
	h.Write(value)
	return hex.EncodeToString(h.Sum(nil))
}

// DirError is a problem with one device directory.
type DirError struct {
	Dir string
	Err error
}

func (e DirError) Error() string { return e.Dir + ": " + e.Err.Error() }

// ReadResult is what Read found and repaired.
type ReadResult[T any] struct {
	Record[T]
	// Found is false when no device held a readable record.
	Found bool
	// Source is the directory the record was taken from.
	Source string
	// Rewritten lists directories that held an older generation, no
	// record or a damaged one, and were brought to Generation.
	Rewritten []string
	// Problems lists directories whose record could not be read (damaged
	// or unreadable) or could not be rewritten.
	Problems []DirError
}

// WriteResult says which directories took a write.
type WriteResult struct {
	Written []string
	Failed  []DirError
}

// Path is the ledger's file in dir.
func (l *Ledger[T]) Path(dir string) string { return filepath.Join(dir, l.name) }

// readOne returns the record in dir; found is false when there is none.
func (l *Ledger[T]) readOne(dir string) (rec Record[T], found bool, err error) {
	b, err := os.ReadFile(l.Path(dir))
	if errors.Is(err, os.ErrNotExist) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, err
	}
	// Decoding copies what it keeps; the file's bytes (and the value's)
	// may hold secrets and are zeroed once decoded.
	defer clear(b)
	var env envelope
	defer func() { clear(env.Value) }()
	if err := json.Unmarshal(b, &env); err != nil {
		return rec, false, fmt.Errorf("damaged ledger %s: %w", l.name, err)
	}
	if env.Checksum != checksum(env.Generation, env.Value) {
		return rec, false, fmt.Errorf("damaged ledger %s: checksum mismatch", l.name)
	}
	if err := json.Unmarshal(env.Value, &rec.Value); err != nil {
		return rec, false, fmt.Errorf("ledger %s holds a value of the wrong shape: %w", l.name, err)
	}
	rec.Generation = env.Generation
	return rec, true, nil
}

// Read returns the record with the highest generation found in dirs and
// rewrites it to every directory that held an older one, none, or a damaged
// file. When two directories hold the same generation, the first in dirs
// wins (they were written together, so they agree unless something outside
// the sled agent changed them). It returns an error only when dirs is not
// empty and not one of them could be read.
func (l *Ledger[T]) Read(dirs []string) (ReadResult[T], error) {
	var res ReadResult[T]
	type seen struct {
		gen   uint64
		found bool
	}
	state := make([]seen, len(dirs))
	readable := 0
	for i, dir := range dirs {
		rec, found, err := l.readOne(dir)
		if err != nil {
			res.Problems = append(res.Problems, DirError{Dir: dir, Err: err})
			continue
		}
		readable++
		state[i] = seen{gen: rec.Generation, found: found}
		if found && (!res.Found || rec.Generation > res.Generation) {
			res.Record, res.Found, res.Source = rec, true, dir
		}
	}
	if len(dirs) > 0 && readable == 0 && !res.Found {
		return res, fmt.Errorf("ledger %s: no device could be read: %w", l.name, errors.Join(dirErrs(res.Problems)...))
	}
	if !res.Found {
		return res, nil
	}
	var stale []string
	for i, dir := range dirs {
		if !state[i].found || state[i].gen < res.Generation {
			stale = append(stale, dir)
		}
	}
	if len(stale) > 0 {
		w, _ := l.Write(stale, res.Record)
		res.Rewritten = w.Written
		res.Problems = append(res.Problems, w.Failed...)
	}
	return res, nil
}

func dirErrs(ds []DirError) []error {
	out := make([]error, len(ds))
	for i, d := range ds {
		out[i] = d
	}
	return out
}

// Write stores rec in every directory in dirs, concurrently, and succeeds
// when at least one took it. Directories are not created: a device whose
// directory is gone is reported as failed.
func (l *Ledger[T]) Write(dirs []string, rec Record[T]) (WriteResult, error) {
	if len(dirs) == 0 {
		return WriteResult{}, fmt.Errorf("ledger %s: %w", l.name, ErrNoDevices)
	}
	value, err := json.Marshal(rec.Value)
	if err != nil {
		return WriteResult{}, fmt.Errorf("ledger %s: encode value: %w", l.name, err)
	}
	defer clear(value)
	return l.WriteEncoded(dirs, rec.Generation, value)
}

// WriteEncoded is Write for a caller that already holds the value's JSON
// encoding: value must be what json.Marshal makes of a T (compact, valid
// JSON), and is stored as given, neither parsed nor copied more than once.
// The file is the same as Write's for that value. Both zero the encoded
// file once it is written (ledgers may hold secrets); value stays the
// caller's.
func (l *Ledger[T]) WriteEncoded(dirs []string, gen uint64, value []byte) (WriteResult, error) {
	var res WriteResult
	if len(dirs) == 0 {
		return res, fmt.Errorf("ledger %s: %w", l.name, ErrNoDevices)
	}
	data := encodeEnvelope(gen, value)
	defer clear(data)
	errs := make([]error, len(dirs))
	var wg sync.WaitGroup
	for i, dir := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fsutil.WriteFileAtomic(l.Path(dir), data, 0o644)
		}()
	}
	wg.Wait()
	for i, dir := range dirs {
		if errs[i] != nil {
			res.Failed = append(res.Failed, DirError{Dir: dir, Err: errs[i]})
		} else {
			res.Written = append(res.Written, dir)
		}
	}
	if len(res.Written) == 0 {
		return res, fmt.Errorf("ledger %s: no device took generation %d: %w", l.name, gen,
			errors.Join(dirErrs(res.Failed)...))
	}
	return res, nil
}

// encodeEnvelope lays out the file: the bytes json.Marshal makes of an
// envelope, and a newline. Appended by hand because json.Marshal would
// re-validate and copy the value, which is already JSON (and the bulk of
// the file), twice.
func encodeEnvelope(gen uint64, value []byte) []byte {
	const (
		head = `{"generation":`
		mid  = `,"value":`
		tail = `,"checksum":"`
	)
	sum := checksum(gen, value)
	data := make([]byte, 0, len(head)+20+len(mid)+len(value)+len(tail)+len(sum)+3)
	data = append(data, head...)
	data = strconv.AppendUint(data, gen, 10)
	data = append(data, mid...)
	data = append(data, value...)
	data = append(data, tail...)
	data = append(data, sum...)
	return append(data, '"', '}', '\n')
}

// RemoveTemps deletes the leftovers of interrupted writes of this ledger in
// dir. Call it only while nothing writes the ledger in dir (at start-up, or
// before a device that just appeared is put to use).
func (l *Ledger[T]) RemoveTemps(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	prefix := fsutil.TempPrefix + l.name + "-"
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

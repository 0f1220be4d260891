package tufrepo

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// Spool makes the temp files an upload's bytes are written to. Nexus's
// depot is one: its temp files live beside the artifacts (so a verified
// one is renamed into place, never copied) and are removed at start-up, so
// a crash leaves nothing that is later mistaken for data.
type Spool interface {
	CreateTemp(purpose string) (*os.File, error)
}

// WriteError is a failure to write to the spool (a full disk, say), as
// opposed to anything wrong with the archive.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return "write upload file: " + e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// ReadError is a failure to read the upload's body after N bytes (the
// client went away, stalled, or the budget refused more).
type ReadError struct {
	Err error
	N   int64
}

func (e *ReadError) Error() string { return fmt.Sprintf("read upload after %d bytes: %v", e.N, e.Err) }
func (e *ReadError) Unwrap() error { return e.Err }

// Small things stay in memory, within a bound for the whole upload;
// everything else goes to a temp file.
const (
	smallEntry    = 64 << 10
	defaultMemory = 16 << 20
)

// store is what every sink of one upload shares: the spool, the memory
// bound, the temp files made (to remove at the end), and the syncer that
// fsyncs finished files while the next bytes arrive.
type store struct {
	spool Spool

	mu     sync.Mutex
	memory int64 // bytes held in memory by sinks
	limit  int64
	files  []string
	// readers are files opened to read finished sinks back.
	readers []*os.File
	closed  bool

	sync *syncer
}

func newStore(spool Spool, memory int64) *store {
	if memory <= 0 {
		memory = defaultMemory
	}
	return &store{spool: spool, limit: memory, sync: newSyncer()}
}

// takeMemory reserves n bytes of memory, or says there is none left.
func (st *store) takeMemory(n int64) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.memory+n > st.limit {
		return false
	}
	st.memory += n
	return true
}

func (st *store) create(purpose string) (*os.File, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return nil, errors.New("tufrepo: the upload is closed")
	}
	f, err := st.spool.CreateTemp(purpose)
	if err != nil {
		return nil, &WriteError{err}
	}
	st.files = append(st.files, f.Name())
	return f, nil
}

// removeAll deletes every temp file made that is still there (a verified
// one renamed into the depot is not).
func (st *store) removeAll() {
	st.sync.wait()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closed = true
	for _, f := range st.readers {
		f.Close()
	}
	for _, name := range st.files {
		_ = os.Remove(name)
	}
	st.files, st.readers = nil, nil
}

// syncer fsyncs and closes finished files in the background, in order.
type syncer struct {
	work chan syncItem
	done chan struct{}
	once sync.Once
	mu   sync.Mutex
	err  error
}

// syncItem is a file to fsync and close, or a barrier to signal.
type syncItem struct {
	f       *os.File
	barrier chan struct{}
}

func newSyncer() *syncer {
	s := &syncer{work: make(chan syncItem, 64), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for it := range s.work {
			if it.barrier != nil {
				close(it.barrier)
				continue
			}
			err := it.f.Sync()
			if cerr := it.f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				s.mu.Lock()
				if s.err == nil {
					s.err = &WriteError{fmt.Errorf("%s: %w", it.f.Name(), err)}
				}
				s.mu.Unlock()
			}
		}
	}()
	return s
}

func (s *syncer) add(f *os.File) { s.work <- syncItem{f: f} }

// flush waits until every file queued so far is fsynced and returns the
// first failure.
func (s *syncer) flush() error {
	b := make(chan struct{})
	s.work <- syncItem{barrier: b}
	<-b
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// wait finishes every queued file and stops the syncer.
func (s *syncer) wait() {
	s.once.Do(func() { close(s.work) })
	<-s.done
}

// sink holds one stream of bytes: an entry's data, a composite's part, or
// the raw bytes the archive's layout needs kept. It starts in memory and
// moves to a temp file once it outgrows smallEntry (or memory runs out).
type sink struct {
	st      *store
	purpose string
	mem     []byte
	f       *os.File
	name    string
	n       int64
	done    bool
	// rf reads the file back; opened on the first read.
	rf *os.File
}

func (st *store) newSink(purpose string) *sink { return &sink{st: st, purpose: purpose} }

func (s *sink) Write(p []byte) (int, error) {
	if s.f == nil {
		if int64(len(s.mem))+int64(len(p)) <= smallEntry && s.st.takeMemory(int64(len(p))) {
			s.mem = append(s.mem, p...)
			s.n += int64(len(p))
			return len(p), nil
		}
		f, err := s.st.create(s.purpose)
		if err != nil {
			return 0, err
		}
		s.f, s.name = f, f.Name()
		if len(s.mem) > 0 {
			if _, err := f.Write(s.mem); err != nil {
				return 0, &WriteError{err}
			}
			s.st.mu.Lock()
			s.st.memory -= int64(len(s.mem))
			s.st.mu.Unlock()
			s.mem = nil
		}
	}
	n, err := s.f.Write(p)
	s.n += int64(n)
	if err != nil {
		return n, &WriteError{err}
	}
	return n, nil
}

// finish ends the sink: a file is fsynced and closed in the background.
func (s *sink) finish() {
	if s.done {
		return
	}
	s.done = true
	if s.f != nil {
		s.st.sync.add(s.f)
	}
}

// ReadAt reads the sink's bytes (after finish, for a file).
func (s *sink) ReadAt(p []byte, off int64) (int, error) {
	if s.name == "" {
		if off >= int64(len(s.mem)) {
			return 0, io.EOF
		}
		n := copy(p, s.mem[off:])
		if n < len(p) {
			return n, io.EOF
		}
		return n, nil
	}
	if s.rf == nil {
		f, err := os.Open(s.name)
		if err != nil {
			return 0, err
		}
		s.st.mu.Lock()
		s.st.readers = append(s.st.readers, f)
		s.st.mu.Unlock()
		s.rf = f
	}
	return s.rf.ReadAt(p, off)
}

// open reads the sink from its start.
func (s *sink) open() io.Reader { return io.NewSectionReader(s, 0, s.n) }

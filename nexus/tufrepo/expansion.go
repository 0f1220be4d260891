package tufrepo

import (
	"errors"
	"io"

	"github.com/rackplane/rackplane/release"
)

// expansion reads an entry as a composite archive while the entry
// arrives: its decompressed bytes are fed through a pipe to release.Expand
// on another goroutine, which writes each part to a sink of its own. Most
// gzip streams are not composites (a zone image is a tarball too);
// Expand says so after the first tar header, and the rest of the entry is
// not fed. Whether the entry is a composite at all is known only once the
// manifest is read; until then this is a guess that costs one pipe.
type expansion struct {
	pw    *chunkPipe
	done  chan struct{}
	off   bool // stopped being fed (Expand returned early)
	parts map[string]*sink
	order []*sink
	res   *release.Expanded
	err   error
}

func (r *Received) startExpansion() *expansion {
	pw := newChunkPipe()
	pr := pw
	x := &expansion{pw: pw, done: make(chan struct{}), parts: map[string]*sink{}}
	limit := r.opts.MaxExpansion - r.partBytes
	go func() {
		defer close(x.done)
		var cur *sink
		res, err := release.Expand(pr, func(path string) (io.Writer, error) {
			if cur != nil {
				cur.finish()
			}
			cur = r.st.newSink("upload-part")
			x.parts[path] = cur
			x.order = append(x.order, cur)
			return cur, nil
		}, release.ExpandOptions{TypeFirst: true, MaxBytes: max(limit, 1)})
		if cur != nil {
			cur.finish()
		}
		x.res, x.err = res, err
		// Stop the feeder: whatever follows is not read.
		pr.stopReading()
	}()
	return x
}

var errExpansionDone = errors.New("tufrepo: composite reader done")

// feed passes bytes on, until the reader has stopped.
func (x *expansion) feed(p []byte) {
	if x.off || len(p) == 0 {
		return
	}
	if _, err := x.pw.Write(p); err != nil {
		x.off = true
	}
}

// finish ends the input and waits for the reader. An entry that did not
// arrive whole is no composite to expand.
func (x *expansion) finish(complete bool) {
	if complete {
		x.pw.Close()
	} else {
		x.pw.CloseWithError(io.ErrUnexpectedEOF)
	}
	<-x.done
}

// abandon stops the reader (the upload is ending).
func (x *expansion) abandon() {
	x.pw.CloseWithError(errExpansionDone)
	<-x.done
}

// result is what the entry expanded to, or nil when it is not a composite
// (or its expansion failed: err says why).
func (x *expansion) result() (*release.Expanded, map[string]*sink, error) {
	return x.res, x.parts, x.err
}

// chunkPipe is a pipe with a few chunks of slack, so that the entry's
// bytes go on to its file while the composite reader works on the ones
// before: the two run side by side instead of taking turns.
type chunkPipe struct {
	full chan []byte
	free chan []byte
	// stop is closed when the reader stops; err is why the writer
	// closed (io.EOF for a clean end).
	stop    chan struct{}
	stopped bool
	cur     []byte
	orig    []byte // the buffer cur is a part of
	made    int
	err     error
	closed  bool
}

const pipeChunk, pipeChunks = 256 << 10, 8

func newChunkPipe() *chunkPipe {
	return &chunkPipe{full: make(chan []byte, pipeChunks), free: make(chan []byte, pipeChunks), stop: make(chan struct{})}
}

// Write copies b into the pipe; it fails once the reader has stopped.
func (p *chunkPipe) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		var buf []byte
		select {
		case buf = <-p.free:
		default:
			if p.made < pipeChunks {
				p.made++
				buf = make([]byte, 0, pipeChunk)
				break
			}
			select {
			case buf = <-p.free:
			case <-p.stop:
				return n, errExpansionDone
			}
		}
		k := min(len(b), cap(buf))
		buf = append(buf[:0], b[:k]...)
		select {
		case p.full <- buf:
		case <-p.stop:
			return n, errExpansionDone
		}
		b, n = b[k:], n+k
	}
	return n, nil
}

// Close ends the input cleanly; CloseWithError with err.
func (p *chunkPipe) Close() error { return p.CloseWithError(io.EOF) }

// CloseWithError ends the input; the reader sees err after the bytes.
func (p *chunkPipe) CloseWithError(err error) error {
	if !p.closed {
		p.closed = true
		p.err = err
		close(p.full)
	}
	return nil
}

// Read is the reader's side.
func (p *chunkPipe) Read(b []byte) (int, error) {
	if len(p.cur) == 0 {
		if p.orig != nil {
			p.free <- p.orig[:0]
			p.orig = nil
		}
		buf, ok := <-p.full
		if !ok {
			return 0, p.err
		}
		p.cur, p.orig = buf, buf
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// stopReading tells the writer that nothing more is read.
func (p *chunkPipe) stopReading() {
	if !p.stopped {
		p.stopped = true
		close(p.stop)
	}
}

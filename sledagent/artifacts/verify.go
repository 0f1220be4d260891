package artifacts

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"regexp"
)

// The depot checks every copy it serves against its name as it streams
// it: a copy that rotted on its M.2 since the last scrub is found the
// moment another sled reads it, and the reader never receives it whole.
// The last bytes of the file are held back until the hash over all of it
// is known; a mismatch cuts the transfer short (the receiver sees fewer
// bytes than the length it was promised, and its own hash check refuses
// what it has), and the copy is removed and reported at once.

// errCorruptCopy is why a depot read stopped: the stored copy does not
// hash to its name.
var errCorruptCopy = errors.New("the stored copy does not match its sha256")

// verifiedReader is the io.ReadSeeker http.ServeContent reads a stored
// copy through. Whatever range is asked for, the bytes before it are read
// and hashed first, so the hash always covers the file from its start;
// the read that reaches the end of the file returns its bytes only if the
// whole file matched.
type verifiedReader struct {
	f    *os.File
	size int64
	want string

	pos    int64 // where the next Read reads
	h      hash.Hash
	hashed int64 // the file's first hashed bytes are in h
	buf    []byte
	// got is the sha256 found when it differs from want.
	got string
	err error
}

func newVerifiedReader(f *os.File, size int64, want string) *verifiedReader {
	return &verifiedReader{f: f, size: size, want: want, h: sha256.New()}
}

func (v *verifiedReader) Seek(offset int64, whence int) (int64, error) {
	var pos int64
	switch whence {
	case io.SeekStart:
		pos = offset
	case io.SeekCurrent:
		pos = v.pos + offset
	case io.SeekEnd:
		pos = v.size + offset
	default:
		return 0, fmt.Errorf("seek: bad whence %d", whence)
	}
	if pos < 0 {
		return 0, errors.New("seek: negative position")
	}
	v.pos = pos
	return pos, nil
}

// catchUp hashes the file from what is hashed up to pos.
func (v *verifiedReader) catchUp() error {
	if v.hashed > v.pos {
		// Reading backwards (another range of a multi-range request):
		// hash again from the start.
		v.h.Reset()
		v.hashed = 0
	}
	if v.buf == nil && v.hashed < v.pos {
		v.buf = make([]byte, chunkSize)
	}
	for v.hashed < v.pos {
		n, err := v.f.ReadAt(v.buf[:min(int64(len(v.buf)), v.pos-v.hashed)], v.hashed)
		v.h.Write(v.buf[:n])
		v.hashed += int64(n)
		if err != nil && !(err == io.EOF && v.hashed == v.pos) {
			return err
		}
	}
	return nil
}

func (v *verifiedReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if v.pos >= v.size {
		return 0, io.EOF
	}
	if err := v.catchUp(); err != nil {
		v.err = err
		return 0, err
	}
	p = p[:min(int64(len(p)), v.size-v.pos)]
	n, err := v.f.ReadAt(p, v.pos)
	if err == io.EOF && v.pos+int64(n) == v.size {
		err = nil
	}
	v.h.Write(p[:n])
	v.pos += int64(n)
	v.hashed = v.pos
	if err != nil {
		v.err = err
		return n, err
	}
	if v.pos == v.size {
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
			// Withhold the last bytes: the reader must not get a whole,
			// wrong artifact.
			v.got, v.err = got, errCorruptCopy
			return 0, v.err
		}
	}
	return n, nil
}

// verifyAll hashes the whole file, for reads whose range ends before the
// file does (the streaming check would not reach the end in time).
func (v *verifiedReader) verifyAll() error {
	v.pos = v.size
	if err := v.catchUp(); err != nil {
		return err
	}
	if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
		v.got, v.err = got, errCorruptCopy
		return v.err
	}
	v.pos = 0
	return nil
}

// openEnded matches a Range header whose only range runs to the end of the
// file (bytes=N- or bytes=-N), the ones copies send: those are checked as
// they stream. Anything else is checked whole before it is served.
var openEnded = regexp.MustCompile(`^bytes=\s*(\d+-|-\d+)\s*$`)

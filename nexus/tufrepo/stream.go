package tufrepo

import (
	"bufio"
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"hash/crc32"
	"io"
	"sort"
	"sync"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
)

// Receiving an archive in one pass.
//
// Receive reads the upload's body once, front to back. Each entry's local
// header says where its data starts; its data is decompressed, hashed
// (SHA-256 and CRC-32) and written to a temp file of its own in the spool
// (the depot) as it arrives, and a composite artifact's parts are written
// out of it at the same time. Nothing is trusted yet: which entries are
// signed targets, and whether they are what the central directory says,
// is known only at the end.
//
// So Receive also keeps every byte of the archive where it can be read
// again: headers and descriptors in memory, a stored entry's bytes in its
// own temp file (they are its raw bytes), everything else (deflated raw
// bytes, the directory, whatever the parser cannot place) in a spill. The
// archive is then whole again, as a virtual file, and Verify runs Open
// and Archive.Verify over it: every strict check of the directory, the
// local headers, the tiling of the file, the names and the metadata is
// exactly the check an archive on disk gets, and it reads only headers and
// metadata, never an artifact's bytes. The artifacts' streamed hashes,
// lengths and CRCs are then held against what was signed and what the
// directory says. Only after all of that does the caller rename the
// verified temp files into place.

// ReceiveOptions shape Receive.
type ReceiveOptions struct {
	Options
	// Memory bounds the small entries and parts held in memory instead
	// of temp files (default 16 MiB).
	Memory int64
	// Progress, when set, is called with the bytes read so far as they
	// arrive (an upload-in-progress view hooks in here).
	Progress func(received int64)
}

// Received is an archive read from a stream, not yet verified.
type Received struct {
	opts   ReceiveOptions
	st     *store
	size   int64
	sha256 string
	// segs map the archive's bytes, in order, to where they are kept.
	segs []segment
	// entries are the local headers parsed, in archive order.
	entries []*streamEntry
	spill   *sink
	// headerMemory bounds the headers and descriptors kept in memory.
	headerMemory int64
	// expanded counts decompressed entry bytes, partBytes composite
	// parts' bytes, each bounded by MaxExpansion.
	expanded, partBytes int64
	// blobs are the verified bytes, after Verify.
	blobs []Blob
	// copyBuf carries stored entries' bytes: large, so they reach their
	// files in few writes.
	copyBuf []byte
	// entryHash hashes entries' bytes beside the parser.
	entryHash *bgHash
}

const copyBufSize = 1 << 20

// segment is n bytes of the archive at off: in mem, or at srcOff in src.
type segment struct {
	off, n int64
	mem    []byte
	src    *sink
	srcOff int64
}

// streamEntry is one entry as the stream showed it.
type streamEntry struct {
	name               string
	headerOff, dataOff int64
	method, flags      uint16
	// rawLen is the compressed bytes consumed, size the decompressed
	// bytes written to data.
	rawLen, size int64
	crc          uint32
	sha          []byte
	data         *sink
	// complete is set when the entry's data ended where its layout says
	// (not cut off by the end of the body or undecodable); tail when its
	// deflate stream ended before its compressed bytes did.
	complete, tail bool
	// exp is the entry read as a composite archive while it arrived.
	exp *expansion
}

const headerMemoryLimit = 8 << 20

// Receive reads an archive from body to its end. It refuses early only
// what is certain to be refused whatever the directory says (an expansion
// beyond the bound); everything else is judged by Verify. A failure to
// read the body is a *ReadError, one to write the spool a *WriteError.
// The caller must Close the result.
func Receive(body io.Reader, spool Spool, o ReceiveOptions) (*Received, error) {
	o.Options.defaults()
	r := &Received{opts: o, st: newStore(spool, o.Memory)}
	r.spill = r.st.newSink("upload-spill")
	hr := newParallelHash(body, o.Progress)
	// The buffer holds the largest local header (30 bytes and two 64 KiB
	// fields) with room to spare; stored data bypasses it (copyBuf).
	in := bufio.NewReaderSize(hr, 256<<10)
	err := r.parse(in)
	r.sha256, r.size = hr.sum()
	if r.entryHash != nil {
		r.entryHash.stop()
	}
	if err != nil {
		r.Close()
		return nil, err
	}
	r.spill.finish()
	return r, nil
}

// SHA256 is the archive's hash, Size its length.
func (r *Received) SHA256() string { return r.sha256 }

// Size is the archive's length in bytes.
func (r *Received) Size() int64 { return r.size }

// Close removes every temp file of the upload that was not taken (renamed
// into the depot) and stops its helpers.
func (r *Received) Close() {
	for _, e := range r.entries {
		if e.exp != nil {
			e.exp.abandon()
		}
	}
	r.st.removeAll()
}

// pos is the archive offset of the next byte.
func (r *Received) pos() int64 {
	if len(r.segs) == 0 {
		return 0
	}
	s := r.segs[len(r.segs)-1]
	return s.off + s.n
}

// keep records bytes held in memory (headers, descriptors).
func (r *Received) keep(b []byte) bool {
	if r.headerMemory+int64(len(b)) > headerMemoryLimit {
		return false
	}
	r.headerMemory += int64(len(b))
	r.segs = append(r.segs, segment{off: r.pos(), n: int64(len(b)), mem: bytes.Clone(b)})
	return true
}

// mapped records n bytes of the archive kept in src from srcOff.
func (r *Received) mapped(src *sink, srcOff, n int64) {
	if n == 0 {
		return
	}
	if len(r.segs) > 0 {
		if last := &r.segs[len(r.segs)-1]; last.src == src && last.srcOff+last.n == srcOff {
			last.n += n
			return
		}
	}
	r.segs = append(r.segs, segment{off: r.pos(), n: n, src: src, srcOff: srcOff})
}

// toSpill copies n raw bytes (or to EOF, n < 0) from in to the spill.
func (r *Received) toSpill(in io.Reader, n int64) (int64, error) {
	src := in
	if n >= 0 {
		src = io.LimitReader(in, n)
	}
	at := r.spill.n
	got, err := io.Copy(r.spill, src)
	r.mapped(r.spill, at, got)
	return got, readOrWrite(err, r.pos())
}

func readOrWrite(err error, n int64) error {
	var we *WriteError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &we):
		return we
	}
	var re *ReadError
	if errors.As(err, &re) {
		return re
	}
	return &ReadError{Err: err, N: n}
}

// parse reads local entries until something else comes; the rest (the
// directory, end records, and anything unexpected) goes to the spill.
func (r *Received) parse(in *bufio.Reader) error {
	for {
		head, err := in.Peek(4)
		if len(head) < 4 || string(head) != localHeaderSig {
			if err != nil && !errors.Is(err, io.EOF) {
				return &ReadError{Err: err, N: r.pos()}
			}
			_, err := r.toSpill(in, -1)
			return err
		}
		more, err := r.entry(in)
		if err != nil || !more {
			return err
		}
	}
}

// entry reads one entry; more is false when what follows cannot be placed
// and has gone to the spill.
func (r *Received) entry(in *bufio.Reader) (more bool, err error) {
	hdr, _ := in.Peek(localLen)
	if len(hdr) < localLen {
		_, err := r.toSpill(in, -1)
		return false, err
	}
	n, m := int(le16(hdr[26:])), int(le16(hdr[28:]))
	full, _ := in.Peek(localLen + n + m)
	if len(full) < localLen+n+m {
		_, err := r.toSpill(in, -1)
		return false, err
	}
	e := &streamEntry{name: string(full[localLen : localLen+n]), headerOff: r.pos(), flags: le16(full[6:]),
		method: le16(full[8:])}
	csize, usize := uint64(le32(full[18:])), uint64(le32(full[22:]))
	if csize == max32 || usize == max32 {
		z64, zerr := zip64Field(full[localLen+n:])
		var vals []uint64
		if zerr == nil && z64 != nil {
			vals, zerr = zip64Values(z64, usize == max32, csize == max32)
		}
		if zerr != nil || z64 == nil {
			_, err := r.toSpill(in, -1)
			return false, err
		}
		// Only the compressed size places the data; Verify compares the
		// rest with the directory.
		if usize == max32 {
			vals = vals[1:]
		}
		if csize == max32 {
			csize = vals[0]
		}
	}
	if !r.keep(full) {
		_, err := r.toSpill(in, -1)
		return false, err
	}
	if _, err := in.Discard(len(full)); err != nil {
		return false, &ReadError{Err: err, N: r.pos()}
	}
	e.dataOff = r.pos()
	r.entries = append(r.entries, e)
	descr := e.flags&flagDescriptor != 0
	switch {
	case e.flags&flagsEncrypted != 0 || (e.method != 0 && e.method != 8):
		// Not something to decode: its raw bytes are kept, and Open
		// refuses it.
		if descr || csize > 1<<62 {
			_, err := r.toSpill(in, -1)
			return false, err
		}
		got, err := r.toSpill(in, int64(csize))
		e.rawLen = got
		return got == int64(csize) && err == nil, err
	case e.method == 0 && !descr:
		if csize > 1<<62 {
			_, err := r.toSpill(in, -1)
			return false, err
		}
		ok, err := r.stored(in, e, int64(csize))
		return ok, err
	case e.method == 0:
		return r.storedScan(in, e)
	case !descr:
		return r.deflated(in, e, int64(csize))
	}
	ok, err := r.deflatedStream(in, e)
	if err != nil || !ok {
		return false, err
	}
	return r.descriptor(in, e)
}

// data returns the writer an entry's decompressed bytes go through: its
// sink, its hashes, and the composite reader once the bytes look like a
// gzip stream.
func (r *Received) data(e *streamEntry) *entryWriter {
	e.data = r.st.newSink("upload-entry")
	if r.entryHash == nil {
		r.entryHash = newBGHash()
	}
	return &entryWriter{r: r, e: e, sha: r.entryHash, crc: crc32.NewIEEE()}
}

// entryWriter receives an entry's decompressed bytes.
type entryWriter struct {
	r    *Received
	e    *streamEntry
	sha  *bgHash
	crc  hash.Hash32
	head []byte
	// sniffed is set once the first bytes decided whether to read the
	// entry as a composite.
	sniffed bool
}

func (w *entryWriter) Write(p []byte) (int, error) {
	r := w.r
	if r.expanded+int64(len(p)) > r.opts.MaxExpansion {
		return 0, errf(api.CodeExpansionLimit, "the archive's entries expand to more than %d bytes (the configured bound); "+
			"it is not a release archive", r.opts.MaxExpansion)
	}
	r.expanded += int64(len(p))
	if _, err := w.e.data.Write(p); err != nil {
		return 0, err
	}
	w.sha.Write(p)
	w.crc.Write(p)
	w.e.size += int64(len(p))
	if w.sniffed {
		if w.e.exp != nil {
			w.e.exp.feed(p)
		}
		return len(p), nil
	}
	// The first three bytes decide whether the entry is read as a
	// composite (a gzip stream) while it arrives; they may come in
	// pieces, all of them before p kept in head.
	before := len(w.head)
	w.head = append(w.head, p[:min(len(p), 3-before)]...)
	if len(w.head) == 3 {
		w.sniffed = true
		if w.head[0] == 0x1f && w.head[1] == 0x8b && w.head[2] == 8 {
			w.e.exp = r.startExpansion()
			w.e.exp.feed(w.head[:before])
			w.e.exp.feed(p)
		}
	}
	return len(p), nil
}

// end finishes the entry's data.
func (w *entryWriter) end(complete bool) {
	w.e.complete = complete
	w.e.sha = w.sha.sum()
	w.e.crc = w.crc.Sum32()
	w.e.data.finish()
	if w.e.exp != nil {
		w.e.exp.finish(complete)
	}
}

// stored copies a stored entry of known size: its bytes are its raw
// bytes, so the entry's sink holds the archive's bytes too.
func (r *Received) stored(in *bufio.Reader, e *streamEntry, n int64) (bool, error) {
	w := r.data(e)
	if r.copyBuf == nil {
		r.copyBuf = make([]byte, copyBufSize)
	}
	got, err := io.CopyBuffer(w, io.LimitReader(in, n), r.copyBuf)
	e.rawLen = got
	r.mapped(e.data, 0, got)
	w.end(got == n && err == nil)
	if err != nil {
		return false, readOrWrite(err, r.pos())
	}
	return got == n, nil
}

// storedScan copies a stored entry whose size only its data descriptor
// gives: the data ends where a descriptor agreeing with everything seen
// so far (CRC-32 and length) is followed by the next header. The size
// check comes first and almost never passes by chance, so the CRC of a
// prefix is computed only for real candidates. Should the data hold such
// a sequence by design, the split differs from the directory's and Verify
// refuses the archive; nothing is trusted on the scan's word.
func (r *Received) storedScan(in *bufio.Reader, e *streamEntry) (bool, error) {
	w := r.data(e)
	const keepBack = 28 // the longest descriptor and the next signature
	for {
		buf, perr := in.Peek(in.Size())
		eof := perr != nil
		if eof && !errors.Is(perr, io.EOF) {
			w.end(false)
			return false, &ReadError{Err: perr, N: r.pos()}
		}
		if end, ok := scanDescriptor(buf, e.rawLen, w.crc.Sum32(), eof); ok {
			if _, err := w.Write(buf[:end]); err != nil {
				return false, readOrWrite(err, r.pos())
			}
			e.rawLen += int64(end)
			in.Discard(end)
			r.mapped(e.data, 0, e.rawLen)
			w.end(true)
			return r.descriptor(in, e)
		}
		take := len(buf)
		if !eof {
			take -= keepBack
		}
		if _, err := w.Write(buf[:take]); err != nil {
			return false, readOrWrite(err, r.pos())
		}
		e.rawLen += int64(take)
		in.Discard(take)
		if eof {
			// The body ended inside the entry, or no descriptor agrees
			// with its bytes: they are all kept, for Verify to judge.
			r.mapped(e.data, 0, e.rawLen)
			w.end(false)
			return false, nil
		}
	}
}

// scanSigs are what may follow a stored entry's descriptor.
var scanSigs = [][]byte{[]byte(localHeaderSig), []byte(centralSig)}

// nextSigs are what may follow an entry: another entry or the directory
// (or, in a directory-less archive, the end record).
var nextSigs = []string{localHeaderSig, centralSig, eocdSig, zip64EndSig}

func isNextSig(b []byte) bool {
	for _, s := range nextSigs {
		if string(b) == s {
			return true
		}
	}
	return false
}

// descriptorForms are the data descriptor's shapes: with or without its
// signature, with 32- or 64-bit sizes.
var descriptorForms = []struct {
	sig, wide bool
	length    int
}{{true, false, 16}, {true, true, 24}, {false, false, 12}, {false, true, 20}}

// matchDescriptor reports whether b starts with a descriptor of the given
// form carrying crc and the sizes.
func matchDescriptor(b []byte, sig, wide bool, crc uint32, csize, usize int64) bool {
	if sig {
		if len(b) < 4 || string(b[:4]) != descriptorSig {
			return false
		}
		b = b[4:]
	}
	if wide {
		return len(b) >= 20 && le32(b) == crc && int64(le64(b[4:])) == csize && int64(le64(b[12:])) == usize
	}
	return len(b) >= 12 && le32(b) == crc && csize < max32 && usize < max32 && int64(le32(b[4:])) == csize &&
		int64(le32(b[8:])) == usize
}

// scanDescriptor looks in buf (the stored entry's bytes from offset
// already on) for the end of its data: a descriptor whose sizes equal
// already+i and whose CRC is that of the data up to i, followed by a
// signature of what may come next (or, at EOF, by nothing). crc is the CRC
// of the data before buf. Signatures are found with bytes.Index (fast),
// sizes checked next (cheap), and the CRC of a prefix computed last, in
// one pass over the candidates in order.
func scanDescriptor(buf []byte, already int64, crc uint32, eof bool) (int, bool) {
	var cands []int
	check := func(j int) {
		for _, f := range descriptorForms {
			i := j - f.length
			if i < 0 {
				continue
			}
			x := buf[i:j]
			if f.sig {
				if string(x[:4]) != descriptorSig {
					continue
				}
				x = x[4:]
			}
			size := already + int64(i)
			var cs, us int64
			if f.wide {
				cs, us = int64(le64(x[4:])), int64(le64(x[12:]))
			} else {
				cs, us = int64(le32(x[4:])), int64(le32(x[8:]))
			}
			if cs == size && us == size {
				cands = append(cands, i)
			}
		}
	}
	// What follows a stored entry is the next entry or the directory;
	// each signature is searched for whole (a vectorised search for four
	// bytes, far faster than stopping at every "PK" in random data).
	for _, sig := range scanSigs {
		for at := 0; ; {
			k := bytes.Index(buf[at:], sig)
			if k < 0 {
				break
			}
			check(at + k)
			at += k + 1
		}
	}
	if eof {
		check(len(buf))
	}
	if len(cands) == 0 {
		return 0, false
	}
	sort.Ints(cands)
	at := 0
	for _, i := range cands {
		crc = crc32.Update(crc, crc32.IEEETable, buf[at:i])
		at = i
		d := buf[i:]
		if string(d[:min(4, len(d))]) == descriptorSig && len(d) >= 16 {
			if le32(d[4:]) == crc {
				return i, true
			}
		}
		if len(d) >= 12 && le32(d) == crc {
			return i, true
		}
	}
	return 0, false
}

// deflated inflates an entry whose compressed size the header gives.
func (r *Received) deflated(in *bufio.Reader, e *streamEntry, n int64) (bool, error) {
	if n > 1<<62 {
		_, err := r.toSpill(in, -1)
		return false, err
	}
	at := r.spill.n
	raw := &countingReader{r: io.LimitReader(in, n), tee: r.spill}
	br := bufio.NewReaderSize(raw, 32<<10)
	w := r.data(e)
	_, err := io.Copy(w, flate.NewReader(br))
	if ferr := stopping(err); ferr != nil {
		return false, ferr
	}
	if raw.err != nil {
		return false, readOrWrite(raw.err, r.pos())
	}
	// Whatever the stream left of the entry's bytes is kept too; bytes
	// after the end of the deflate stream are bytes no reader shows.
	rest, derr := io.Copy(r.spill, io.LimitReader(in, n-raw.n))
	e.tail = err == nil && (rest > 0 || br.Buffered() > 0)
	got := r.spill.n - at
	e.rawLen = got
	r.mapped(r.spill, at, got)
	w.end(err == nil && got == n)
	if derr != nil {
		return false, readOrWrite(derr, r.pos())
	}
	return got == n, nil
}

// stopping returns err when it must end the upload (the bound reached, a
// write failed, the body failed), and nil for an entry that merely does
// not decode, which Verify judges.
func stopping(err error) error {
	var fe *fault.Error
	var we *WriteError
	var re *ReadError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return fe
	case errors.As(err, &we):
		return we
	case errors.As(err, &re):
		return re
	}
	return nil
}

// deflatedStream inflates an entry whose compressed size only its data
// descriptor gives: a deflate stream marks its own end, and flate reads
// no further than that from a ByteReader.
func (r *Received) deflatedStream(in *bufio.Reader, e *streamEntry) (bool, error) {
	at := r.spill.n
	raw := &countingByteReader{r: in, tee: r.spill, buf: make([]byte, 0, 32<<10)}
	w := r.data(e)
	_, err := io.Copy(w, flate.NewReader(raw))
	if ferr := raw.flush(); ferr != nil {
		return false, ferr
	}
	e.rawLen = raw.n
	r.mapped(r.spill, at, raw.n)
	if raw.err != nil {
		w.end(false)
		return false, readOrWrite(raw.err, r.pos())
	}
	if ferr := stopping(err); ferr != nil {
		return false, ferr
	}
	if err != nil {
		// Undecodable: where the entry ends is unknown.
		w.end(false)
		_, err := r.toSpill(in, -1)
		return false, err
	}
	w.end(true)
	return true, nil
}

// descriptor reads the data descriptor after an entry's data: the form
// that carries what was seen and is followed by what may come next.
func (r *Received) descriptor(in *bufio.Reader, e *streamEntry) (bool, error) {
	b, _ := in.Peek(28)
	for _, f := range descriptorForms {
		if len(b) < f.length || !matchDescriptor(b, f.sig, f.wide, e.crc, e.rawLen, e.size) {
			continue
		}
		if len(b) > f.length && (len(b) < f.length+4 || !isNextSig(b[f.length:f.length+4])) {
			continue
		}
		if !r.keep(b[:f.length]) {
			break
		}
		in.Discard(f.length)
		return true, nil
	}
	_, err := r.toSpill(in, -1)
	return false, err
}

type countingReader struct {
	r   io.Reader
	tee io.Writer
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		if _, werr := c.tee.Write(p[:n]); werr != nil {
			return 0, werr
		}
		c.n += int64(n)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		c.err = err
	}
	return n, err
}

// countingByteReader hands flate single bytes (so it reads no further
// than its stream) and keeps what it took, in batches.
type countingByteReader struct {
	r   *bufio.Reader
	tee io.Writer
	buf []byte
	n   int64
	err error
}

func (c *countingByteReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err != nil {
		if !errors.Is(err, io.EOF) {
			c.err = err
		}
		return 0, err
	}
	c.buf = append(c.buf, b)
	c.n++
	if len(c.buf) == cap(c.buf) {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return b, nil
}

func (c *countingByteReader) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.tee.Write(c.buf)
	c.buf = c.buf[:0]
	if err != nil {
		c.err = err
	}
	return err
}

func (c *countingByteReader) Read(p []byte) (int, error) {
	// flate uses ReadByte when it is there; Read is for completeness.
	if len(p) == 0 {
		return 0, nil
	}
	b, err := c.ReadByte()
	if err != nil {
		return 0, err
	}
	p[0] = b
	return 1, nil
}

// virtual is the archive as kept: a ReaderAt over the segments.
type virtual struct{ segs []segment }

func (v virtual) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	i := sort.Search(len(v.segs), func(i int) bool { return v.segs[i].off+v.segs[i].n > off })
	for ; i < len(v.segs) && n < len(p); i++ {
		s := v.segs[i]
		if off+int64(n) < s.off {
			break
		}
		rel := off + int64(n) - s.off
		want := min(int64(len(p)-n), s.n-rel)
		var got int
		var err error
		if s.mem != nil {
			got = copy(p[n:n+int(want)], s.mem[rel:])
		} else {
			got, err = s.src.ReadAt(p[n:n+int(want)], s.srcOff+rel)
			if err != nil && !(errors.Is(err, io.EOF) && int64(got) == want) {
				return n + got, err
			}
		}
		n += got
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// bgHash computes SHA-256 on a goroutine of its own, so that hashing does
// not add to the time each byte takes on its way to its file: the upload
// hashes every byte twice (the archive's hash, and its entry's), and each
// hash gets its own core. Bytes are copied out of the caller's buffer
// (memory copies are far cheaper than hashing) and handed over with a
// little slack; sum waits for what was written so far and starts over.
type bgHash struct {
	cur  []byte
	made int
	work chan hashItem
	free chan []byte
}

// hashItem is a chunk to hash, or a request for the sum so far.
type hashItem struct {
	data []byte
	sum  chan []byte
}

const hashChunk, hashChunks = 256 << 10, 8

func newBGHash() *bgHash {
	h := &bgHash{work: make(chan hashItem, hashChunks), free: make(chan []byte, hashChunks)}
	go func() {
		s := sha256.New()
		for it := range h.work {
			if it.sum != nil {
				it.sum <- s.Sum(nil)
				s.Reset()
				continue
			}
			s.Write(it.data)
			h.free <- it.data[:0]
		}
	}()
	return h
}

// chunk is a buffer to fill: a free one, or a new one while fewer than
// hashChunks exist (small uploads never make them all).
func (h *bgHash) chunk() []byte {
	select {
	case b := <-h.free:
		return b
	default:
	}
	if h.made < hashChunks {
		h.made++
		return make([]byte, 0, hashChunk)
	}
	return <-h.free
}

func (h *bgHash) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if h.cur == nil {
			h.cur = h.chunk()
		}
		k := min(len(p), cap(h.cur)-len(h.cur))
		h.cur = append(h.cur, p[:k]...)
		p = p[k:]
		if len(h.cur) == cap(h.cur) {
			h.work <- hashItem{data: h.cur}
			h.cur = nil
		}
	}
	return n, nil
}

// sum returns the hash of everything written since the last sum.
func (h *bgHash) sum() []byte {
	if len(h.cur) > 0 {
		h.work <- hashItem{data: h.cur}
		h.cur = nil
	}
	c := make(chan []byte, 1)
	h.work <- hashItem{sum: c}
	return <-c
}

// stop ends the goroutine.
func (h *bgHash) stop() { close(h.work) }

// parallelHash reads the body, hashing it in the background.
type parallelHash struct {
	r        io.Reader
	progress func(int64)
	n        int64
	h        *bgHash
	once     sync.Once
	sumHex   string
}

func newParallelHash(r io.Reader, progress func(int64)) *parallelHash {
	return &parallelHash{r: r, progress: progress, h: newBGHash()}
}

func (h *parallelHash) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if n > 0 {
		h.n += int64(n)
		h.h.Write(p[:n])
		if h.progress != nil {
			h.progress(h.n)
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return n, &ReadError{Err: err, N: h.n}
	}
	return n, err
}

// sum waits for the hash of everything read and returns it with the
// length.
func (h *parallelHash) sum() (string, int64) {
	h.once.Do(func() {
		h.sumHex = hex.EncodeToString(h.h.sum())
		h.h.stop()
	})
	return h.sumHex, h.n
}

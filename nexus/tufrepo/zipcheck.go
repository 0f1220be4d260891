package tufrepo

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
)

// archive/zip believes the central directory alone: it never looks at a
// local header beyond its length fields, and it ignores whatever lies
// between the entries. Other readers (unzip, a later re-pack, a tool an
// operator inspects the archive with) walk the local headers instead, so
// an archive whose two views differ can show a reviewer one thing and
// Nexus another. The checks here read the end records, the directory and
// every local header (a few hundred bytes per entry, never entry data) and
// refuse any archive in which the two views could differ or a byte belongs
// to nothing the directory names.

const (
	centralSig    = "PK\x01\x02"
	descriptorSig = "PK\x07\x08"
	zip64EndSig   = "PK\x06\x06"
	zip64LocSig   = "PK\x06\x07"

	localLen     = 30
	centralLen   = 46
	zip64LocLen  = 20
	zip64EndLen  = 56
	zip64ExtraID = 0x0001
	max16        = 0xffff
	max32        = 0xffffffff

	flagDescriptor = 0x8
	// Flags that change how an entry's bytes are to be read: encryption
	// (traditional, strong, masked local headers) and the data
	// descriptor. Local and central headers must agree on them.
	flagsEncrypted = 0x1 | 0x40 | 0x2000
	layoutFlags    = flagsEncrypted | flagDescriptor
)

// dirEntry is one central-directory record as this package reads it.
type dirEntry struct {
	index        int
	name         string
	flags        uint16
	method       uint16
	crc          uint32
	csize, usize uint64
	offset       int64
	// end is where the entry (header, data and descriptor) ends; set by
	// checkLocalHeaders.
	end int64
}

// zipDir is the archive's directory and where it lies.
type zipDir struct {
	entries          []dirEntry
	cdOffset, cdSize int64
	// endOffset is where the end records start: the zip64 end record
	// when there is one, else the end-of-central-directory record.
	endOffset int64
}

func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// readDirectory finds the end record, which must end exactly where the
// file does, and reads the directory it names. zipMagic says whether the
// file starts like a zip; it only picks the most telling refusal.
func readDirectory(r io.ReaderAt, size int64, zipMagic bool, maxDir int64) (*zipDir, *fault.Error) {
	classify := func() *fault.Error {
		switch {
		case !zipMagic && !hasEOCD(r, size):
			return errf(api.CodeNotAZip, "the upload is not a zip archive; upload the repository zip as it was released")
		case endsWithJunk(r, size):
			return errf(api.CodeTrailingData, "the archive has data after its end; upload the repository zip exactly as released")
		}
		return errf(api.CodeTruncatedArchive,
			"the archive is truncated or its directory is damaged (%d bytes received); upload it again", size)
	}
	tail, tailOff := readTail(r, size, eocdLen+0xffff)
	if len(tail) < eocdLen {
		return nil, classify()
	}
	// The last signature wins, as in archive/zip: a record in a comment
	// would be the one it reads.
	p := bytes.LastIndex(tail[:len(tail)-eocdLen+4], []byte(eocdSig))
	if p < 0 {
		return nil, classify()
	}
	endsAt := func(i int) int64 { return tailOff + int64(i) + eocdLen + int64(le16(tail[i+20:])) }
	// Another end record whose comment reaches the end of the file
	// encloses this one: readers that look for the end record from the
	// front, or skip comments, would read a different directory.
	for q := bytes.LastIndex(tail[:p], []byte(eocdSig)); q >= 0; q = bytes.LastIndex(tail[:q], []byte(eocdSig)) {
		if endsAt(q) == size {
			return nil, errf(api.CodeSecondDirectory,
				"the archive's comment holds a second end-of-central-directory record (at byte %d), so zip readers "+
					"disagree on which directory is the archive's; upload the repository zip as it was released", tailOff+int64(p))
		}
	}
	if endsAt(p) != size {
		return nil, classify()
	}
	if !zipMagic {
		return nil, errf(api.CodeLeadingData, "the archive has data before its first entry; upload the repository zip exactly as released")
	}
	pos := tailOff + int64(p)
	e := tail[p:]
	disk, cdDisk := le16(e[4:]), le16(e[6:])
	nDisk, n := le16(e[8:]), le16(e[10:])
	size32, off32 := le32(e[12:]), le32(e[16:])
	count, cdSize, cdOff := uint64(n), uint64(size32), uint64(off32)
	endOffset := pos
	multiDisk := disk != 0 || cdDisk != 0 || nDisk != n

	if pos >= zip64LocLen {
		loc := make([]byte, zip64LocLen)
		if _, err := r.ReadAt(loc, pos-zip64LocLen); err != nil {
			return nil, classify()
		}
		if string(loc[:4]) == zip64LocSig {
			z, zerr := readZip64End(r, pos, loc)
			if zerr != nil {
				return nil, zerr
			}
			// A 32-bit field that is not maxed out must say what the
			// zip64 record says; readers differ in which they believe.
			if (n != max16 && uint64(n) != z.count) || (nDisk != max16 && uint64(nDisk) != z.countDisk) ||
				(size32 != max32 && uint64(size32) != z.cdSize) || (off32 != max32 && uint64(off32) != z.cdOffset) {
				return nil, errf(api.CodeMalformedDirectory, "the archive's end record and its zip64 end record disagree "+
					"on the central directory (%d records, %d bytes at %d, against %d records, %d bytes at %d)",
					n, size32, off32, z.count, z.cdSize, z.cdOffset)
			}
			count, cdSize, cdOff = z.count, z.cdSize, z.cdOffset
			multiDisk = multiDisk || z.disk != 0 || z.cdDisk != 0 || z.countDisk != z.count
			endOffset = z.offset
		}
	}
	if multiDisk {
		return nil, errf(api.CodeMalformedDirectory, "the archive claims to span several disks; a repository archive is one file")
	}
	if cdSize > uint64(maxDir) {
		return nil, errf(api.CodeDirectoryTooLarge, "the archive's central directory is %d bytes; more than %d is refused "+
			"(a release has at most a few hundred entries)", cdSize, maxDir)
	}
	if cdOff > uint64(endOffset) || cdOff+cdSize > uint64(endOffset) {
		return nil, errf(api.CodeMalformedDirectory, "the archive's end record places the central directory at bytes %d-%d, "+
			"past its own start at byte %d", cdOff, cdOff+cdSize, endOffset)
	}
	d := &zipDir{cdOffset: int64(cdOff), cdSize: int64(cdSize), endOffset: endOffset}
	if cdEnd := d.cdOffset + d.cdSize; cdEnd < endOffset {
		return nil, unaccounted(r, cdEnd, endOffset, "between the central directory and its end record")
	}
	if count > cdSize/centralLen {
		return nil, errf(api.CodeMalformedDirectory, "the archive's end record declares %d entries, more than its %d-byte "+
			"central directory can hold", count, cdSize)
	}
	if err := d.readRecords(r, int(count)); err != nil {
		return nil, err
	}
	return d, nil
}

type zip64End struct {
	offset           int64
	disk, cdDisk     uint32
	countDisk, count uint64
	cdSize, cdOffset uint64
	recordSize       uint64
}

// readZip64End reads the zip64 end record the locator (just before the
// end record at pos) points to. The record must end where the locator
// starts.
func readZip64End(r io.ReaderAt, pos int64, loc []byte) (*zip64End, *fault.Error) {
	bad := func(format string, args ...any) *fault.Error {
		return errf(api.CodeMalformedDirectory, "the archive's zip64 end records are damaged: "+format, args...)
	}
	if le32(loc[4:]) != 0 || le32(loc[16:]) != 1 {
		return nil, errf(api.CodeMalformedDirectory, "the archive claims to span several disks; a repository archive is one file")
	}
	off := le64(loc[8:])
	locAt := pos - zip64LocLen
	if off > uint64(locAt) || uint64(locAt)-off < zip64EndLen {
		return nil, bad("the locator points to byte %d, which leaves no room for the record before byte %d", off, locAt)
	}
	b := make([]byte, zip64EndLen)
	if _, err := r.ReadAt(b, int64(off)); err != nil {
		return nil, bad("%v", err)
	}
	if string(b[:4]) != zip64EndSig {
		return nil, bad("no zip64 end record at byte %d", off)
	}
	z := &zip64End{offset: int64(off), recordSize: le64(b[4:]), disk: le32(b[16:]), cdDisk: le32(b[20:]),
		countDisk: le64(b[24:]), count: le64(b[32:]), cdSize: le64(b[40:]), cdOffset: le64(b[48:])}
	if z.recordSize < zip64EndLen-12 || z.recordSize > uint64(locAt) {
		return nil, bad("the record's size field says %d bytes", z.recordSize)
	}
	switch end := off + 12 + z.recordSize; {
	case end < uint64(locAt):
		return nil, unaccounted(r, int64(end), locAt, "between the zip64 end record and its locator")
	case end > uint64(locAt):
		return nil, bad("the record (%d bytes at byte %d) runs into its locator at byte %d", 12+z.recordSize, off, locAt)
	}
	return z, nil
}

// readRecords parses exactly count directory records, which must fill
// the directory.
func (d *zipDir) readRecords(r io.ReaderAt, count int) *fault.Error {
	bad := func(format string, args ...any) *fault.Error {
		return errf(api.CodeMalformedDirectory, "the archive's central directory is damaged: "+format, args...)
	}
	sr := io.NewSectionReader(r, d.cdOffset, d.cdSize)
	br := bufio.NewReaderSize(sr, 32<<10)
	d.entries = make([]dirEntry, 0, count)
	var hdr [centralLen]byte
	var buf []byte
	read := int64(0)
	for i := range count {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return bad("its %d bytes end inside record %d of the %d the end record declares", d.cdSize, i, count)
		}
		if string(hdr[:4]) != centralSig {
			return bad("record %d (byte %d) is not a directory record", i, d.cdOffset+read)
		}
		n, m, k := int(le16(hdr[28:])), int(le16(hdr[30:])), int(le16(hdr[32:]))
		buf = slices.Grow(buf[:0], n+m+k)[:n+m+k]
		if _, err := io.ReadFull(br, buf); err != nil {
			return bad("its %d bytes end inside record %d of the %d the end record declares", d.cdSize, i, count)
		}
		e := dirEntry{index: i, name: string(buf[:n]), flags: le16(hdr[8:]), method: le16(hdr[10:]), crc: le32(hdr[16:]),
			csize: uint64(le32(hdr[20:])), usize: uint64(le32(hdr[24:])), offset: int64(le32(hdr[42:]))}
		if le16(hdr[34:]) != 0 {
			return errf(api.CodeMalformedDirectory, "entry %q claims to start on another disk; a repository archive is one file", e.name)
		}
		needU, needC, needO := e.usize == max32, e.csize == max32, e.offset == max32
		z64, err := zip64Field(buf[n : n+m])
		if err != nil {
			return bad("entry %q: %v", e.name, err)
		}
		if needU || needC || needO {
			if z64 == nil {
				return bad("entry %q has maxed-out sizes or offset but no zip64 field to hold them", e.name)
			}
			vals, err := zip64Values(z64, needU, needC, needO)
			if err != nil {
				return bad("entry %q: %v", e.name, err)
			}
			if needU {
				e.usize, vals = vals[0], vals[1:]
			}
			if needC {
				e.csize, vals = vals[0], vals[1:]
			}
			if needO {
				if vals[0] > 1<<62 {
					return bad("entry %q has offset %d", e.name, vals[0])
				}
				e.offset = int64(vals[0])
			}
		}
		d.entries = append(d.entries, e)
		read += int64(centralLen + n + m + k)
	}
	if read < d.cdSize {
		return unaccounted(r, d.cdOffset+read, d.cdOffset+d.cdSize, "inside the central directory, after the last record it counts")
	}
	return nil
}

// zip64Field returns the data of the extra block's zip64 field, or nil.
// Two such fields would let readers pick different sizes.
func zip64Field(extra []byte) ([]byte, error) {
	var found []byte
	seen := false
	for len(extra) >= 4 {
		tag, n := le16(extra), int(le16(extra[2:]))
		if len(extra) < 4+n {
			break
		}
		if tag == zip64ExtraID {
			if seen {
				return nil, errors.New("two zip64 extra fields")
			}
			seen, found = true, extra[4:4+n]
		}
		extra = extra[4+n:]
	}
	if seen && found == nil {
		found = []byte{}
	}
	return found, nil
}

// zip64Values reads, in order, the 8-byte values a zip64 field holds for
// the header fields that were maxed out.
func zip64Values(field []byte, need ...bool) ([]uint64, error) {
	var out []uint64
	for _, n := range need {
		if !n {
			continue
		}
		if len(field) < 8 {
			return nil, errors.New("its zip64 field is too short for the values it must hold")
		}
		out = append(out, le64(field))
		field = field[8:]
	}
	return out, nil
}

// matches checks that archive/zip read the directory as this package did,
// so that what was checked is what will be read.
func (d *zipDir) matches(files []*zip.File) *fault.Error {
	if len(files) != len(d.entries) {
		return errf(api.CodeSecondDirectory, "the archive's central directory holds %d records but its end record "+
			"declares %d; zip readers would disagree on the archive's contents", len(files), len(d.entries))
	}
	for i, f := range files {
		e := d.entries[i]
		if f.Name != e.name || f.Flags != e.flags || f.Method != e.method || f.CRC32 != e.crc ||
			f.CompressedSize64 != e.csize || f.UncompressedSize64 != e.usize {
			return errf(api.CodeMalformedDirectory, "directory record %d (%q) is ambiguous: zip readers disagree on its fields", i, e.name)
		}
	}
	return nil
}

// checkLocalHeaders compares every entry's local header (and data
// descriptor) with its directory record and checks that the entries,
// the directory and the end records tile the file with no gap and no
// overlap.
func (d *zipDir) checkLocalHeaders(r io.ReaderAt, files []*zip.File) *fault.Error {
	order := make([]*dirEntry, len(d.entries))
	for i := range d.entries {
		order[i] = &d.entries[i]
	}
	slices.SortStableFunc(order, func(a, b *dirEntry) int {
		switch {
		case a.offset < b.offset:
			return -1
		case a.offset > b.offset:
			return 1
		}
		return 0
	})
	// Headers are read exactly: a read past one would touch the entry's
	// data, which is read once, when it is copied (or never, when the
	// entry is refused).
	var hdr [localLen]byte
	var rest []byte
	for i, e := range order {
		next := d.cdOffset
		if i+1 < len(order) {
			next = min(order[i+1].offset, d.cdOffset)
		}
		noHeader := func() *fault.Error {
			return errf(api.CodeLocalHeaderMismatch, "the central directory places entry %q at byte %d, "+
				"but there is no local file header there", e.name, e.offset)
		}
		if e.offset+localLen > d.cdOffset {
			return noHeader()
		}
		if _, err := r.ReadAt(hdr[:], e.offset); err != nil || string(hdr[:4]) != localHeaderSig {
			return noHeader()
		}
		n, m := int64(le16(hdr[26:])), int64(le16(hdr[28:]))
		dataOff := e.offset + localLen + n + m
		if dataOff > d.cdOffset {
			return errf(api.CodeOverlappingEntries, "the local header of entry %q runs into the central directory", e.name)
		}
		rest = slices.Grow(rest[:0], int(n+m))[:n+m]
		if _, err := r.ReadAt(rest, e.offset+localLen); err != nil {
			return noHeader()
		}
		if err := e.compareLocal(hdr[:], rest[:n], rest[n:]); err != nil {
			return err
		}
		if got, err := files[e.index].DataOffset(); err != nil || got != dataOff {
			return errf(api.CodeMalformedDirectory, "entry %q is ambiguous: zip readers disagree on where its data starts", e.name)
		}
		if e.csize > uint64(d.cdOffset) {
			return errf(api.CodeOverlappingEntries, "entry %q declares %d compressed bytes, more than the archive holds "+
				"before its central directory", e.name, e.csize)
		}
		e.end = dataOff + int64(e.csize)
		if e.flags&flagDescriptor != 0 && e.end <= d.cdOffset {
			l, err := e.descriptor(r, e.end, next, d.cdOffset)
			if err != nil {
				return err
			}
			e.end += l
		}
	}
	prev, prevName := int64(0), ""
	for _, e := range order {
		switch {
		case e.offset > prev && prevName == "":
			return errf(api.CodeLeadingData, "the archive has %d bytes before its first entry, %q; "+
				"upload the repository zip exactly as released", e.offset, e.name)
		case e.offset > prev:
			return unaccounted(r, prev, e.offset, fmt.Sprintf("between entries %q and %q", prevName, e.name))
		case e.offset < prev:
			return errf(api.CodeOverlappingEntries, "entry %q starts at byte %d, inside entry %q (which ends at byte %d); "+
				"overlapping entries are a zip-bomb technique", e.name, e.offset, prevName, prev)
		}
		prev, prevName = e.end, e.name
	}
	switch {
	case prev < d.cdOffset && prevName == "":
		return unaccounted(r, prev, d.cdOffset, "before the central directory of an archive with no entries")
	case prev < d.cdOffset:
		return unaccounted(r, prev, d.cdOffset, fmt.Sprintf("between the last entry, %q, and the central directory", prevName))
	case prev > d.cdOffset:
		return errf(api.CodeOverlappingEntries, "entry %q runs into the central directory (it ends at byte %d, the directory "+
			"starts at byte %d)", prevName, prev, d.cdOffset)
	}
	return nil
}

// compareLocal checks a local header against the directory record.
func (e *dirEntry) compareLocal(hdr, name, extra []byte) *fault.Error {
	mismatch := func(what string, local, central any) *fault.Error {
		return errf(api.CodeLocalHeaderMismatch, "entry %q: its local header says %s %v, the central directory %v; "+
			"zip readers would disagree on the archive's contents", e.name, what, local, central)
	}
	if string(name) != e.name {
		return mismatch("name", fmt.Sprintf("%q", name), fmt.Sprintf("%q", e.name))
	}
	if m := le16(hdr[8:]); m != e.method {
		return mismatch("compression method", m, e.method)
	}
	if f := le16(hdr[6:]); f&layoutFlags != e.flags&layoutFlags {
		return mismatch("flags", fmt.Sprintf("%#04x", f), fmt.Sprintf("%#04x", e.flags))
	}
	crc, csize, usize := le32(hdr[14:]), uint64(le32(hdr[18:])), uint64(le32(hdr[22:]))
	needU, needC := usize == max32, csize == max32
	if needU || needC {
		z64, err := zip64Field(extra)
		if err == nil && z64 == nil {
			err = errors.New("maxed-out sizes but no zip64 field")
		}
		var vals []uint64
		if err == nil {
			vals, err = zip64Values(z64, needU, needC)
		}
		if err != nil {
			return errf(api.CodeLocalHeaderMismatch, "entry %q: its local header is damaged: %v", e.name, err)
		}
		if needU {
			usize, vals = vals[0], vals[1:]
		}
		if needC {
			csize = vals[0]
		}
	}
	// With a data descriptor the local header may leave the CRC and
	// sizes zero (they follow the data); writers that know them early
	// (Info-ZIP knows the uncompressed size) may fill them in, and then
	// they must be right.
	descr := e.flags&flagDescriptor != 0
	agrees := func(local, central uint64) bool { return local == central || (descr && local == 0) }
	switch {
	case !agrees(uint64(crc), uint64(e.crc)):
		return mismatch("CRC-32", fmt.Sprintf("%08x", crc), fmt.Sprintf("%08x", e.crc))
	case !agrees(csize, e.csize):
		return mismatch("compressed size", csize, e.csize)
	case !agrees(usize, e.usize):
		return mismatch("uncompressed size", usize, e.usize)
	}
	return nil
}

// descriptor checks the data descriptor at off (the end of the entry's
// data) and returns its length. It may be 12 to 24 bytes (with or
// without its signature, with 32- or 64-bit sizes); the form that agrees
// with the directory and ends where the next entry starts is the one.
func (e *dirEntry) descriptor(r io.ReaderAt, off, next, limit int64) (int64, *fault.Error) {
	b := make([]byte, min(24, limit-off))
	if _, err := r.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return 0, errf(api.CodeDataDescriptorMismatch, "entry %q: its data descriptor cannot be read: %v", e.name, err)
	}
	forms := []struct {
		sig    bool
		wide   bool
		length int64
	}{{true, false, 16}, {true, true, 24}, {false, false, 12}, {false, true, 20}}
	var match []int64
	for _, f := range forms {
		if int64(len(b)) < f.length || (f.sig && string(b[:4]) != descriptorSig) {
			continue
		}
		x := b
		if f.sig {
			x = x[4:]
		}
		crc := le32(x)
		var cs, us uint64
		if f.wide {
			cs, us = le64(x[4:]), le64(x[12:])
		} else {
			cs, us = uint64(le32(x[4:])), uint64(le32(x[8:]))
		}
		if crc == e.crc && cs == e.csize && us == e.usize {
			match = append(match, f.length)
		}
	}
	if len(match) == 0 {
		return 0, errf(api.CodeDataDescriptorMismatch, "entry %q: the data descriptor after its data does not carry the "+
			"CRC-32 and sizes the central directory records (%08x, %d, %d); zip readers would disagree on the entry",
			e.name, e.crc, e.csize, e.usize)
	}
	for _, l := range match {
		if off+l == next {
			return l, nil
		}
	}
	return match[0], nil
}

// unaccounted refuses the bytes [from, to) that belong to no entry. When
// they start like a directory or an end record, they are most likely a
// second central directory.
func unaccounted(r io.ReaderAt, from, to int64, where string) *fault.Error {
	head := make([]byte, 4)
	if to-from >= 4 {
		if _, err := r.ReadAt(head, from); err == nil {
			switch string(head) {
			case centralSig, eocdSig, zip64EndSig, zip64LocSig:
				return errf(api.CodeSecondDirectory, "the archive holds a second central directory (at byte %d, %s); "+
					"zip readers would disagree on its contents; upload the repository zip as it was released", from, where)
			}
		}
	}
	return errf(api.CodeUnaccountedBytes, "the archive has %d bytes (at byte %d, %s) that belong to no entry; "+
		"data was inserted after the archive was made; upload the repository zip as it was released", to-from, from, where)
}

// errDeflateTail marks compressed bytes left over after an entry's
// deflate stream ended: bytes inside the entry that no reader shows.
var errDeflateTail = errors.New("bytes follow the end of the compressed stream")

// strictInflate is the deflate decompressor for archive entries. Given a
// ByteReader, flate reads no further than its stream's end, so the bytes
// left over are exactly those the stream does not account for.
func strictInflate(r io.Reader) io.ReadCloser {
	br := bufio.NewReaderSize(r, 32<<10)
	return &inflater{br: br, fr: flate.NewReader(br)}
}

type inflater struct {
	br *bufio.Reader
	fr io.ReadCloser
}

func (z *inflater) Read(p []byte) (int, error) {
	n, err := z.fr.Read(p)
	if err == io.EOF {
		if _, berr := z.br.ReadByte(); berr != io.EOF {
			return n, errDeflateTail
		}
	}
	return n, err
}

func (z *inflater) Close() error { return z.fr.Close() }

package tufgen

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// A ZipLayout is a zip archive taken apart into fields, so that a test can
// write one that archive/zip's writer never would: local headers that
// disagree with the central directory, data descriptors of every form,
// zip64 records for small entries, gaps, overlaps, and second
// directories. ReadZip takes any zip apart; Bytes writes the layout back,
// byte for byte the same when nothing was changed (for archives written by
// Build).
type ZipLayout struct {
	Entries []ZipEntry
	// Prefix is written before the first entry, BeforeDirectory between
	// the last entry and the central directory, and Suffix after the end
	// record.
	Prefix, BeforeDirectory, Suffix []byte
	// Comment is the archive comment, in the end record.
	Comment []byte
	// Zip64End writes zip64 end records, with the end record's fields
	// maxed out to defer to them.
	Zip64End bool
	// DirectoryTwice writes the central directory twice in a row; the
	// end records name the second copy.
	DirectoryTwice bool
	// CountLie is added to the number of records the end records
	// declare.
	CountLie int
}

// DescriptorForm is the shape of a data descriptor after an entry's data.
type DescriptorForm int

// Data descriptor forms: none (sizes and CRC in the local header), with
// or without the optional signature, with 32- or 64-bit sizes.
const (
	NoDescriptor DescriptorForm = iota
	Descriptor32
	Descriptor32NoSig
	Descriptor64
	Descriptor64NoSig
)

// ZipEntry is one entry of a ZipLayout. Its fields are what the central
// directory records; Local changes what the local header says.
type ZipEntry struct {
	Name                             string
	CreatorVersion, ReaderVersion    uint16
	Flags, Method                    uint16
	ModifiedTime, ModifiedDate       uint16
	CRC32                            uint32
	CompressedSize, UncompressedSize uint64
	ExternalAttrs                    uint32
	// Extra holds the extra fields of both headers, zip64 excluded
	// (Bytes writes that one when needed).
	Extra []byte
	// Raw is the entry's data as stored (compressed for deflate).
	Raw []byte
	// Descriptor, unless NoDescriptor, sets flag bit 3, writes zero CRC
	// and sizes in the local header and a data descriptor after Raw.
	Descriptor DescriptorForm
	// DescriptorCRC32, when set, is the CRC the descriptor carries.
	DescriptorCRC32 *uint32
	// Zip64 writes both headers' sizes (and the directory's offset) as
	// zip64 values, whatever their size.
	Zip64 bool
	// Local overrides fields of the local header.
	Local LocalHeader
	// Before is written just before this entry's local header.
	Before []byte
	// Offset, when set, is the local-header offset the directory records
	// instead of the true one.
	Offset *int64
}

// LocalHeader holds local-header fields that differ from the directory's.
type LocalHeader struct {
	Name                             *string
	Flags, Method                    *uint16
	CRC32                            *uint32
	CompressedSize, UncompressedSize *uint64
}

// ReadZip takes a zip archive apart. Entries keep their data descriptor
// (as the 32-bit signed form archive/zip writes) and their extra fields,
// except zip64 ones.
func ReadZip(archive []byte) (*ZipLayout, error) {
	zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
	if err != nil {
		return nil, err
	}
	z := &ZipLayout{Comment: []byte(zr.Comment)}
	for _, f := range zr.File {
		rc, err := f.OpenRaw()
		if err != nil {
			return nil, err
		}
		raw, err := io.ReadAll(rc)
		if err != nil {
			return nil, err
		}
		e := ZipEntry{Name: f.Name, CreatorVersion: f.CreatorVersion, ReaderVersion: f.ReaderVersion,
			Flags: f.Flags &^ 0x8, Method: f.Method, ModifiedTime: f.ModifiedTime, ModifiedDate: f.ModifiedDate,
			CRC32: f.CRC32, CompressedSize: f.CompressedSize64, UncompressedSize: f.UncompressedSize64,
			ExternalAttrs: f.ExternalAttrs, Extra: withoutZip64(f.Extra), Raw: raw}
		if f.Flags&0x8 != 0 {
			e.Descriptor = Descriptor32
		}
		z.Entries = append(z.Entries, e)
	}
	return z, nil
}

func withoutZip64(extra []byte) []byte {
	var out []byte
	for len(extra) >= 4 {
		tag, n := binary.LittleEndian.Uint16(extra), int(binary.LittleEndian.Uint16(extra[2:]))
		if len(extra) < 4+n {
			break
		}
		if tag != 0x0001 {
			out = append(out, extra[:4+n]...)
		}
		extra = extra[4+n:]
	}
	return out
}

// Entry returns the entry named name, or panics: tests name entries they
// know are there.
func (z *ZipLayout) Entry(name string) *ZipEntry {
	for i := range z.Entries {
		if z.Entries[i].Name == name {
			return &z.Entries[i]
		}
	}
	panic(fmt.Sprintf("tufgen: no zip entry %q", name))
}

type leWriter struct{ bytes.Buffer }

func (w *leWriter) u16(v uint16) { w.Write(binary.LittleEndian.AppendUint16(nil, v)) }
func (w *leWriter) u32(v uint32) { w.Write(binary.LittleEndian.AppendUint32(nil, v)) }
func (w *leWriter) u64(v uint64) { w.Write(binary.LittleEndian.AppendUint64(nil, v)) }

const max32 = 0xffffffff

func clamp32(v uint64) uint32 { return uint32(min(v, max32)) }

// Bytes writes the archive.
func (z *ZipLayout) Bytes() []byte {
	var w leWriter
	w.Write(z.Prefix)
	offsets := make([]int64, len(z.Entries))
	for i := range z.Entries {
		e := &z.Entries[i]
		w.Write(e.Before)
		offsets[i] = int64(w.Len())
		e.writeLocal(&w)
		w.Write(e.Raw)
		e.writeDescriptor(&w)
	}
	w.Write(z.BeforeDirectory)
	cdStart := int64(w.Len())
	for range 1 + boolInt(z.DirectoryTwice) {
		cdStart = int64(w.Len())
		for i := range z.Entries {
			off := offsets[i]
			if z.Entries[i].Offset != nil {
				off = *z.Entries[i].Offset
			}
			z.Entries[i].writeCentral(&w, off)
		}
	}
	cdSize := int64(w.Len()) - cdStart
	count := uint64(len(z.Entries) + z.CountLie)
	count16, size32, off32 := uint16(min(count, 0xffff)), clamp32(uint64(cdSize)), clamp32(uint64(cdStart))
	if z.Zip64End {
		endAt := int64(w.Len())
		w.WriteString("PK\x06\x06")
		w.u64(44)
		w.u16(45)
		w.u16(45)
		w.u32(0)
		w.u32(0)
		w.u64(count)
		w.u64(count)
		w.u64(uint64(cdSize))
		w.u64(uint64(cdStart))
		w.WriteString("PK\x06\x07")
		w.u32(0)
		w.u64(uint64(endAt))
		w.u32(1)
		count16, size32, off32 = 0xffff, max32, max32
	}
	w.WriteString("PK\x05\x06")
	w.u16(0)
	w.u16(0)
	w.u16(count16)
	w.u16(count16)
	w.u32(size32)
	w.u32(off32)
	w.u16(uint16(len(z.Comment)))
	w.Write(z.Comment)
	w.Write(z.Suffix)
	return w.Bytes()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (e *ZipEntry) flags() uint16 {
	if e.Descriptor != NoDescriptor {
		return e.Flags | 0x8
	}
	return e.Flags
}

func (e *ZipEntry) zip64() bool {
	return e.Zip64 || e.CompressedSize >= max32 || e.UncompressedSize >= max32
}

func (e *ZipEntry) writeLocal(w *leWriter) {
	name, flags, method := e.Name, e.flags(), e.Method
	crc, csize, usize := e.CRC32, e.CompressedSize, e.UncompressedSize
	if e.Descriptor != NoDescriptor {
		crc, csize, usize = 0, 0, 0
	}
	l := e.Local
	if l.Name != nil {
		name = *l.Name
	}
	if l.Flags != nil {
		flags = *l.Flags
	}
	if l.Method != nil {
		method = *l.Method
	}
	if l.CRC32 != nil {
		crc = *l.CRC32
	}
	if l.CompressedSize != nil {
		csize = *l.CompressedSize
	}
	if l.UncompressedSize != nil {
		usize = *l.UncompressedSize
	}
	extra := e.Extra
	cs32, us32 := clamp32(csize), clamp32(usize)
	if e.zip64() {
		// The local zip64 field holds both sizes, and both 32-bit
		// fields defer to it.
		var z leWriter
		z.u16(0x0001)
		z.u16(16)
		z.u64(usize)
		z.u64(csize)
		extra = append(z.Bytes(), extra...)
		cs32, us32 = max32, max32
	}
	w.WriteString("PK\x03\x04")
	w.u16(e.ReaderVersion)
	w.u16(flags)
	w.u16(method)
	w.u16(e.ModifiedTime)
	w.u16(e.ModifiedDate)
	w.u32(crc)
	w.u32(cs32)
	w.u32(us32)
	w.u16(uint16(len(name)))
	w.u16(uint16(len(extra)))
	w.WriteString(name)
	w.Write(extra)
}

func (e *ZipEntry) writeDescriptor(w *leWriter) {
	if e.Descriptor == NoDescriptor {
		return
	}
	crc := e.CRC32
	if e.DescriptorCRC32 != nil {
		crc = *e.DescriptorCRC32
	}
	if e.Descriptor == Descriptor32 || e.Descriptor == Descriptor64 {
		w.WriteString("PK\x07\x08")
	}
	w.u32(crc)
	if e.Descriptor == Descriptor64 || e.Descriptor == Descriptor64NoSig {
		w.u64(e.CompressedSize)
		w.u64(e.UncompressedSize)
		return
	}
	w.u32(uint32(e.CompressedSize))
	w.u32(uint32(e.UncompressedSize))
}

func (e *ZipEntry) writeCentral(w *leWriter, offset int64) {
	extra := e.Extra
	cs32, us32, off32 := clamp32(e.CompressedSize), clamp32(e.UncompressedSize), clamp32(uint64(offset))
	if e.zip64() || offset >= max32 {
		var z leWriter
		z.u16(0x0001)
		z.u16(24)
		z.u64(e.UncompressedSize)
		z.u64(e.CompressedSize)
		z.u64(uint64(offset))
		extra = append(z.Bytes(), extra...)
		cs32, us32, off32 = max32, max32, max32
	}
	w.WriteString("PK\x01\x02")
	w.u16(e.CreatorVersion)
	w.u16(e.ReaderVersion)
	w.u16(e.flags())
	w.u16(e.Method)
	w.u16(e.ModifiedTime)
	w.u16(e.ModifiedDate)
	w.u32(e.CRC32)
	w.u32(cs32)
	w.u32(us32)
	w.u16(uint16(len(e.Name)))
	w.u16(uint16(len(extra)))
	w.u16(0)
	w.u16(0)
	w.u16(0)
	w.u32(e.ExternalAttrs)
	w.u32(off32)
	w.WriteString(e.Name)
	w.Write(extra)
}

// Package tufrepo reads an uploaded TUF repository archive and verifies it:
// zip hygiene, the TUF metadata chain from a registered trust root (with
// go-tuf's trustedmetadata), the artifacts manifest, and every artifact's
// bytes against its signed length and SHA-256 as they are copied out.
//
// It touches no database and no depot: the caller supplies the trust roots
// and rollback floors, and a writer for each artifact's bytes. Memory use
// is bounded whatever the archive's size: entries are read through the zip
// directory from the file on disk, and only metadata (bounded by
// Options.MaxMetadata) is held in memory.
//
// Every refusal is an *Error with its own code (see package api) and a
// message that says what is wrong with the archive.
package tufrepo

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/rackplane/rackplane/api"
)

// Error is a refusal of the archive, with the code the API answers with.
type Error struct {
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func errf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Options bound and shape reading and verification.
type Options struct {
	// MaxExpansion bounds the total uncompressed size of all entries
	// (zip bombs). Zero means DefaultMaxExpansion.
	MaxExpansion int64
	// MaxMetadata bounds each metadata file and the manifest, which are
	// read into memory. Zero means DefaultMaxMetadata.
	MaxMetadata int64
	// EnforceExpiry refuses expired metadata, judged at Now. When false,
	// expiry is only recorded (racks are often offline, and releases are
	// signed with short expiry).
	EnforceExpiry bool
	Now           time.Time
}

// Defaults for Options.
const (
	DefaultMaxExpansion = 16 << 30
	DefaultMaxMetadata  = 16 << 20
)

func (o *Options) defaults() {
	if o.MaxExpansion <= 0 {
		o.MaxExpansion = DefaultMaxExpansion
	}
	if o.MaxMetadata <= 0 {
		o.MaxMetadata = DefaultMaxMetadata
	}
}

// Archive is an opened archive whose directory passed the hygiene checks.
type Archive struct {
	opts    Options
	entries map[string]*zip.File
	// Names in archive order, for listing.
	names []string
}

const (
	localHeaderSig = "PK\x03\x04"
	eocdSig        = "PK\x05\x06"
	eocdLen        = 22
	repoDir        = "repo/"
)

// Open reads the zip directory of the archive in r (size bytes) and checks
// every entry's name, type, compression and size before anything is read.
func Open(r io.ReaderAt, size int64, opts Options) (*Archive, error) {
	opts.defaults()
	head := make([]byte, 4)
	if size >= 4 {
		if _, err := r.ReadAt(head, 0); err != nil {
			return nil, fmt.Errorf("read archive: %w", err)
		}
	}
	zipMagic := string(head) == localHeaderSig || string(head) == eocdSig
	zr, err := zip.NewReader(r, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		switch {
		case !zipMagic && !hasEOCD(r, size):
			return nil, errf(api.CodeNotAZip, "the upload is not a zip archive; upload the repository zip as it was released")
		case endsWithJunk(r, size):
			return nil, errf(api.CodeTrailingData, "the archive has data after its end; upload the repository zip exactly as released")
		default:
			return nil, &Error{Code: api.CodeTruncatedArchive, Err: err,
				Message: fmt.Sprintf("the archive is truncated or its directory is damaged (%d bytes received); upload it again", size)}
		}
	}
	if !zipMagic {
		return nil, errf(api.CodeLeadingData, "the archive has data before its first entry; upload the repository zip exactly as released")
	}
	if !endsAtEOCD(r, size) {
		return nil, errf(api.CodeTrailingData, "the archive has data after its end; upload the repository zip exactly as released")
	}
	a := &Archive{opts: opts, entries: map[string]*zip.File{}}
	var total uint64
	for _, f := range zr.File {
		if err := checkName(f.Name); err != nil {
			return nil, err
		}
		key := strings.TrimSuffix(f.Name, "/")
		if _, dup := a.entries[key]; dup {
			return nil, errf(api.CodeDuplicateEntry, "the archive holds %q more than once", f.Name)
		}
		mode := f.Mode()
		isDir := strings.HasSuffix(f.Name, "/")
		switch {
		case isDir && (mode.IsDir() || mode.Type() == 0) && f.UncompressedSize64 == 0:
		case isDir:
			return nil, errf(api.CodeSpecialFile, "directory entry %q is not a plain empty directory", f.Name)
		case mode.Type() != 0:
			return nil, errf(api.CodeSpecialFile, "entry %q is a %s, not a regular file; archives may hold only files and directories",
				f.Name, typeName(mode))
		}
		if f.Flags&0x1 != 0 {
			return nil, errf(api.CodeUnsupportedCompress, "entry %q is encrypted; archives must not be encrypted", f.Name)
		}
		if f.Method != zip.Store && f.Method != zip.Deflate {
			return nil, errf(api.CodeUnsupportedCompress,
				"entry %q uses compression method %d; only stored (0) and deflate (8) are accepted", f.Name, f.Method)
		}
		total += f.UncompressedSize64
		if total > uint64(opts.MaxExpansion) || f.UncompressedSize64 > uint64(opts.MaxExpansion) {
			return nil, errf(api.CodeExpansionLimit,
				"the archive's entries expand to more than %d bytes (the configured bound); it is not a release archive",
				opts.MaxExpansion)
		}
		a.entries[key] = f
		a.names = append(a.names, key)
	}
	return a, nil
}

// their trailing slash).

func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// checkName refuses names that could escape an extraction directory or
// that lie outside repo/.
func checkName(name string) error {
	if name == "" || strings.ContainsAny(name, "\\\x00") || strings.HasPrefix(name, "/") ||
		(len(name) > 1 && name[1] == ':') {
		return errf(api.CodeUnsafePath, "entry name %q is absolute or not a plain relative path", name)
	}
	parts := strings.Split(strings.TrimSuffix(name, "/"), "/")
	for _, p := range parts {
		if p == ".." || p == "." || p == "" {
			return errf(api.CodeUnsafePath, "entry name %q has an empty, '.' or '..' component", name)
		}
	}
	if parts[0] != strings.TrimSuffix(repoDir, "/") {
		return errf(api.CodeEntryOutsideRepo, "entry %q is outside the top-level repo/ folder", name)
	}
	return nil
}

// endsAtEOCD reports whether the file ends exactly with an end-of-central-
// directory record (and its comment), i.e. has no trailing data.
func endsAtEOCD(r io.ReaderAt, size int64) bool {
	tail, off := readTail(r, size, eocdLen+0xffff)
	for i := len(tail) - eocdLen; i >= 0; i-- {
		if string(tail[i:i+4]) != eocdSig {
			continue
		}
		commentLen := int64(binary.LittleEndian.Uint16(tail[i+20:]))
		if off+int64(i)+eocdLen+commentLen == size {
			return true
		}
	}
	return false
}

// hasEOCD reports whether an end-of-central-directory signature appears in
// the last MiB: the file was a zip, with data after it.
func hasEOCD(r io.ReaderAt, size int64) bool {
	tail, _ := readTail(r, size, 1<<20)
	return bytes.Contains(tail, []byte(eocdSig))
}

// endsWithJunk reports whether a well-formed end record appears in the
// last MiB but not at the end: data was appended to a whole zip.
func endsWithJunk(r io.ReaderAt, size int64) bool {
	tail, off := readTail(r, size, 1<<20)
	for i := len(tail) - eocdLen; i >= 0; i-- {
		if string(tail[i:i+4]) != eocdSig {
			continue
		}
		cdSize := int64(binary.LittleEndian.Uint32(tail[i+12:]))
		cdOff := int64(binary.LittleEndian.Uint32(tail[i+16:]))
		if cdOff+cdSize == off+int64(i) {
			return true
		}
	}
	return false
}

func readTail(r io.ReaderAt, size, n int64) ([]byte, int64) {
	n = min(n, size)
	buf := make([]byte, n)
	got, _ := r.ReadAt(buf, size-n)
	return buf[:got], size - n
}

// readSmall reads a whole entry of at most limit bytes into memory.
func (a *Archive) readSmall(name string, limit int64) ([]byte, error) {
	f := a.entries[name]
	if f == nil {
		return nil, errf(api.CodeMissingEntry, "the archive has no %s", name)
	}
	if f.UncompressedSize64 > uint64(limit) {
		return nil, errf(api.CodeMetadataTooLarge, "%s is %d bytes; metadata larger than %d bytes is refused",
			name, f.UncompressedSize64, limit)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, &Error{Code: api.CodeCorruptEntry, Message: fmt.Sprintf("%s cannot be read", name), Err: err}
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, corrupt(name, err)
	}
	if int64(len(b)) > limit {
		return nil, errf(api.CodeMetadataTooLarge, "%s is larger than %d bytes", name, limit)
	}
	return b, nil
}

func corrupt(name string, err error) *Error {
	return &Error{Code: api.CodeCorruptEntry, Err: err,
		Message: fmt.Sprintf("entry %s is corrupt (%v); upload the archive again", name, err)}
}

// Package tufrepo reads an uploaded TUF repository archive and verifies it:
// zip structure and hygiene, the TUF metadata chain from a registered trust
// root (with go-tuf's trustedmetadata), the artifacts manifest, and every
// artifact's bytes against its signed length and SHA-256 as they are copied
// out.
//
// The reader is strict: every local header must agree with the central
// directory and every byte of the file must belong to an entry, the
// directory or its end records, so no zip reader can see different
// contents than Nexus verified; the archive may hold only the metadata
// verification reads and the targets targets.json signs, and the manifest
// must list every signed target exactly once. CheckPrefix judges an
// upload by its first bytes and CheckTrustRoot a root.json before it is
// registered.
//
// It touches no database and no depot: the caller supplies the trust roots
// and rollback floors, and a writer for each artifact's bytes. Memory use
// is bounded whatever the archive's size: entries are read through the zip
// directory from the file on disk, and only metadata (bounded by
// Options.MaxMetadata) is held in memory.
//
// Every refusal is a *fault.Error of kind Invalid with its own code (see
// package api) and a message that says what is wrong with the archive.
package tufrepo

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
)

// errf is a refusal of the archive: an Invalid fault, since the archive
// is what the operator must fix, with its own code.
func errf(code, format string, args ...any) *fault.Error {
	return fault.New(fault.Invalid, code, format, args...)
}

// wrapf is errf with the cause, which is logged but not sent.
func wrapf(cause error, code, format string, args ...any) *fault.Error {
	e := errf(code, format, args...)
	e.Err = cause
	return e
}

// Options bound and shape reading and verification.
type Options struct {
	// MaxExpansion bounds the total uncompressed size of all entries
	// (zip bombs). Zero means DefaultMaxExpansion.
	MaxExpansion int64
	// MaxMetadata bounds each metadata file and the manifest, which are
	// read into memory. Zero means DefaultMaxMetadata.
	MaxMetadata int64
	// MaxDirectory bounds the zip's central directory, which is read
	// into memory. Zero means DefaultMaxDirectory.
	MaxDirectory int64
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
	// A release has well under a thousand entries of at most a few
	// hundred directory bytes each.
	DefaultMaxDirectory = 4 << 20
)

func (o *Options) defaults() {
	if o.MaxExpansion <= 0 {
		o.MaxExpansion = DefaultMaxExpansion
	}
	if o.MaxMetadata <= 0 {
		o.MaxMetadata = DefaultMaxMetadata
	}
	if o.MaxDirectory <= 0 {
		o.MaxDirectory = DefaultMaxDirectory
	}
}

// Archive is an opened archive whose directory passed the hygiene checks.
type Archive struct {
	opts Options
	// entries by name without a trailing slash; dirs marks the
	// directory entries among them.
	entries map[string]*zip.File
	dirs    map[string]bool
	// Names in archive order, for listing.
	names []string
}

const (
	localHeaderSig = "PK\x03\x04"
	eocdSig        = "PK\x05\x06"
	eocdLen        = 22
	repoDir        = "repo/"
	metadataDir    = repoDir + "metadata/"
	targetsDir     = repoDir + "targets/"
)

// Open reads the zip directory of the archive in r (size bytes), checks
// that the zip's structure is unambiguous (see zipcheck.go), and checks
// every entry's name, type, placement, compression and size before any
// entry's data is read.
func Open(r io.ReaderAt, size int64, opts Options) (*Archive, error) {
	opts.defaults()
	head := make([]byte, 4)
	if size >= 4 {
		if _, err := r.ReadAt(head, 0); err != nil {
			return nil, fmt.Errorf("read archive: %w", err)
		}
	}
	zipMagic := string(head) == localHeaderSig || string(head) == eocdSig
	dir, derr := readDirectory(r, size, zipMagic, opts.MaxDirectory)
	if derr != nil {
		return nil, derr
	}
	zr, err := zip.NewReader(r, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return nil, errf(api.CodeMalformedDirectory, "the archive's central directory cannot be read (%v); upload it again", err)
	}
	if derr := dir.matches(zr.File); derr != nil {
		return nil, derr
	}
	if derr := dir.checkLocalHeaders(r, zr.File); derr != nil {
		return nil, derr
	}
	zr.RegisterDecompressor(zip.Deflate, strictInflate)
	a := &Archive{opts: opts, entries: map[string]*zip.File{}, dirs: map[string]bool{}}
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
		if f.Flags&flagsEncrypted != 0 {
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
		a.dirs[key] = isDir
		a.names = append(a.names, key)
	}
	// Where an entry may be is known before any metadata is read;
	// whether it is signed (checkEntries) only after.
	for _, name := range a.names {
		if err := checkPlacement(name, a.dirs[name]); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// PrefixLen is how much of an upload's start CheckPrefix looks at.
const PrefixLen = 4096

// CheckPrefix judges an upload by its first bytes, so that the upload path
// can refuse a body that is not a repository archive after reading only
// PrefixLen bytes of it instead of storing all of it. first is the body's
// first PrefixLen bytes, or the whole body when it is shorter.
//
// A repository archive starts with the local header of its first entry;
// CheckPrefix refuses a body that does not, and a first entry that Open
// would refuse by its name, compression or encryption. It refuses nothing
// Open and Verify would accept (FuzzArchive checks this): Open requires
// the first entry to start at byte 0 and its local header to agree with
// the directory, and an archive with no entries is no repository.
func CheckPrefix(first []byte) error {
	if len(first) < 4 || string(first[:4]) != localHeaderSig {
		// Say which mistake it is when it shows: a zip wrapped in
		// something (a self-extractor stub, a prepended header) is not
		// the same fix as a file that is no zip at all.
		if i := bytes.Index(first, []byte(localHeaderSig)); i > 0 {
			return errf(api.CodeLeadingData, "the archive has %d bytes before its first entry; "+
				"upload the repository zip exactly as released", i)
		}
		return errf(api.CodeNotAZip, "the upload does not start with a zip local file header, so it is not a repository "+
			"archive; upload the repository zip as it was released")
	}
	if len(first) < localLen {
		return nil
	}
	flags, method, n := le16(first[6:]), le16(first[8:]), int(le16(first[26:]))
	if flags&flagsEncrypted != 0 {
		return errf(api.CodeUnsupportedCompress, "the archive's first entry is encrypted; archives must not be encrypted")
	}
	if method != zip.Store && method != zip.Deflate {
		return errf(api.CodeUnsupportedCompress,
			"the archive's first entry uses compression method %d; only stored (0) and deflate (8) are accepted", method)
	}
	if len(first) < localLen+n {
		return nil
	}
	return checkName(string(first[localLen : localLen+n]))
}

// metadataNameRE matches the names a metadata file may have: N.root.json,
// timestamp.json, and snapshot.json and targets.json with or without a
// version prefix. Which of them the repository may hold is settled by
// checkEntries once the metadata is verified.
var metadataNameRE = regexp.MustCompile(`^([0-9]+\.)?(root|timestamp|snapshot|targets)\.json$`)

// checkPlacement refuses an entry that is neither metadata nor under
// repo/targets/ (name is without its trailing slash).
func checkPlacement(name string, isDir bool) *fault.Error {
	switch {
	case isDir && (name+"/" == repoDir || name+"/" == metadataDir || name+"/" == targetsDir):
		return nil
	case strings.HasPrefix(name, targetsDir):
		return nil
	case !isDir && strings.HasPrefix(name, metadataDir) && metadataNameRE.MatchString(strings.TrimPrefix(name, metadataDir)):
		return nil
	}
	if isDir {
		name += "/"
	}
	return errf(api.CodeUnsignedEntry, "the archive holds %q, which is neither TUF metadata (%sN.root.json, timestamp.json, "+
		"snapshot.json, targets.json) nor a target (under %s); a release archive holds nothing else, so it was "+
		"changed after it was made", name, metadataDir, targetsDir)
}

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
	if err := checkControl("entry name", name); err != nil {
		return err
	}
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

// checkControl refuses control characters (C0, DEL and, in UTF-8 names,
// C1) in a name: they can hide or fake parts of a name in a terminal, a
// log or a status page.
func checkControl(what, name string) *fault.Error {
	for i := 0; i < len(name); {
		r, n := utf8.DecodeRuneInString(name[i:])
		if name[i] < 0x20 || name[i] == 0x7f || (r != utf8.RuneError && unicode.IsControl(r)) {
			return errf(api.CodeControlCharacter, "%s %q contains a control character (at byte %d); names must be printable",
				what, name, i)
		}
		i += n
	}
	return nil
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
		return nil, wrapf(err, api.CodeCorruptEntry, "%s cannot be read", name)
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

func corrupt(name string, err error) *fault.Error {
	if errors.Is(err, errDeflateTail) {
		return errf(api.CodeUnaccountedBytes, "entry %s has bytes after the end of its compressed data, which no zip "+
			"reader shows; data was hidden in the archive after it was made", name)
	}
	return wrapf(err, api.CodeCorruptEntry, "entry %s is corrupt (%v); upload the archive again", name, err)
}

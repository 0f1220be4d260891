package tufrepo_test

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus/tufrepo"
)

// strictCase is an archive a strict reader must refuse, with the code it
// must refuse it with. Every case is also a seed of FuzzArchive (named
// "strict-" + name), so the archives are built from the fuzz lineages.
type strictCase struct {
	name  string
	code  string
	opts  tufrepo.Options
	build func(t testing.TB) []byte
}

// The tiny repo's entries, as tufgen writes them with the plain lineage.
const (
	entryA         = "repo/targets/a-1.0.0.zone"
	entryB         = "repo/targets/dir/b.bin"
	entryTimestamp = "repo/metadata/timestamp.json"
)

func ptr[T any](v T) *T { return &v }

// plainArchive is the tiny repo signed by the plain fuzz lineage.
func plainArchive(t testing.TB, mod func(r *tufgen.Repo)) []byte {
	r := tinyRepo(false)
	if mod != nil {
		mod(&r)
	}
	b, _ := build(t, fuzzLineage(t, false), r)
	return b
}

// relayout rewrites the tiny plain archive with its zip fields changed.
func relayout(mod func(z *tufgen.ZipLayout)) func(t testing.TB) []byte {
	return func(t testing.TB) []byte {
		z, err := tufgen.ReadZip(plainArchive(t, nil))
		if err != nil {
			t.Fatal(err)
		}
		mod(z)
		return z.Bytes()
	}
}

// withDefects builds the tiny plain archive with tufgen defects.
func withDefects(d tufgen.Defects) func(t testing.TB) []byte {
	return func(t testing.TB) []byte { return plainArchive(t, func(r *tufgen.Repo) { r.Defects = d }) }
}

// patchEnd rewrites a 16-bit field of the end-of-central-directory record
// (which tufgen writes without a comment, so it is the last 22 bytes).
func patchEnd(b []byte, field int, v uint16) []byte {
	binary.LittleEndian.PutUint16(b[len(b)-22+field:], v)
	return b
}

// hiddenEntry is a whole local header and data that no directory record
// names.
func hiddenEntry() []byte {
	data := []byte("hidden payload")
	var b bytes.Buffer
	b.WriteString("PK\x03\x04")
	for _, v := range []any{uint16(20), uint16(0), uint16(0), uint32(0), crc32.ChecksumIEEE(data),
		uint32(len(data)), uint32(len(data)), uint16(len("repo/targets/hidden")), uint16(0)} {
		_ = binary.Write(&b, binary.LittleEndian, v)
	}
	b.WriteString("repo/targets/hidden")
	b.Write(data)
	return b.Bytes()
}

// hugeEntry claims 11 GiB of deflated zeros in a few bytes: nothing may
// inflate it, or even read it, before it is refused.
func hugeEntry(name string) tufgen.ZipEntry {
	var raw bytes.Buffer
	fw, _ := flate.NewWriter(&raw, flate.BestCompression)
	_, _ = fw.Write(make([]byte, 64<<10))
	_ = fw.Close()
	return tufgen.ZipEntry{Name: name, CreatorVersion: 20, ReaderVersion: 45, Method: 8, CRC32: 0x12345678,
		CompressedSize: uint64(raw.Len()), UncompressedSize: 11 << 30, Raw: raw.Bytes()}
}

func strictCases() []strictCase {
	layout := func(name, code string, mod func(z *tufgen.ZipLayout)) strictCase {
		return strictCase{name: name, code: code, build: relayout(mod)}
	}
	defect := func(name, code string, d tufgen.Defects) strictCase {
		return strictCase{name: name, code: code, build: withDefects(d)}
	}
	extra := func(name, code, entry string) strictCase {
		e := tufgen.Entry{Name: entry}
		if !strings.HasSuffix(entry, "/") {
			e.Data = []byte("extra")
		}
		return defect(name, code, tufgen.Defects{ExtraEntries: []tufgen.Entry{e}})
	}
	// target signs a target whose name is unsafe; its entry is left out,
	// so only the signed name can be at fault.
	target := func(name, code, targetName string) strictCase {
		return strictCase{name: name, code: code, build: func(t testing.TB) []byte {
			return plainArchive(t, func(r *tufgen.Repo) {
				r.Artifacts = append(r.Artifacts, tufgen.Artifact{Name: "odd", Version: "1.0.0", Kind: "zone",
					Target: targetName, Data: []byte("odd")})
				r.Defects.SkipEntries = []string{"repo/targets/" + targetName}
			})
		}}
	}
	return []strictCase{
		// Local headers against the central directory.
		layout("local-name", api.CodeLocalHeaderMismatch, func(z *tufgen.ZipLayout) {
			z.Entry(entryA).Local.Name = ptr("repo/targets/evil.zone")
		}),
		layout("local-method", api.CodeLocalHeaderMismatch, func(z *tufgen.ZipLayout) {
			z.Entry(entryA).Local.Method = ptr(uint16(8))
		}),
		layout("local-flags", api.CodeLocalHeaderMismatch, func(z *tufgen.ZipLayout) {
			z.Entry(entryA).Local.Flags = ptr(uint16(0))
		}),
		layout("local-crc", api.CodeLocalHeaderMismatch, func(z *tufgen.ZipLayout) {
			e := z.Entry(entryA)
			e.Descriptor = tufgen.NoDescriptor
			e.Local.CRC32 = ptr(e.CRC32 ^ 1)
		}),
		layout("local-compressed-size", api.CodeLocalHeaderMismatch, func(z *tufgen.ZipLayout) {
			e := z.Entry(entryA)
			e.Descriptor = tufgen.NoDescriptor
			e.Local.CompressedSize = ptr(e.CompressedSize + 1)
		}),
		// With a data descriptor, a size the local header does give
		// must still be right.
		layout("local-size-with-descriptor", api.CodeLocalHeaderMismatch, func(z *tufgen.ZipLayout) {
			e := z.Entry(entryA)
			e.Local.UncompressedSize = ptr(e.UncompressedSize + 1)
		}),
		layout("offset-into-header", api.CodeLocalHeaderMismatch, func(z *tufgen.ZipLayout) {
			z.Entry(entryB).Offset = ptr(int64(1))
		}),
		layout("two-records-one-header", api.CodeLocalHeaderMismatch, func(z *tufgen.ZipLayout) {
			z.Entry(entryB).Offset = ptr(int64(0))
		}),
		layout("descriptor-crc", api.CodeDataDescriptorMismatch, func(z *tufgen.ZipLayout) {
			e := z.Entry(entryA)
			e.DescriptorCRC32 = ptr(e.CRC32 ^ 1)
		}),

		// Bytes the directory does not account for.
		layout("gap-between-entries", api.CodeUnaccountedBytes, func(z *tufgen.ZipLayout) {
			z.Entry(entryB).Before = []byte("sixteen bytes!!!")
		}),
		layout("hidden-entry", api.CodeUnaccountedBytes, func(z *tufgen.ZipLayout) {
			z.Entry(entryB).Before = hiddenEntry()
		}),
		layout("gap-before-directory", api.CodeUnaccountedBytes, func(z *tufgen.ZipLayout) {
			z.BeforeDirectory = []byte("not part of anything")
		}),
		layout("hidden-entry-before-first", api.CodeLeadingData, func(z *tufgen.ZipLayout) {
			z.Prefix = hiddenEntry()
		}),
		layout("deflate-tail", api.CodeUnaccountedBytes, func(z *tufgen.ZipLayout) {
			e := z.Entry(entryTimestamp)
			e.Raw = append(e.Raw, "hidden after the stream"...)
			e.CompressedSize = uint64(len(e.Raw))
		}),
		layout("overlapping-entries", api.CodeOverlappingEntries, func(z *tufgen.ZipLayout) {
			e := z.Entry(entryA)
			e.Descriptor = tufgen.NoDescriptor
			e.CompressedSize += 40
			e.UncompressedSize += 40
		}),

		// More than one directory.
		layout("directory-twice", api.CodeSecondDirectory, func(z *tufgen.ZipLayout) { z.DirectoryTwice = true }),
		layout("record-beyond-count", api.CodeSecondDirectory, func(z *tufgen.ZipLayout) { z.CountLie = -1 }),
		layout("end-record-in-comment", api.CodeSecondDirectory, func(z *tufgen.ZipLayout) {
			z.Comment = append([]byte("PK\x05\x06"), make([]byte, 18)...)
		}),

		// Damaged or ambiguous end records and directory.
		layout("record-count-too-high", api.CodeMalformedDirectory, func(z *tufgen.ZipLayout) { z.CountLie = 1 }),
		{name: "multi-disk", code: api.CodeMalformedDirectory, build: func(t testing.TB) []byte {
			return patchEnd(plainArchive(t, nil), 4, 1)
		}},
		{name: "zip64-end-disagrees", code: api.CodeMalformedDirectory, build: func(t testing.TB) []byte {
			b := relayout(func(z *tufgen.ZipLayout) { z.Zip64End = true })(t)
			patchEnd(b, 8, 3)
			return patchEnd(b, 10, 3)
		}},
		layout("two-zip64-fields", api.CodeMalformedDirectory, func(z *tufgen.ZipLayout) {
			e := z.Entry(entryA)
			e.Zip64 = true
			e.Extra = append(binary.LittleEndian.AppendUint16(binary.LittleEndian.AppendUint16(nil, 1), 8),
				binary.LittleEndian.AppendUint64(nil, e.UncompressedSize+1)...)
		}),
		{name: "directory-too-large", code: api.CodeDirectoryTooLarge, opts: tufrepo.Options{MaxDirectory: 256},
			build: func(t testing.TB) []byte { return plainArchive(t, nil) }},

		// Names.
		extra("control-character", api.CodeControlCharacter, "repo/targets/a\x1b[2Jb"),
		extra("c1-control-character", api.CodeControlCharacter, "repo/targets/a\u0085b"),
		target("target-dot-dot", api.CodeUnsafeTargetName, "x/../b.bin"),
		target("target-dot", api.CodeUnsafeTargetName, "./b.bin"),
		target("target-empty-segment", api.CodeUnsafeTargetName, "x//b.bin"),
		target("target-backslash", api.CodeUnsafeTargetName, `x\b.bin`),
		target("target-control-character", api.CodeControlCharacter, "x\x07.bin"),

		// Entries signed metadata does not name.
		extra("unsigned-target", api.CodeUnsignedEntry, "repo/targets/extra.bin"),
		extra("unsigned-metadata", api.CodeUnsignedEntry, "repo/metadata/2.snapshot.json"),
		extra("unsigned-elsewhere", api.CodeUnsignedEntry, "repo/README.txt"),
		extra("unsigned-directory", api.CodeUnsignedEntry, "repo/targets/empty/"),
		layout("unsigned-huge-target", api.CodeUnsignedEntry, func(z *tufgen.ZipLayout) {
			z.Entries = append(z.Entries, hugeEntry("repo/targets/huge.bin"))
		}),
		layout("unsigned-huge-elsewhere", api.CodeUnsignedEntry, func(z *tufgen.ZipLayout) {
			z.Entries = append(z.Entries, hugeEntry("repo/huge.bin"))
		}),

		// The manifest against targets.json.
		defect("manifest-omits-target", api.CodeManifestOmitsTarget, tufgen.Defects{UnlistedTargets: []string{"dir/b.bin"}}),
		{name: "manifest-repeats-target", code: api.CodeManifestRepeatsTarget, build: func(t testing.TB) []byte {
			return plainArchive(t, func(r *tufgen.Repo) {
				r.Artifacts = append(r.Artifacts, tufgen.Artifact{Name: "b-again", Version: "1.0.0", Kind: "zone",
					Target: "dir/b.bin", Data: []byte("bravo bytes")})
			})
		}},
	}
}

// Every strict case is refused with its code and a message an operator
// can act on; the good archive they are all made from is accepted.
func TestStrictArchiveRefusals(t *testing.T) {
	t.Parallel()
	roots := []tufrepo.TrustRoot{{ID: uuid.New(), JSON: fuzzLineage(t, false).TrustRoot()}}
	if _, _, err := verify(plainArchive(t, nil), roots, nil, tufrepo.Options{}); err != nil {
		t.Fatalf("the archive the cases start from is refused: %v", err)
	}
	if _, _, err := verify(relayout(func(*tufgen.ZipLayout) {})(t), roots, nil, tufrepo.Options{}); err != nil {
		t.Fatalf("the archive rewritten unchanged is refused: %v", err)
	}
	if _, _, err := receive(t, plainArchive(t, nil), roots, nil, tufrepo.Options{}); err != nil {
		t.Fatalf("the archive the cases start from is refused on the streaming path: %v", err)
	}
	for _, c := range strictCases() {
		t.Run(c.name, func(t *testing.T) {
			archive := c.build(t)
			for path, run := range map[string]func() error{
				"on disk":   func() error { _, _, err := verify(archive, roots, nil, c.opts); return err },
				"streaming": func() error { _, _, err := receive(t, archive, roots, nil, c.opts); return err },
			} {
				err := run()
				if code(err) != c.code {
					t.Fatalf("%s: got %v, want code %s", path, err, c.code)
				}
				var e *fault.Error
				if !errors.As(err, &e) || len(e.Message) < 40 {
					t.Fatalf("%s: message too thin for an operator: %v", path, err)
				}
			}
		})
	}
}

// Archives from real writers, and every legitimate way to lay one out,
// are accepted, with the same artifacts.
func TestStrictArchiveVariantsAccepted(t *testing.T) {
	t.Parallel()
	l := fuzzLineage(t, true)
	good, built := build(t, l, tinyRepo(true))
	roots := []tufrepo.TrustRoot{{ID: uuid.New(), JSON: l.TrustRoot()}}
	forms := map[string]tufgen.DescriptorForm{"none": tufgen.NoDescriptor, "32": tufgen.Descriptor32,
		"32-nosig": tufgen.Descriptor32NoSig, "64": tufgen.Descriptor64, "64-nosig": tufgen.Descriptor64NoSig}
	for formName, form := range forms {
		for _, z64 := range []bool{false, true} {
			t.Run(fmt.Sprintf("descriptor-%s-zip64-%v", formName, z64), func(t *testing.T) {
				z, err := tufgen.ReadZip(good)
				if err != nil {
					t.Fatal(err)
				}
				for i := range z.Entries {
					z.Entries[i].Descriptor = form
					z.Entries[i].Zip64 = z64
				}
				z.Zip64End = z64
				z.Comment = []byte("an archive comment is fine")
				checkVerifies(t, z.Bytes(), roots, built)
			})
		}
	}
	// Sizes in the local headers, as rackrelease and tufaceous write
	// them.
	t.Run("header-sizes", func(t *testing.T) {
		r := tinyRepo(true)
		r.HeaderSizes = true
		archive, built := build(t, l, r)
		zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range zr.File {
			if f.Flags&0x8 != 0 {
				t.Fatalf("%s has a data descriptor", f.Name)
			}
		}
		checkVerifies(t, archive, roots, built)
	})
	// Directory entries, as Info-ZIP and jar write them, and deflated
	// targets.
	t.Run("directories-and-deflate", func(t *testing.T) {
		r := tinyRepo(true)
		r.Defects.Deflate = true
		r.Defects.ExtraEntries = []tufgen.Entry{{Name: "repo/"}, {Name: "repo/metadata/"}, {Name: "repo/targets/"},
			{Name: "repo/targets/dir/"}}
		archive, built := build(t, l, r)
		checkVerifies(t, archive, roots, built)
	})
}

// checkVerifies checks that an archive verifies, on disk and streamed,
// with the artifacts it was built with.
func checkVerifies(t *testing.T, archive []byte, roots []tufrepo.TrustRoot, built *tufgen.Built) {
	t.Helper()
	for path, run := range map[string]func() (*tufrepo.Verified, map[string][]byte, error){
		"on disk": func() (*tufrepo.Verified, map[string][]byte, error) {
			return verify(archive, roots, nil, tufrepo.Options{})
		},
		"streaming": func() (*tufrepo.Verified, map[string][]byte, error) {
			return receive(t, archive, roots, nil, tufrepo.Options{})
		},
	} {
		v, copied, err := run()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(v.Artifacts) != len(built.Artifacts) {
			t.Fatalf("%s: %d artifacts, want %d", path, len(v.Artifacts), len(built.Artifacts))
		}
		for i, a := range v.Artifacts {
			if a.SHA256 != built.Artifacts[i].SHA256 || int64(len(copied[a.TargetName])) != a.Length ||
				fmt.Sprintf("%x", sha256.Sum256(copied[a.TargetName])) != a.SHA256 {
				t.Fatalf("%s: artifact %s: %+v, copied %d bytes", path, a.Name, a, len(copied[a.TargetName]))
			}
		}
	}
}

// recordingReader counts how often each byte of the archive is read.
type recordingReader struct {
	b     []byte
	reads []uint8
}

func newRecordingReader(b []byte) *recordingReader {
	return &recordingReader{b: b, reads: make([]uint8, len(b))}
}

func (r *recordingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := bytes.NewReader(r.b).ReadAt(p, off)
	for i := off; i < off+int64(n); i++ {
		r.reads[i] = min(r.reads[i]+1, 255)
	}
	return n, err
}

// dataRange is where an entry's stored bytes lie, found by archive/zip.
func dataRange(t *testing.T, archive []byte, name string) (int64, int64) {
	t.Helper()
	z, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range z.File {
		if f.Name == name {
			off, err := f.DataOffset()
			if err != nil {
				t.Fatal(err)
			}
			return off, off + int64(f.CompressedSize64)
		}
	}
	t.Fatalf("no entry %s", name)
	return 0, 0
}

// tailWindow is how much of an archive's end Open reads to find the end
// record (as archive/zip does): the end record may be followed by a
// comment of up to 64 KiB. Whatever lies there is read once more.
const tailWindow = 22 + 0xffff

// An unsigned entry, however large it claims to be, is refused without a
// byte of its data being read.
func TestUnsignedHugeEntryIsNotRead(t *testing.T) {
	t.Parallel()
	l := fuzzLineage(t, false)
	roots := []tufrepo.TrustRoot{{ID: uuid.New(), JSON: l.TrustRoot()}}
	r := tinyRepo(false)
	// Enough signed bytes after the huge entry that its data lies
	// before the end-record window.
	r.Artifacts = append(r.Artifacts, tufgen.Artifact{Name: "big", Version: "1.0.0", Kind: "zone", Size: 2 * tailWindow, Seed: 1})
	good, _ := build(t, l, r)
	for _, name := range []string{"repo/targets/huge.bin", "repo/huge.bin"} {
		z, err := tufgen.ReadZip(good)
		if err != nil {
			t.Fatal(err)
		}
		// First in the archive, so a reader that walked the entries in
		// order would meet it before anything else.
		z.Entries = append([]tufgen.ZipEntry{hugeEntry(name)}, z.Entries...)
		archive := z.Bytes()
		rr := newRecordingReader(archive)
		a, err := tufrepo.Open(rr, int64(len(archive)), tufrepo.Options{})
		if err == nil {
			_, err = a.Verify(roots, nil)
		}
		if code(err) != api.CodeUnsignedEntry || !strings.Contains(err.Error(), name) {
			t.Fatalf("%s: got %v, want %s naming it", name, err, api.CodeUnsignedEntry)
		}
		from, to := dataRange(t, archive, name)
		if to > int64(len(archive))-tailWindow {
			t.Fatalf("%s: the test archive is too small: the entry's data is inside the end-record window", name)
		}
		for i := from; i < to; i++ {
			if rr.reads[i] != 0 {
				t.Fatalf("%s: byte %d of its data was read before it was refused", name, i-from)
			}
		}
	}
}

// The structure checks read headers and the end-record window only:
// verifying and copying out every artifact reads each artifact byte
// before that window exactly once.
func TestArtifactBytesReadOnce(t *testing.T) {
	t.Parallel()
	l := fuzzLineage(t, true)
	for _, deflate := range []bool{false, true} {
		r := tufgen.Sized("1.0.0", 1<<20, 4, 3)
		r.Defects.Deflate = deflate
		archive, _ := build(t, l, r)
		rr := newRecordingReader(archive)
		a, err := tufrepo.Open(rr, int64(len(archive)), tufrepo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		v, err := a.Verify([]tufrepo.TrustRoot{{ID: uuid.New(), JSON: l.TrustRoot()}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, target := range v.Targets() {
			if err := a.CopyTarget(v, target, discard{}, make([]byte, 64<<10)); err != nil {
				t.Fatal(err)
			}
		}
		window := int64(len(archive)) - tailWindow
		checked := 0
		for _, art := range v.Artifacts {
			from, to := dataRange(t, archive, v.TargetPath(art.TargetName))
			for i := from; i < to; i++ {
				want := uint8(1)
				if i >= window {
					want = 2
				}
				if rr.reads[i] != want {
					t.Fatalf("deflate=%v: byte %d of %s read %d times, want %d", deflate, i-from, art.TargetName, rr.reads[i], want)
				}
				checked++
			}
		}
		if checked < 1<<20 {
			t.Fatalf("only %d artifact bytes checked", checked)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

package release

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Lineage is one repository family as a signer holds it: the keys, and
// every root version so far (Roots[i] is version i+1, each signed), which
// every release of the lineage carries so that a Nexus trusting any
// earlier version can follow the chain.
type Lineage struct {
	Keys  Keyring
	Roots [][]byte
	// Expires is the default expiry of the timestamp, snapshot and
	// targets metadata of the releases built.
	Expires time.Time
}

// TrustRoot is root version 1, what an operator registers.
func (l *Lineage) TrustRoot() []byte { return l.Roots[0] }

// RootVersion is the newest root version.
func (l *Lineage) RootVersion() int64 { return int64(len(l.Roots)) }

// consistent reports whether the newest root turns on consistent
// snapshots.
func (l *Lineage) consistent() (bool, error) {
	if len(l.Roots) == 0 {
		return false, errors.New("release: the lineage has no root metadata")
	}
	m, err := ParseRoot(l.Roots[len(l.Roots)-1])
	if err != nil {
		return false, err
	}
	return m.Signed.ConsistentSnapshot, nil
}

// Source is where an artifact's (or a composite part's) bytes come from.
// Build opens it twice: once to hash it (the hash names the file with
// consistent snapshots, which the zip needs before the bytes), once to
// store it. Both reads must give the same bytes.
type Source interface {
	Open() (io.ReadCloser, error)
}

// File is a Source reading a file.
type File string

// Open opens the file.
func (f File) Open() (io.ReadCloser, error) { return os.Open(string(f)) }

// Bytes is a Source holding its bytes.
type Bytes []byte

// Open reads the bytes.
func (b Bytes) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }

// Artifact is one artifact of a release.
type Artifact struct {
	Name, Version, Kind string
	// Target is the TUF target name (default "<name>-<version>.<kind>").
	Target string
	// Tags are extra v2 manifest tags (kind and name are always added).
	Tags   map[string]string
	Source Source
}

// TargetName returns the artifact's target name.
func (a Artifact) TargetName() string {
	if a.Target != "" {
		return a.Target
	}
	return fmt.Sprintf("%s-%s.%s", a.Name, a.Version, a.Kind)
}

// Repo describes one release to build.
type Repo struct {
	SystemVersion string
	Artifacts     []Artifact
	// ManifestV2 writes artifacts-v2.json instead of artifacts.json.
	ManifestV2 bool
	// Metadata is the v2 manifest's free-form metadata.
	Metadata map[string]string
	// Versions of the non-root roles (default 1 each).
	TimestampVersion, SnapshotVersion, TargetsVersion int64
	// Expires of the non-root roles (default: the lineage's expiry).
	Expires map[string]time.Time
	// DeflateTargets compresses target files instead of storing them.
	// Composite artifacts are compressed already; stored targets let
	// Nexus write each byte once.
	DeflateTargets bool
	// DataDescriptors writes each entry's CRC and sizes in a data
	// descriptor after its data, as a zip writer that streams does
	// (archive/zip's way), instead of in its local header before it. Nexus
	// reads either, but sizes up front (as tufaceous writes them) let it
	// place each stored entry's end without looking for it.
	DataDescriptors bool
	// Hooks alter the build at fixed points; nil builds a correct release.
	Hooks *Hooks
}

// Hooks let a test tool build deliberately broken releases (see
// internal/tufgen) out of the same code that builds good ones. Every field
// is optional.
type Hooks struct {
	// Manifest replaces the manifest's target name and bytes.
	Manifest func(name string, data []byte) (string, []byte)
	// SignedLength is the length targets.json signs for a target.
	SignedLength func(target string, length int64) int64
	// Stored wraps the reader of a target's bytes as they are stored.
	Stored func(target string, r io.Reader) io.Reader
	// Signers picks the keys that sign a role's metadata.
	Signers func(role string, keys []*Key) []*Key
	// ParentVersion is the version a parent role records for role
	// ("snapshot" in timestamp.json, "targets" in snapshot.json).
	ParentVersion func(role string, version int64) int64
	// Metadata rewrites a metadata file (by its base name) after signing.
	Metadata func(name string, data []byte) []byte
	// Entries edits the archive's entries before they are written.
	Entries func(entries []Entry) []Entry
}

// Entry is one entry of the archive as it will be written.
type Entry struct {
	Name string
	// Method is zip.Store, zip.Deflate or, written raw and labelled so,
	// any other method number.
	Method uint16
	// Mode, when set, is recorded in the entry.
	Mode fs.FileMode
	Open func() (io.ReadCloser, error)
	// Data, when set, is the entry's bytes (Open reads them too).
	Data []byte
	// Sized says Size and CRC32 are the bytes' length and CRC-32, known
	// before they are written.
	Sized bool
	Size  int64
	CRC32 uint32
}

// BytesEntry is an entry holding data.
func BytesEntry(name string, method uint16, mode fs.FileMode, data []byte) Entry {
	return Entry{Name: name, Method: method, Mode: mode, Open: Bytes(data).Open, Data: data, Sized: true,
		Size: int64(len(data)), CRC32: crc32.ChecksumIEEE(data)}
}

// Built describes an archive that was written.
type Built struct {
	SHA256        string
	Size          int64
	SystemVersion string
	Artifacts     []BuiltArtifact
	// ValidUntil is the earliest expiry among the final roles.
	ValidUntil time.Time
	// Versions of the roles.
	RootVersion, TimestampVersion, SnapshotVersion, TargetsVersion int64
}

// BuiltArtifact is an artifact with its signed hash and length.
type BuiltArtifact struct {
	Artifact
	SHA256 string
	Length int64
}

// Manifest target names.
const (
	ManifestV1Name = "artifacts.json"
	ManifestV2Name = "artifacts-v2.json"
)

type manifestV1 struct {
	SystemVersion string            `json:"system_version"`
	Artifacts     []manifestV1Entry `json:"artifacts"`
}

type manifestV1Entry struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
	Target  string `json:"target"`
}

type manifestV2 struct {
	SystemVersion string            `json:"system_version"`
	Artifacts     []manifestV2Entry `json:"artifacts"`
	Metadata      map[string]string `json:"metadata"`
}

type manifestV2Entry struct {
	TargetName string            `json:"target_name"`
	Version    string            `json:"version"`
	Tags       map[string]string `json:"tags"`
}

// RenderManifest is the artifacts manifest listing arts: artifacts.json,
// or artifacts-v2.json with v2 (whose metadata is meta).
func RenderManifest(systemVersion string, v2 bool, meta map[string]string, arts []Artifact) (string, []byte, error) {
	var v any
	name := ManifestV1Name
	if v2 {
		name = ManifestV2Name
		m := manifestV2{SystemVersion: systemVersion, Metadata: meta, Artifacts: []manifestV2Entry{}}
		if m.Metadata == nil {
			m.Metadata = map[string]string{}
		}
		for _, a := range arts {
			tags := map[string]string{"kind": a.Kind, "name": a.Name}
			for k, v := range a.Tags {
				tags[k] = v
			}
			m.Artifacts = append(m.Artifacts, manifestV2Entry{TargetName: a.TargetName(), Version: a.Version, Tags: tags})
		}
		v = m
	} else {
		m := manifestV1{SystemVersion: systemVersion, Artifacts: []manifestV1Entry{}}
		for _, a := range arts {
			m.Artifacts = append(m.Artifacts, manifestV1Entry{Name: a.Name, Version: a.Version, Kind: a.Kind, Target: a.TargetName()})
		}
		v = m
	}
	b, err := json.MarshalIndent(v, "", "  ")
	return name, b, err
}

type target struct {
	name   string
	src    Source
	sha    []byte
	length int64
	crc    uint32
}

// BuildFile writes the archive to path; on failure nothing is left there.
func (l *Lineage) BuildFile(path string, r Repo) (*Built, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	b, err := l.Build(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return b, nil
}

// BuildBytes returns the archive in memory (for small repos).
func (l *Lineage) BuildBytes(r Repo) ([]byte, *Built, error) {
	var buf bytes.Buffer
	b, err := l.Build(&buf, r)
	return buf.Bytes(), b, err
}

func hashSource(s Source) ([]byte, int64, uint32, error) {
	rc, err := s.Open()
	if err != nil {
		return nil, 0, 0, err
	}
	defer rc.Close()
	h, c := sha256.New(), crc32.NewIEEE()
	n, err := io.Copy(io.MultiWriter(h, c), rc)
	return h.Sum(nil), n, c.Sum32(), err
}

// Build writes one release as a zip to w.
func (l *Lineage) Build(w io.Writer, r Repo) (*Built, error) {
	if r.SystemVersion == "" {
		return nil, errors.New("release: Repo.SystemVersion is empty")
	}
	if err := l.Keys.Need(RoleTimestamp, RoleSnapshot, RoleTargets); err != nil {
		return nil, err
	}
	consistent, err := l.consistent()
	if err != nil {
		return nil, err
	}
	hk := r.Hooks
	if hk == nil {
		hk = &Hooks{}
	}
	expires := func(role string) time.Time {
		if t, ok := r.Expires[role]; ok {
			return t
		}
		return l.Expires
	}
	versionOr1 := func(v int64) int64 { return max(v, 1) }
	tsVersion, snapVersion, targVersion := versionOr1(r.TimestampVersion), versionOr1(r.SnapshotVersion),
		versionOr1(r.TargetsVersion)
	parentVersion := func(role string, v int64) int64 {
		if hk.ParentVersion != nil {
			return hk.ParentVersion(role, v)
		}
		return v
	}
	signers := func(role string) []*Key {
		keys := l.Keys[role].Keys
		if hk.Signers != nil {
			return hk.Signers(role, keys)
		}
		return keys
	}

	// Hash every target first: with consistent snapshots the hash is part
	// of the file's name, which the zip needs before the bytes.
	var targets []*target
	byName := map[string]*target{}
	built := &Built{SystemVersion: r.SystemVersion, RootVersion: l.RootVersion(),
		TimestampVersion: tsVersion, SnapshotVersion: snapVersion, TargetsVersion: targVersion}
	for _, a := range r.Artifacts {
		name := a.TargetName()
		t := byName[name]
		if t == nil {
			if a.Source == nil {
				return nil, fmt.Errorf("release: artifact %s %s has no source", a.Name, a.Version)
			}
			sha, n, crc, err := hashSource(a.Source)
			if err != nil {
				return nil, fmt.Errorf("release: artifact %s: %w", a.Name, err)
			}
			t = &target{name: name, src: a.Source, sha: sha, length: n, crc: crc}
			byName[name] = t
			targets = append(targets, t)
		}
		built.Artifacts = append(built.Artifacts, BuiltArtifact{Artifact: a, SHA256: hex.EncodeToString(t.sha), Length: t.length})
	}

	manifestName, manifest, err := RenderManifest(r.SystemVersion, r.ManifestV2, r.Metadata, r.Artifacts)
	if err != nil {
		return nil, err
	}
	if hk.Manifest != nil {
		manifestName, manifest = hk.Manifest(manifestName, manifest)
	}
	ms := sha256.Sum256(manifest)
	manifestTarget := &target{name: manifestName, src: Bytes(manifest), sha: ms[:], length: int64(len(manifest)),
		crc: crc32.ChecksumIEEE(manifest)}

	// targets.json signs every target and the manifest.
	targ := metadata.Targets(expires(RoleTargets))
	targ.Signed.Version = targVersion
	for _, t := range append(slices.Clone(targets), manifestTarget) {
		length := t.length
		if hk.SignedLength != nil {
			length = hk.SignedLength(t.name, length)
		}
		targ.Signed.Targets[t.name] = &metadata.TargetFiles{Length: length,
			Hashes: metadata.Hashes{"sha256": t.sha}, Path: t.name}
	}
	targBytes, err := signRole(targ, signers(RoleTargets))
	if err != nil {
		return nil, err
	}
	snap := metadata.Snapshot(expires(RoleSnapshot))
	snap.Signed.Version = snapVersion
	snap.Signed.Meta["targets.json"] = metaFile(parentVersion(RoleTargets, targVersion), targBytes)
	snapBytes, err := signRole(snap, signers(RoleSnapshot))
	if err != nil {
		return nil, err
	}
	ts := metadata.Timestamp(expires(RoleTimestamp))
	ts.Signed.Version = tsVersion
	ts.Signed.Meta["snapshot.json"] = metaFile(parentVersion(RoleSnapshot, snapVersion), snapBytes)
	tsBytes, err := signRole(ts, signers(RoleTimestamp))
	if err != nil {
		return nil, err
	}
	built.ValidUntil = minTime(l.Expires, expires(RoleTimestamp), expires(RoleSnapshot), expires(RoleTargets))
	if root, err := ParseRoot(l.Roots[len(l.Roots)-1]); err == nil {
		built.ValidUntil = minTime(built.ValidUntil, root.Signed.Expires)
	}

	method := zip.Store
	if r.DeflateTargets {
		method = zip.Deflate
	}
	var entries []Entry
	for _, t := range append(targets, manifestTarget) {
		src, name := t.src, t.name
		open := src.Open
		if hk.Stored != nil {
			open = func() (io.ReadCloser, error) {
				rc, err := src.Open()
				if err != nil {
					return nil, err
				}
				return readCloser{Reader: hk.Stored(name, rc), Closer: rc}, nil
			}
		}
		entries = append(entries, Entry{Name: targetPath(consistent, t.name, t.sha), Method: method, Open: open,
			Sized: hk.Stored == nil, Size: t.length, CRC32: t.crc})
	}
	meta := func(name string, data []byte) {
		if hk.Metadata != nil {
			data = hk.Metadata(name, data)
		}
		entries = append(entries, BytesEntry("repo/metadata/"+name, zip.Deflate, 0, data))
	}
	for i, root := range l.Roots {
		meta(fmt.Sprintf("%d.root.json", i+1), root)
	}
	snapName, targName := "snapshot.json", "targets.json"
	if consistent {
		snapName, targName = fmt.Sprintf("%d.snapshot.json", snapVersion), fmt.Sprintf("%d.targets.json", targVersion)
	}
	meta("timestamp.json", tsBytes)
	meta(snapName, snapBytes)
	meta(targName, targBytes)
	if hk.Entries != nil {
		entries = hk.Entries(entries)
	}

	hw := &hashWriter{w: w, h: sha256.New()}
	if err := WriteZip(hw, entries, r.DataDescriptors); err != nil {
		return nil, err
	}
	built.SHA256 = hex.EncodeToString(hw.h.Sum(nil))
	built.Size = hw.n
	return built, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// WriteZip writes entries as a zip archive: with data descriptors, or
// (for stored entries and those whose bytes are in memory) with sizes and
// CRC in the local header.
func WriteZip(w io.Writer, entries []Entry, descriptors bool) error {
	zw := zip.NewWriter(w)
	for _, e := range entries {
		if err := writeEntry(zw, e, descriptors); err != nil {
			return fmt.Errorf("release: %s: %w", e.Name, err)
		}
	}
	return zw.Close()
}

func writeEntry(zw *zip.Writer, e Entry, descriptors bool) error {
	fh := &zip.FileHeader{Name: e.Name, Method: e.Method}
	if e.Mode != 0 {
		fh.SetMode(e.Mode)
	}
	if !descriptors && e.Sized && (e.Method == zip.Store || (e.Method == zip.Deflate && e.Data != nil)) {
		return writeSized(zw, fh, e)
	}
	rc, err := e.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	if e.Method != zip.Store && e.Method != zip.Deflate {
		// An unknown method can only be written raw: its bytes are stored
		// as given, labelled with the method.
		data, err := io.ReadAll(rc)
		if err != nil {
			return err
		}
		fh.CRC32 = crc32.ChecksumIEEE(data)
		fh.CompressedSize64, fh.UncompressedSize64 = uint64(len(data)), uint64(len(data))
		fw, err := zw.CreateRaw(fh)
		if err != nil {
			return err
		}
		_, err = fw.Write(data)
		return err
	}
	fw, err := zw.CreateHeader(fh)
	if err != nil {
		return err
	}
	_, err = io.Copy(fw, rc)
	return err
}

// writeSized writes an entry whose sizes and CRC go in its local header: a
// stored one's bytes as they are, a deflated one's (in memory) compressed
// first.
func writeSized(zw *zip.Writer, fh *zip.FileHeader, e Entry) error {
	fh.CRC32, fh.UncompressedSize64 = e.CRC32, uint64(e.Size)
	if e.Method == zip.Deflate {
		var buf bytes.Buffer
		fw, err := flate.NewWriter(&buf, 5)
		if err != nil {
			return err
		}
		fw.Write(e.Data)
		if err := fw.Close(); err != nil {
			return err
		}
		fh.CompressedSize64 = uint64(buf.Len())
		w, err := zw.CreateRaw(fh)
		if err != nil {
			return err
		}
		_, err = w.Write(buf.Bytes())
		return err
	}
	fh.CompressedSize64 = uint64(e.Size)
	w, err := zw.CreateRaw(fh)
	if err != nil {
		return err
	}
	rc, err := e.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	n, err := io.Copy(w, rc)
	if err == nil && n != e.Size {
		err = fmt.Errorf("%d bytes, %d when hashed (did the source change?)", n, e.Size)
	}
	return err
}

// targetPath is where a target's bytes live in the archive.
func targetPath(consistent bool, name string, sha []byte) string {
	if !consistent {
		return "repo/targets/" + name
	}
	dir, base := path.Split(name)
	return "repo/targets/" + dir + hex.EncodeToString(sha) + "." + base
}

func signRole[T metadata.Roles](m *metadata.Metadata[T], keys []*Key) ([]byte, error) {
	for _, k := range keys {
		if _, err := m.Sign(k.signer); err != nil {
			return nil, err
		}
	}
	return m.ToBytes(true)
}

func metaFile(version int64, data []byte) *metadata.MetaFiles {
	s := sha256.Sum256(data)
	return &metadata.MetaFiles{Version: version, Length: int64(len(data)), Hashes: metadata.Hashes{"sha256": s[:]}}
}

type hashWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (w *hashWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	return n, err
}

func minTime(ts ...time.Time) time.Time {
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	return ts[0]
}

// Package tufgen builds signed TUF repository archives, in the layout Nexus
// accepts, for tests, the upload attack suite, benchmarks and rackdev's demo
// repo.
//
// A Lineage holds the signing keys of one repository family and the history
// of its root metadata (so root rotations can be made and checked); Build
// writes one release of it as a zip: artifacts of chosen sizes (streamed, so
// a 1 GiB repo needs no 1 GiB of memory), an artifacts manifest in either
// format, metadata in either naming style, and, on request, deliberate
// defects that a verifier must catch.
//
// Everything is deterministic given the randomness passed in and the
// artifacts' seeds: the same inputs give byte-identical archives.
package tufgen

import (
	"archive/zip"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/fnv"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Role names, as TUF spells them.
const (
	RoleRoot      = metadata.ROOT
	RoleTimestamp = metadata.TIMESTAMP
	RoleSnapshot  = metadata.SNAPSHOT
	RoleTargets   = metadata.TARGETS
)

var allRoles = []string{RoleRoot, RoleTimestamp, RoleSnapshot, RoleTargets}

// DefaultExpires is far enough ahead that tests never see it pass, and
// fixed so archives are reproducible.
var DefaultExpires = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)

// Key is an ed25519 signing key.
type Key struct {
	ID     string
	meta   *metadata.Key
	signer signature.Signer
}

// NewKey makes a key from 32 bytes of rng.
func NewKey(rng io.Reader) (*Key, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(rng, seed); err != nil {
		return nil, fmt.Errorf("tufgen: key seed: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	signer, err := signature.LoadED25519Signer(priv)
	if err != nil {
		return nil, err
	}
	meta, err := metadata.KeyFromPublicKey(priv.Public())
	if err != nil {
		return nil, err
	}
	id, err := meta.ID()
	if err != nil {
		return nil, err
	}
	return &Key{ID: id, meta: meta, signer: signer}, nil
}

// LineageOptions shape a new lineage.
type LineageOptions struct {
	// Thresholds per role (default 1).
	Thresholds map[string]int
	// Keys per role (default: the role's threshold).
	Keys map[string]int
	// Consistent turns on consistent snapshots: V.role.json metadata and
	// <sha256>.<name> target files.
	Consistent bool
	// Expires is the root's expiry (default DefaultExpires).
	Expires time.Time
	// RawThresholds are written into the root as given, 0 or more than
	// the role's keys included, for checks that must refuse such roots.
	RawThresholds map[string]int
	// DuplicateKey lists roles whose first key the root lists a second
	// time, under the id of another encoding of the same public key
	// (upper-case hex).
	DuplicateKey []string
}

// Lineage is one repository family: its keys and root history.
type Lineage struct {
	rng        io.Reader
	keys       map[string][]*Key
	thresholds map[string]int
	raw        map[string]int
	dupKey     []string
	consistent bool
	expires    time.Time
	// roots[i] is the signed (i+1).root.json.
	roots [][]byte
}

// NewLineage makes keys for every role and signs root version 1.
func NewLineage(rng io.Reader, o LineageOptions) (*Lineage, error) {
	l := &Lineage{rng: rng, keys: map[string][]*Key{}, thresholds: map[string]int{},
		raw: o.RawThresholds, dupKey: o.DuplicateKey, consistent: o.Consistent, expires: o.Expires}
	if l.expires.IsZero() {
		l.expires = DefaultExpires
	}
	for _, role := range allRoles {
		th := max(o.Thresholds[role], 1)
		n := max(o.Keys[role], th)
		l.thresholds[role] = th
		for range n {
			k, err := NewKey(rng)
			if err != nil {
				return nil, err
			}
			l.keys[role] = append(l.keys[role], k)
		}
	}
	root, err := l.signRoot(1, nil, l.keys[RoleRoot])
	if err != nil {
		return nil, err
	}
	l.roots = append(l.roots, root)
	return l, nil
}

// TrustRoot is root version 1, what an operator registers.
func (l *Lineage) TrustRoot() []byte { return l.roots[0] }

// RootVersion is the newest root version.
func (l *Lineage) RootVersion() int64 { return int64(len(l.roots)) }

// RotateOptions shape a root rotation.
type RotateOptions struct {
	// Roles whose keys are replaced (default: root only).
	Roles []string
	// SkipOldSignatures leaves out the previous root's signatures, which
	// a verifier must refuse.
	SkipOldSignatures bool
}

// Rotate signs the next root version with fresh keys for the chosen roles.
// A correct rotation is signed by both the old and the new root keys.
func (l *Lineage) Rotate(o RotateOptions) error {
	roles := o.Roles
	if len(roles) == 0 {
		roles = []string{RoleRoot}
	}
	oldRootKeys := l.keys[RoleRoot]
	for _, role := range roles {
		fresh := make([]*Key, len(l.keys[role]))
		for i := range fresh {
			k, err := NewKey(l.rng)
			if err != nil {
				return err
			}
			fresh[i] = k
		}
		l.keys[role] = fresh
	}
	signers := slices.Clone(l.keys[RoleRoot])
	if !o.SkipOldSignatures && slices.Contains(roles, RoleRoot) {
		signers = append(signers, oldRootKeys...)
	}
	root, err := l.signRoot(int64(len(l.roots))+1, nil, signers)
	if err != nil {
		return err
	}
	l.roots = append(l.roots, root)
	return nil
}

func (l *Lineage) signRoot(version int64, expires *time.Time, signers []*Key) ([]byte, error) {
	exp := l.expires
	if expires != nil {
		exp = *expires
	}
	root := metadata.Root(exp)
	root.Signed.Version = version
	root.Signed.ConsistentSnapshot = l.consistent
	for _, role := range allRoles {
		for _, k := range l.keys[role] {
			if err := root.Signed.AddKey(k.meta, role); err != nil {
				return nil, err
			}
		}
		root.Signed.Roles[role].Threshold = l.thresholds[role]
		if th, ok := l.raw[role]; ok {
			root.Signed.Roles[role].Threshold = th
		}
	}
	for _, role := range l.dupKey {
		k := l.keys[role][0].meta
		dup := &metadata.Key{Type: k.Type, Scheme: k.Scheme,
			Value: metadata.KeyVal{PublicKey: strings.ToUpper(k.Value.PublicKey)}}
		id, err := dup.ID()
		if err != nil {
			return nil, err
		}
		root.Signed.Keys[id] = dup
		root.Signed.Roles[role].KeyIDs = append(root.Signed.Roles[role].KeyIDs, id)
	}
	for _, k := range signers {
		if _, err := root.Sign(k.signer); err != nil {
			return nil, err
		}
	}
	return root.ToBytes(true)
}

// Artifact is one artifact of a release.
type Artifact struct {
	Name, Version, Kind string
	// Target is the TUF target name (default "<name>-<version>.<kind>").
	// Two artifacts may share a target, and then share its bytes (a
	// manifest Nexus refuses: every target is exactly one artifact).
	Target string
	// Tags are extra v2 manifest tags (kind is always added).
	Tags map[string]string
	// Data is the content; when nil, Size pseudo-random bytes made from
	// Seed are used instead (streamed, never held in memory).
	Data []byte
	Size int64
	Seed uint64
}

// TargetName returns the artifact's target name.
func (a Artifact) TargetName() string {
	if a.Target != "" {
		return a.Target
	}
	return fmt.Sprintf("%s-%s.%s", a.Name, a.Version, a.Kind)
}

func (a Artifact) open() io.Reader {
	if a.Data != nil {
		return &sliceReader{b: a.Data}
	}
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], a.Seed)
	binary.LittleEndian.PutUint64(seed[8:], uint64(a.Size))
	return io.LimitReader(rand.NewChaCha8(seed), a.Size)
}

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// Entry is a raw archive entry added by a test.
type Entry struct {
	Name   string
	Data   []byte
	Method uint16
	// Mode, when set, is recorded in the entry (a symlink, say).
	Mode fs.FileMode
}

// Defects are deliberate faults a verifier must refuse.
type Defects struct {
	// TamperTarget flips a byte of this target's stored bytes (the signed
	// hash and length stay those of the true bytes).
	TamperTarget string
	// LengthLie adds its value to the signed length of a target (the
	// archive holds the true bytes).
	LengthLie map[string]int64
	// UnsignedManifestTarget adds a manifest artifact naming this target,
	// which the archive holds but targets.json does not sign.
	UnsignedManifestTarget string
	// UnlistedTargets are artifact targets left out of the manifest; they
	// are still signed and stored.
	UnlistedTargets []string
	// Undersign signs the role with only this many keys.
	Undersign map[string]int
	// OmitRootVersions leaves these N.root.json out of the archive.
	OmitRootVersions []int64
	// RawManifest replaces the manifest's bytes (still signed).
	RawManifest []byte
	// ManifestName overrides the manifest's target name.
	ManifestName string
	// ExtraEntries are appended to the archive.
	ExtraEntries []Entry
	// SkipEntries are archive names not written.
	SkipEntries []string
	// MetaVersionLie adds its value to the version a parent role records
	// for this role ("snapshot" in timestamp.json, "targets" in
	// snapshot.json), while the role itself keeps its true version.
	MetaVersionLie map[string]int64
	// Mutate, when set, rewrites any metadata file after signing.
	Mutate func(name string, data []byte) []byte
	// Deflate compresses target files instead of storing them.
	Deflate bool
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
	Defects Defects
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

// ManifestV1Name and ManifestV2Name are the manifests' target names.
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

type target struct {
	name   string
	art    Artifact
	sha    []byte
	length int64
}

// BuildFile writes the archive to path.
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
	var buf sliceWriter
	b, err := l.Build(&buf, r)
	return buf.b, b, err
}

type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// Build writes one release as a zip to w.
func (l *Lineage) Build(w io.Writer, r Repo) (*Built, error) {
	if r.SystemVersion == "" {
		return nil, errors.New("tufgen: Repo.SystemVersion is empty")
	}
	d := r.Defects
	expires := func(role string) time.Time {
		if t, ok := r.Expires[role]; ok {
			return t
		}
		return l.expires
	}
	versionOr1 := func(v int64) int64 { return max(v, 1) }
	tsVersion, snapVersion, targVersion := versionOr1(r.TimestampVersion), versionOr1(r.SnapshotVersion),
		versionOr1(r.TargetsVersion)

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
			h := sha256.New()
			n, err := io.Copy(h, a.open())
			if err != nil {
				return nil, err
			}
			t = &target{name: name, art: a, sha: h.Sum(nil), length: n}
			byName[name] = t
			targets = append(targets, t)
		}
		built.Artifacts = append(built.Artifacts, BuiltArtifact{Artifact: a, SHA256: hex.EncodeToString(t.sha), Length: t.length})
	}

	manifestName, manifest, err := buildManifest(r, byName)
	if err != nil {
		return nil, err
	}
	manifestTarget := &target{name: manifestName, art: Artifact{Data: manifest}, length: int64(len(manifest))}
	ms := sha256.Sum256(manifest)
	manifestTarget.sha = ms[:]

	// targets.json signs every target and the manifest.
	targ := metadata.Targets(expires(RoleTargets))
	targ.Signed.Version = targVersion
	for _, t := range append(slices.Clone(targets), manifestTarget) {
		length := t.length + d.LengthLie[t.name]
		targ.Signed.Targets[t.name] = &metadata.TargetFiles{Length: length,
			Hashes: metadata.Hashes{"sha256": t.sha}, Path: t.name}
	}
	targBytes, err := signRole(targ, l.signers(RoleTargets, d))
	if err != nil {
		return nil, err
	}
	snap := metadata.Snapshot(expires(RoleSnapshot))
	snap.Signed.Version = snapVersion
	snap.Signed.Meta["targets.json"] = metaFile(targVersion+d.MetaVersionLie[RoleTargets], targBytes)
	snapBytes, err := signRole(snap, l.signers(RoleSnapshot, d))
	if err != nil {
		return nil, err
	}
	ts := metadata.Timestamp(expires(RoleTimestamp))
	ts.Signed.Version = tsVersion
	ts.Signed.Meta["snapshot.json"] = metaFile(snapVersion+d.MetaVersionLie[RoleSnapshot], snapBytes)
	tsBytes, err := signRole(ts, l.signers(RoleTimestamp, d))
	if err != nil {
		return nil, err
	}
	built.ValidUntil = minTime(l.expires, expires(RoleTimestamp), expires(RoleSnapshot), expires(RoleTargets))

	hw := &hashWriter{w: w, h: sha256.New()}
	zw := zip.NewWriter(hw)
	skip := map[string]bool{}
	for _, s := range d.SkipEntries {
		skip[s] = true
	}
	writeEntry := func(name string, method uint16, mode fs.FileMode, src io.Reader) error {
		if skip[name] {
			return nil
		}
		fh := &zip.FileHeader{Name: name, Method: method}
		if mode != 0 {
			fh.SetMode(mode)
		}
		if method != zip.Store && method != zip.Deflate {
			// An unknown method can only be written raw: its bytes are
			// stored as given, labelled with the method.
			data, err := io.ReadAll(src)
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
		_, err = io.Copy(fw, src)
		return err
	}
	method := zip.Store
	if d.Deflate {
		method = zip.Deflate
	}
	for _, t := range append(targets, manifestTarget) {
		src := t.art.open()
		if t.name == d.TamperTarget {
			src = &tamperReader{r: src}
		}
		if err := writeEntry(l.targetPath(t.name, t.sha), method, 0, src); err != nil {
			return nil, err
		}
	}
	if d.UnsignedManifestTarget != "" {
		if err := writeEntry("repo/targets/"+d.UnsignedManifestTarget, zip.Store, 0,
			&sliceReader{b: []byte("not signed")}); err != nil {
			return nil, err
		}
	}
	meta := []struct {
		name string
		data []byte
	}{}
	for i, root := range l.roots {
		v := int64(i + 1)
		if slices.Contains(d.OmitRootVersions, v) {
			continue
		}
		meta = append(meta, struct {
			name string
			data []byte
		}{fmt.Sprintf("%d.root.json", v), root})
	}
	snapName, targName := "snapshot.json", "targets.json"
	if l.consistent {
		snapName, targName = fmt.Sprintf("%d.snapshot.json", snapVersion), fmt.Sprintf("%d.targets.json", targVersion)
	}
	meta = append(meta, struct {
		name string
		data []byte
	}{"timestamp.json", tsBytes}, struct {
		name string
		data []byte
	}{snapName, snapBytes}, struct {
		name string
		data []byte
	}{targName, targBytes})
	for _, m := range meta {
		data := m.data
		if d.Mutate != nil {
			data = d.Mutate(m.name, data)
		}
		if err := writeEntry("repo/metadata/"+m.name, zip.Deflate, 0, &sliceReader{b: data}); err != nil {
			return nil, err
		}
	}
	for _, e := range d.ExtraEntries {
		if err := writeEntry(e.Name, e.Method, e.Mode, &sliceReader{b: e.Data}); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	built.SHA256 = hex.EncodeToString(hw.h.Sum(nil))
	built.Size = hw.n
	return built, nil
}

// targetPath is where a target's bytes live in the archive.
func (l *Lineage) targetPath(name string, sha []byte) string {
	if !l.consistent {
		return "repo/targets/" + name
	}
	dir, base := path.Split(name)
	return "repo/targets/" + dir + hex.EncodeToString(sha) + "." + base
}

func (l *Lineage) signers(role string, d Defects) []*Key {
	keys := l.keys[role]
	if n, ok := d.Undersign[role]; ok {
		keys = keys[:min(n, len(keys))]
	}
	return keys
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

func buildManifest(r Repo, byName map[string]*target) (string, []byte, error) {
	d := r.Defects
	name := ManifestV1Name
	if r.ManifestV2 {
		name = ManifestV2Name
	}
	if d.ManifestName != "" {
		name = d.ManifestName
	}
	if d.RawManifest != nil {
		return name, d.RawManifest, nil
	}
	arts := slices.DeleteFunc(slices.Clone(r.Artifacts), func(a Artifact) bool {
		return slices.Contains(d.UnlistedTargets, a.TargetName())
	})
	if d.UnsignedManifestTarget != "" {
		arts = append(arts, Artifact{Name: "unsigned", Version: "1.0.0", Kind: "extra", Target: d.UnsignedManifestTarget})
	}
	var v any
	if r.ManifestV2 {
		m := manifestV2{SystemVersion: r.SystemVersion, Metadata: r.Metadata, Artifacts: []manifestV2Entry{}}
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
		m := manifestV1{SystemVersion: r.SystemVersion, Artifacts: []manifestV1Entry{}}
		for _, a := range arts {
			m.Artifacts = append(m.Artifacts, manifestV1Entry{Name: a.Name, Version: a.Version, Kind: a.Kind, Target: a.TargetName()})
		}
		v = m
	}
	b, err := json.MarshalIndent(v, "", "  ")
	return name, b, err
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

// tamperReader flips the first byte it passes on.
type tamperReader struct {
	r    io.Reader
	done bool
}

func (t *tamperReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 && !t.done {
		p[0] ^= 0xff
		t.done = true
	}
	return n, err
}

func minTime(ts ...time.Time) time.Time {
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	return ts[0]
}

// Demo returns a small release of a few kilobytes, for rackdev and
// examples.
func Demo(systemVersion string) Repo {
	// Each version's bytes differ, as real releases' do: the same bytes
	// under two versions is something Nexus refuses.
	base := fnv.New64a()
	base.Write([]byte(systemVersion))
	mk := func(name, kind string, size int64, seed uint64) Artifact {
		return Artifact{Name: name, Version: systemVersion, Kind: kind, Size: size, Seed: base.Sum64() + seed}
	}
	return Repo{SystemVersion: systemVersion, Artifacts: []Artifact{
		mk("host-os", "host_phase_2", 48<<10, 1),
		mk("sled-agent", "zone", 32<<10, 2),
		mk("nexus", "zone", 32<<10, 3),
		mk("sp-gimlet", "gimlet_sp", 8<<10, 4),
	}}
}

// Sized returns a release of about total bytes split into n artifacts.
func Sized(systemVersion string, total int64, n int, seed uint64) Repo {
	r := Repo{SystemVersion: systemVersion}
	each := total / int64(n)
	for i := range n {
		size := each
		if i == n-1 {
			size = total - each*int64(n-1)
		}
		r.Artifacts = append(r.Artifacts, Artifact{Name: fmt.Sprintf("artifact-%02d", i), Version: systemVersion,
			Kind: "zone", Size: size, Seed: seed + uint64(i)})
	}
	return r
}

// Package tufgen builds signed TUF repository archives for tests, the
// upload attack suite, benchmarks and rackdev's demo repo. It is a test
// convenience on top of package release, which does the signing and the
// assembly: tufgen adds seeded keys and artifacts of chosen sizes
// (streamed, so a 1 GiB repo needs no 1 GiB of memory), and deliberate
// defects that a verifier must catch, made through release's build hooks.
//
// Everything is deterministic given the randomness passed in and the
// artifacts' seeds: the same inputs give byte-identical archives.
package tufgen

import (
	"archive/zip"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rackplane/rackplane/release"
)

// Role names, as TUF spells them.
const (
	RoleRoot      = release.RoleRoot
	RoleTimestamp = release.RoleTimestamp
	RoleSnapshot  = release.RoleSnapshot
	RoleTargets   = release.RoleTargets
)

// DefaultExpires is far enough ahead that tests never see it pass, and
// fixed so archives are reproducible.
var DefaultExpires = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)

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
	release.Lineage
	rng        io.Reader
	raw        map[string]int
	dupKey     []string
	consistent bool
}

// NewLineage makes keys for every role and signs root version 1.
func NewLineage(rng io.Reader, o LineageOptions) (*Lineage, error) {
	keys, err := release.GenerateKeyring(rng, release.KeyringOptions{Thresholds: o.Thresholds, Keys: o.Keys})
	if err != nil {
		return nil, err
	}
	l := &Lineage{rng: rng, raw: o.RawThresholds, dupKey: o.DuplicateKey, consistent: o.Consistent}
	l.Keys, l.Expires = keys, o.Expires
	if l.Expires.IsZero() {
		l.Expires = DefaultExpires
	}
	root, err := l.signRoot(1, keys[RoleRoot].Keys)
	if err != nil {
		return nil, err
	}
	l.Roots = append(l.Roots, root)
	return l, nil
}

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
	oldRootKeys := l.Keys[RoleRoot].Keys
	for _, role := range roles {
		fresh := make([]*release.Key, len(l.Keys[role].Keys))
		for i := range fresh {
			k, err := release.NewKey(l.rng)
			if err != nil {
				return err
			}
			fresh[i] = k
		}
		l.Keys[role] = &release.RoleKeys{Threshold: l.Keys[role].Threshold, Keys: fresh}
	}
	signers := slices.Clone(l.Keys[RoleRoot].Keys)
	if !o.SkipOldSignatures && slices.Contains(roles, RoleRoot) {
		signers = append(signers, oldRootKeys...)
	}
	root, err := l.signRoot(int64(len(l.Roots))+1, signers)
	if err != nil {
		return err
	}
	l.Roots = append(l.Roots, root)
	return nil
}

// signRoot signs a root version, with the lineage's deliberately broken
// thresholds and duplicate keys, if any.
func (l *Lineage) signRoot(version int64, signers []*release.Key) ([]byte, error) {
	root, err := release.RootMetadata(l.Keys, release.RootOptions{Version: version, Expires: l.Expires,
		Consistent: l.consistent})
	if err != nil {
		return nil, err
	}
	for role, th := range l.raw {
		root.Signed.Roles[role].Threshold = th
	}
	for _, role := range l.dupKey {
		k := l.Keys[role].Keys[0].Metadata()
		dup := &metadata.Key{Type: k.Type, Scheme: k.Scheme,
			Value: metadata.KeyVal{PublicKey: strings.ToUpper(k.Value.PublicKey)}}
		id, err := dup.ID()
		if err != nil {
			return nil, err
		}
		root.Signed.Keys[id] = dup
		root.Signed.Roles[role].KeyIDs = append(root.Signed.Roles[role].KeyIDs, id)
	}
	return release.SignRoot(root, signers)
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
	// Seed are used instead (streamed, never held in memory). Source,
	// when set, overrides both (a composite archive, say).
	Data   []byte
	Size   int64
	Seed   uint64
	Source release.Source
}

// TargetName returns the artifact's target name.
func (a Artifact) TargetName() string { return a.release().TargetName() }

func (a Artifact) release() release.Artifact {
	return release.Artifact{Name: a.Name, Version: a.Version, Kind: a.Kind, Target: a.Target, Tags: a.Tags,
		Source: a.source()}
}

func (a Artifact) source() release.Source {
	switch {
	case a.Source != nil:
		return a.Source
	case a.Data != nil:
		return release.Bytes(a.Data)
	}
	return Seeded{Size: a.Size, Seed: a.Seed}
}

// Seeded is a Source of Size pseudo-random bytes made from Seed.
type Seeded struct {
	Size int64
	Seed uint64
}

// Open streams the bytes.
func (s Seeded) Open() (io.ReadCloser, error) {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], s.Seed)
	binary.LittleEndian.PutUint64(seed[8:], uint64(s.Size))
	return io.NopCloser(io.LimitReader(rand.NewChaCha8(seed), s.Size)), nil
}

// Part is a composite part of Size seeded bytes.
func (s Seeded) Part(path string) release.Part {
	return release.Part{Path: path, Size: s.Size, Source: s}
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
	// HeaderSizes writes each entry's sizes in its local header, as
	// rackrelease and tufaceous do, instead of in data descriptors
	// (archive/zip's streaming way, which the tests' archives, pinned byte
	// for byte, use).
	HeaderSizes bool
}

// Built describes an archive that was written.
type Built = release.Built

// BuiltArtifact is an artifact with its signed hash and length.
type BuiltArtifact = release.BuiltArtifact

// ManifestV1Name and ManifestV2Name are the manifests' target names.
const (
	ManifestV1Name = release.ManifestV1Name
	ManifestV2Name = release.ManifestV2Name
)

// BuildFile writes the archive to path.
func (l *Lineage) BuildFile(path string, r Repo) (*Built, error) {
	return l.Lineage.BuildFile(path, l.repo(r))
}

// BuildBytes returns the archive in memory (for small repos).
func (l *Lineage) BuildBytes(r Repo) ([]byte, *Built, error) { return l.Lineage.BuildBytes(l.repo(r)) }

// Build writes one release as a zip to w.
func (l *Lineage) Build(w io.Writer, r Repo) (*Built, error) { return l.Lineage.Build(w, l.repo(r)) }

// repo turns a test repo into release's, its defects into build hooks.
func (l *Lineage) repo(r Repo) release.Repo {
	out := release.Repo{SystemVersion: r.SystemVersion, ManifestV2: r.ManifestV2, Metadata: r.Metadata,
		TimestampVersion: r.TimestampVersion, SnapshotVersion: r.SnapshotVersion, TargetsVersion: r.TargetsVersion,
		Expires: r.Expires, DeflateTargets: r.Defects.Deflate, DataDescriptors: !r.HeaderSizes}
	for _, a := range r.Artifacts {
		out.Artifacts = append(out.Artifacts, a.release())
	}
	d := r.Defects
	out.Hooks = &release.Hooks{
		Manifest: func(name string, data []byte) (string, []byte) { return manifest(r, name, data) },
		SignedLength: func(target string, n int64) int64 {
			return n + d.LengthLie[target]
		},
		Signers: func(role string, keys []*release.Key) []*release.Key {
			if n, ok := d.Undersign[role]; ok {
				keys = keys[:min(n, len(keys))]
			}
			return keys
		},
		ParentVersion: func(role string, v int64) int64 { return v + d.MetaVersionLie[role] },
		Metadata: func(name string, data []byte) []byte {
			if d.Mutate != nil {
				return d.Mutate(name, data)
			}
			return data
		},
		Entries: func(entries []release.Entry) []release.Entry { return entriesWithDefects(entries, d) },
	}
	if d.TamperTarget != "" {
		out.Hooks.Stored = func(target string, rd io.Reader) io.Reader {
			if target == d.TamperTarget {
				return &tamperReader{r: rd}
			}
			return rd
		}
	}
	return out
}

// manifest is the release's manifest with the manifest defects applied.
func manifest(r Repo, name string, data []byte) (string, []byte) {
	d := r.Defects
	if d.ManifestName != "" {
		name = d.ManifestName
	}
	if d.RawManifest != nil {
		return name, d.RawManifest
	}
	if len(d.UnlistedTargets) == 0 && d.UnsignedManifestTarget == "" {
		return name, data
	}
	var arts []release.Artifact
	for _, a := range r.Artifacts {
		if !slices.Contains(d.UnlistedTargets, a.TargetName()) {
			arts = append(arts, a.release())
		}
	}
	if d.UnsignedManifestTarget != "" {
		arts = append(arts, release.Artifact{Name: "unsigned", Version: "1.0.0", Kind: "extra", Target: d.UnsignedManifestTarget})
	}
	_, b, err := release.RenderManifest(r.SystemVersion, r.ManifestV2, r.Metadata, arts)
	if err != nil {
		panic(err) // a manifest of strings always marshals
	}
	return name, b
}

// entriesWithDefects adds, leaves out and places entries as the defects
// say: an unsigned manifest target after the targets, extra entries at
// the end.
func entriesWithDefects(entries []release.Entry, d Defects) []release.Entry {
	var out []release.Entry
	metaAt := len(entries)
	for i, e := range entries {
		if strings.HasPrefix(e.Name, "repo/metadata/") {
			metaAt = i
			break
		}
	}
	omitted := map[string]bool{}
	for _, v := range d.OmitRootVersions {
		omitted[fmt.Sprintf("repo/metadata/%d.root.json", v)] = true
	}
	for i, e := range entries {
		if i == metaAt && d.UnsignedManifestTarget != "" {
			out = append(out, release.BytesEntry("repo/targets/"+d.UnsignedManifestTarget, zip.Store, 0, []byte("not signed")))
		}
		if !omitted[e.Name] {
			out = append(out, e)
		}
	}
	for _, e := range d.ExtraEntries {
		out = append(out, release.BytesEntry(e.Name, e.Method, e.Mode, e.Data))
	}
	return slices.DeleteFunc(out, func(e release.Entry) bool { return slices.Contains(d.SkipEntries, e.Name) })
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

// Composites returns a small release with one artifact of every composite
// kind (host and trampoline OS images, the three RoT images, the control
// plane with two zones), their parts seeded from the system version so
// that every version's bytes differ.
func Composites(systemVersion string) Repo {
	base := fnv.New64a()
	base.Write([]byte("composites " + systemVersion))
	seed := base.Sum64()
	part := func(size int64) release.Part {
		seed++
		return Seeded{Size: size, Seed: seed}.Part("")
	}
	zone := func(file, pkg string) release.Part {
		seed++
		img, err := release.ZoneImage(pkg, systemVersion, map[string][]byte{"root.img": []byte(fmt.Sprintf("%s %d", pkg, seed))})
		if err != nil {
			panic(err) // a tarball in memory always writes
		}
		return release.Part{Path: file, Size: int64(len(img)), Source: release.Bytes(img)}
	}
	cp, err := release.ControlPlaneArchive([]release.Part{zone("crucible.tar.gz", "crucible"), zone("oximeter.tar.gz", "oximeter")})
	if err != nil {
		panic(err)
	}
	art := func(name, kind string, src release.Source) Artifact {
		return Artifact{Name: name, Version: systemVersion, Kind: kind, Source: src}
	}
	return Repo{SystemVersion: systemVersion, Artifacts: []Artifact{
		art("host", "host", release.HostArchive(part(32<<10), part(96<<10))),
		art("trampoline", "trampoline", release.HostArchive(part(16<<10), part(48<<10))),
		art("gimlet-rot", "gimlet_rot", release.RoTArchive(part(8<<10), part(8<<10))),
		art("psc-rot", "psc_rot", release.RoTArchive(part(8<<10), part(8<<10))),
		art("switch-rot", "switch_rot", release.RoTArchive(part(8<<10), part(8<<10))),
		art("control-plane", "control_plane", cp),
	}}
}

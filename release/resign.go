package release

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"sort"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// ResignOptions shape Resign.
type ResignOptions struct {
	// Versions of the new metadata (default: one more than the archive's,
	// so the re-signed release is newer for Nexus's rollback check).
	TimestampVersion, SnapshotVersion, TargetsVersion int64
	// Expires of the new metadata (default: the lineage's).
	Expires time.Time
}

// Resign writes to w the release in src (size bytes) signed anew by l: the
// same targets, byte for byte (copied without recompressing), with new
// targets, snapshot and timestamp metadata and l's whole root chain. It is
// how a release is given a later expiry, or carried over a root rotation
// to keys a Nexus will trust.
func (l *Lineage) Resign(w io.Writer, src io.ReaderAt, size int64, o ResignOptions) (*Built, error) {
	if err := l.Keys.Need(RoleTimestamp, RoleSnapshot, RoleTargets); err != nil {
		return nil, err
	}
	zr, err := zip.NewReader(src, size)
	if err != nil {
		return nil, fmt.Errorf("release: not a zip archive: %w", err)
	}
	old, err := readSigned(zr)
	if err != nil {
		return nil, err
	}
	consistent, err := l.consistent()
	if err != nil {
		return nil, err
	}
	expires := o.Expires
	if expires.IsZero() {
		expires = l.Expires
	}
	next := func(given, was int64) int64 {
		if given > 0 {
			return given
		}
		return was + 1
	}
	tsV := next(o.TimestampVersion, old.timestamp.Signed.Version)
	snapV := next(o.SnapshotVersion, old.snapshot.Signed.Version)
	targV := next(o.TargetsVersion, old.targets.Signed.Version)

	targ := metadata.Targets(expires)
	targ.Signed.Version = targV
	names := make([]string, 0, len(old.targets.Signed.Targets))
	for name, tf := range old.targets.Signed.Targets {
		targ.Signed.Targets[name] = &metadata.TargetFiles{Length: tf.Length, Hashes: tf.Hashes, Path: name}
		names = append(names, name)
	}
	sort.Strings(names)
	targBytes, err := signRole(targ, l.Keys[RoleTargets].Keys)
	if err != nil {
		return nil, err
	}
	snap := metadata.Snapshot(expires)
	snap.Signed.Version = snapV
	snap.Signed.Meta["targets.json"] = metaFile(targV, targBytes)
	snapBytes, err := signRole(snap, l.Keys[RoleSnapshot].Keys)
	if err != nil {
		return nil, err
	}
	ts := metadata.Timestamp(expires)
	ts.Signed.Version = tsV
	ts.Signed.Meta["snapshot.json"] = metaFile(snapV, snapBytes)
	tsBytes, err := signRole(ts, l.Keys[RoleTimestamp].Keys)
	if err != nil {
		return nil, err
	}

	hw := &hashWriter{w: w, h: sha256.New()}
	zw := zip.NewWriter(hw)
	files := map[string]*zip.File{}
	for _, f := range zr.File {
		files[f.Name] = f
	}
	for _, name := range names {
		from := old.targetPath(name)
		f := files[from]
		if f == nil {
			return nil, fmt.Errorf("release: the archive has no %s for target %s", from, name)
		}
		sha := targ.Signed.Targets[name].Hashes["sha256"]
		to := targetPath(consistent, name, sha)
		if to == from {
			err = zw.Copy(f)
		} else {
			err = copyRenamed(zw, f, to)
		}
		if err != nil {
			return nil, fmt.Errorf("release: copy %s: %w", name, err)
		}
	}
	meta := func(name string, data []byte) error {
		return writeEntry(zw, BytesEntry("repo/metadata/"+name, zip.Deflate, 0, data), false)
	}
	for i, root := range l.Roots {
		if err := meta(fmt.Sprintf("%d.root.json", i+1), root); err != nil {
			return nil, err
		}
	}
	snapName, targName := "snapshot.json", "targets.json"
	if consistent {
		snapName, targName = fmt.Sprintf("%d.snapshot.json", snapV), fmt.Sprintf("%d.targets.json", targV)
	}
	for _, m := range []struct {
		name string
		data []byte
	}{{"timestamp.json", tsBytes}, {snapName, snapBytes}, {targName, targBytes}} {
		if err := meta(m.name, m.data); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	built := &Built{SHA256: fmt.Sprintf("%x", hw.h.Sum(nil)), Size: hw.n, RootVersion: l.RootVersion(),
		TimestampVersion: tsV, SnapshotVersion: snapV, TargetsVersion: targV, ValidUntil: expires}
	return built, nil
}

// copyRenamed copies an entry's raw bytes under another name.
func copyRenamed(zw *zip.Writer, f *zip.File, name string) error {
	fh := f.FileHeader
	fh.Name = name
	raw, err := f.OpenRaw()
	if err != nil {
		return err
	}
	w, err := zw.CreateRaw(&fh)
	if err != nil {
		return err
	}
	_, err = io.Copy(w, raw)
	return err
}

// signed is an archive's final metadata, read without verifying it.
type signed struct {
	root       *metadata.Metadata[metadata.RootType]
	timestamp  *metadata.Metadata[metadata.TimestampType]
	snapshot   *metadata.Metadata[metadata.SnapshotType]
	targets    *metadata.Metadata[metadata.TargetsType]
	roots      [][]byte
	names      map[string]string // metadata file roles → entry names read
	consistent bool
}

func (s *signed) targetPath(name string) string {
	return targetPath(s.consistent, name, s.targets.Signed.Targets[name].Hashes["sha256"])
}

func readEntry(zr *zip.Reader, name string, limit int64) ([]byte, error) {
	for _, f := range zr.File {
		if f.Name != name {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, limit+1))
		if err != nil {
			return nil, err
		}
		if int64(len(b)) > limit {
			return nil, fmt.Errorf("%s is larger than %d bytes", name, limit)
		}
		return b, nil
	}
	return nil, fmt.Errorf("the archive has no %s", name)
}

// readSigned reads the root chain and the newest metadata of each role.
func readSigned(zr *zip.Reader) (*signed, error) {
	const limit = 16 << 20
	s := &signed{names: map[string]string{}}
	for v := 1; ; v++ {
		b, err := readEntry(zr, fmt.Sprintf("repo/metadata/%d.root.json", v), limit)
		if err != nil {
			if v == 1 {
				return nil, fmt.Errorf("release: %w", err)
			}
			break
		}
		s.roots = append(s.roots, b)
	}
	var err error
	if s.root, err = ParseRoot(s.roots[len(s.roots)-1]); err != nil {
		return nil, err
	}
	s.consistent = s.root.Signed.ConsistentSnapshot
	b, err := readEntry(zr, "repo/metadata/timestamp.json", limit)
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	if s.timestamp, err = metadata.Timestamp().FromBytes(b); err != nil {
		return nil, fmt.Errorf("release: timestamp.json: %w", err)
	}
	sm := s.timestamp.Signed.Meta["snapshot.json"]
	if sm == nil {
		return nil, errors.New("release: timestamp.json names no snapshot")
	}
	s.names[RoleSnapshot] = metaName("snapshot.json", sm.Version, s.consistent)
	if b, err = readEntry(zr, "repo/metadata/"+s.names[RoleSnapshot], limit); err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	if s.snapshot, err = metadata.Snapshot().FromBytes(b); err != nil {
		return nil, fmt.Errorf("release: %s: %w", s.names[RoleSnapshot], err)
	}
	tm := s.snapshot.Signed.Meta["targets.json"]
	if tm == nil {
		return nil, errors.New("release: the snapshot names no targets")
	}
	s.names[RoleTargets] = metaName("targets.json", tm.Version, s.consistent)
	if b, err = readEntry(zr, "repo/metadata/"+s.names[RoleTargets], limit); err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	if s.targets, err = metadata.Targets().FromBytes(b); err != nil {
		return nil, fmt.Errorf("release: %s: %w", s.names[RoleTargets], err)
	}
	return s, nil
}

func metaName(role string, version int64, consistent bool) string {
	if consistent {
		return fmt.Sprintf("%d.%s", version, role)
	}
	return role
}

// Info is what an archive says about itself, read without trusting it:
// every root version it carries and who signed the final metadata.
type Info struct {
	Consistent bool
	Roots      []RoleInfo
	Timestamp  RoleInfo
	Snapshot   RoleInfo
	Targets    RoleInfo
	// TargetList is every signed target, by name.
	TargetList []TargetInfo
}

// RoleInfo is one metadata file.
type RoleInfo struct {
	Role    string
	File    string
	Version int64
	Expires time.Time
	// Signers are the ids of the keys whose signatures are on it, in
	// the order they appear; Threshold and Keys are what the newest root
	// asks of the role.
	Signers   []string
	Threshold int
	Keys      []string
}

// TargetInfo is one signed target.
type TargetInfo struct {
	Name   string
	Path   string
	Length int64
	SHA256 string
}

// Describe reads an archive's metadata.
func Describe(src io.ReaderAt, size int64) (*Info, error) {
	zr, err := zip.NewReader(src, size)
	if err != nil {
		return nil, fmt.Errorf("release: not a zip archive: %w", err)
	}
	s, err := readSigned(zr)
	if err != nil {
		return nil, err
	}
	in := &Info{Consistent: s.consistent}
	roleInfo := func(role, file string, version int64, expires time.Time, sigs []metadata.Signature) RoleInfo {
		ri := RoleInfo{Role: role, File: file, Version: version, Expires: expires}
		for _, sig := range sigs {
			ri.Signers = append(ri.Signers, sig.KeyID)
		}
		if r := s.root.Signed.Roles[role]; r != nil {
			ri.Threshold, ri.Keys = r.Threshold, slices.Clone(r.KeyIDs)
		}
		return ri
	}
	for i, b := range s.roots {
		m, err := ParseRoot(b)
		if err != nil {
			return nil, err
		}
		ri := roleInfo(RoleRoot, fmt.Sprintf("%d.root.json", i+1), m.Signed.Version, m.Signed.Expires, m.Signatures)
		ri.Threshold, ri.Keys = m.Signed.Roles[RoleRoot].Threshold, slices.Clone(m.Signed.Roles[RoleRoot].KeyIDs)
		in.Roots = append(in.Roots, ri)
	}
	in.Timestamp = roleInfo(RoleTimestamp, "timestamp.json", s.timestamp.Signed.Version, s.timestamp.Signed.Expires,
		s.timestamp.Signatures)
	in.Snapshot = roleInfo(RoleSnapshot, s.names[RoleSnapshot], s.snapshot.Signed.Version, s.snapshot.Signed.Expires,
		s.snapshot.Signatures)
	in.Targets = roleInfo(RoleTargets, s.names[RoleTargets], s.targets.Signed.Version, s.targets.Signed.Expires,
		s.targets.Signatures)
	for name, tf := range s.targets.Signed.Targets {
		in.TargetList = append(in.TargetList, TargetInfo{Name: name, Path: s.targetPath(name), Length: tf.Length,
			SHA256: hex.EncodeToString(tf.Hashes["sha256"])})
	}
	sort.Slice(in.TargetList, func(i, j int) bool { return in.TargetList[i].Name < in.TargetList[j].Name })
	return in, nil
}

// OpenTarget opens a target's bytes in an archive (not checked against
// anything).
func OpenTarget(src io.ReaderAt, size int64, entry string) (io.ReadCloser, error) {
	zr, err := zip.NewReader(src, size)
	if err != nil {
		return nil, err
	}
	for _, f := range zr.File {
		if f.Name == entry {
			return f.Open()
		}
	}
	return nil, fmt.Errorf("release: the archive has no %s", path.Clean(entry))
}

package tufrepo

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/secure-systems-lab/go-securesystemslib/cjson"
	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
)

// TrustRoot is a registered root to verify against.
type TrustRoot struct {
	ID   uuid.UUID
	JSON []byte
}

// Floor holds the highest versions accepted so far from one trust root's
// lineage; an upload whose metadata is older is a rollback.
type Floor struct {
	Root, Timestamp, Snapshot, Targets int64
}

// Versions are the versions of a verified repo's final metadata.
type Versions = Floor

// Artifact is one artifact of a verified repo: what the manifest says it is
// and what targets.json signs for its bytes.
type Artifact struct {
	Name, Version, Kind string
	TargetName          string
	SHA256              string
	Length              int64
	Tags                map[string]string
}

// Verified is a repo whose metadata and manifest passed verification.
// Artifact bytes are checked when copied out (CopyTarget).
type Verified struct {
	TrustRootID   uuid.UUID
	Versions      Versions
	ValidUntil    time.Time
	SystemVersion string
	// ManifestFormat is 1 (artifacts.json) or 2 (artifacts-v2.json).
	ManifestFormat int
	// Metadata is the v2 manifest's metadata (empty for v1).
	Metadata map[string]string
	// TargetsSHA256 is the hash of the signed targets metadata; two
	// uploads with the same system version and different targets
	// metadata differ in what they sign.
	TargetsSHA256 string
	Artifacts     []Artifact
	// Parts are the composite artifacts' parts (set by Received.Verify;
	// Archive.Verify does not read artifacts' bytes).
	Parts []Part
	// targets maps a target name to its signed length and hash.
	targets map[string]signedTarget
	// consistent is the final root's consistent_snapshot.
	consistent bool
	// snapshotFile and targetsFile are the metadata files verification
	// read (their names depend on consistent and the versions).
	snapshotFile, targetsFile string
}

type signedTarget struct {
	length int64
	sha256 []byte
}

// Verify checks the archive's metadata against each trust root in turn
// until one succeeds, then the manifest. When every root fails, the
// failure of the root that got furthest is returned: it is the one the
// archive was meant for. floors holds rollback floors by trust-root id.
func (a *Archive) Verify(roots []TrustRoot, floors map[uuid.UUID]Floor) (*Verified, error) {
	if len(roots) == 0 {
		return nil, errf(api.CodeNoTrustRoots, "no trust roots are registered; add the release's root.json with "+
			"`rackctl trust-root add` first")
	}
	rootFiles, err := a.rootVersions()
	if err != nil {
		return nil, err
	}
	var best *fault.Error
	bestStage := -1
	for _, tr := range roots {
		v, stage, err := a.verifyWith(tr, rootFiles)
		if err == nil {
			if rerr := checkFloor(v.Versions, floors[tr.ID]); rerr != nil {
				return nil, rerr
			}
			if nerr := v.checkTargetNames(); nerr != nil {
				return nil, nerr
			}
			// The manifest is a signed target of bounded size; reading it
			// before the entry check lets a manifest that names a target
			// targets.json does not sign be refused as such.
			if merr := a.readManifest(v); merr != nil {
				return nil, merr
			}
			if eerr := a.checkEntries(v, rootFiles); eerr != nil {
				return nil, eerr
			}
			return v, nil
		}
		if stage > bestStage {
			best, bestStage = err, stage
		}
	}
	return nil, best
}

// Stages a verification reached, to pick the most telling failure.
const (
	stageUnlinked = iota
	stageRootChain
	stageTimestamp
	stageSnapshot
)

// rootVersions lists the archive's N.root.json files, which must run from
// 1 without a gap: a rotation may not skip a version.
func (a *Archive) rootVersions() ([]string, error) {
	found := map[int64]string{}
	var maxV int64
	for _, name := range a.names {
		base, ok := strings.CutPrefix(name, repoDir+"metadata/")
		if !ok || !strings.HasSuffix(base, ".root.json") {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSuffix(base, ".root.json"), 10, 64)
		if err != nil || v < 1 {
			return nil, errf(api.CodeInvalidMetadata, "metadata file %q is not named N.root.json with N ≥ 1", base)
		}
		found[v] = name
		maxV = max(maxV, v)
	}
	// The loop is bounded by the number of files found, not by the
	// highest version named: a name like 99999999.root.json must not
	// make it allocate or spin.
	out := make([]string, 0, len(found))
	for v := int64(1); v <= int64(len(found)); v++ {
		name, ok := found[v]
		if !ok {
			return nil, errf(api.CodeRootVersionGap, "the archive has root metadata up to version %d but no %d.root.json; "+
				"a root rotation must go one version at a time and every version must be in the archive", maxV, v)
		}
		out = append(out, name)
	}
	if maxV > int64(len(found)) {
		return nil, errf(api.CodeRootVersionGap, "the archive has %d.root.json but only %d root versions; "+
			"a root rotation must go one version at a time and every version must be in the archive", maxV, len(found))
	}
	return out, nil
}

func (a *Archive) verifyWith(tr TrustRoot, rootFiles []string) (*Verified, int, *fault.Error) {
	tm, err := trustedmetadata.New(tr.JSON)
	if err != nil {
		return nil, stageUnlinked, wrapf(err, api.CodeInvalidTrustRoot, "registered trust root %s does not load", tr.ID)
	}
	// trustedmetadata judges expiry at RefTime; the zero time never
	// expires anything, which is how enforcement is turned off.
	tm.RefTime = time.Time{}
	if a.opts.EnforceExpiry {
		tm.RefTime = a.opts.Now
	}
	trustedVersion := tm.Root.Signed.Version
	linked := false
	if int(trustedVersion) <= len(rootFiles) {
		same, err := a.sameRoot(tm.Root, rootFiles[trustedVersion-1])
		if err != nil {
			return nil, stageUnlinked, err
		}
		linked = same
	}
	for v := trustedVersion + 1; v <= int64(len(rootFiles)); v++ {
		name := rootFiles[v-1]
		data, err := a.readSmall(name, a.opts.MaxMetadata)
		if err != nil {
			return nil, stageRootChain, asError(err)
		}
		next, perr := metadata.Root().FromBytes(data)
		if perr != nil {
			return nil, stageRootChain, wrapf(perr, api.CodeInvalidMetadata,
				"%s is not valid root metadata: %v", path.Base(name), perr)
		}
		if err := tm.Root.VerifyDelegate(metadata.ROOT, next); err != nil {
			if !linked {
				return nil, stageUnlinked, untrusted(tr.ID)
			}
			return nil, stageRootChain, wrapf(err, api.CodeRootRotationUnsigned,
				"%s is not signed by a threshold of root version %d's keys (%v); "+
					"a rotated root must be signed by the old root and the new one", path.Base(name), v-1, err)
		}
		linked = true
		if err := next.VerifyDelegate(metadata.ROOT, next); err != nil {
			return nil, stageRootChain, wrapf(err, api.CodeRootRotationUnsigned,
				"%s is not signed by a threshold of its own root keys (%v)", path.Base(name), err)
		}
		if _, err := tm.UpdateRoot(data); err != nil {
			return nil, stageRootChain, mapTUF(err, "root", path.Base(name))
		}
	}
	stage := stageRootChain
	if !linked {
		stage = stageUnlinked
	}

	tsData, err := a.readSmall(repoDir+"metadata/timestamp.json", a.opts.MaxMetadata)
	if err != nil {
		return nil, stage, asError(err)
	}
	if _, err := tm.UpdateTimestamp(tsData); err != nil {
		var unsigned *metadata.ErrUnsignedMetadata
		if !linked && errors.As(err, &unsigned) {
			return nil, stageUnlinked, untrusted(tr.ID)
		}
		return nil, stage, mapTUF(err, "timestamp", "timestamp.json")
	}
	consistent := tm.Root.Signed.ConsistentSnapshot
	snapMeta := tm.Timestamp.Signed.Meta["snapshot.json"]
	if snapMeta == nil {
		return nil, stageTimestamp, errf(api.CodeInvalidMetadata, "timestamp.json does not name snapshot.json")
	}
	snapName := metaName("snapshot.json", snapMeta.Version, consistent)
	snapData, err := a.readSmall(repoDir+"metadata/"+snapName, a.opts.MaxMetadata)
	if err != nil {
		return nil, stageTimestamp, asError(err)
	}
	if _, err := tm.UpdateSnapshot(snapData, false); err != nil {
		return nil, stageTimestamp, mapTUF(err, "snapshot", snapName)
	}
	targMeta := tm.Snapshot.Signed.Meta["targets.json"]
	if targMeta == nil {
		return nil, stageSnapshot, errf(api.CodeInvalidMetadata, "%s does not name targets.json", snapName)
	}
	targName := metaName("targets.json", targMeta.Version, consistent)
	targData, err := a.readSmall(repoDir+"metadata/"+targName, a.opts.MaxMetadata)
	if err != nil {
		return nil, stageSnapshot, asError(err)
	}
	if _, err := tm.UpdateTargets(targData); err != nil {
		return nil, stageSnapshot, mapTUF(err, "targets", targName)
	}
	targets := tm.Targets[metadata.TARGETS]
	v := &Verified{
		TrustRootID: tr.ID,
		Versions: Versions{Root: tm.Root.Signed.Version, Timestamp: tm.Timestamp.Signed.Version,
			Snapshot: tm.Snapshot.Signed.Version, Targets: targets.Signed.Version},
		ValidUntil: minTime(tm.Root.Signed.Expires, tm.Timestamp.Signed.Expires, tm.Snapshot.Signed.Expires,
			targets.Signed.Expires),
		TargetsSHA256: sha256Hex(targData),
		targets:       map[string]signedTarget{},
		consistent:    consistent,
		snapshotFile:  snapName,
		targetsFile:   targName,
	}
	for name, tf := range targets.Signed.Targets {
		h, ok := tf.Hashes["sha256"]
		if !ok || len(h) != sha256.Size {
			return nil, stageSnapshot, errf(api.CodeInvalidMetadata, "targets.json signs %q without a sha256 hash", name)
		}
		if tf.Length < 0 {
			return nil, stageSnapshot, errf(api.CodeInvalidMetadata, "targets.json signs %q with a negative length", name)
		}
		v.targets[name] = signedTarget{length: tf.Length, sha256: h}
	}
	return v, 0, nil
}

// checkTargetNames refuses signed target names that are not plain
// relative paths. Signing a name does not make it safe: it becomes a path
// in the archive (and, for whoever unpacks the repository, on disk).
func (v *Verified) checkTargetNames() *fault.Error {
	names := make([]string, 0, len(v.targets))
	for name := range v.targets {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := checkControl("signed target name", name); err != nil {
			return err
		}
		if strings.Contains(name, "\\") {
			return errf(api.CodeUnsafeTargetName, "targets.json signs %q; target names use '/' between path segments, "+
				"never a backslash", name)
		}
		for _, seg := range strings.Split(name, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return errf(api.CodeUnsafeTargetName, "targets.json signs %q, whose path has an empty, '.' or '..' segment; "+
					"target names must be plain relative paths", name)
			}
		}
	}
	return nil
}

// checkEntries refuses any entry that signed metadata does not name: the
// archive may hold exactly the metadata files verification read (and the
// older root versions the chain starts from), the targets targets.json
// signs, and the directories above them. It reads nothing: an unsigned
// entry, however large it claims to be, is refused unread.
func (a *Archive) checkEntries(v *Verified, rootFiles []string) *fault.Error {
	allowed := map[string]bool{
		metadataDir + "timestamp.json": true,
		metadataDir + v.snapshotFile:   true,
		metadataDir + v.targetsFile:    true,
	}
	for _, name := range rootFiles {
		allowed[name] = true
	}
	for name := range v.targets {
		allowed[v.TargetPath(name)] = true
	}
	parents := map[string]bool{}
	for name := range allowed {
		for d := path.Dir(name); d != "." && !parents[d]; d = path.Dir(d) {
			parents[d] = true
		}
	}
	for _, name := range a.names {
		switch {
		case a.dirs[name] && parents[name], !a.dirs[name] && allowed[name]:
			continue
		case a.dirs[name]:
			return errf(api.CodeUnsignedEntry, "the archive holds directory %q, which holds no file that signed "+
				"metadata names; a release archive holds only its metadata and signed targets", name+"/")
		case strings.HasPrefix(name, metadataDir):
			return errf(api.CodeUnsignedEntry, "the archive holds %q, which is not metadata this release's chain uses "+
				"(it uses timestamp.json, %s and %s); a release archive holds only its metadata and signed targets",
				name, v.snapshotFile, v.targetsFile)
		}
		return errf(api.CodeUnsignedEntry, "the archive holds %q, which targets.json does not sign; a release archive "+
			"holds only its metadata and signed targets, so this one was changed after it was signed", name)
	}
	return nil
}

func untrusted(id uuid.UUID) *fault.Error {
	_ = id
	return errf(api.CodeUntrustedRoot, "the repository's metadata is not signed by any registered trust root; "+
		"register the root.json this release was signed with (rackctl trust-root add)")
}

// sameRoot reports whether the archive's root file signs the same content
// as the trusted root: then the archive belongs to the trusted lineage, and
// later failures are defects of the archive, not a different signer.
func (a *Archive) sameRoot(trusted *metadata.Metadata[metadata.RootType], name string) (bool, *fault.Error) {
	data, err := a.readSmall(name, a.opts.MaxMetadata)
	if err != nil {
		return false, asError(err)
	}
	other, err := metadata.Root().FromBytes(data)
	if err != nil {
		return false, wrapf(err, api.CodeInvalidMetadata, "%s is not valid root metadata: %v", path.Base(name), err)
	}
	x, err1 := cjson.EncodeCanonical(trusted.Signed)
	y, err2 := cjson.EncodeCanonical(other.Signed)
	return err1 == nil && err2 == nil && bytes.Equal(x, y), nil
}

// metaName is the file name of a role's metadata: V.role.json with
// consistent snapshots, role.json without.
func metaName(role string, version int64, consistent bool) string {
	if consistent {
		return fmt.Sprintf("%d.%s", version, role)
	}
	return role
}

// mapTUF turns go-tuf's verification errors into refusals with codes.
func mapTUF(err error, role, file string) *fault.Error {
	var (
		unsigned *metadata.ErrUnsignedMetadata
		expired  *metadata.ErrExpiredMetadata
		mismatch *metadata.ErrLengthOrHashMismatch
		badVer   *metadata.ErrBadVersionNumber
	)
	switch {
	case errors.As(err, &unsigned):
		return wrapf(err, api.CodeSignatureThreshold, "%s is not signed by enough %s keys: %v", file, role, err)
	case errors.As(err, &expired):
		return wrapf(err, api.CodeMetadataExpired,
			"%s: %v; this Nexus enforces metadata expiry (re-sign the release or turn enforcement off)", file, err)
	case errors.As(err, &mismatch):
		return wrapf(err, api.CodeMetadataHashMismatch,
			"%s does not match the length or hash its parent role signs: %v", file, err)
	case errors.As(err, &badVer):
		return wrapf(err, api.CodeMetadataVersionMismatch, "%s has the wrong version: %v", file, err)
	}
	return wrapf(err, api.CodeInvalidMetadata, "%s is not valid %s metadata: %v", file, role, err)
}

func checkFloor(v Versions, f Floor) *fault.Error {
	check := func(code, role string, got, floor int64) *fault.Error {
		if got < floor {
			return errf(code, "%s version %d is older than version %d already accepted from this trust root; "+
				"refusing a rollback (upload a newer release)", role, got, floor)
		}
		return nil
	}
	for _, c := range []*fault.Error{
		check(api.CodeRootRollback, "root", v.Root, f.Root),
		check(api.CodeTimestampRollback, "timestamp", v.Timestamp, f.Timestamp),
		check(api.CodeSnapshotRollback, "snapshot", v.Snapshot, f.Snapshot),
		check(api.CodeTargetsRollback, "targets", v.Targets, f.Targets),
	} {
		if c != nil {
			return c
		}
	}
	return nil
}

// CheckFloor is the rollback check, for callers that re-check inside a
// transaction against floors that may have moved since Verify.
func CheckFloor(v Versions, f Floor) error {
	if e := checkFloor(v, f); e != nil {
		return e
	}
	return nil
}

// TargetPath is where the archive stores a target's bytes.
func (v *Verified) TargetPath(name string) string {
	if !v.consistent {
		return repoDir + "targets/" + name
	}
	dir, base := path.Split(name)
	return repoDir + "targets/" + dir + hex.EncodeToString(v.targets[name].sha256) + "." + base
}

func asError(err error) *fault.Error {
	var e *fault.Error
	if errors.As(err, &e) {
		return e
	}
	return wrapf(err, api.CodeCorruptEntry, "%s", err.Error())
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func minTime(ts ...time.Time) time.Time {
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	return ts[0].UTC()
}

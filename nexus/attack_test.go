package nexus_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"testing"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
)

// attack is one upload that must be refused.
type attack struct {
	name   string
	build  func(t *testing.T) []byte
	status int
	code   string
	// chunked sends the body without a Content-Length.
	chunked bool
	// variant marks another road to the previous case's refusal, which
	// shares its code.
	variant bool
}

// TestUploadAttackSuite sends archives that are broken, malicious or
// replayed, each of which must be refused with its own error code and a
// 4xx, and leave no row and no file behind.
func TestUploadAttackSuite(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{UploadMaxBytes: 4 << 20, TufMaxExpansion: 8 << 20})
	depotDir := nx.Depot().Dir()
	ctx := context.Background()

	// Timestamps are signed by 2 of 2 keys, so undersigning is possible.
	l := newLineage(t, 10, tufgen.LineageOptions{Thresholds: map[string]int{tufgen.RoleTimestamp: 2}})
	good := func(v string, mod func(r *tufgen.Repo)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			r := tufgen.Demo(v)
			r.TimestampVersion, r.SnapshotVersion, r.TargetsVersion = 10, 10, 10
			if mod != nil {
				mod(&r)
			}
			b, _ := buildRepo(t, l, r)
			return b
		}
	}
	defect := func(v string, d tufgen.Defects) func(t *testing.T) []byte {
		return good(v, func(r *tufgen.Repo) { r.Defects = d })
	}
	raw := func(f func(good []byte) []byte) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { return f(good("0.0.1", nil)(t)) }
	}
	target := func(v string) string { return tufgen.Demo(v).Artifacts[1].TargetName() }
	manifestFor := func(v string, sysVersion string) []byte {
		var arts []map[string]string
		for _, a := range tufgen.Demo(v).Artifacts {
			arts = append(arts, map[string]string{"name": a.Name, "version": a.Version, "kind": a.Kind, "target": a.TargetName()})
		}
		b, _ := json.Marshal(map[string]any{"system_version": sysVersion, "artifacts": arts})
		return b
	}
	// Lineages whose trust roots are registered, for rotation attacks.
	unsignedRotation := newLineage(t, 11, tufgen.LineageOptions{})
	gapped := newLineage(t, 12, tufgen.LineageOptions{})
	stranger := newLineage(t, 13, tufgen.LineageOptions{})
	// Two lineages from one seed share keys: rolled is rotated to root
	// version 2 and uploaded first; notRolled then offers root version 1.
	rolled := newLineage(t, 14, tufgen.LineageOptions{})
	notRolled := newLineage(t, 14, tufgen.LineageOptions{})

	// With no trust root registered, nothing can be verified.
	noRoots := good("0.0.0", nil)(t)
	before := snapshotWorld(t, db.Pool, depotDir)
	_, err := upload(t, nx.Client, "r.zip", noRoots)
	if client.StatusCode(err) != http.StatusBadRequest || client.ErrorCode(err) != api.CodeNoTrustRoots {
		t.Fatalf("no trust roots: %v", err)
	}
	for _, lin := range []*tufgen.Lineage{l, unsignedRotation, gapped, rolled} {
		addRoot(t, nx.Client, lin.TrustRoot())
	}
	if err := unsignedRotation.Rotate(tufgen.RotateOptions{SkipOldSignatures: true}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := gapped.Rotate(tufgen.RotateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := rolled.Rotate(tufgen.RotateOptions{Roles: []string{tufgen.RoleRoot}}); err != nil {
		t.Fatal(err)
	}
	// The floor: a release at metadata versions 10/10/10.
	mustUpload(t, nx.Client, good("1.0.0", nil)(t), api.UploadInserted)
	rolledArchive, _ := buildRepo(t, rolled, tufgen.Demo("1.5.0"))
	mustUpload(t, nx.Client, rolledArchive, api.UploadInserted)

	versions := func(ts, snap, targ int64) func(r *tufgen.Repo) {
		return func(r *tufgen.Repo) { r.TimestampVersion, r.SnapshotVersion, r.TargetsVersion = ts, snap, targ }
	}
	fromLineage := func(lin *tufgen.Lineage, v string, d tufgen.Defects) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			r := tufgen.Demo(v)
			r.Defects = d
			b, _ := buildRepo(t, lin, r)
			return b
		}
	}
	// composite adds a composite artifact of kind whose archive is data.
	composite := func(v, kind string, data []byte) func(t *testing.T) []byte {
		return good(v, func(r *tufgen.Repo) {
			r.Artifacts = append(r.Artifacts, tufgen.Artifact{Name: "composite", Version: v, Kind: kind, Data: data})
		})
	}
	osMeta := tarEntry{"oxide.json", `{"v":"1","t":"os"}`}
	rom, zfs := tarEntry{"image/rom", "phase 1"}, tarEntry{"image/zfs.img", "phase 2"}
	bad := http.StatusBadRequest
	attacks := []attack{
		// Archive hygiene.
		{"not a zip", func(*testing.T) []byte { return []byte("PK? no, just a text file that is not a zip") }, bad, api.CodeNotAZip, false, false},
		{"truncated", raw(func(g []byte) []byte { return g[:len(g)*2/3] }), bad, api.CodeTruncatedArchive, false, false},
		{"trailing data", raw(func(g []byte) []byte { return append(g, "trailing garbage"...) }), bad, api.CodeTrailingData, false, false},
		{"much trailing data", raw(func(g []byte) []byte { return append(g, make([]byte, 200<<10)...) }), bad, api.CodeTrailingData, false, true},
		{"leading data", raw(func(g []byte) []byte { return append([]byte("MZ-stub-"), g...) }), bad, api.CodeLeadingData, false, false},
		{"entry outside repo/", defect("0.1.0", tufgen.Defects{ExtraEntries: []tufgen.Entry{{Name: "other/readme.txt", Data: []byte("x")}}}), bad, api.CodeEntryOutsideRepo, false, false},
		{"dot-dot path", defect("0.1.1", tufgen.Defects{ExtraEntries: []tufgen.Entry{{Name: "repo/../../etc/cron.d/x", Data: []byte("x")}}}), bad, api.CodeUnsafePath, false, false},
		{"absolute path", defect("0.1.2", tufgen.Defects{ExtraEntries: []tufgen.Entry{{Name: "/repo/targets/x", Data: []byte("x")}}}), bad, api.CodeUnsafePath, false, true},
		{"duplicate entry", defect("0.1.3", tufgen.Defects{ExtraEntries: []tufgen.Entry{{Name: "repo/metadata/timestamp.json", Data: []byte("{}")}}}), bad, api.CodeDuplicateEntry, false, false},
		{"symlink", defect("0.1.4", tufgen.Defects{ExtraEntries: []tufgen.Entry{{Name: "repo/targets/link", Data: []byte("/etc/shadow"), Mode: fs.ModeSymlink | 0o777}}}), bad, api.CodeSpecialFile, false, false},
		{"bzip2 entry", defect("0.1.5", tufgen.Defects{ExtraEntries: []tufgen.Entry{{Name: "repo/targets/x.bz2", Data: []byte("BZh9"), Method: 12}}}), bad, api.CodeUnsupportedCompress, false, false},
		{"zip bomb", defect("0.1.6", tufgen.Defects{ExtraEntries: []tufgen.Entry{{Name: "repo/padding", Data: make([]byte, 9<<20), Method: 8}}}), bad, api.CodeExpansionLimit, false, false},
		{"entry larger than signed", defect("0.1.7", tufgen.Defects{LengthLie: map[string]int64{target("0.1.7"): -1}}), bad, api.CodeEntryExceedsSigned, false, false},
		{"length lie", defect("0.1.8", tufgen.Defects{LengthLie: map[string]int64{target("0.1.8"): 1}}), bad, api.CodeArtifactLengthMismatch, false, false},
		{"tampered artifact", defect("0.1.9", tufgen.Defects{TamperTarget: target("0.1.9")}), bad, api.CodeArtifactHashMismatch, false, false},
		{"missing timestamp", defect("0.2.0", tufgen.Defects{SkipEntries: []string{"repo/metadata/timestamp.json"}}), bad, api.CodeMissingEntry, false, false},
		{"body over the limit", func(*testing.T) []byte { return make([]byte, 5<<20) }, http.StatusRequestEntityTooLarge, api.CodeBodyTooLarge, false, false},
		// A body that starts as an archive is read until the limit cuts
		// it off; one that does not is refused after its first bytes.
		{"chunked body over the limit", func(t *testing.T) []byte {
			return append(good("0.2.9", nil)(t), make([]byte, 5<<20)...)
		}, http.StatusRequestEntityTooLarge, api.CodeBodyTooLarge, true, true},
		{"chunked non-zip body", func(*testing.T) []byte { return make([]byte, 5<<20) }, bad, api.CodeNotAZip, true, true},

		// The manifest.
		{"manifest names an unsigned target", defect("0.3.0", tufgen.Defects{UnsignedManifestTarget: "sneaky.bin"}), bad, api.CodeManifestTargetUnsigned, false, false},
		{"manifest not JSON", defect("0.3.1", tufgen.Defects{RawManifest: []byte("{not json")}), bad, api.CodeInvalidManifest, false, false},
		{"manifest misses fields", defect("0.3.2", tufgen.Defects{RawManifest: []byte(`{"system_version": "0.3.2", "artifacts": [{"name": "a"}]}`)}), bad, api.CodeManifestMissingField, false, false},
		{"duplicate artifact", good("0.3.3", func(r *tufgen.Repo) {
			dup := r.Artifacts[0]
			dup.Target, dup.Seed = "again.bin", 999
			r.Artifacts = append(r.Artifacts, dup)
		}), bad, api.CodeDuplicateArtifact, false, false},
		{"path in system version", defect("0.3.4", tufgen.Defects{RawManifest: manifestFor("0.3.4", "../../0.3.4")}), bad, api.CodeInvalidSystemVersion, false, false},
		{"no manifest", defect("0.3.5", tufgen.Defects{ManifestName: "release-notes.json"}), bad, api.CodeMissingManifest, false, false},
		{"both manifest formats signed", good("0.3.6", func(r *tufgen.Repo) {
			r.Artifacts = append(r.Artifacts, tufgen.Artifact{Name: "decoy", Version: "0.3.6", Kind: "zone",
				Target: tufgen.ManifestV2Name, Data: []byte(`{"system_version": "6.6.6", "artifacts": []}`)})
		}), bad, api.CodeAmbiguousManifest, false, false},

		// TUF metadata.
		{"signed by an unknown root", fromLineage(stranger, "0.4.0", tufgen.Defects{}), bad, api.CodeUntrustedRoot, false, false},
		{"timestamp below threshold", defect("0.4.1", tufgen.Defects{Undersign: map[string]int{tufgen.RoleTimestamp: 1}}), bad, api.CodeSignatureThreshold, false, false},
		{"rotation skips a version", fromLineage(gapped, "0.4.2", tufgen.Defects{OmitRootVersions: []int64{2}}), bad, api.CodeRootVersionGap, false, false},
		{"rotation without old signatures", fromLineage(unsignedRotation, "0.4.3", tufgen.Defects{}), bad, api.CodeRootRotationUnsigned, false, false},
		{"snapshot altered after signing", defect("0.4.4", tufgen.Defects{Mutate: func(name string, b []byte) []byte {
			if name == "snapshot.json" {
				return append(b, '\n')
			}
			return b
		}}), bad, api.CodeMetadataHashMismatch, false, false},
		{"snapshot version differs from the timestamp's", defect("0.4.6", tufgen.Defects{
			MetaVersionLie: map[string]int64{tufgen.RoleSnapshot: 1}}), bad, api.CodeMetadataVersionMismatch, false, false},
		{"targets version differs from the snapshot's", defect("0.4.7", tufgen.Defects{
			MetaVersionLie: map[string]int64{tufgen.RoleTargets: 1}}), bad, api.CodeMetadataVersionMismatch, false, true},
		{"timestamp not metadata", defect("0.4.5", tufgen.Defects{Mutate: func(name string, b []byte) []byte {
			if name == "timestamp.json" {
				return []byte(`{"signed": "nope"}`)
			}
			return b
		}}), bad, api.CodeInvalidMetadata, false, false},

		// Composite artifacts, expanded into their parts on upload.
		{"composite missing a part", composite("0.6.0", "host", tarGz(t, osMeta, rom)), bad, api.CodeCompositeMissingPart, false, false},
		{"composite with an extra part", composite("0.6.1", "host", tarGz(t, osMeta, rom, zfs, tarEntry{"image/payload", "x"})),
			bad, api.CodeCompositeExtraPart, false, false},
		{"composite not a tar", composite("0.6.2", "trampoline", []byte("\x1f\x8b\x08 not really gzip")), bad,
			api.CodeCompositeBadArchive, false, false},
		{"composite path escape", composite("0.6.3", "gimlet_rot", tarGz(t, tarEntry{"oxide.json", `{"v":"1","t":"rot"}`},
			tarEntry{"../../../etc/cron.d/x", "* * * * * root sh"})), bad, api.CodeCompositeUnsafePath, false, false},
		{"composite size lie", composite("0.6.4", "host", truncatedTarGz(t, osMeta, "image/rom", 1<<20, 4096)), bad,
			api.CodeCompositeSizeMismatch, false, false},
		{"composite of the wrong type", composite("0.6.5", "control_plane", tarGz(t, osMeta, rom, zfs)), bad,
			api.CodeCompositeWrongType, false, false},
		{"control plane zone not a zone image", composite("0.6.6", "control_plane",
			tarGz(t, tarEntry{"oxide.json", `{"v":"1","t":"control_plane"}`}, tarEntry{"zones/nexus.tar.gz", "plain bytes"})),
			bad, api.CodeCompositeBadZone, false, false},

		// Rollback against the release uploaded above.
		{"timestamp rollback", good("0.5.0", versions(9, 10, 10)), bad, api.CodeTimestampRollback, false, false},
		{"snapshot rollback", good("0.5.1", versions(11, 9, 10)), bad, api.CodeSnapshotRollback, false, false},
		{"targets rollback", good("0.5.2", versions(11, 11, 9)), bad, api.CodeTargetsRollback, false, false},
		{"root rollback", fromLineage(notRolled, "0.5.3", tufgen.Defects{}), bad, api.CodeRootRollback, false, false},
	}
	seen := map[string]string{}
	for _, a := range attacks {
		if prev, dup := seen[a.code]; dup && !a.variant {
			t.Fatalf("cases %q and %q share error code %s", prev, a.name, a.code)
		}
		seen[a.code] = a.name
		t.Run(a.name, func(t *testing.T) {
			archive := a.build(t)
			before = snapshotWorld(t, db.Pool, depotDir)
			var err error
			if a.chunked {
				_, err = nx.Client.RepoUpload(ctx, "attack.zip", io.MultiReader(bytes.NewReader(archive)), 0, nil)
			} else {
				_, err = upload(t, nx.Client, "attack.zip", archive)
			}
			if client.StatusCode(err) != a.status || client.ErrorCode(err) != a.code {
				t.Fatalf("got %v (HTTP %d), want %d %s", err, client.StatusCode(err), a.status, a.code)
			}
			var apiErr *api.Error
			if msg := fmt.Sprint(err); len(msg) < 30 || !asAPIError(err, &apiErr) || apiErr.Message == "" {
				t.Fatalf("message too thin for an operator: %q", msg)
			}
			if after := snapshotWorld(t, db.Pool, depotDir); !after.equal(before) {
				t.Fatalf("refused upload left something behind:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
	// After all that, a good upload still goes through.
	mustUpload(t, nx.Client, good("2.0.0", versions(11, 11, 11))(t), api.UploadInserted)
}

type tarEntry struct{ name, data string }

// tarGz is a gzip-compressed tar of entries, as no release tool would
// make it.
func tarGz(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o444, Size: int64(len(e.data))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.data))
	}
	tw.Close()
	return gz(raw.Bytes())
}

// truncatedTarGz ends inside its last entry: the header declares size
// bytes, only have follow.
func truncatedTarGz(t *testing.T, first tarEntry, name string, size, have int64) []byte {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	tw.WriteHeader(&tar.Header{Name: first.name, Typeflag: tar.TypeReg, Size: int64(len(first.data))})
	tw.Write([]byte(first.data))
	tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Size: size})
	tw.Write(make([]byte, have))
	tw.Flush()
	return gz(raw.Bytes())
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

func asAPIError(err error, out **api.Error) bool {
	e, ok := err.(*api.Error)
	*out = e
	return ok
}

// Registration refuses trust roots whose role thresholds cannot mean what
// they say, or that count one key twice, with the archive reader's codes,
// and keeps none of them.
func TestTrustRootRegistrationRefusesBadRoots(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	ctx := context.Background()
	for _, c := range []struct {
		name string
		o    tufgen.LineageOptions
		code string
	}{
		{"timestamp threshold 0", tufgen.LineageOptions{RawThresholds: map[string]int{tufgen.RoleTimestamp: 0}},
			api.CodeTrustRootThreshold},
		{"snapshot threshold above its keys", tufgen.LineageOptions{RawThresholds: map[string]int{tufgen.RoleSnapshot: 2}},
			api.CodeTrustRootThreshold},
		{"one key under two ids", tufgen.LineageOptions{DuplicateKey: []string{tufgen.RoleTargets}},
			api.CodeTrustRootDuplicateKey},
	} {
		_, _, err := nx.Client.TrustRootAdd(ctx, newLineage(t, 64, c.o).TrustRoot())
		if client.StatusCode(err) != http.StatusBadRequest || client.ErrorCode(err) != c.code {
			t.Errorf("%s: got %v, want 400 %s", c.name, err, c.code)
		}
	}
	if n := db.Count(t, `SELECT count(*) FROM tuf_trust_root`); n != 0 {
		t.Fatalf("%d trust roots recorded after the refusals", n)
	}
	if _, created, err := nx.Client.TrustRootAdd(ctx, newLineage(t, 65, tufgen.LineageOptions{}).TrustRoot()); err != nil || !created {
		t.Fatalf("a good root after the refusals: created=%v %v", created, err)
	}
}

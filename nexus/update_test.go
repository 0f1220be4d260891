package nexus_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/reqid"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
)

// newLineage makes a signing lineage from a fixed seed.
func newLineage(t testing.TB, seed byte, o tufgen.LineageOptions) *tufgen.Lineage {
	t.Helper()
	l, err := tufgen.NewLineage(rand.NewChaCha8([32]byte{seed, 0x7f}), o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func buildRepo(t testing.TB, l *tufgen.Lineage, r tufgen.Repo) ([]byte, *tufgen.Built) {
	t.Helper()
	b, built, err := l.BuildBytes(r)
	if err != nil {
		t.Fatal(err)
	}
	return b, built
}

func upload(t testing.TB, nx client.Nexus, name string, archive []byte) (api.TufRepoUpload, error) {
	t.Helper()
	return nx.RepoUpload(context.Background(), name, bytes.NewReader(archive), int64(len(archive)), nil)
}

func mustUpload(t testing.TB, nx client.Nexus, archive []byte, want string) api.TufRepoUpload {
	t.Helper()
	res, err := upload(t, nx, "repo.zip", archive)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if res.Status != want {
		t.Fatalf("upload status %q, want %q", res.Status, want)
	}
	return res
}

func addRoot(t testing.TB, nx client.Nexus, root []byte) api.TrustRoot {
	t.Helper()
	tr, _, err := nx.TrustRootAdd(context.Background(), root)
	if err != nil {
		t.Fatalf("add trust root: %v", err)
	}
	return tr
}

// world is what an upload can leave behind: row counts of every depot
// table and the files in the depot directory.
type world struct {
	rows  map[string]int
	files []string
}

var depotTables = []string{"tuf_repo", "tuf_artifact", "tuf_repo_artifact", "tuf_artifact_part", "nexus_artifact_copy",
	"tuf_trust_root_lineage"}

func snapshotWorld(t testing.TB, pool *pgxpool.Pool, depotDir string) world {
	t.Helper()
	w := world{rows: map[string]int{}}
	for _, table := range depotTables {
		var n int
		if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		w.rows[table] = n
	}
	var g int
	if err := pool.QueryRow(context.Background(), "SELECT generation FROM tuf_generation").Scan(&g); err != nil {
		t.Fatal(err)
	}
	w.rows["generation"] = g
	entries, err := os.ReadDir(depotDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		w.files = append(w.files, e.Name())
	}
	return w
}

func (w world) equal(o world) bool {
	for k, v := range w.rows {
		if o.rows[k] != v {
			return false
		}
	}
	return slices.Equal(w.files, o.files)
}

func compactJSON(t testing.TB, b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestTrustRoots(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	ctx := context.Background()
	l := newLineage(t, 1, tufgen.LineageOptions{Thresholds: map[string]int{tufgen.RoleRoot: 2}})

	tr, created, err := nx.Client.TrustRootAdd(ctx, l.TrustRoot())
	if err != nil || !created || tr.Version != 1 || tr.SHA256 != sha256Hex(l.TrustRoot()) {
		t.Fatalf("add: %+v created=%v err=%v", tr, created, err)
	}
	again, created, err := nx.Client.TrustRootAdd(ctx, l.TrustRoot())
	if err != nil || created || again.ID != tr.ID {
		t.Fatalf("re-add: %+v created=%v err=%v", again, created, err)
	}
	got, err := nx.Client.TrustRootGet(ctx, tr.ID)
	if err != nil || compactJSON(t, got.Root) != compactJSON(t, l.TrustRoot()) {
		t.Fatalf("get: %v, root %s", err, got.Root)
	}

	// An expired root is accepted; a root not signed to its own threshold,
	// or not a root at all, is refused.
	expired := newLineage(t, 2, tufgen.LineageOptions{Expires: time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)})
	if _, _, err := nx.Client.TrustRootAdd(ctx, expired.TrustRoot()); err != nil {
		t.Fatalf("expired root refused: %v", err)
	}
	underSigned := bytes.Replace(l.TrustRoot(), []byte(`"signatures": [`), []byte(`"signatures": [ ] , "x": [`), 1)
	for name, body := range map[string][]byte{
		"not json":             []byte("hello"),
		"timestamp not root":   []byte(`{"signed": {"_type": "timestamp"}, "signatures": []}`),
		"below root threshold": underSigned,
		"tampered":             bytes.Replace(l.TrustRoot(), []byte(`"version": 1`), []byte(`"version": 2`), 1),
	} {
		_, _, err := nx.Client.TrustRootAdd(ctx, body)
		if client.StatusCode(err) != http.StatusBadRequest || client.ErrorCode(err) != api.CodeInvalidTrustRoot {
			t.Errorf("%s: got %v, want 400 %s", name, err, api.CodeInvalidTrustRoot)
		}
	}
	roots, err := nx.Client.TrustRootList(ctx)
	if err != nil || len(roots) != 2 {
		t.Fatalf("list: %d roots, %v", len(roots), err)
	}
	if _, err := nx.Client.TrustRootRemove(ctx, tr.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := nx.Client.TrustRootGet(ctx, tr.ID); client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("get deleted: %v", err)
	}
	if _, err := nx.Client.TrustRootRemove(ctx, tr.ID, false); client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("delete twice: %v", err)
	}
	roots, _ = nx.Client.TrustRootList(ctx)
	if len(roots) != 1 {
		t.Fatalf("after delete: %d roots", len(roots))
	}
}

// The whole life of repos: upload (both manifest formats, both naming
// styles, a rotated root), idempotent re-upload, listing newest first,
// details, operator prune and un-prune by re-upload, with the generation
// moving exactly when the wanted artifact set changes.
func TestRepoLifecycle(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	ctx := context.Background()
	depotDir := nx.Depot().Dir()
	l := newLineage(t, 3, tufgen.LineageOptions{Consistent: true})
	addRoot(t, nx.Client, l.TrustRoot())

	a1, b1 := buildRepo(t, l, tufgen.Demo("1.0.0"))
	res, err := nx.Client.RepoUpload(reqid.With(ctx, "upload-1"), "repo.zip", bytes.NewReader(a1), int64(len(a1)), nil)
	if err != nil || res.Status != api.UploadInserted {
		t.Fatalf("upload 1.0.0: %+v, %v", res, err)
	}
	if res.Repo.SystemVersion != "1.0.0" || res.Repo.SHA256 != b1.SHA256 || res.Repo.ArtifactCount != 4 ||
		res.Generation != 2 || res.Repo.State != api.RepoStateActive || res.Repo.FileName != "repo.zip" {
		t.Fatalf("upload 1.0.0: %+v", res)
	}
	for _, a := range b1.Artifacts {
		data, err := os.ReadFile(filepath.Join(depotDir, a.SHA256))
		if err != nil || sha256Hex(data) != a.SHA256 {
			t.Fatalf("depot copy of %s: %v", a.Name, err)
		}
	}
	// The upload asked the replication task to run, on its behalf.
	racktest.WaitFor(t, 10*time.Second, "the upload's replication activation", func() error {
		task, err := nx.Client.BackgroundTaskGet(ctx, tufreplication.Name)
		if err != nil {
			return err
		}
		for _, a := range task.History {
			if a.Requester == "upload-1" && a.Reason == "explicit" {
				return nil
			}
		}
		return fmt.Errorf("no activation requested by the upload in %d", len(task.History))
	})
	before := snapshotWorld(t, db.Pool, depotDir)
	again := mustUpload(t, nx.Client, a1, api.UploadAlreadyExists)
	if again.Repo.ID != res.Repo.ID || again.Generation != 2 || !snapshotWorld(t, db.Pool, depotDir).equal(before) {
		t.Fatalf("re-upload changed something: %+v", again)
	}

	// Release 2: v2 manifest, rotated root, one artifact shared with 1.0.0
	// (same name, version, kind and bytes).
	if err := l.Rotate(tufgen.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	r2 := tufgen.Demo("2.0.0")
	r2.ManifestV2 = true
	r2.Metadata = map[string]string{"release": "two"}
	r2.Artifacts = append(r2.Artifacts, tufgen.Demo("1.0.0").Artifacts[0])
	r2.TimestampVersion, r2.SnapshotVersion, r2.TargetsVersion = 2, 2, 2
	a2, _ := buildRepo(t, l, r2)
	res2 := mustUpload(t, nx.Client, a2, api.UploadInserted)
	if res2.Generation != 3 || res2.Repo.RootVersion != 2 || res2.Repo.ArtifactCount != 5 {
		t.Fatalf("upload 2.0.0: %+v", res2)
	}
	var artifactRows int
	if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM tuf_artifact").Scan(&artifactRows); err != nil {
		t.Fatal(err)
	}
	if artifactRows != 8 {
		t.Fatalf("%d artifact rows, want 8 (the shared one reused)", artifactRows)
	}

	list, err := nx.Client.RepoList(ctx, false)
	if err != nil || len(list) != 2 || list[0].SystemVersion != "2.0.0" || list[1].SystemVersion != "1.0.0" {
		t.Fatalf("list: %v %+v", err, list)
	}
	page, err := nx.Client.RepoListPage(ctx, false, 1, "")
	if err != nil || len(page.Items) != 1 || page.Items[0].SystemVersion != "2.0.0" || page.NextPage == "" {
		t.Fatalf("page 1: %v %+v", err, page)
	}
	page, err = nx.Client.RepoListPage(ctx, false, 1, page.NextPage)
	if err != nil || len(page.Items) != 1 || page.Items[0].SystemVersion != "1.0.0" || page.NextPage != "" {
		t.Fatalf("page 2: %v %+v", err, page)
	}
	detail, err := nx.Client.RepoGet(ctx, "2.0.0")
	if err != nil || len(detail.Artifacts) != 5 {
		t.Fatalf("get: %v %+v", err, detail)
	}
	for _, a := range detail.Artifacts {
		// The artifact shared with 1.0.0 keeps the row (and the lack of
		// tags) its v1 manifest recorded.
		shared := a.Version == "1.0.0"
		if a.NexusCopies != 1 || (a.Tags["kind"] == a.Kind) == shared || a.TargetName == "" {
			t.Fatalf("artifact %+v", a)
		}
	}
	if _, err := nx.Client.RepoGet(ctx, "9.9.9"); client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("get missing: %v", err)
	}

	// Pruning 1.0.0 drops three artifacts from the wanted set (one is
	// still carried by 2.0.0): the generation moves.
	pr, err := nx.Client.RepoDelete(ctx, "1.0.0")
	if err != nil || pr.Generation != 4 || pr.Repo.TimePruned == nil || pr.Repo.PrunedBy != "operator" ||
		pr.Repo.State != api.RepoStatePruned {
		t.Fatalf("prune: %v %+v", err, pr)
	}
	pr, err = nx.Client.RepoDelete(ctx, "1.0.0")
	if err != nil || !pr.AlreadyPruned || pr.Generation != 4 {
		t.Fatalf("prune twice: %v %+v", err, pr)
	}
	list, _ = nx.Client.RepoList(ctx, false)
	all, _ := nx.Client.RepoList(ctx, true)
	if len(list) != 1 || len(all) != 2 {
		t.Fatalf("after prune: %d live, %d in all", len(list), len(all))
	}
	arts, err := nx.Client.ArtifactList(ctx)
	if err != nil || len(arts) != 8 {
		t.Fatalf("artifacts: %v %d", err, len(arts))
	}
	wanted := 0
	for _, a := range arts {
		if a.WantedOnSleds {
			wanted++
		}
	}
	if wanted != 5 {
		t.Fatalf("%d artifacts wanted on sleds, want 5", wanted)
	}

	// Re-uploading a pruned repo restores it (and marks it kept), and
	// restores a local copy that was lost: replication drops the local
	// copies of artifacts no live repo wants any more.
	lost := b1.Artifacts[1].SHA256
	racktest.WaitFor(t, 10*time.Second, "the pruned artifact's local copy to be dropped", func() error {
		if _, err := os.Stat(filepath.Join(depotDir, lost)); !os.IsNotExist(err) {
			return fmt.Errorf("still held (%v)", err)
		}
		return nil
	})
	back := mustUpload(t, nx.Client, a1, api.UploadRestored)
	if back.Generation != 5 || back.Repo.TimePruned != nil || !back.Repo.Kept || back.Repo.State != api.RepoStateActive {
		t.Fatalf("un-prune: %+v", back)
	}
	if data, err := os.ReadFile(filepath.Join(depotDir, lost)); err != nil || sha256Hex(data) != lost {
		t.Fatalf("lost copy not restored: %v", err)
	}

	// Keep flag round-trips.
	kept, err := nx.Client.RepoSetKept(ctx, "1.0.0", false)
	if err != nil || kept.Kept {
		t.Fatalf("unkeep: %v %+v", err, kept)
	}
	kept, err = nx.Client.RepoSetKept(ctx, "1.0.0", true)
	if err != nil || !kept.Kept {
		t.Fatalf("keep: %v %+v", err, kept)
	}
}

// Uploads that contradict what is recorded are 409s naming the
// difference, and leave nothing behind.
func TestUploadConflicts(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	l := newLineage(t, 4, tufgen.LineageOptions{})
	addRoot(t, nx.Client, l.TrustRoot())
	base := tufgen.Demo("1.0.0")
	a, _ := buildRepo(t, l, base)
	mustUpload(t, nx.Client, a, api.UploadInserted)
	before := snapshotWorld(t, db.Pool, nx.Depot().Dir())

	changed := tufgen.Demo("1.0.0")
	changed.Artifacts[2].Seed++
	changed.TimestampVersion = 2
	c, _ := buildRepo(t, l, changed)
	_, err := upload(t, nx.Client, "changed.zip", c)
	if client.StatusCode(err) != http.StatusConflict || client.ErrorCode(err) != api.CodeRepoConflict ||
		!strings.Contains(err.Error(), "artifact nexus 1.0.0 (zone) has sha256") {
		t.Fatalf("same version, different artifact: %v", err)
	}

	// Another release that claims one of 1.0.0's artifacts' bytes under a
	// different version.
	other := tufgen.Demo("2.0.0")
	other.TimestampVersion = 3
	other.Artifacts[0] = base.Artifacts[0]
	other.Artifacts[0].Version = "2.0.0"
	o, _ := buildRepo(t, l, other)
	_, err = upload(t, nx.Client, "other.zip", o)
	if client.StatusCode(err) != http.StatusConflict || client.ErrorCode(err) != api.CodeArtifactConflict ||
		!strings.Contains(err.Error(), "repo 1.0.0 recorded as host-os version 1.0.0") {
		t.Fatalf("same bytes, another version: %v", err)
	}
	if after := snapshotWorld(t, db.Pool, nx.Depot().Dir()); !after.equal(before) {
		t.Fatalf("a refused upload left something behind:\nbefore %+v\nafter  %+v", before, after)
	}
}

// With enforcement on, expired metadata is refused; off (the default),
// it is accepted and its expiry recorded.
func TestExpiryEnforcement(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	l := newLineage(t, 5, tufgen.LineageOptions{})
	past := time.Date(2020, 6, 1, 0, 0, 0, 0, time.UTC)
	r := tufgen.Demo("1.0.0")
	r.Expires = map[string]time.Time{tufgen.RoleTimestamp: past}
	archive, _ := buildRepo(t, l, r)

	strict := racktest.StartNexus(t, db.URL, nexus.Config{TufEnforceExpiry: true})
	addRoot(t, strict.Client, l.TrustRoot())
	_, err := upload(t, strict.Client, "r.zip", archive)
	if client.ErrorCode(err) != api.CodeMetadataExpired {
		t.Fatalf("enforced: %v", err)
	}
	strict.Stop()
	lax := racktest.StartNexus(t, db.URL, nexus.Config{})
	res := mustUpload(t, lax.Client, archive, api.UploadInserted)
	if !res.Repo.ValidUntil.Equal(past) {
		t.Fatalf("valid_until %v, want %v", res.Repo.ValidUntil, past)
	}
}

// Start-up removes what an interrupted upload left in the depot (temp
// files, artifacts never recorded) and keeps recorded copies.
func TestStartupCleansDepot(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	dataDir := t.TempDir()
	nx := racktest.StartNexus(t, db.URL, nexus.Config{DataDir: dataDir})
	l := newLineage(t, 6, tufgen.LineageOptions{})
	addRoot(t, nx.Client, l.TrustRoot())
	a, built := buildRepo(t, l, tufgen.Demo("1.0.0"))
	mustUpload(t, nx.Client, a, api.UploadInserted)
	nx.Stop()

	dir := filepath.Join(dataDir, "depot")
	stray := strings.Repeat("ab", 32)
	for _, name := range []string{stray, ".tmp-upload-123", ".tmp-0123456789abcdef-9"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	nx2 := racktest.StartNexus(t, db.URL, nexus.Config{DataDir: dataDir, ID: nx.ID()})
	var got []string
	_ = filepath.WalkDir(nx2.Depot().Dir(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			got = append(got, d.Name())
		}
		return nil
	})
	var want []string
	for _, art := range built.Artifacts {
		want = append(want, art.SHA256)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("depot after restart:\n got %v\nwant %v", got, want)
	}
}

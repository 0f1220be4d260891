package nexus_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/bgtasks/tufpruner"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/reqid"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
)

// The way out of "a deleted version can never be replaced": a live system
// version refuses another archive and says to prune it first; once pruned,
// another archive replaces the record (the old one leaves the listings and
// the audit log keeps what it was), and every message on the way says
// what is true.
func TestReplaceAPrunedVersion(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	ctx := context.Background()
	l := newLineage(t, 21, tufgen.LineageOptions{})
	addRoot(t, nx.Client, l.TrustRoot())
	first, builtA := buildRepo(t, l, tufgen.Demo("1.0.0"))
	a := mustUpload(t, nx.Client, first, api.UploadInserted)
	if !strings.Contains(a.Message, "1.0.0 uploaded (4 artifacts") {
		t.Fatalf("upload message %q", a.Message)
	}
	other := tufgen.Demo("1.0.0")
	other.Artifacts[1].Seed += 7
	other.TimestampVersion, other.SnapshotVersion, other.TargetsVersion = 2, 2, 2
	second, builtB := buildRepo(t, l, other)

	// Live: refused, and the message names the way forward.
	_, err := upload(t, nx.Client, "mine.zip", second)
	if client.ErrorCode(err) != api.CodeRepoConflict || !strings.Contains(err.Error(), "rackctl repo delete 1.0.0") ||
		!strings.Contains(err.Error(), "replaces the pruned record") {
		t.Fatalf("a second archive of a live version: %v", err)
	}

	pr, err := nx.Client.RepoDelete(ctx, "1.0.0")
	if err != nil || pr.AlreadyPruned || pr.Repo.State != api.RepoStatePruned ||
		!strings.Contains(pr.Message, "Upload the same archive to restore it, or another archive of 1.0.0 to replace it") {
		t.Fatalf("prune: %v %+v", err, pr)
	}
	pr, err = nx.Client.RepoDelete(ctx, "1.0.0")
	if err != nil || !pr.AlreadyPruned || !strings.Contains(pr.Message, "was already pruned (by operator") ||
		!strings.Contains(pr.Message, "another archive of 1.0.0 to replace it") {
		t.Fatalf("prune again: %v %+v", err, pr)
	}
	shown, err := nx.Client.RepoGet(ctx, "1.0.0")
	if err != nil || shown.Repo.State != api.RepoStatePruned || shown.Repo.TimePruned == nil {
		t.Fatalf("show of a pruned repo: %v %+v", err, shown.Repo)
	}

	// Pruned: the other archive replaces the record.
	res, err := nx.Client.RepoUpload(reqid.With(ctx, "replace-1"), "mine.zip", strings.NewReader(string(second)),
		int64(len(second)), nil)
	if err != nil || res.Status != api.UploadReplaced || res.Replaced == nil || res.Replaced.SHA256 != builtA.SHA256 ||
		res.Replaced.ID != a.Repo.ID || res.Repo.SHA256 != builtB.SHA256 || res.Repo.State != api.RepoStateActive ||
		res.Repo.TimePruned != nil || res.Generation != pr.Generation+1 ||
		!strings.Contains(res.Message, "replacing its pruned record (archive sha256 "+builtA.SHA256[:12]) {
		t.Fatalf("replace: %v %+v", err, res)
	}
	all, err := nx.Client.RepoList(ctx, true)
	if err != nil || len(all) != 1 || all[0].SHA256 != builtB.SHA256 {
		t.Fatalf("listing with pruned repos: %v %+v", err, all)
	}
	detail, err := nx.Client.RepoGet(ctx, "1.0.0")
	if err != nil || len(detail.Artifacts) != 4 {
		t.Fatalf("the new record: %v %+v", err, detail)
	}
	for _, art := range detail.Artifacts {
		if art.SHA256 == builtA.Artifacts[1].SHA256 {
			t.Fatalf("the replaced record's artifact %s is still linked", art.Name)
		}
	}
	var orphans int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM tuf_artifact a WHERE NOT EXISTS
		(SELECT 1 FROM tuf_repo_artifact ra WHERE ra.artifact_id = a.id)`).Scan(&orphans); err != nil || orphans != 0 {
		t.Fatalf("%d artifact rows no repo links (%v)", orphans, err)
	}
	entries, err := nx.Client.AuditLog(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range entries {
		if e.RequestID == "replace-1" {
			found = e.Action == "repo.upload" && e.Outcome == "ok" && e.Target == "repo 1.0.0" &&
				strings.Contains(e.Detail, "replaced the pruned record of 1.0.0: repo id "+a.Repo.ID.String()+
					", archive sha256 "+builtA.SHA256) && strings.Contains(e.Detail, "pruned ")
			if !found {
				t.Errorf("audit entry %+v", e)
			}
		}
	}
	if !found {
		t.Fatal("no audit entry for the replacing upload")
	}

	// The replaced archive is not recorded any more: uploading it again is
	// a new upload, held to the rollback floors its replacement raised.
	if _, err := upload(t, nx.Client, "first.zip", first); client.StatusCode(err) != http.StatusBadRequest ||
		client.ErrorCode(err) != api.CodeTimestampRollback {
		t.Fatalf("the replaced archive again: %v", err)
	}
}

// Restoring a pruned repo by uploading its archive again makes it live
// and kept, so the next pruner run, which keeps the newest uploads (by
// first upload time), does not prune it again at once; unkept, the pruner
// manages it again.
func TestRestoredRepoIsNotPrunedAgainAtOnce(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{Tasks: nexustasks.Registrar(nexustasks.Config{TufReposKept: 1}),
		TaskPeriods: map[string]time.Duration{tufpruner.Name: time.Hour}})
	ctx := context.Background()
	l := newLineage(t, 22, tufgen.LineageOptions{})
	addRoot(t, nx.Client, l.TrustRoot())
	var archives [][]byte
	for i, v := range []string{"1.0.0", "2.0.0"} {
		r := tufgen.Demo(v)
		r.TimestampVersion, r.SnapshotVersion, r.TargetsVersion = int64(i+1), int64(i+1), int64(i+1)
		a, _ := buildRepo(t, l, r)
		archives = append(archives, a)
		mustUpload(t, nx.Client, a, api.UploadInserted)
	}
	prune := func(rid string) tufpruner.Status {
		t.Helper()
		if _, err := nx.Client.BackgroundTaskActivate(reqid.With(ctx, rid), tufpruner.Name); err != nil {
			t.Fatal(err)
		}
		act := waitActivation(t, nx, tufpruner.Name, rid)
		var st tufpruner.Status
		if err := json.Unmarshal(act.Status, &st); err != nil {
			t.Fatalf("%s: %v", act.Status, err)
		}
		return st
	}
	st := prune("prune-1")
	if st.Pruned == nil || st.Pruned.SystemVersion != "1.0.0" {
		t.Fatalf("the pruner keeping 1 pruned %+v", st)
	}
	res := mustUpload(t, nx.Client, archives[0], api.UploadRestored)
	if !res.Repo.Kept || res.Repo.TimePruned != nil ||
		!strings.Contains(res.Message, "was pruned (by pruner") || !strings.Contains(res.Message, "rackctl repo unkeep 1.0.0") {
		t.Fatalf("restore: %+v", res)
	}
	st = prune("prune-2")
	if st.Pruned != nil || len(st.Kept) != 2 || st.Kept[1] != (tufpruner.Decision{SystemVersion: "1.0.0", Reason: tufpruner.ReasonKept}) {
		t.Fatalf("the pruner after a restore: %+v", st)
	}
	if _, err := nx.Client.RepoSetKept(ctx, "1.0.0", false); err != nil {
		t.Fatal(err)
	}
	if st = prune("prune-3"); st.Pruned == nil || st.Pruned.SystemVersion != "1.0.0" {
		t.Fatalf("the pruner after unkeep: %+v", st)
	}
}

// A pruned record with composite artifacts is replaced like any other:
// its composites and their parts go with it, part links included, and
// nothing is left that no repo names.
func TestReplaceAPrunedVersionWithComposites(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	ctx := context.Background()
	l := newLineage(t, 23, tufgen.LineageOptions{})
	addRoot(t, nx.Client, l.TrustRoot())
	withParts := tufgen.Composites("3.0.0")
	first, _ := buildRepo(t, l, withParts)
	a := mustUpload(t, nx.Client, first, api.UploadInserted)
	var links int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM tuf_artifact_part`).Scan(&links); err != nil || links == 0 {
		t.Fatalf("the composites' parts are not linked: %d (%v)", links, err)
	}
	if _, err := nx.Client.RepoDelete(ctx, "3.0.0"); err != nil {
		t.Fatal(err)
	}
	plain := tufgen.Demo("3.0.0")
	plain.TimestampVersion, plain.SnapshotVersion, plain.TargetsVersion = 2, 2, 2
	second, builtB := buildRepo(t, l, plain)
	res, err := nx.Client.RepoUpload(ctx, "plain.zip", strings.NewReader(string(second)), int64(len(second)), nil)
	if err != nil || res.Status != api.UploadReplaced || res.Replaced == nil || res.Replaced.ID != a.Repo.ID ||
		res.Repo.SHA256 != builtB.SHA256 {
		t.Fatalf("replace a record with composites: %v %+v", err, res)
	}
	var orphans int
	if err := db.Pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM tuf_artifact a WHERE NOT EXISTS
			(SELECT 1 FROM tuf_repo_artifact ra WHERE ra.artifact_id = a.id)) +
		(SELECT count(*) FROM tuf_artifact_part)`).Scan(&orphans); err != nil || orphans != 0 {
		t.Fatalf("%d unlinked artifact rows or part links left (%v)", orphans, err)
	}
	detail, err := nx.Client.RepoGet(ctx, "3.0.0")
	if err != nil || len(detail.Artifacts) != len(builtB.Artifacts) {
		t.Fatalf("the new record: %v %+v", err, detail)
	}
}

package nexus_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
)

// An upload of composite artifacts records every part as an artifact of
// the repo beside its composite (the API says which composite and where in
// it), stores every part in the depot, and wants it on sleds; uploading the
// same archive again changes nothing, and a second release sharing a part's
// bytes shares its row.
func TestCompositeUploadRecordsParts(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	ctx := context.Background()
	l := newLineage(t, 40, tufgen.LineageOptions{Consistent: true})
	addRoot(t, nx.Client, l.TrustRoot())
	repo := tufgen.Composites("1.0.0")
	archive, built := buildRepo(t, l, repo)
	res := mustUpload(t, nx.Client, archive, api.UploadInserted)
	// 6 composites: 5 with two parts each, the control plane with two zones.
	if res.Repo.ArtifactCount != 6+12 {
		t.Fatalf("the repo records %d artifacts, want 6 composites and 12 parts", res.Repo.ArtifactCount)
	}
	detail, err := nx.Client.RepoGet(ctx, "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	composites := map[string]api.TufRepoArtifact{}
	for _, a := range detail.Artifacts {
		if a.PartOf == nil {
			composites[a.SHA256] = a
		}
	}
	if len(composites) != 6 {
		t.Fatalf("%d artifacts are no part, want the 6 composites", len(composites))
	}
	for _, b := range built.Artifacts {
		if _, ok := composites[b.SHA256]; !ok {
			t.Fatalf("composite %s (%s) is not recorded as itself", b.Name, b.Kind)
		}
	}
	var got []string
	for _, a := range detail.Artifacts {
		if a.PartOf == nil {
			continue
		}
		c := composites[a.PartOf.SHA256]
		if c.ID != a.PartOf.ID || c.Kind != a.PartOf.Kind || a.TargetName != c.TargetName {
			t.Errorf("part %s names composite %+v, recorded %+v", a.Kind, a.PartOf, c)
		}
		got = append(got, a.PartOf.Kind+"/"+a.PartOf.Path+" → "+a.Kind+" "+a.Name+" "+a.Version)
		if fi, err := os.Stat(nx.Depot().Path(a.SHA256)); err != nil || fi.Size() != a.Length {
			t.Errorf("the depot does not hold part %s %s: %v", a.Kind, a.Name, err)
		}
		if a.NexusCopies != 1 {
			t.Errorf("part %s %s: %d Nexus copies recorded, want 1", a.Kind, a.Name, a.NexusCopies)
		}
	}
	sort.Strings(got)
	want := []string{
		"control_plane/zones/crucible.tar.gz → zone crucible 1.0.0",
		"control_plane/zones/oximeter.tar.gz → zone oximeter 1.0.0",
		"gimlet_rot/archive-a.zip → gimlet_rot_image_a gimlet-rot 1.0.0",
		"gimlet_rot/archive-b.zip → gimlet_rot_image_b gimlet-rot 1.0.0",
		"host/image/rom → host_phase_1 host 1.0.0",
		"host/image/zfs.img → host_phase_2 host 1.0.0",
		"psc_rot/archive-a.zip → psc_rot_image_a psc-rot 1.0.0",
		"psc_rot/archive-b.zip → psc_rot_image_b psc-rot 1.0.0",
		"switch_rot/archive-a.zip → switch_rot_image_a switch-rot 1.0.0",
		"switch_rot/archive-b.zip → switch_rot_image_b switch-rot 1.0.0",
		"trampoline/image/rom → trampoline_phase_1 trampoline 1.0.0",
		"trampoline/image/zfs.img → trampoline_phase_2 trampoline 1.0.0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("parts:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wanted := db.Count(t, `SELECT count(DISTINCT a.sha256) FROM tuf_artifact a JOIN tuf_repo_artifact ra ON ra.artifact_id = a.id`)
	if wanted != 18 {
		t.Fatalf("%d distinct hashes wanted on sleds, want 18", wanted)
	}

	// The same archive again: already there, nothing new.
	before := snapshotWorld(t, db.Pool, nx.Depot().Dir())
	mustUpload(t, nx.Client, archive, api.UploadAlreadyExists)
	if after := snapshotWorld(t, db.Pool, nx.Depot().Dir()); !after.equal(before) {
		t.Fatalf("a re-upload changed the world:\nbefore %+v\nafter  %+v", before, after)
	}

	// A later release whose host image is the same (same name, version,
	// bytes) shares its rows, composite and parts.
	next := tufgen.Demo("2.0.0")
	next.Artifacts = append(next.Artifacts, repo.Artifacts[0])
	archive2, _ := buildRepo(t, l, next)
	mustUpload(t, nx.Client, archive2, api.UploadInserted)
	if n := db.Count(t, `SELECT count(*) FROM tuf_artifact WHERE name = 'host' AND kind IN ('host', 'host_phase_1', 'host_phase_2')`); n != 3 {
		t.Fatalf("%d host rows after a second release with the same host image, want 3", n)
	}
	d2, err := nx.Client.RepoGet(ctx, "2.0.0")
	if err != nil {
		t.Fatal(err)
	}
	parts := 0
	for _, a := range d2.Artifacts {
		if a.PartOf != nil {
			parts++
			if a.PartOf.Kind != "host" {
				t.Errorf("2.0.0's part %s names composite %+v", a.Kind, a.PartOf)
			}
		}
	}
	if parts != 2 {
		t.Fatalf("2.0.0 shows %d parts, want the host image's 2", parts)
	}
	if files, _ := filepath.Glob(filepath.Join(nx.Depot().Dir(), ".tmp-*")); len(files) != 0 {
		t.Fatalf("temp files left in the depot: %v", files)
	}
}

package datastore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func sha(c byte) string { return strings.Repeat(string(rune(c)), 64) }

// Parts are recorded as artifacts of the repo, linked to their composite;
// the repo's detail names each part's composite, and a part that names no
// composite of the upload is refused with nothing written.
func TestTufRepoInsertRecordsParts(t *testing.T) {
	t.Parallel()
	d := newStore(t)
	ctx := context.Background()
	in := TufRepoInsert{NexusID: uuid.New(), SystemVersion: "1.0.0", FileName: "r.zip", SHA256: sha('a'),
		ValidUntil: time.Now().Add(time.Hour), TrustRootID: uuid.New(), TargetsSHA256: sha('b'), ManifestFormat: 1,
		LineageKey: sha('c'),
		Artifacts: []TufArtifactInsert{
			{Name: "sp", Version: "1.0.0", Kind: "gimlet_sp", TargetName: "sp.bin", SHA256: sha('d'), Length: 10},
			{Name: "host", Version: "1.0.0", Kind: "host", TargetName: "host.tar.gz", SHA256: sha('e'), Length: 100},
		},
		Parts: []TufPartInsert{
			{TufArtifactInsert: TufArtifactInsert{Name: "host", Version: "1.0.0", Kind: "host_phase_1",
				TargetName: "host.tar.gz", SHA256: sha('f'), Length: 30}, Composite: 1, Path: "image/rom"},
			{TufArtifactInsert: TufArtifactInsert{Name: "host", Version: "1.0.0", Kind: "host_phase_2",
				TargetName: "host.tar.gz", SHA256: sha('0'), Length: 60}, Composite: 1, Path: "image/zfs.img"},
		}}
	bad := in
	bad.SystemVersion, bad.SHA256 = "0.9.0", sha('9')
	bad.Parts = []TufPartInsert{{TufArtifactInsert: in.Parts[0].TufArtifactInsert, Composite: 7, Path: "image/rom"}}
	if _, err := d.TufRepoInsert(ctx, bad); err == nil {
		t.Fatal("a part naming no composite of the upload was recorded")
	}
	var rows int
	if err := d.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM tuf_repo) + (SELECT count(*) FROM tuf_artifact)`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("the refused insert left %d rows (%v)", rows, err)
	}
	res, err := d.TufRepoInsert(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if res.Repo.ArtifactCount != 4 || res.Repo.TotalBytes != 200 || !res.GenerationBumped {
		t.Fatalf("recorded %+v", res)
	}
	detail, err := d.TufRepoGet(ctx, "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	parts := 0
	for _, a := range detail.Artifacts {
		switch {
		case a.Kind == "host_phase_1" || a.Kind == "host_phase_2":
			parts++
			if a.PartOf == nil || a.PartOf.Kind != "host" || a.PartOf.SHA256 != sha('e') ||
				(a.Kind == "host_phase_1") != (a.PartOf.Path == "image/rom") {
				t.Errorf("part %s: part of %+v", a.Kind, a.PartOf)
			}
		case a.PartOf != nil:
			t.Errorf("%s is recorded as a part of %+v", a.Kind, a.PartOf)
		}
	}
	if parts != 2 {
		t.Fatalf("%d parts in the repo's detail", parts)
	}
	copies, err := d.NexusArtifactCopies(ctx, in.NexusID)
	if err != nil || len(copies) != 4 {
		t.Fatalf("local copies recorded: %v %v", copies, err)
	}
}

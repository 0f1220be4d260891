package main

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
)

func TestRepoAndTrustRootCommands(t *testing.T) {
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	url := nx.ExternalURL()
	dir := t.TempDir()
	l, err := tufgen.NewLineage(rand.NewChaCha8([32]byte{7}), tufgen.LineageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(dir, "root.json")
	if err := os.WriteFile(rootFile, l.TrustRoot(), 0o644); err != nil {
		t.Fatal(err)
	}
	zip := filepath.Join(dir, "release-1.0.0.zip")
	if _, err := l.BuildFile(zip, tufgen.Sized("1.0.0", 3<<20, 3, 1)); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "upload", zip)
	if code != 1 || !strings.Contains(errOut, "no_trust_roots") || !strings.Contains(errOut, "rackctl trust-root add") {
		t.Fatalf("upload without roots: exit %d %q %q", code, out, errOut)
	}
	// Nexus refused before reading, and rackctl waited for its 100
	// Continue: not a byte of the body was read to be sent.
	if strings.Contains(errOut, "% sent") || strings.Contains(errOut, "all 3.0 MiB sent") {
		t.Fatalf("upload without roots sent the body: %q", errOut)
	}
	code, out, errOut = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "trust-root", "add", rootFile)
	if code != 0 || !strings.Contains(out, "trust root registered") {
		t.Fatalf("trust-root add: exit %d %q %q", code, out, errOut)
	}
	code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "trust-root", "add", rootFile)
	if code != 0 || !strings.Contains(out, "already registered") {
		t.Fatalf("trust-root add again: exit %d %q", code, out)
	}
	code, out, errOut = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "upload", zip)
	if code != 0 || !regexp.MustCompile(`^system version 1\.0\.0 uploaded \(3 artifacts, generation \d+\); replication to the sleds has started\n$`).MatchString(out) {
		t.Fatalf("upload: exit %d %q %q", code, out, errOut)
	}
	// Not a terminal: plain progress lines, each phase with its elapsed
	// time, and no bar redrawn with \r.
	if !strings.Contains(errOut, "upload: sending 3.0 MiB\n") || !strings.Contains(errOut, "upload: 50% sent (1.5 MiB of 3.0 MiB), ") ||
		!regexp.MustCompile(`upload: all 3.0 MiB sent in \d+m?s; Nexus is verifying the release\n`).MatchString(errOut) ||
		!regexp.MustCompile(`upload: done in \d+m?s\n$`).MatchString(errOut) || strings.Contains(errOut, "\r") {
		t.Fatalf("progress: %q", errOut)
	}
	code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "upload", zip)
	if code != 0 || !strings.Contains(out, "was already uploaded") {
		t.Fatalf("upload again: exit %d %q", code, out)
	}
	code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "list")
	if code != 0 || !strings.Contains(out, "1.0.0") || !strings.Contains(out, "release-1.0.0.zip") || !strings.HasSuffix(out, "1 repo(s)\n") {
		t.Fatalf("list: exit %d %q", code, out)
	}
	code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "show", "1.0.0")
	if code != 0 || strings.Count(out, "artifact-0") != 3 || !strings.Contains(out, "NEXUS COPIES") {
		t.Fatalf("show: exit %d %q", code, out)
	}
	// Nexus refuses to delete the root a live repo was verified against
	// without --force, and names the repo.
	roots, err := nx.Client.TrustRootList(context.Background())
	if err != nil || len(roots) != 1 {
		t.Fatal(roots, err)
	}
	code, out, errOut = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "trust-root", "delete", roots[0].ID.String())
	if code != 1 || !strings.Contains(errOut, "trust_root_in_use") || !strings.Contains(errOut, "1.0.0") ||
		!strings.Contains(errOut, "--force") {
		t.Fatalf("trust-root delete of a root in use: exit %d %q %q", code, out, errOut)
	}
	if got, err := nx.Client.TrustRootList(context.Background()); err != nil || len(got) != 1 {
		t.Fatalf("after a refused delete: %d roots, %v", len(got), err)
	}
	code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "delete", "1.0.0")
	if code != 0 || !strings.HasPrefix(out, "system version 1.0.0 pruned (generation ") ||
		!strings.Contains(out, "Upload the same archive to restore it") {
		t.Fatalf("delete: exit %d %q", code, out)
	}
	code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "list")
	if code != 0 || !strings.HasSuffix(out, "0 repo(s)\n") {
		t.Fatalf("list after delete: exit %d %q", code, out)
	}
	code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "--json", "repo", "list", "--all")
	var repos []api.TufRepo
	if code != 0 || json.Unmarshal([]byte(out), &repos) != nil || len(repos) != 1 || repos[0].TimePruned == nil {
		t.Fatalf("list --all: exit %d %q", code, out)
	}
	// With no live repo left, the last root goes without --force: Nexus
	// allows it and says that every upload is refused until a root is
	// added.
	code, out, errOut = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "trust-root", "delete", roots[0].ID.String())
	if code != 0 || !strings.Contains(out, "deleted") || !strings.Contains(out, "That was the last trust root") ||
		!strings.Contains(out, "rackctl trust-root add") {
		t.Fatalf("trust-root delete of the last root: exit %d %q %q", code, out, errOut)
	}
	if got, err := nx.Client.TrustRootList(context.Background()); err != nil || len(got) != 0 {
		t.Fatalf("after the delete: %d roots, %v", len(got), err)
	}
	code, _, errOut = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "trust-root", "delete", "--force", roots[0].ID.String())
	if code != 1 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("trust-root delete again: exit %d %q", code, errOut)
	}
	code, _, errOut = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "trust-root", "delete", "not-a-uuid")
	if code != 2 || !strings.Contains(errOut, "not a trust root ID") {
		t.Fatalf("bad id: exit %d %q", code, errOut)
	}
	code, _, errOut = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "show", "9.9.9")
	if code != 1 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("show missing: exit %d %q", code, errOut)
	}
}

// repo list marks metadata that has expired or expires within 30 days
// (below the table too, with what it means); repo show of a pruned repo
// says pruned, though the API's state field says active.
func TestRepoExpiryAndPrunedState(t *testing.T) {
	t.Parallel()
	rk := racktest.StartRack(t, racktest.RackConfig{Seed: 9})
	nx := rk.Nexus
	now := time.Now()
	for v, expires := range map[string]time.Time{
		"1.0.0": now.Add(-72 * time.Hour),     // expired
		"2.0.0": now.Add(10 * 24 * time.Hour), // within 30 days
		"3.0.0": now.Add(90 * 24 * time.Hour), // fine
	} {
		repo := tufgen.Demo(v)
		repo.Expires = map[string]time.Time{"timestamp": expires}
		for i := range repo.Artifacts {
			repo.Artifacts[i].Seed += uint64(100 * v[0])
		}
		rk.Upload(nx, repo, "release-"+v+".zip")
	}
	admin := []string{"--nexus", nx.ExternalURL(), "--token", nx.AdminToken}
	code, out, errOut := rackctl(t, append(admin, "repo", "list")...)
	if code != 0 {
		t.Fatalf("list: exit %d %q", code, errOut)
	}
	for _, re := range []string{
		`(?m)^1\.0\.0 .*\d{4}-\d\d-\d\d EXPIRED \(!\)`,
		`(?m)^2\.0\.0 .*\d{4}-\d\d-\d\d \(expires in (9d2\dh|10d00h)\)`,
		`(?m)^3\.0\.0 .* \d{4}-\d\d-\d\d  `,
		`(?m)^! 1\.0\.0: its signed metadata expired 3d00h ago \(Nexus accepts expired metadata; a re-signed release renews it\)$`,
		`(?m)^! 2\.0\.0: its signed metadata expires in (9d2\dh|10d00h) `,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("list does not match %s:\n%s", re, out)
		}
	}
	if strings.Contains(out, "! 3.0.0") || regexp.MustCompile(`(?m)^3\.0\.0 .*(EXPIRED|expires in)`).MatchString(out) {
		t.Errorf("list marks 3.0.0:\n%s", out)
	}

	if code, out, errOut := rackctl(t, append(admin, "repo", "delete", "3.0.0")...); code != 0 {
		t.Fatalf("delete: exit %d %q %q", code, out, errOut)
	}
	d, err := nx.Client.RepoGet(context.Background(), "3.0.0")
	if err != nil || d.Repo.TimePruned == nil {
		t.Fatalf("3.0.0 after delete: %+v %v", d.Repo, err)
	}
	code, out, _ = rackctl(t, append(admin, "repo", "show", "3.0.0")...)
	if code != 0 || !regexp.MustCompile(`(?m)^state +pruned \d+m?s ago by operator$`).MatchString(out) ||
		regexp.MustCompile(`(?m)^state +active`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^replication +none wanted: pruned`).MatchString(out) {
		t.Fatalf("show of a pruned repo (API state %q):\n%s", d.Repo.State, out)
	}
	code, out, _ = rackctl(t, append(admin, "repo", "list", "--all")...)
	if code != 0 || !regexp.MustCompile(`(?m)^3\.0\.0 .* pruned \d+m?s ago by operator `).MatchString(out) {
		t.Fatalf("list --all:\n%s", out)
	}

	// keep and unkeep change the repo, and list shows it.
	if code, out, _ := rackctl(t, append(admin, "repo", "keep", "2.0.0")...); code != 0 || !strings.Contains(out, "2.0.0 is kept") {
		t.Fatalf("keep: exit %d %q", code, out)
	}
	if d, err := nx.Client.RepoGet(context.Background(), "2.0.0"); err != nil || !d.Repo.Kept {
		t.Fatalf("after keep: %+v %v", d.Repo, err)
	}
	code, out, _ = rackctl(t, append(admin, "repo", "list")...)
	if code != 0 || !regexp.MustCompile(`(?m)^2\.0\.0 .* active +yes `).MatchString(out) {
		t.Fatalf("list after keep:\n%s", out)
	}
	if code, out, _ := rackctl(t, append(admin, "repo", "unkeep", "2.0.0")...); code != 0 || !strings.Contains(out, "no longer kept") {
		t.Fatalf("unkeep: exit %d %q", code, out)
	}
	if d, err := nx.Client.RepoGet(context.Background(), "2.0.0"); err != nil || d.Repo.Kept {
		t.Fatalf("after unkeep: %+v %v", d.Repo, err)
	}
}

// A release with composite artifacts: `repo show` lists each part, by
// its path in the composite, right under the composite it came from.
func TestRepoShowListsPartsUnderTheirComposite(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	l, err := tufgen.NewLineage(rand.NewChaCha8([32]byte{9}), tufgen.LineageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := nx.Client.TrustRootAdd(context.Background(), l.TrustRoot()); err != nil {
		t.Fatal(err)
	}
	zip := filepath.Join(t.TempDir(), "composites.zip")
	if _, err := l.BuildFile(zip, tufgen.Composites("4.0.0")); err != nil {
		t.Fatal(err)
	}
	url := nx.ExternalURL()
	if code, out, errOut := rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "upload", zip); code != 0 {
		t.Fatalf("upload: exit %d %q %q", code, out, errOut)
	}
	d, err := nx.Client.RepoGet(context.Background(), "4.0.0")
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "show", "4.0.0")
	if code != 0 {
		t.Fatalf("show: exit %d %q %q", code, out, errOut)
	}
	var parts int
	lines := strings.Split(out, "\n")
	for _, a := range d.Artifacts {
		if a.PartOf == nil {
			continue
		}
		parts++
		// The part's row comes after its composite's and before any
		// artifact that is not a part of the same composite.
		row, comp := -1, -1
		for i, line := range lines {
			if strings.HasPrefix(line, "  "+a.PartOf.Path+" ") && strings.Contains(line, a.SHA256[:16]) {
				row = i
			}
			if strings.HasPrefix(line, a.PartOf.Name+" ") && strings.Contains(line, a.PartOf.SHA256[:16]) {
				comp = i
			}
		}
		if row < 0 || comp < 0 || row < comp {
			t.Errorf("part %s (%s) of %s: row %d, composite row %d\n%s", a.PartOf.Path, a.Kind, a.PartOf.Name, row, comp, out)
			continue
		}
		for _, line := range lines[comp+1 : row] {
			if !strings.HasPrefix(line, "  ") {
				t.Errorf("part %s is separated from %s by %q", a.PartOf.Path, a.PartOf.Name, line)
			}
		}
	}
	if parts == 0 || !strings.Contains(out, strconv.Itoa(parts)+" of the artifacts are parts Nexus read out of composite artifacts") {
		t.Fatalf("%d parts; show:\n%s", parts, out)
	}
}

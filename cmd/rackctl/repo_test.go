package main

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	code, out, errOut = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "trust-root", "add", rootFile)
	if code != 0 || !strings.Contains(out, "trust root registered") {
		t.Fatalf("trust-root add: exit %d %q %q", code, out, errOut)
	}
	code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "trust-root", "add", rootFile)
	if code != 0 || !strings.Contains(out, "already registered") {
		t.Fatalf("trust-root add again: exit %d %q", code, out)
	}
	code, out, errOut = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "upload", zip)
	if code != 0 || !strings.Contains(out, "system version 1.0.0 uploaded: 3 artifacts, 3.0 MiB") {
		t.Fatalf("upload: exit %d %q %q", code, out, errOut)
	}
	// The progress line reached the end, with a rate.
	if !strings.Contains(errOut, "100.0%") || !strings.Contains(errOut, "/s ETA") {
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
	code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "delete", "1.0.0")
	if code != 0 || !strings.Contains(out, "pruned") {
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
	code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "--json", "trust-root", "list")
	var roots []api.TrustRoot
	if code != 0 || json.Unmarshal([]byte(out), &roots) != nil || len(roots) != 1 {
		t.Fatalf("trust-root list: exit %d %q", code, out)
	}
	code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "trust-root", "delete", roots[0].ID.String())
	if code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("trust-root delete: exit %d %q", code, out)
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

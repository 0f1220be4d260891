package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/release"
)

// readmeExample is the worked example in the README, between its
// release-example markers, exactly as a reader would paste it.
func readmeExample(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- release-example -->\n```sh\n")
	script, _, ok2 := strings.Cut(rest, "```\n<!-- /release-example -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no release example between <!-- release-example --> markers")
	}
	return script
}

// runExample builds rackrelease, runs the README's example in a fresh
// directory with it on PATH, and returns the directory and the output.
func runExample(t *testing.T) (string, string) {
	t.Helper()
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "rackrelease"), ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", readmeExample(t))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("the README's example fails: %v\n%s", err, out.String())
	}
	return dir, out.String()
}

// The README's example runs as written, and what it makes is a release a
// rack accepts: uploaded, it expands every composite into its parts, and
// every sled ends up holding every artifact and part on both M.2s.
func TestReadmeExample(t *testing.T) {
	t.Parallel()
	dir, out := runExample(t)
	if n := strings.Count(out, "ACCEPTED: every artifact matches"); n != 2 {
		t.Fatalf("inspect accepted %d releases, want 2 (the release and its re-signed copy):\n%s", n, out)
	}
	for _, want := range []string{"host_phase_1", "host_phase_2", "gimlet_rot_image_a", "gimlet_rot_image_b",
		"zone                nexus", "zone                sled-agent", "2.root.json      2"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	// Both releases carry the same artifacts; the re-signed one carries
	// root version 2 as well, signed by two of the three new root keys.
	for _, name := range []string{"release-1.0.0.zip", "release-1.0.0-resigned.zip"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		info, err := release.Describe(f, fi.Size())
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(info.TargetList) != 5 {
			t.Errorf("%s signs %d targets, want 4 artifacts and the manifest", name, len(info.TargetList))
		}
	}

	rk := racktest.StartRack(t, racktest.RackConfig{Sleds: 3})
	ctx := context.Background()
	root, err := os.ReadFile(filepath.Join(dir, "root.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := rk.Nexus.Client.TrustRootAdd(ctx, root); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "release-1.0.0.zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	res, err := rk.Nexus.Client.RepoUpload(ctx, "release-1.0.0.zip", f, fi.Size(), nil)
	if err != nil || res.Status != api.UploadInserted {
		t.Fatalf("upload: %+v %v", res, err)
	}
	detail, err := rk.Nexus.Client.RepoGet(ctx, "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, a := range detail.Artifacts {
		kinds[a.Kind]++
	}
	want := map[string]int{"gimlet_sp": 1, "host": 1, "host_phase_1": 1, "host_phase_2": 1, "gimlet_rot": 1,
		"gimlet_rot_image_a": 1, "gimlet_rot_image_b": 1, "control_plane": 1, "zone": 2}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Fatalf("the repo's artifacts by kind: %v, want %v", kinds, want)
	}
	racktest.WaitFor(t, 60*time.Second, "every sled to hold every artifact and part on both M.2s", func() error {
		for _, a := range detail.Artifacts {
			for i, s := range rk.Sleds {
				if n := racktest.CopiesOn(s, a.SHA256); n != 2 {
					return fmt.Errorf("sled %d holds %s %s (%s) on %d M.2s", i, a.Kind, a.Name, a.SHA256[:12], n)
				}
			}
		}
		return nil
	})
}

package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The upload benchmark runs end to end at tiny sizes (two archives, both
// transports) so it cannot rot: each size gets both limits and a ratio to
// each for every upload, every upload is recorded, and the work dir is
// removed.
func TestUploadTiny(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := filepath.Join(t.TempDir(), "nexus")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/rackplane/rackplane/cmd/nexus").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/nexus: %v\n%s", err, out)
	}
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"upload", "--size", "2MiB,3MiB", "--artifacts", "3", "--dir", dir,
		"--nexus-bin", bin}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	text := out.String()
	t.Log(text)
	blocks := strings.Split(text, "\nTUF upload of ")[1:]
	if len(blocks) != 2 {
		t.Fatalf("want a report per size, got %d", len(blocks))
	}
	line := regexp.MustCompile(`upload over (HTTPS?) .* ratio +([0-9.]+) to one pass \(target <= 1.2; ([0-9.]+) to two\)` +
		`  nexus peak RSS +([0-9.]+) MiB = ([0-9.]+) of 128 MiB .* status inserted`)
	for _, b := range blocks {
		m := line.FindAllStringSubmatch(b, -1)
		if len(m) != 2 || m[0][1] != "HTTP" || m[1][1] != "HTTPS" {
			t.Fatalf("want an HTTP and an HTTPS upload line per size:\n%s", b)
		}
		for _, l := range m {
			// Figures, not judgements: at these sizes timing is noise.
			if one, two := number(t, l[2]), number(t, l[3]); one <= 0 || two <= 0 {
				t.Errorf("ratios %v to one pass, %v to two", one, two)
			}
			if number(t, l[4]) <= 0 {
				t.Errorf("no peak RSS measured: %s", l[0])
			}
		}
		if !strings.Contains(b, "machine limit, one pass") || !strings.Contains(b, "machine limit, two passes") {
			t.Errorf("a size's report lacks a limit:\n%s", b)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "size-") {
			t.Errorf("the work dir keeps %s", e.Name())
		}
	}
}

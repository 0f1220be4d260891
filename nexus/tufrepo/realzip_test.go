package tufrepo_test

import (
	"archive/zip"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/nexus/tufrepo"
)

// The tiny consistent repo (the fuzz lineage's, as tufaceous lays a repo
// out) packed by real zip writers, so the strict reader is held to what
// real tools write: Info-ZIP with directory entries and its extra fields,
// streamed (data descriptors, sizes in the local header) and with zip64
// forced; Python's zipfile seekable and streamed, with and without zip64;
// and jar. Checked in under testdata/realzip; remade with
//
//	TUFREPO_WRITE_FIXTURES=1 go test ./nexus/tufrepo -run TestRealToolArchives
//
// (needs zip, python3 and jar), then TUFREPO_WRITE_CORPUS=1 for the fuzz
// seeds made from them.
var realTools = []struct {
	name string
	// args runs in a directory holding repo/ and writes OUT.
	args []string
	// stream pipes the tool's standard output to OUT, so that it cannot
	// seek back to fill in local headers.
	stream bool
}{
	{"infozip", []string{"zip", "-q", "-r", "OUT", "repo"}, false},
	{"infozip-stream", []string{"zip", "-q", "-r", "-", "repo"}, true},
	{"infozip-zip64", []string{"zip", "-q", "-fz", "-r", "OUT", "repo"}, false},
	{"python", []string{"python3", "-c", pyZip, "OUT", "plain"}, false},
	{"python-stream", []string{"python3", "-c", pyZip, "-", "stream"}, true},
	{"python-zip64", []string{"python3", "-c", pyZip, "OUT", "zip64"}, false},
	{"python-stream-zip64", []string{"python3", "-c", pyZip, "-", "stream zip64"}, true},
	{"jar", []string{"jar", "cfM", "OUT", "repo"}, false},
}

// pyZip packs repo/ with zipfile, deflating every file; "stream" writes to
// a stream it cannot seek, "zip64" forces zip64 headers.
const pyZip = `
import os, sys, zipfile
out, mode = sys.argv[1], sys.argv[2]
class Stream:
    def __init__(self, f): self.f = f
    def write(self, b): return self.f.write(b)
    def flush(self): self.f.flush()
    def tell(self): raise OSError("not seekable")
    def seekable(self): return False
f = Stream(sys.stdout.buffer) if out == "-" else open(out, "wb")
with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
    for root, dirs, files in os.walk("repo"):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(root, name)
            with open(p, "rb") as src, z.open(p, "w", force_zip64="zip64" in mode) as dst:
                dst.write(src.read())
`

func realFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "realzip", name+".zip"))
	if err != nil {
		t.Fatalf("fixture %s: %v (remake with TUFREPO_WRITE_FIXTURES=1)", name, err)
	}
	return b
}

func TestRealToolArchives(t *testing.T) {
	l := fuzzLineage(t, true)
	good, built := build(t, l, tinyRepo(true))
	if os.Getenv("TUFREPO_WRITE_FIXTURES") == "1" {
		writeRealFixtures(t, good)
	}
	roots := []tufrepo.TrustRoot{{ID: uuid.New(), JSON: l.TrustRoot()}}
	for _, tool := range realTools {
		t.Run(tool.name, func(t *testing.T) {
			archive := realFixture(t, tool.name)
			checkVerifies(t, archive, roots, built)
			if err := tufrepo.CheckPrefix(archive[:min(len(archive), tufrepo.PrefixLen)]); err != nil {
				t.Fatalf("CheckPrefix: %v", err)
			}
		})
	}
}

func writeRealFixtures(t *testing.T, archive []byte) {
	dir := unpack(t, archive)
	outDir, err := filepath.Abs(filepath.Join("testdata", "realzip"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range realTools {
		packWith(t, tool.name, tool.args, tool.stream, dir, filepath.Join(outDir, tool.name+".zip"))
	}
}

// writeToolFixture unpacks archive and packs it again with Info-ZIP into
// out, as an operator's tools would.
func writeToolFixture(t *testing.T, archive []byte, out string) {
	abs, err := filepath.Abs(out)
	if err != nil {
		t.Fatal(err)
	}
	packWith(t, "infozip", realTools[0].args, false, unpack(t, archive), abs)
}

// unpack writes an archive's entries under a new directory.
func unpack(t *testing.T, archive []byte) string {
	dir := t.TempDir()
	zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// packWith runs a zip tool in dir (which holds repo/) to write out.
func packWith(t *testing.T, name string, toolArgs []string, stream bool, dir, out string) {
	os.Remove(out)
	args := make([]string, len(toolArgs))
	for i, a := range toolArgs {
		if a == "OUT" {
			a = out
		}
		args[i] = a
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	// A bytes.Buffer, not a file, so that a streaming tool writes to a
	// pipe.
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s%s", name, err, stdout.Bytes(), stderr.Bytes())
	}
	if stream {
		if err := os.WriteFile(out, stdout.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

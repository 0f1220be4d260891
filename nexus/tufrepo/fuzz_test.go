package tufrepo_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus/tufrepo"
)

// fuzzLineage signs the seed corpus; it is rebuilt from a fixed seed, so
// the checked-in seeds verify against it.
func fuzzLineage(t testing.TB, consistent bool) *tufgen.Lineage {
	seed := uint64(40)
	if consistent {
		seed = 41
	}
	return lineage(t, seed, tufgen.LineageOptions{Consistent: consistent})
}

func tinyRepo(v2 bool) tufgen.Repo {
	return tufgen.Repo{SystemVersion: "1.0.0", ManifestV2: v2, Artifacts: []tufgen.Artifact{
		{Name: "a", Version: "1.0.0", Kind: "zone", Data: []byte("alpha")},
		{Name: "b", Version: "1.0.0", Kind: "zone", Target: "dir/b.bin", Data: []byte("bravo bytes")},
	}}
}

// FuzzArchive feeds arbitrary bytes to the archive reader and verifier,
// both on disk (Open, Verify, CopyTarget) and streamed (Receive, then
// Received.Verify: the path uploads take). Whatever the input, they must
// not panic, every refusal must be an Invalid fault with a code (which the
// API turns into a 400), both paths must decide alike and, when they
// accept, store the same bytes for every artifact, and CheckPrefix must
// not refuse an archive the reader accepts. The seeds include every
// strict-zip case (strict-*) and archives made by real zip tools (real-*).
//
//	go test ./nexus/tufrepo -run XXX -fuzz FuzzArchive -fuzzminimizetime 2s
//
// (Minimising an interesting multi-kilobyte archive with the default 60 s
// looks like a stall: the exec counter does not move meanwhile.)
func FuzzArchive(f *testing.F) {
	roots := []tufrepo.TrustRoot{
		{ID: uuid.MustParse("00000000-0000-0000-0000-000000000001"), JSON: fuzzLineage(f, false).TrustRoot()},
		{ID: uuid.MustParse("00000000-0000-0000-0000-000000000002"), JSON: fuzzLineage(f, true).TrustRoot()},
	}
	opts := tufrepo.Options{MaxExpansion: 1 << 20, MaxMetadata: 64 << 10}
	f.Fuzz(func(t *testing.T, data []byte) {
		// CheckPrefix may refuse early only what the reader refuses too.
		prefixErr := tufrepo.CheckPrefix(data[:min(len(data), tufrepo.PrefixLen)])
		if prefixErr != nil {
			mustBeRefusal(t, prefixErr)
		}
		onDisk, diskErr := fuzzOnDisk(data, roots, opts)
		if diskErr != nil {
			mustBeRefusal(t, diskErr)
		}
		streamed, streamErr := fuzzStreamed(t, data, roots, opts)
		if streamErr != nil {
			mustBeRefusal(t, streamErr)
		}
		switch {
		case (diskErr == nil) != (streamErr == nil):
			t.Fatalf("the paths disagree: on disk %v, streamed %v", diskErr, streamErr)
		case diskErr == nil && fmt.Sprint(onDisk) != fmt.Sprint(streamed):
			t.Fatalf("the paths store different bytes:\non disk  %v\nstreamed %v", onDisk, streamed)
		case diskErr == nil && prefixErr != nil:
			t.Fatalf("CheckPrefix refused an archive the reader accepts: %v", prefixErr)
		}
	})
}

// fuzzOnDisk verifies data as an archive on disk and returns every
// artifact target's hash by name.
func fuzzOnDisk(data []byte, roots []tufrepo.TrustRoot, opts tufrepo.Options) (map[string]string, error) {
	a, err := tufrepo.Open(bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		return nil, err
	}
	v, err := a.Verify(roots, nil)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range v.Targets() {
		h := sha256.New()
		if err := a.CopyTarget(v, name, h, make([]byte, 512)); err != nil {
			return nil, err
		}
		out[name] = fmt.Sprintf("%x", h.Sum(nil))
	}
	return out, nil
}

// fuzzStreamed receives data as an upload and returns every artifact
// target's stored hash by name; the spool must be empty after Close.
func fuzzStreamed(t *testing.T, data []byte, roots []tufrepo.TrustRoot, opts tufrepo.Options) (map[string]string, error) {
	dir := t.TempDir()
	defer func() {
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Fatalf("the spool holds %d files after Close", len(left))
		}
	}()
	r, err := tufrepo.Receive(bytes.NewReader(data), dirSpool(dir), tufrepo.ReceiveOptions{Options: opts})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	v, err := r.Verify(roots, nil)
	if err != nil {
		return nil, err
	}
	stored := map[string]string{}
	for _, b := range r.Blobs() {
		data := b.Data
		if b.Path != "" {
			if data, err = os.ReadFile(b.Path); err != nil {
				t.Fatal(err)
			}
		}
		stored[b.SHA256] = fmt.Sprintf("%x", sha256.Sum256(data))
	}
	out := map[string]string{}
	for _, name := range v.Targets() {
		out[name] = stored[v.TargetSHA256(name)]
	}
	return out, nil
}

func mustBeRefusal(t *testing.T, err error) {
	var e *fault.Error
	if !errors.As(err, &e) || e.Kind != fault.Invalid || e.Code == "" || e.Message == "" {
		t.Fatalf("failure is not a refusal with a code and message: %#v", err)
	}
}

// TestWriteFuzzCorpus regenerates the checked-in seed corpus when
// TUFREPO_WRITE_CORPUS=1; otherwise it checks that the corpus is there
// and that its good seeds still verify (so the corpus keeps reaching the
// deep paths).
func TestWriteFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzArchive")
	plain, consistent := fuzzLineage(t, false), fuzzLineage(t, true)
	seeds := map[string][]byte{}
	add := func(name string, l *tufgen.Lineage, r tufgen.Repo) []byte {
		b, _, err := l.BuildBytes(r)
		if err != nil {
			t.Fatal(err)
		}
		seeds[name] = b
		return b
	}
	good := add("good-plain-v1", plain, tinyRepo(false))
	add("good-consistent-v2", consistent, tinyRepo(true))
	tampered := tinyRepo(false)
	tampered.Defects.TamperTarget = "dir/b.bin"
	add("tampered", plain, tampered)
	extra := tinyRepo(false)
	extra.Defects.ExtraEntries = []tufgen.Entry{{Name: "repo/targets/link", Data: []byte("x"), Mode: fs.ModeSymlink | 0o777},
		{Name: "repo/metadata/timestamp.json", Data: []byte("{}")}}
	add("symlink-and-duplicate", plain, extra)
	seeds["truncated"] = good[:len(good)/2]
	seeds["trailing"] = append(bytes.Clone(good), "junk"...)
	seeds["empty"] = []byte{}
	for _, c := range strictCases() {
		seeds["strict-"+c.name] = c.build(t)
	}
	for _, tool := range realTools {
		seeds["real-"+tool.name] = realFixture(t, tool.name)
	}
	seeds["real-"+tufaceousFixture] = realFixture(t, tufaceousFixture)

	if os.Getenv("TUFREPO_WRITE_CORPUS") == "1" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	for name, b := range seeds {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("seed corpus: %v (regenerate with TUFREPO_WRITE_CORPUS=1 go test -run TestWriteFuzzCorpus)", err)
		}
		if want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b); string(got) != want {
			t.Fatalf("seed %s is stale (regenerate with TUFREPO_WRITE_CORPUS=1 go test -run TestWriteFuzzCorpus)", name)
		}
	}
	roots := []tufrepo.TrustRoot{{ID: uuid.New(), JSON: plain.TrustRoot()}, {ID: uuid.New(), JSON: consistent.TrustRoot()}}
	for _, name := range []string{"good-plain-v1", "good-consistent-v2", "real-infozip", "real-python-stream-zip64",
		"real-" + tufaceousFixture} {
		if _, _, err := verify(seeds[name], roots, nil, tufrepo.Options{}); err != nil {
			t.Fatalf("seed %s does not verify: %v", name, err)
		}
	}
}

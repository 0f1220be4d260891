package depot_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/nexus/depot"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

var (
	shaA = strings.Repeat("a", 64)
	shaB = strings.Repeat("b", 64)
)

func TestPutAndCleanup(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ".tmp-upload-1"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, removed, err := depot.Open(dir)
	if err != nil || removed != 1 {
		t.Fatalf("open: %d removed, %v", removed, err)
	}
	if err := d.Put(shaA, func(w io.Writer) error { _, err := w.Write([]byte("hello")); return err }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("verification failed")
	if err := d.Put(shaB, func(w io.Writer) error { w.Write([]byte("partial")); return boom }); !errors.Is(err, boom) {
		t.Fatalf("failed put: %v", err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{shaA}) {
		t.Fatalf("depot holds %v", got)
	}
	if ok, _ := d.Has(shaA, 5); !ok {
		t.Fatal("Has(A, 5) = false")
	}
	if ok, _ := d.Has(shaA, 6); ok {
		t.Fatal("a file of another length counts as a copy")
	}
	if err := d.Put("../etc/passwd", func(io.Writer) error { return nil }); err == nil {
		t.Fatal("a non-hash name was accepted")
	}
	removedNames, err := d.RemoveExcept(map[string]bool{})
	if err != nil || !slices.Equal(removedNames, []string{shaA}) || len(names(t, dir)) != 0 {
		t.Fatalf("RemoveExcept: %v %v, left %v", removedNames, err, names(t, dir))
	}
}

// A verified temp file of the depot is renamed into place; a file that is
// not one of its temp files is refused and left alone.
func TestAdopt(t *testing.T) {
	d, _, err := depot.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := d.CreateTemp("upload-entry")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("bytes")
	f.Close()
	if err := d.Adopt(shaA, f.Name()); err != nil {
		t.Fatal(err)
	}
	if have, err := d.Has(shaA, 5); !have || err != nil {
		t.Fatalf("adopted artifact: has %v %v", have, err)
	}
	if got := names(t, d.Dir()); !slices.Equal(got, []string{shaA}) {
		t.Fatalf("depot holds %v", got)
	}
	outside := filepath.Join(t.TempDir(), ".tmp-x")
	os.WriteFile(outside, []byte("x"), 0o600)
	inside := filepath.Join(d.Dir(), "not-a-temp")
	os.WriteFile(inside, []byte("x"), 0o600)
	for _, p := range []string{outside, inside} {
		if err := d.Adopt(shaB, p); err == nil {
			t.Errorf("adopted %s", p)
		}
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s is gone after a refused adopt", p)
		}
	}
	if have, _ := d.Has(shaB, 1); have {
		t.Fatal("a refused adopt stored the artifact")
	}
}

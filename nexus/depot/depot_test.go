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

func TestBatch(t *testing.T) {
	d, _, err := depot.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := d.NewBatch()
	for _, sha := range []string{shaA, shaB} {
		if err := b.Put(sha, func(w io.Writer) error { _, err := w.Write([]byte(sha[:4])); return err }); err != nil {
			t.Fatal(err)
		}
	}
	stored, err := b.Wait()
	if err != nil || !slices.Equal(stored, []string{shaA, shaB}) {
		t.Fatalf("wait: %v %v", stored, err)
	}
	if got, _ := d.List(); !slices.Equal(got, []string{shaA, shaB}) {
		t.Fatalf("list: %v", got)
	}

	d2, _, _ := depot.Open(t.TempDir())
	b = d2.NewBatch()
	_ = b.Put(shaA, func(w io.Writer) error { _, err := w.Write([]byte("a")); return err })
	if err := b.Put(shaB, func(io.Writer) error { return errors.New("bad bytes") }); err == nil {
		t.Fatal("failed write reported success")
	}
	b.Abort()
	if got := names(t, d2.Dir()); len(got) != 0 {
		t.Fatalf("aborted batch left %v", got)
	}
}

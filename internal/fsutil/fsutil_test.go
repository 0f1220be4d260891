package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAtomicReplacesAndLeavesNoTemps(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ledger.json")
	for _, content := range []string{"one", "two"} {
		if err := WriteFileAtomic(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != content {
			t.Fatalf("read %q, %v; want %q", b, err, content)
		}
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want just the file", len(entries))
	}
}

func TestWriteFileAtomicFailureKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := WriteFileAtomic(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A directory where the file should go makes the rename fail.
	bad := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(bad, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(bad, []byte("new"), 0o644); err == nil {
		t.Fatal("rename over a non-empty directory succeeded")
	}
	if n, err := RemoveTemps(dir); err != nil || n != 0 {
		t.Fatalf("a failed write left %d temp files (%v)", n, err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Fatalf("unrelated file changed: %q", b)
	}
}

func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{TempPrefix + "a", TempPrefix + "b-123", "keep"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n, err := RemoveTemps(dir)
	if err != nil || n != 2 {
		t.Fatalf("removed %d (%v), want 2", n, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "keep" {
		t.Fatalf("left %v", entries)
	}
	if n, err := RemoveTemps(filepath.Join(dir, "missing")); err != nil || n != 0 {
		t.Fatalf("missing dir: %d, %v", n, err)
	}
}

func TestLoadOrCreateUUID(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "id")
	a, err := LoadOrCreateUUID(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateUUID(p)
	if err != nil || a != b {
		t.Fatalf("second load gave %s (%v), want %s", b, err, a)
	}
	if err := os.WriteFile(p, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateUUID(p); err == nil {
		t.Fatal("a corrupt id file was accepted (or silently replaced)")
	}
}

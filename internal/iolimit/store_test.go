package iolimit

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Every artifact ends up in every directory, whole, with no temp file left.
func TestStoreCopiesStoresEveryCopy(t *testing.T) {
	t.Parallel()
	arts := [][]byte{bytes.Repeat([]byte("a"), 3*chunk+7), []byte("small"), {}}
	root := t.TempDir()
	dirs := []string{filepath.Join(root, "s0", "m2-a"), filepath.Join(root, "s0", "m2-b"), filepath.Join(root, "s1", "m2-a")}
	took, err := StoreCopies(arts, dirs, 2)
	if err != nil {
		t.Fatal(err)
	}
	if took <= 0 {
		t.Errorf("took %s", took)
	}
	for _, d := range dirs {
		for i, want := range arts {
			got, err := os.ReadFile(filepath.Join(d, strconv.Itoa(i)))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s/%d: %d bytes, want %d (%v)", d, i, len(got), len(want), err)
			}
		}
		if tmp, _ := os.ReadDir(filepath.Join(d, "tmp")); len(tmp) != 0 {
			t.Errorf("%s/tmp holds %d leftovers", d, len(tmp))
		}
	}
}

// A directory that cannot be written fails the measurement.
func TestStoreCopiesFailsOnAnUnwritableDir(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	blocker := filepath.Join(root, "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := StoreCopies([][]byte{[]byte("x")}, []string{filepath.Join(blocker, "m2")}, 1); err == nil {
		t.Fatal("storing under a regular file succeeded")
	}
}

// Once copies the file (hashing it on the way) and leaves nothing behind.
func TestOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, bytes.Repeat([]byte("x"), 3*chunk+1), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	took, err := Once(src, dst)
	if err != nil || took <= 0 {
		t.Fatalf("Once: %v %v", took, err)
	}
	if left, _ := os.ReadDir(dst); len(left) != 0 {
		t.Fatalf("Once left %d files", len(left))
	}
	if _, err := Once(filepath.Join(dir, "missing"), dst); err == nil {
		t.Fatal("Once of a missing file succeeded")
	}
}

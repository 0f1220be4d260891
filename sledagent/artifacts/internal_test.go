package artifacts

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
)

// The delete reconciler re-checks the config under its lock right before
// each unlink: a hash listed as unwanted when the directory was read but
// wanted by the time of the unlink is kept.
func TestDeleteRechecksConfigBeforeUnlink(t *testing.T) {
	dir := t.TempDir()
	s, err := New(zerolog.Nop(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.DeviceChanged(dir, true); err != nil {
		t.Fatal(err)
	}
	sha := "0000000000000000000000000000000000000000000000000000000000000001"
	d := newDevice(dir)
	if err := os.WriteFile(filepath.Join(d.dir, sha), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The directory listing saw sha as unwanted; then a config wanting it
	// arrived before the unlink.
	if _, _, err := s.PutConfig(context.Background(), api.ArtifactConfig{Generation: 1, Artifacts: []string{sha}}); err != nil {
		t.Fatal(err)
	}
	if s.deleteIfUnwanted(d, sha) {
		t.Fatal("deleted a hash the config wants")
	}
	if _, err := os.Stat(filepath.Join(d.dir, sha)); err != nil {
		t.Fatal("wanted file is gone")
	}
	if _, _, err := s.PutConfig(context.Background(), api.ArtifactConfig{Generation: 2, Artifacts: []string{}}); err != nil {
		t.Fatal(err)
	}
	if !s.deleteIfUnwanted(d, sha) {
		t.Fatal("kept a hash the config no longer wants")
	}
}

func TestParseContentRange(t *testing.T) {
	for v, want := range map[string][2]int64{
		"bytes 0-9/10":     {0, 10},
		"bytes 100-199/*":  {100, -1},
		"bytes 5-5/123456": {5, 123456},
	} {
		start, size, err := parseContentRange(v)
		if err != nil || start != want[0] || size != want[1] {
			t.Errorf("%q: %d %d %v", v, start, size, err)
		}
	}
	for _, bad := range []string{"", "bytes", "bytes */10", "items 0-1/2", "bytes x-1/2", "bytes 0-1/x"} {
		if _, _, err := parseContentRange(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

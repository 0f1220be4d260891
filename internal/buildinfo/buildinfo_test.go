package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestFromBuildInfo(t *testing.T) {
	vcs := []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
		{Key: "vcs.time", Value: "2026-03-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}
	for _, c := range []struct {
		name   string
		linked string
		bi     *debug.BuildInfo
		want   string
	}{
		{"no build info", "", nil, "dev"},
		{"linked version, no build info", "v1.4.0", nil, "v1.4.0"},
		{"a checkout build", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs},
			"dev (commit 0123456789ab+changes, 2026-03-01T10:00:00Z, go1.26.8)"},
		{"the link-time version wins", "v1.4.0", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.3.9"}},
			"v1.4.0 (go1.26.8)"},
		{"go install of a tagged module", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.3.9"}},
			"v1.3.9 (go1.26.8)"},
	} {
		if got := fromBuildInfo(c.linked, c.bi).String(); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	i := fromBuildInfo("", &debug.BuildInfo{Settings: vcs})
	if !i.CommitTime.Equal(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)) || !i.Modified || i.ShortCommit() != "0123456789ab+changes" {
		t.Errorf("%+v", i)
	}
}

// The test binary is a real build: Read finds the toolchain's record.
func TestReadThisBinary(t *testing.T) {
	i := Read()
	if i.Version == "" || !strings.HasPrefix(i.GoVersion, "go") {
		t.Fatalf("%+v", i)
	}
	if got := Line("nexus"); !strings.HasPrefix(got, "nexus "+i.Version) {
		t.Fatalf("%q", got)
	}
}

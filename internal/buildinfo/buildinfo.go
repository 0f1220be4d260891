// Package buildinfo says which build of rackplane is running: a release
// version set at link time, and the commit, its time and the Go version
// the toolchain recorded in the binary. Every binary prints it for
// --version; Nexus shows it in /healthz (to operators), as a metric and in
// the status pages' footer.
package buildinfo

import (
	"fmt"
	"runtime/debug"
	"strings"
	"time"
)

// version is the release version, set by the release build:
//
//	go build -ldflags "-X github.com/rackplane/rackplane/internal/buildinfo.version=v1.4.0" ./cmd/...
var version string

// DevVersion is the version of a build that says nothing better: a
// go run, go test or plain go build from a checkout.
const DevVersion = "dev"

// Info describes one build.
type Info struct {
	// Version is the link-time version, else the module version the Go
	// toolchain recorded (go install of a tagged module), else DevVersion.
	Version string
	// Commit is the VCS revision the binary was built from ("" when the
	// toolchain recorded none: go run, go test, a build outside a
	// checkout); Modified is set when the checkout had local changes.
	Commit     string
	CommitTime time.Time
	Modified   bool
	// GoVersion is the toolchain that built the binary.
	GoVersion string
}

// Read returns this binary's build information.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return fromBuildInfo(version, nil)
	}
	return fromBuildInfo(version, bi)
}

// fromBuildInfo is Read's logic on given inputs, for tests.
func fromBuildInfo(linked string, bi *debug.BuildInfo) Info {
	out := Info{Version: linked}
	if bi == nil {
		if out.Version == "" {
			out.Version = DevVersion
		}
		return out
	}
	out.GoVersion = bi.GoVersion
	if out.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		out.Version = bi.Main.Version
	}
	if out.Version == "" {
		out.Version = DevVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			out.Commit = s.Value
		case "vcs.time":
			out.CommitTime, _ = time.Parse(time.RFC3339, s.Value)
		case "vcs.modified":
			out.Modified = s.Value == "true"
		}
	}
	return out
}

// ShortCommit is the commit's first 12 hex digits, with "+changes" when
// the checkout was modified; "" without a commit.
func (i Info) ShortCommit() string {
	c := i.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if c != "" && i.Modified {
		c += "+changes"
	}
	return c
}

// String is the one-line form --version prints, e.g.
// "v1.4.0 (commit 0123456789ab, 2026-03-01T10:00:00Z, go1.26.8)".
func (i Info) String() string {
	var parts []string
	if c := i.ShortCommit(); c != "" {
		parts = append(parts, "commit "+c)
	}
	if !i.CommitTime.IsZero() {
		parts = append(parts, i.CommitTime.UTC().Format(time.RFC3339))
	}
	if i.GoVersion != "" {
		parts = append(parts, i.GoVersion)
	}
	if len(parts) == 0 {
		return i.Version
	}
	return fmt.Sprintf("%s (%s)", i.Version, strings.Join(parts, ", "))
}

// Line is what a binary prints for --version: its name and String.
func Line(binary string) string { return binary + " " + Read().String() }

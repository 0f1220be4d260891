package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/internal/buildinfo"
)

// The smoke mode CI runs: a real PostgreSQL, Nexus and sleds come up, every
// sled registers, and everything is removed afterwards.
func TestSmoke(t *testing.T) {
	var out, errOut bytes.Buffer
	dataDir := keptDataDir(t)
	code := run([]string{"--smoke", "--sleds", "3", "--data-dir", dataDir}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	s := out.String()
	for _, want := range []string{"smoke: ok", "every sled holds the demo repo on each M.2", "nexus external API", "sled-2", "rackctl --nexus http://127.0.0.1:",
		"demo repo 1.0.0 inserted (22 artifacts, 12 of them parts of its 6 composites)", "repo list", "a fresh rack; PostgreSQL keeps its data in " + dataDir + "/postgres",
		"demo release and its root", dataDir + "/demo/root.json",
		"trust-quorum epoch 1 committed on 3 sleds over the bootstrap network", "handed to Nexus", "sled-0 SIM-0001", "bootstrap 127.0.0.1:", "rack CA and certificates"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	// A data dir the user named is kept, with every component's log.
	for _, f := range []string{"logs/nexus.log", "logs/sled-0.log", "logs/sled-2.log", "sled-1/u2-a/disk.json", "sled-1/u2-b/sled-state.sealed", "demo/root.json", "demo/demo-repo-1.0.0.zip",
		"pki/ca.crt", "pki/ca.key", "pki/sled-2/sled.crt", "pki/rss/rss.key", "rack-id", "postgres/PG_VERSION", "logs/postgres.log",
		"sled-0/m2-a/bootstrap/trust-quorum.json", "sled-2/m2-b/bootstrap/trust-quorum.json"} {
		if _, err := os.Stat(dataDir + "/" + f); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
}

// A kept data dir runs again: the rack CA is reused and the rack, set up
// already, is not set up twice. The second run serves the external API
// over HTTPS (--tls): rackdev's own checks and the demo upload go through
// it, and the commands it suggests name the CA to trust.
func TestSmokeAgainOnAKeptDataDir(t *testing.T) {
	dataDir := keptDataDir(t)
	for run := range 2 {
		var out, errOut bytes.Buffer
		var extra []string
		if run == 1 {
			extra = []string{"--tls"}
		}
		if code := run_(dataDir, &out, &errOut, extra...); code != 0 {
			t.Fatalf("run %d: exit %d\nstdout:\n%s\nstderr:\n%s", run, code, out.String(), errOut.String())
		}
		// The first run sets the rack up and hands it to Nexus; the second
		// resumes the same database, so the rack is set up already.
		wants := []string{"trust-quorum epoch 1 committed on 3 sleds", "handed to Nexus"}
		if run == 1 {
			wants = []string{"resuming the rack kept in", "the rack is set up already (trust-quorum epoch 1 committed)"}
		}
		for _, w := range wants {
			if !strings.Contains(out.String(), w) {
				t.Fatalf("run %d lacks %q:\n%s", run, w, out.String())
			}
		}
		if run == 1 {
			if !regexp.MustCompile(`nexus external API +https://127\.0\.0\.1:`).MatchString(out.String()) {
				t.Errorf("--tls: the external API is not listed as https:\n%s", out.String())
			}
			for _, want := range []string{"--ca-cert " + dataDir + "/pki/ca.crt",
				"curl --cacert " + dataDir + "/pki/ca.crt"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("--tls output lacks %q:\n%s", want, out.String())
				}
			}
		}
	}
}

// keptDataDir is a data dir the test keeps, inside the test's temp dir
// made enterable (not listable) by others: run as root, rackdev's
// PostgreSQL runs as the postgres user, which must reach its data there.
func keptDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "rack")
}

func run_(dataDir string, out, errOut *bytes.Buffer, extra ...string) int {
	return run(append([]string{"--smoke", "--sleds", "3", "--data-dir", dataDir}, extra...), out, errOut)
}

func TestBadFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--sleds", "0"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "--sleds") {
		t.Fatalf("exit %d, %q", code, errOut.String())
	}
}

func TestVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "rackdev "+buildinfo.Read().Version) {
		t.Fatalf("exit %d, %q, %q", code, out.String(), errOut.String())
	}
}

package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// The smoke mode CI runs: a real PostgreSQL, Nexus and sleds come up, every
// sled registers, and everything is removed afterwards.
func TestSmoke(t *testing.T) {
	var out, errOut bytes.Buffer
	dataDir := t.TempDir() + "/rack"
	code := run([]string{"--smoke", "--sleds", "3", "--data-dir", dataDir}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	s := out.String()
	for _, want := range []string{"smoke: ok", "every sled holds the demo repo on each M.2", "nexus external API", "sled-2", "rackctl --nexus http://127.0.0.1:",
		"demo repo 1.0.0 inserted (22 artifacts, 12 of them parts of its 6 composites)", "repo list",
		"trust-quorum epoch 1 committed on 3 sleds over the bootstrap network", "sled-0 SIM-0001", "bootstrap 127.0.0.1:", "rack CA and certificates"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	// A data dir the user named is kept, with every component's log.
	for _, f := range []string{"logs/nexus.log", "logs/sled-0.log", "logs/sled-2.log", "sled-1/sled-id", "demo/root.json", "demo/demo-repo-1.0.0.zip",
		"pki/ca.crt", "pki/ca.key", "pki/sled-2/sled.crt", "pki/rss/rss.key", "rack-id",
		"sled-0/m2-a/bootstrap/trust-quorum.json", "sled-2/m2-b/bootstrap/trust-quorum.json"} {
		if _, err := os.Stat(dataDir + "/" + f); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
}

// A kept data dir runs again: the rack CA is reused and the rack, set up
// already, is not set up twice.
func TestSmokeAgainOnAKeptDataDir(t *testing.T) {
	dataDir := t.TempDir() + "/rack"
	for run := range 2 {
		var out, errOut bytes.Buffer
		if code := run_(dataDir, &out, &errOut); code != 0 {
			t.Fatalf("run %d: exit %d\nstdout:\n%s\nstderr:\n%s", run, code, out.String(), errOut.String())
		}
		if !strings.Contains(out.String(), "trust-quorum epoch 1 committed on 3 sleds") {
			t.Fatalf("run %d:\n%s", run, out.String())
		}
	}
}

func run_(dataDir string, out, errOut *bytes.Buffer) int {
	return run([]string{"--smoke", "--sleds", "3", "--data-dir", dataDir}, out, errOut)
}

func TestBadFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--sleds", "0"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "--sleds") {
		t.Fatalf("exit %d, %q", code, errOut.String())
	}
}

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
		"demo repo 1.0.0 inserted (4 artifacts)", "repo list"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	// A data dir the user named is kept, with every component's log.
	for _, f := range []string{"logs/nexus.log", "logs/sled-0.log", "logs/sled-2.log", "sled-1/sled-id", "demo/root.json", "demo/demo-repo-1.0.0.zip"} {
		if _, err := os.Stat(dataDir + "/" + f); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
}

func TestBadFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--sleds", "0"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "--sleds") {
		t.Fatalf("exit %d, %q", code, errOut.String())
	}
}

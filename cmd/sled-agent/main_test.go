package main

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/internal/buildinfo"
	"github.com/rackplane/rackplane/internal/rackpki"
)

func issue(t *testing.T, serial string) string {
	t.Helper()
	dir := t.TempDir()
	ca, err := rackpki.InitCA(filepath.Join(dir, "ca"), "test", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.IssueFiles(filepath.Join(dir, "sled"), "sled", rackpki.Sled("rackplane-sim", serial), rackpki.IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "sled")
}

// The sled's baseboard is its certificate's; a flag that says otherwise
// is refused before anything starts.
func TestBaseboardMustMatchTheCertificate(t *testing.T) {
	tls := issue(t, "SIM-0001")
	for _, args := range [][]string{
		{"--baseboard-serial", "SIM-0002"},
		{"--baseboard-part", "other-part"},
	} {
		var stderr bytes.Buffer
		args = append(args, "--data-dir", t.TempDir(), "--tls-dir", tls, "--bootstrap-listen", "127.0.0.1:0",
			"--listen", "127.0.0.1:0", "--repo-depot-listen", "127.0.0.1:0")
		if code := run(context.Background(), args, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "disagrees with the sled's certificate") {
			t.Fatalf("%v: exit %d, %s", args, code, stderr.String())
		}
	}
}

func TestBootstrapFlagsNeedACertificate(t *testing.T) {
	for _, args := range [][]string{
		{"--bootstrap-only"},
		{"--bootstrap-peers", "127.0.0.1:1"},
		{"--api-mtls"},
		{"--tls-cert", "x.crt"},
		{"--tls-dir", "d", "--tls-ca", "ca.crt"},
	} {
		var stderr bytes.Buffer
		args = append(args, "--data-dir", t.TempDir())
		if code := run(context.Background(), args, io.Discard, &stderr); code != 2 {
			t.Fatalf("%v: exit %d, %s", args, code, stderr.String())
		}
	}
}

func TestVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"--version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "sled-agent "+buildinfo.Read().Version) {
		t.Fatalf("exit %d, %q, %q", code, out.String(), errOut.String())
	}
}

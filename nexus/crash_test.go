package nexus_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/nexus/depot"
)

// nexusProcess is cmd/nexus running as a child process, so it can be
// killed without a chance to clean up.
type nexusProcess struct {
	cmd    *exec.Cmd
	url    string
	log    *bytes.Buffer
	client client.Nexus
}

func buildNexus(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nexus")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/rackplane/rackplane/cmd/nexus").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/nexus: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startNexusProcess(t *testing.T, bin, dbURL, dataDir string, id uuid.UUID) *nexusProcess {
	t.Helper()
	addr := freeAddr(t)
	p := &nexusProcess{url: "http://" + addr, log: &bytes.Buffer{}}
	// The Nexus certificate is made as a deployment makes it.
	pki := filepath.Join(dataDir, "pki")
	for _, args := range [][]string{
		{"pki", "init", "--dir", filepath.Join(pki, "ca")},
		{"pki", "issue", "--ca-dir", filepath.Join(pki, "ca"), "--out", filepath.Join(pki, "nexus"), "--nexus", id.String()},
	} {
		if _, err := os.Stat(filepath.Join(pki, "nexus")); err == nil {
			break // kept from an earlier start on the same data dir
		}
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("nexus %v: %v\n%s", args, err, out)
		}
	}
	p.cmd = exec.Command(bin, "--database-url", dbURL, "--data-dir", dataDir, "--id", id.String(),
		"--external-addr", addr, "--internal-addr", "127.0.0.1:0", "--log-level", "info",
		"--tls-dir", filepath.Join(pki, "nexus"))
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("nexus log:\n%s", p.log.String())
		}
	})
	// The token is made the way an operator's first one is.
	out, err := exec.Command(bin, "token", "create", "--database-url", dbURL, "--name", "crash-test").Output()
	if err != nil {
		t.Fatalf("nexus token create: %v", err)
	}
	p.client, err = client.NewNexus(p.url, &http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	p.client = p.client.WithToken(strings.TrimSpace(string(out)))
	racktest.WaitFor(t, 30*time.Second, "nexus to answer", func() error {
		_, err := p.client.Health(context.Background())
		return err
	})
	return p
}

func (p *nexusProcess) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

// Nexus killed -9 in the middle of an upload (while the body streams in
// and its entries are landing in the depot's temp files, and again after
// the verified artifacts are renamed into place but before the row that
// records them commits) leaves no row, and after a restart no file; the
// same upload then succeeds.
func TestCrashMidUpload(t *testing.T) {
	t.Parallel()
	bin := buildNexus(t)
	db := testdb.New(t)
	dataDir := t.TempDir()
	depotDir := filepath.Join(dataDir, "depot")
	id := uuid.New()
	ctx := context.Background()

	l := newLineage(t, 30, tufgen.LineageOptions{})
	zipPath := filepath.Join(t.TempDir(), "big.zip")
	built, err := l.BuildFile(zipPath, tufgen.Sized("1.0.0", 96<<20, 24, 5))
	if err != nil {
		t.Fatal(err)
	}
	noRows := func(when string) {
		t.Helper()
		for _, table := range []string{"tuf_repo", "tuf_artifact", "tuf_repo_artifact", "tuf_artifact_part", "nexus_artifact_copy"} {
			var n int
			if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Fatalf("%s: %d rows in %s", when, n, table)
			}
		}
	}
	depotNames := func() []string {
		entries, _ := os.ReadDir(depotDir)
		var out []string
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}
	// tempBytes is what the upload's temp files hold so far.
	tempBytes := func() int64 {
		var n int64
		for _, name := range depotNames() {
			if fi, err := os.Stat(filepath.Join(depotDir, name)); err == nil && strings.HasPrefix(name, ".tmp-upload") {
				n += fi.Size()
			}
		}
		return n
	}

	nx := startNexusProcess(t, bin, db.URL, dataDir, id)
	root := l.TrustRoot()
	if _, _, err := nx.client.TrustRootAdd(ctx, root); err != nil {
		t.Fatal(err)
	}

	// 1. Killed while the body streams in: send part of it, wait until
	// Nexus has written it to its entries' temp files, kill.
	pr, pw := io.Pipe()
	uploadDone := make(chan error, 1)
	go func() {
		_, err := nx.client.RepoUpload(ctx, "big.zip", pr, built.Size, nil)
		uploadDone <- err
	}()
	f, err := os.Open(zipPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(pw, f, 8<<20); err != nil {
		t.Fatal(err)
	}
	racktest.WaitFor(t, 20*time.Second, "the upload's temp files to fill", func() error {
		// The last bytes sent may still be in Nexus's read buffer.
		if n := tempBytes(); n < 7<<20 {
			return fmt.Errorf("temp files hold %d bytes; depot holds %v", n, depotNames())
		}
		return nil
	})
	nx.kill(t)
	pw.CloseWithError(io.ErrClosedPipe)
	if err := <-uploadDone; err == nil {
		t.Fatal("the upload succeeded although Nexus was killed")
	}
	noRows("after kill mid-body")
	if tempBytes() == 0 {
		t.Fatal("the kill left no temp files; the case proves nothing")
	}

	// 2. Killed between storing and recording: the whole body is there,
	// verified, and the artifacts renamed into place, but the transaction
	// that records them cannot commit while the test holds a lock on the
	// table it writes; kill as soon as the first artifact is in place.
	nx = startNexusProcess(t, bin, db.URL, dataDir, id)
	if names := depotNames(); len(names) != 0 {
		t.Fatalf("after restart the depot still holds %v", names)
	}
	lock, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec(ctx, "LOCK TABLE tuf_repo_artifact IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	go func() {
		f, err := os.Open(zipPath)
		if err != nil {
			uploadDone <- err
			return
		}
		defer f.Close()
		_, err = nx.client.RepoUpload(ctx, "big.zip", f, built.Size, nil)
		uploadDone <- err
	}()
	var stray string
	racktest.WaitFor(t, 30*time.Second, "an artifact to be renamed into place", func() error {
		for _, name := range depotNames() {
			if depot.ValidHash(name) {
				stray = name
				return nil
			}
		}
		return fmt.Errorf("depot holds %v", depotNames())
	})
	nx.kill(t)
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-uploadDone; err == nil {
		t.Fatal("the upload succeeded although Nexus was killed before recording it")
	}
	noRows("after kill before recording")
	if _, err := os.Stat(filepath.Join(depotDir, stray)); err != nil {
		t.Fatalf("the artifact seen before the kill is gone already: %v", err)
	}

	// 3. Restart: start-up removes the artifacts nobody recorded; the
	// same upload now succeeds.
	nx = startNexusProcess(t, bin, db.URL, dataDir, id)
	if names := depotNames(); len(names) != 0 {
		t.Fatalf("after restart the depot still holds %v", names)
	}
	noRows("after restart")
	f2, err := os.Open(zipPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	res, err := nx.client.RepoUpload(ctx, "big.zip", f2, built.Size, nil)
	if err != nil || res.Status != api.UploadInserted || res.Repo.ArtifactCount != 24 {
		t.Fatalf("upload after crashes: %+v %v", res, err)
	}
	if names := depotNames(); len(names) != 24 {
		t.Fatalf("depot holds %d files after the upload, want 24: %v", len(names), names)
	}
}

// Local copies the database records but the depot lacks (a database
// restored from a backup taken while Nexus held copies it has since
// dropped, or a lost data dir) are forgotten when Nexus starts, so no
// sled is sent to fetch them there, and a repo left without any holder
// is marked degraded rather than believed safe.
func TestStartupForgetsLocalCopiesTheDepotLacks(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	cfg := nexus.Config{TaskPeriods: map[string]time.Duration{tufreplication.Name: time.Hour}}
	nx := racktest.StartNexus(t, db.URL, cfg)
	l := newLineage(t, 62, tufgen.LineageOptions{})
	if _, _, err := nx.Client.TrustRootAdd(ctx, l.TrustRoot()); err != nil {
		t.Fatal(err)
	}
	archive, built := buildRepo(t, l, tufgen.Demo("1.0.0"))
	if _, err := nx.Client.RepoUpload(ctx, "repo.zip", bytes.NewReader(archive), int64(len(archive)), nil); err != nil {
		t.Fatal(err)
	}
	rows := func() int {
		return db.Count(t, `SELECT count(*) FROM nexus_artifact_copy WHERE nexus_id = $1`, nx.ID())
	}
	if n := rows(); n != len(built.Artifacts) {
		t.Fatalf("%d local copies recorded after the upload, want %d", n, len(built.Artifacts))
	}
	id, depotDir := nx.ID(), nx.Depot().Dir()
	nx.Stop()
	lost := built.Artifacts[0].SHA256
	if err := os.Remove(filepath.Join(depotDir, lost)); err != nil {
		t.Fatal(err)
	}
	cfg.ID, cfg.DataDir = id, filepath.Dir(depotDir)
	nx = racktest.StartNexus(t, db.URL, cfg)
	if n := rows(); n != len(built.Artifacts)-1 {
		t.Fatalf("%d local copies recorded after the restart, want %d", n, len(built.Artifacts)-1)
	}
	if n := db.Count(t, `SELECT count(*) FROM nexus_artifact_copy WHERE sha256 = $1`, lost); n != 0 {
		t.Fatalf("the lost copy is still recorded")
	}
	racktest.WaitFor(t, 20*time.Second, "the repo to be marked degraded", func() error {
		if _, err := nx.Client.BackgroundTaskActivate(ctx, tufreplication.Name); err != nil {
			return err
		}
		got, err := nx.Client.RepoGet(ctx, "1.0.0")
		if err != nil {
			return err
		}
		if got.Repo.State != api.RepoStateDegraded || !strings.Contains(got.Repo.StateReason, lost[:12]) {
			return fmt.Errorf("state %s (%s)", got.Repo.State, got.Repo.StateReason)
		}
		return nil
	})
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
)

// uploadsAudited counts the upload attempts Nexus recorded.
func uploadsAudited(t *testing.T, nx *racktest.Nexus) int {
	t.Helper()
	entries, err := nx.Client.AuditLog(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.Action == "repo.upload" {
			n++
		}
	}
	return n
}

// A file that is not a zip is refused before a byte is sent: Nexus
// records no upload attempt, where the same bytes sent anyway are one.
func TestUploadRefusesNonZipLocally(t *testing.T) {
	t.Parallel()
	nx := racktest.StartRack(t, racktest.RackConfig{Seed: 6}).Nexus // a root: Nexus reads what is sent
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"notes.zip":     []byte("release notes\n"),
		"empty.zip":     nil,
		"truncated.zip": []byte("PK\x03\x04\x14\x00\x00\x00 and the rest is missing"),
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := rackctl(t, "--nexus", nx.ExternalURL(), "--token", nx.AdminToken, "repo", "upload", path)
		if code != 1 || out != "" || !strings.Contains(errOut, path) || strings.Contains(errOut, "upload: sending") {
			t.Errorf("%s: exit %d %q %q", name, code, out, errOut)
		}
	}
	if n := uploadsAudited(t, nx); n != 0 {
		t.Fatalf("%d upload attempt(s) reached Nexus", n)
	}
	data := []byte("release notes\n")
	_, err := nx.Client.RepoUpload(context.Background(), "notes.zip", bytes.NewReader(data), int64(len(data)), nil)
	if code := client.ErrorCode(err); code != api.CodeNotAZip {
		t.Fatalf("sent anyway: %v", err)
	}
	if n := uploadsAudited(t, nx); n != 1 {
		t.Fatalf("the refused upload sent anyway: %d audit rows, want 1", n)
	}
}

// The progress bar is drawn only on a terminal: through a pseudo-terminal
// the real binary redraws one line with \r and shows elapsed time in each
// phase; with stderr a pipe it prints plain lines; under --json nothing.
func TestUploadProgressBarOnlyOnATerminal(t *testing.T) {
	t.Parallel()
	rk := racktest.StartRack(t, racktest.RackConfig{Seed: 4})
	nx := rk.Nexus
	dir := t.TempDir()
	build := func(v string) string {
		zip := filepath.Join(dir, "release-"+v+".zip")
		if _, err := rk.Lineage.BuildFile(zip, tufgen.Sized(v, 2<<20, 2, 100*uint64(v[0]))); err != nil {
			t.Fatal(err)
		}
		return zip
	}
	env := []string{"RACKPLANE_NEXUS_URL=" + nx.ExternalURL(), "RACKPLANE_TOKEN=" + nx.AdminToken}

	tty, done := openPTY(t)
	cmd := exec.Command(os.Args[0], "repo", "upload", build("1.0.0"))
	cmd.Env = append([]string{asMain + "=1", "HOME=" + t.TempDir()}, env...)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, tty
	if err := cmd.Run(); err != nil {
		t.Fatalf("upload on a terminal: %v (%s)", err, done())
	}
	term := done()
	if stdout.String() != "system version 1.0.0 uploaded (2 artifacts, generation 2); replication to the sleds has started\n" {
		t.Errorf("stdout: %q", stdout.String())
	}
	if !strings.HasPrefix(term, "\r[") || !regexp.MustCompile(`\r\[#{30}\] 100\.0% 2\.0 MiB sent in \d+m?s; Nexus verifying for \d+m?s *\r\n$`).MatchString(term) ||
		strings.Contains(term, "upload: ") {
		t.Errorf("terminal: %q", term)
	}

	code, out, errOut := rackctlMain(t, env, "repo", "upload", build("2.0.0"))
	if code != 0 || !strings.Contains(out, "system version 2.0.0 uploaded") || strings.Contains(errOut, "\r") ||
		!strings.HasPrefix(errOut, "upload: sending 2.0 MiB\n") || !strings.Contains(errOut, "upload: all 2.0 MiB sent in ") {
		t.Errorf("pipe: exit %d %q %q", code, out, errOut)
	}

	code, out, errOut = rackctlMain(t, env, "--json", "repo", "upload", build("3.0.0"))
	var res api.TufRepoUpload
	if code != 0 || errOut != "" || json.Unmarshal([]byte(out), &res) != nil || res.Repo.SystemVersion != "3.0.0" ||
		res.Status != api.UploadInserted {
		t.Errorf("--json: exit %d %q %q", code, out, errOut)
	}
}

// While Nexus verifies (no byte moving), the bar keeps counting the time,
// and plain lines say every verifyingEvery that it is still at it.
func TestProgressShowsTimeWhileVerifying(t *testing.T) {
	t.Parallel()
	for _, terminal := range []bool{true, false} {
		f := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
		var buf bytes.Buffer
		e := &env{errOut: &buf, clock: f, terminal: terminal}
		p := newProgress(e, "upload", 4<<20)
		p.start()
		waitWaiters(t, f, 1)
		// A tick, then a while later (the bar is redrawn at most every
		// 200ms) a quarter of the bytes.
		f.Advance(1500 * time.Millisecond)
		waitWaiters(t, f, 1)
		f.Advance(500 * time.Millisecond)
		p.sent(1<<20, 4<<20)
		f.Advance(2 * time.Second)
		waitWaiters(t, f, 1)
		p.sent(4<<20, 4<<20)
		for range 16 {
			waitWaiters(t, f, 1)
			f.Advance(time.Second)
		}
		waitWaiters(t, f, 1)
		p.finish(true)
		got := buf.String()
		if terminal {
			for _, want := range []string{
				"\r[#######-----------------------]  25.0% 1.0 MiB/4.0 MiB 512.0 KiB/s, 2s elapsed, about 6s left",
				"\r[##############################] 100.0% 4.0 MiB sent in 4s; Nexus verifying for 1s",
				"\r[##############################] 100.0% 4.0 MiB sent in 4s; Nexus verifying for 16s",
			} {
				if !strings.Contains(got, want) {
					t.Errorf("bar lacks %q:\n%q", want, got)
				}
			}
			if !strings.HasSuffix(got, "\n") || strings.Count(got, "\n") != 1 {
				t.Errorf("bar does not end its one line: %q", got)
			}
			continue
		}
		want := "upload: sending 4.0 MiB\n" +
			"upload: 25% sent (1.0 MiB of 4.0 MiB), 2s elapsed\n" +
			"upload: all 4.0 MiB sent in 4s; Nexus is verifying the release\n" +
			"upload: Nexus is still verifying, 15s since the last byte (19s in all)\n" +
			"upload: done in 20s\n"
		if got != want {
			t.Errorf("lines:\n%s\nwant:\n%s", got, want)
		}
	}
}

// waitWaiters waits until the fake clock has n timers armed: the
// progress goroutine is back waiting for its next tick.
func waitWaiters(t *testing.T, f *clock.Fake, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.Waiters() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d timers armed, want %d", f.Waiters(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// --wait follows replication until every sled holds every artifact on
// both M.2s (checked on the sleds' disks), and gives up with a clear
// error when it cannot converge in time.
func TestUploadWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rk := racktest.StartRack(t, racktest.RackConfig{Sleds: 2, Seed: 5})
	nx := rk.Nexus
	dir := t.TempDir()
	zip := filepath.Join(dir, "release-1.0.0.zip")
	built, err := rk.Lineage.BuildFile(zip, tufgen.Demo("1.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"RACKPLANE_NEXUS_URL=" + nx.ExternalURL(), "RACKPLANE_TOKEN=" + nx.AdminToken}
	code, out, errOut := rackctlMain(t, env, "repo", "upload", "--wait", zip)
	if code != 0 || !regexp.MustCompile(`^system version 1\.0\.0 uploaded \(4 artifacts, generation \d+\); replication to the sleds has started\n`+
		`system version 1\.0\.0 replicated in \d+m?s: 4 of 4 artifacts on every M\.2 of all 2 sleds\n$`).MatchString(out) ||
		!regexp.MustCompile(`\nreplication: 4 of 4 artifacts on every M\.2 of all 2 sleds, \d+m?s elapsed\n$`).MatchString(errOut) {
		t.Fatalf("--wait: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, s := range rk.Sleds {
		for _, a := range built.Artifacts {
			if n := racktest.CopiesOn(s, a.SHA256); n != 2 {
				t.Errorf("after --wait, sled %s holds %s on %d M.2(s), want 2", s.ID(), a.Name, n)
			}
		}
	}

	// Replication switched off: the wait cannot end well, and says so.
	if _, err := nx.Client.BackgroundTaskSetEnabled(ctx, tufreplication.Name, false); err != nil {
		t.Fatal(err)
	}
	zip2 := filepath.Join(dir, "release-2.0.0.zip")
	if _, err := rk.Lineage.BuildFile(zip2, tufgen.Demo("2.0.0")); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = rackctlMain(t, env, "--json", "repo", "upload", "--wait", "--wait-timeout", "2s", zip2)
	var body struct {
		Error report `json:"error"`
	}
	if code != 1 || out != "" || json.Unmarshal([]byte(errOut), &body) != nil || body.Error.Code != "not_converged" ||
		!strings.Contains(body.Error.Message, "system version 2.0.0 is not on every sled after 2s (waiting for Nexus's replication task") {
		t.Fatalf("--wait without replication: exit %d %q %q", code, out, errOut)
	}
}

// repo uploads shows an upload while Nexus receives it (file, sender,
// phase, bytes of the declared length) and nothing once it is done.
func TestRepoUploadsInProgress(t *testing.T) {
	t.Parallel()
	nx := racktest.StartNexus(t, testdb.New(t).URL, nexus.Config{})
	ctx := context.Background()
	l, err := tufgen.NewLineage(rand.NewChaCha8([32]byte{9}), tufgen.LineageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := nx.Client.TrustRootAdd(ctx, l.TrustRoot()); err != nil {
		t.Fatal(err)
	}
	archive, _, err := l.BuildBytes(tufgen.Sized("1.0.0", 1<<20, 2, 1))
	if err != nil {
		t.Fatal(err)
	}
	streaming, err := client.NewNexus(nx.ExternalURL(), &http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	body, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := streaming.WithToken(nx.AdminToken).RepoUpload(ctx, "slow-1.0.0.zip", body, int64(len(archive)), nil)
		done <- err
	}()
	half := len(archive) / 2
	if _, err := w.Write(archive[:half]); err != nil {
		t.Fatal(err)
	}
	racktest.WaitFor(t, 10*time.Second, "Nexus to receive half the upload", func() error {
		list, err := nx.Client.UploadList(ctx)
		if err != nil {
			return err
		}
		if len(list.Items) != 1 || list.Items[0].BytesReceived < int64(half) {
			return fmt.Errorf("uploads: %+v", list.Items)
		}
		return nil
	})
	env := []string{"RACKPLANE_NEXUS_URL=" + nx.ExternalURL(), "RACKPLANE_TOKEN=" + nx.AdminToken}
	code, out, errOut := rackctlMain(t, env, "repo", "uploads")
	if code != 0 || !regexp.MustCompile(`\nslow-1\.0\.0\.zip +racktest-admin +receiving for \S+ +\S+ KiB of 1\.0 MiB \(\d\d%\) +\S+ ago +- \(not verified yet\) +\S+\n`+
		`1 upload\(s\) in progress on Nexus [0-9a-f-]{36}\n$`).MatchString(out) {
		t.Fatalf("repo uploads during an upload: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = rackctlMain(t, env, "repo", "uploads", "--json")
	var list api.TufUploadList
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Items) != 1 || list.Items[0].Phase != api.UploadPhaseReceiving ||
		list.Items[0].ContentLength != int64(len(archive)) {
		t.Fatalf("repo uploads --json: exit %d\n%s", code, out)
	}
	if _, err := w.Write(archive[half:]); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	code, out, _ = rackctlMain(t, env, "repo", "uploads")
	if code != 0 || !strings.HasPrefix(out, "no upload in progress on Nexus ") {
		t.Fatalf("repo uploads after the upload: exit %d\n%s", code, out)
	}
}

// How uploads in progress read, at a fixed time, against
// testdata/uploads/in_progress.golden.
func TestUploadsRendering(t *testing.T) {
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	list := api.TufUploadList{NexusID: uuid.MustParse("6f1f1c1e-0000-4000-8000-00000000000a"), Items: []api.TufUpload{{
		ID: uuid.MustParse("6f1f1c1e-0000-4000-8000-000000000001"), FileName: "release-2.0.0.zip", Actor: "release-bot",
		RequestID: "0123456789abcdef", TimeStarted: now.Add(-90 * time.Second), Phase: api.UploadPhaseReceiving,
		TimePhaseStarted: now.Add(-90 * time.Second), BytesReceived: 3 << 30, ContentLength: 4 << 30,
	}, {
		ID: uuid.MustParse("6f1f1c1e-0000-4000-8000-000000000002"), FileName: "release-1.9.1.zip", Actor: "alice",
		TimeStarted: now.Add(-5 * time.Minute), Phase: api.UploadPhaseVerifying, TimePhaseStarted: now.Add(-40 * time.Second),
		BytesReceived: 1536 << 20, ContentLength: -1, SystemVersion: "1.9.1",
	}}}
	var out bytes.Buffer
	if err := printUploads(&out, list, now); err != nil {
		t.Fatal(err)
	}
	golden(t, "uploads/in_progress", out.String())
}

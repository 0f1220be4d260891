package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/artifacts"
)

// slowRelay forwards TCP connections to a target, passing what the target
// sends back at a bounded rate and counting it: a slow link between two
// sleds (TLS runs end to end through it).
type slowRelay struct {
	ln     net.Listener
	target string
	rate   int64 // bytes per second, toward the client
	down   atomic.Int64
}

func startSlowRelay(t *testing.T, target string, rate int64) *slowRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &slowRelay{ln: ln, target: target, rate: rate}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); r.serve(c) }()
		}
	}()
	return r
}

func (r *slowRelay) serve(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", r.target)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	buf := make([]byte, 32<<10)
	start, sent := time.Now(), int64(0)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
			sent += int64(n)
			r.down.Add(int64(n))
			if due := time.Duration(float64(sent) / float64(r.rate) * float64(time.Second)); due > time.Since(start) {
				time.Sleep(due - time.Since(start))
			}
		}
		if err != nil {
			return
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// sledProcess is the sled-agent binary running as a child process, so it
// can be killed without a chance to clean up.
type sledProcess struct {
	cmd *exec.Cmd
	log *bytes.Buffer
}

func startSledProcess(t *testing.T, bin string, args []string) *sledProcess {
	t.Helper()
	p := &sledProcess{cmd: exec.Command(bin, args...), log: &bytes.Buffer{}}
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
			t.Logf("sled-agent log:\n%s", p.log.String())
		}
	})
	return p
}

// A sled-agent process killed with SIGKILL in the middle of a copy, and
// started again on the same data dir and M.2s, resumes the copy from what
// it had received: the source sends fewer bytes after the restart than the
// artifact holds, and both M.2s end up with a verified copy.
func TestCopyResumesAfterTheSledProcessIsKilled(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "sled-agent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// The source: a sled agent in this process holding the artifact,
	// behind a link slow enough to kill the copy part-way.
	data := make([]byte, 24<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	ctx := context.Background()
	src := sledtest.StartSled(t, "https://127.0.0.1:1", sledagent.Config{ScrubInterval: -1})
	srcAPI := src.AsNexus(t)
	if _, err := srcAPI.ArtifactConfigPut(ctx, api.ArtifactConfig{Generation: 1, Artifacts: []string{sha}}); err != nil {
		t.Fatal(err)
	}
	if _, err := srcAPI.ArtifactPut(ctx, sha, 1, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	depot, err := url.Parse(src.DepotURL())
	if err != nil {
		t.Fatal(err)
	}
	relay := startSlowRelay(t, depot.Host, 6<<20)
	source := "https://" + relay.ln.Addr().String() + api.DepotArtifactPath(sha)

	// The sled under test, as a deployment runs it: its certificate in
	// files, its M.2s as directories.
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if _, err := sledtest.CA(t).IssueFiles(tlsDir, "sled", rackpki.Sled(sledagent.DefaultBaseboardPart, "RESTART-1"),
		rackpki.IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	m2s := []string{filepath.Join(dir, "m2-a"), filepath.Join(dir, "m2-b")}
	apiAddr := freePort(t)
	args := []string{"--data-dir", filepath.Join(dir, "data"), "--m2", m2s[0], "--m2", m2s[1], "--m2-create",
		"--tls-dir", tlsDir, "--listen", apiAddr, "--repo-depot-listen", "127.0.0.1:0",
		"--bootstrap-listen", "127.0.0.1:0", "--nexus-url", "https://127.0.0.1:1", "--scrub-interval", "-1s",
		"--log-level", "info"}
	sc, err := client.NewSledAgent("https://"+apiAddr, sledtest.HTTPClient(t, rackpki.Nexus("test-nexus")))
	if err != nil {
		t.Fatal(err)
	}
	up := func(what string) {
		sledtest.WaitFor(t, 20*time.Second, what, func() error {
			_, err := sc.ArtifactList(ctx)
			return err
		})
	}
	proc := startSledProcess(t, bin, args)
	up("the sled agent to answer")
	if _, err := sc.ArtifactConfigPut(ctx, api.ArtifactConfig{Generation: 1, Artifacts: []string{sha}}); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.ArtifactCopyFromDepot(ctx, sha, 1, source); err != nil {
		t.Fatal(err)
	}
	sledtest.WaitFor(t, 20*time.Second, "a third of the copy", func() error {
		st, err := sc.ArtifactCopyGet(ctx, sha)
		if err != nil {
			return err
		}
		if st.BytesDone < int64(len(data))/3 {
			return fmt.Errorf("%d of %d bytes", st.BytesDone, len(data))
		}
		return nil
	})
	if err := proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = proc.cmd.Wait()
	var kept int64
	for _, m2 := range m2s {
		if _, err := os.Stat(filepath.Join(m2, artifacts.UpdateDir, sha)); !os.IsNotExist(err) {
			t.Fatalf("%s holds the artifact after a killed copy (%v)", m2, err)
		}
		info, err := os.Stat(filepath.Join(m2, artifacts.UpdateDir, artifacts.TmpDir, sha+".partial"))
		if err != nil {
			t.Fatalf("no partial copy kept on %s: %v", m2, err)
		}
		kept = max(kept, info.Size())
	}
	if kept < int64(len(data))/4 {
		t.Fatalf("only %d bytes kept of a copy killed past a third", kept)
	}

	before := relay.down.Load()
	startSledProcess(t, bin, args) // stopped at cleanup
	up("the restarted sled agent to answer")
	if cfg, err := sc.ArtifactConfigGet(ctx); err != nil || cfg.Generation != 1 {
		t.Fatalf("restarted sled's config %+v (%v)", cfg, err)
	}
	if _, err := sc.ArtifactCopyFromDepot(ctx, sha, 1, source); err != nil {
		t.Fatal(err)
	}
	var st api.ArtifactCopy
	sledtest.WaitFor(t, 30*time.Second, "the resumed copy to finish", func() error {
		var err error
		if st, err = sc.ArtifactCopyGet(ctx, sha); err != nil {
			return err
		}
		if !st.Finished() {
			return fmt.Errorf("%s: %d of %d bytes", st.State, st.BytesDone, st.BytesTotal)
		}
		return nil
	})
	if st.State != api.CopyDone || st.Resumes < 1 {
		t.Fatalf("copy after the restart: %+v", st)
	}
	after := relay.down.Load() - before
	if after >= int64(len(data)) {
		t.Fatalf("the source sent %d bytes after the restart, not less than the %d-byte artifact", after, len(data))
	}
	for _, m2 := range m2s {
		got, err := os.ReadFile(filepath.Join(m2, artifacts.UpdateDir, sha))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: copy after the restart is not the artifact (%v)", m2, err)
		}
	}
	resp, err := sledtest.HTTPClient(t, rackpki.Nexus("test-nexus")).Get("https://" + apiAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics, _ := io.ReadAll(resp.Body)
	var resumed float64 = -1
	for _, line := range strings.Split(string(metrics), "\n") {
		if v, ok := strings.CutPrefix(line, "rackplane_sled_artifact_copy_resumed_bytes_total "); ok {
			resumed, _ = strconv.ParseFloat(v, 64)
		}
	}
	// The partial copies agree up to the shorter one, at most a chunk
	// short of the longer.
	if resumed <= 0 || resumed > float64(kept) || int64(len(data))-int64(resumed) > after {
		t.Fatalf("resumed bytes %v (kept %d, sent after the restart %d)", resumed, kept, after)
	}
	t.Logf("killed with %d of %d bytes kept; %d bytes sent after the restart", kept, len(data), after)
}

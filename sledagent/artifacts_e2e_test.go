package sledagent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/artifacts"
)

func randomArtifact(t *testing.T, n int) ([]byte, string) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

func sledClient(t *testing.T, s *sledtest.Sled) client.SledAgent {
	t.Helper()
	c := s.AsNexus(t)
	return c
}

// Seed 000 end to end: a sled with no Nexus reachable and one M.2 missing
// at start takes a config and an artifact; when the M.2 appears it gets
// both from its sibling, with nobody telling it to.
func TestLateM2FilledWithoutNexus(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m2a, m2b := filepath.Join(dir, "m2-a"), filepath.Join(dir, "m2-b")
	if err := os.Mkdir(m2a, 0o755); err != nil {
		t.Fatal(err)
	}
	sled := sledtest.StartSled(t, "https://"+unusedAddr(t), sledagent.Config{DataDir: dir,
		M2Dirs: []string{m2a, m2b}, M2PollInterval: 20 * time.Millisecond})
	c := sledClient(t, sled)
	ctx := context.Background()
	data, sha := randomArtifact(t, 1<<20)
	if _, err := c.ArtifactConfigPut(ctx, api.ArtifactConfig{Generation: 2, Artifacts: []string{sha}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ArtifactPut(ctx, sha, 2, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}

	if err := os.Mkdir(m2b, 0o755); err != nil {
		t.Fatal(err)
	}
	sledtest.WaitFor(t, 10*time.Second, "the late M.2 to be filled", func() error {
		got, err := os.ReadFile(filepath.Join(m2b, artifacts.UpdateDir, sha))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, data) {
			t.Fatal("late M.2 holds the wrong bytes")
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(m2b, artifacts.UpdateDir, artifacts.ConfigFile)); err != nil {
		t.Fatalf("late M.2 has no config ledger: %v", err)
	}
	list, err := c.ArtifactList(ctx)
	if err != nil || list.Artifacts[sha] != 2 {
		t.Fatalf("list %+v %v", list, err)
	}

	// The metrics show what happened.
	resp, err := sledtest.HTTPClient(t, rackpki.Nexus("test")).Get(sled.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`rackplane_sled_artifact_bytes_written_total{source="local"} 1.048576e+06`,
		`rackplane_sled_artifact_config_generation 2`,
		`rackplane_sled_m2_present{m2="` + m2b + `"} 1`,
		`rackplane_sled_artifact_copies_in_flight 0`,
		`rackplane_sled_m2_free_bytes{m2="` + m2a + `"}`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// A restarted sled agent keeps its config and artifacts (from the ledger
// and the M.2s) and clears what an interrupted write left in tmp/.
func TestArtifactsSurviveRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := sledagent.Config{DataDir: dir, CreateM2Dirs: true}
	nexusURL := "https://" + unusedAddr(t)
	first := sledtest.StartSled(t, nexusURL, cfg)
	ctx := context.Background()
	data, sha := randomArtifact(t, 100_000)
	c := sledClient(t, first)
	if _, err := c.ArtifactConfigPut(ctx, api.ArtifactConfig{Generation: 6, Artifacts: []string{sha}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ArtifactPut(ctx, sha, 6, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	first.Stop()
	leftover := filepath.Join(first.Config.M2Dirs[0], artifacts.UpdateDir, artifacts.TmpDir, sha+"-crashed")
	if err := os.WriteFile(leftover, data[:100], 0o644); err != nil {
		t.Fatal(err)
	}

	second := sledtest.StartSled(t, nexusURL, cfg)
	c = sledClient(t, second)
	list, err := c.ArtifactList(ctx)
	if err != nil || list.Generation != 6 || list.Artifacts[sha] != 2 {
		t.Fatalf("after restart: %+v %v", list, err)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatal("temp leftover survived the restart")
	}
	_, err = c.ArtifactConfigPut(ctx, api.ArtifactConfig{Generation: 5, Artifacts: []string{}})
	if client.ErrorCode(err) != api.CodeConfigGeneration {
		t.Fatalf("an older generation after restart: %v", err)
	}
}

func unusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

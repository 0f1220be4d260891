package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/sledagent"
)

// `repo show` prints each artifact's replication as Nexus observed it on a
// real two-sled rack; a degraded repo's reason shows in `show` and `list`.
func TestRepoShowReplication(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rk := racktest.StartRack(t, racktest.RackConfig{
		Sleds: 2, Seed: 8,
		Nexus: nexus.Config{Tasks: nexustasks.Registrar(nexustasks.Config{Replication: nexustasks.ReplicationConfig{MinSledReplication: 2, FollowUp: 100 * time.Millisecond}})},
		Sled:  sledagent.Config{RegisterInterval: 300 * time.Millisecond},
	})
	nx, l, db := rk.Nexus, rk.Lineage, rk.DB
	url := nx.ExternalURL()
	dir := t.TempDir()
	build := func(v string) string {
		zip := filepath.Join(dir, "release-"+v+".zip")
		if _, err := l.BuildFile(zip, tufgen.Demo(v)); err != nil {
			t.Fatal(err)
		}
		return zip
	}
	setTask := func(on bool) {
		if _, err := nx.Client.BackgroundTaskSetEnabled(ctx, tufreplication.Name, on); err != nil {
			t.Fatal(err)
		}
	}

	// Uploaded with replication off: nothing observed yet.
	setTask(false)
	if code, out, errOut := rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "upload", build("1.0.0")); code != 0 {
		t.Fatalf("upload: exit %d %q %q", code, out, errOut)
	}
	code, out, _ := rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "show", "1.0.0")
	if code != 0 || !strings.Contains(out, "not observed yet") || !strings.Contains(out, "SLEDS HOLDING") ||
		!regexp.MustCompile(`(?m)^host-os\s.*\s-\s+-\s+1$`).MatchString(out) {
		t.Fatalf("show before replication: exit %d\n%s", code, out)
	}

	// Replicated: every artifact on both sleds, both M.2s.
	setTask(true)
	racktest.WaitFor(t, 30*time.Second, "repo show to report full replication", func() error {
		if _, err := nx.Client.BackgroundTaskActivate(ctx, tufreplication.Name); err != nil {
			return err
		}
		code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "show", "1.0.0")
		if code != 0 || !strings.Contains(out, "4 of 4 artifacts on every M.2 of all 2 sleds") {
			return fmt.Errorf("exit %d\n%s", code, out)
		}
		// Every row too, once the last copies in flight have ended (a
		// row says "(1 copying)" until the sled reports its copy done).
		for _, name := range []string{"host-os", "sled-agent", "nexus", "sp-gimlet"} {
			if !regexp.MustCompile(`(?m)^` + name + `\s.*\s2/2\s+2/2\s+\d+$`).MatchString(out) {
				return fmt.Errorf("artifact %s is not shown on 2/2 sleds:\n%s", name, out)
			}
		}
		return nil
	})
	code, js, _ := rackctl(t, "--nexus", url, "--token", nx.AdminToken, "--json", "repo", "show", "1.0.0")
	var d api.TufRepoDetail
	if code != 0 || json.Unmarshal([]byte(js), &d) != nil || len(d.Artifacts) != 4 || d.Artifacts[0].Replication == nil ||
		d.Artifacts[0].Replication.SledsHoldingAllM2s != 2 {
		t.Fatalf("show --json: exit %d\n%s", code, js)
	}

	// A degraded repo: the reason is in show, and list marks it.
	setTask(false)
	zip := build("2.0.0")
	if code, out, errOut := rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "upload", zip); code != 0 {
		t.Fatalf("upload: exit %d %q %q", code, out, errOut)
	}
	detail, err := nx.Client.RepoGet(ctx, "2.0.0")
	if err != nil {
		t.Fatal(err)
	}
	lost := detail.Artifacts[0].SHA256
	if err := os.Remove(filepath.Join(nx.Depot().Dir(), lost)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `DELETE FROM nexus_artifact_copy WHERE sha256 = $1`, lost); err != nil {
		t.Fatal(err)
	}
	setTask(true)
	racktest.WaitFor(t, 20*time.Second, "repo 2.0.0 to be degraded", func() error {
		code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "show", "2.0.0")
		if code != 0 || !strings.Contains(out, "state           DEGRADED (!)\n") ||
			!strings.Contains(out, "reason          no sled or Nexus holds "+detail.Artifacts[0].Name) {
			return fmt.Errorf("exit %d\n%s", code, out)
		}
		return nil
	})
	code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "repo", "list")
	if code != 0 || !regexp.MustCompile(`(?m)^2\.0\.0\s.*DEGRADED \(!\)`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^! 2\.0\.0 is degraded: no sled or Nexus holds .*`+lost[:12]).MatchString(out) ||
		strings.Contains(out, "! 1.0.0") {
		t.Fatalf("list with a degraded repo: exit %d\n%s", code, out)
	}
}

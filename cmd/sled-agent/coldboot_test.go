package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/bootstrap/rss"
	"github.com/rackplane/rackplane/sledagent/storage"
	"github.com/rackplane/rackplane/trustquorum"
)

// A cold boot of real sled-agent processes with data disks: three sleds
// set up over the bootstrap network unlock and start their sled agents;
// all three are killed with SIGKILL at once; one comes back and stays
// locked (its own share, K=2 needs two), saying so in its bootstrap
// status; a second comes back and both unlock, with no Nexus.
func TestColdBootOfRealProcesses(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "sled-agent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const n = 3
	type sledDirs struct {
		args []string
		api  string
	}
	var sleds []sledDirs
	var boots []string
	for range n {
		boots = append(boots, freePort(t))
	}
	for i := range n {
		dir := t.TempDir()
		tlsDir := filepath.Join(dir, "tls")
		if _, err := sledtest.CA(t).IssueFiles(tlsDir, "sled", rackpki.Sled(sledagent.DefaultBaseboardPart, fmt.Sprintf("COLD-%d", i)),
			rackpki.IssueOptions{}); err != nil {
			t.Fatal(err)
		}
		api := freePort(t)
		sleds = append(sleds, sledDirs{api: api, args: []string{"--data-dir", filepath.Join(dir, "data"),
			"--m2", filepath.Join(dir, "m2-a"), "--m2", filepath.Join(dir, "m2-b"), "--m2-create",
			"--data-disk", filepath.Join(dir, "u2-a"), "--data-disk", filepath.Join(dir, "u2-b"),
			"--tls-dir", tlsDir, "--listen", api, "--repo-depot-listen", "127.0.0.1:0",
			"--bootstrap-listen", boots[i], "--bootstrap-peers", strings.Join(boots, ","),
			"--nexus-url", "https://127.0.0.1:1", "--scrub-interval", "-1s", "--log-level", "debug"}})
	}
	ctx := context.Background()
	answers := func(i int) error {
		sc, err := client.NewSledAgent("https://"+sleds[i].api, sledtest.HTTPClient(t, rackpki.Nexus("test-nexus")))
		if err != nil {
			return err
		}
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err = sc.ArtifactList(c)
		return err
	}
	procs := make([]*sledProcess, n)
	for i := range n {
		procs[i] = startSledProcess(t, bin, sleds[i].args)
	}
	// Before rack setup nothing unlocks: the sled API is not listening.
	time.Sleep(500 * time.Millisecond)
	for i := range n {
		if answers(i) == nil {
			t.Fatalf("sled %d's sled agent runs before any epoch exists", i)
		}
	}
	rssOpts := rss.Options{Bundle: sledtest.Bundle(t, rackpki.RSS()), PollInterval: 20 * time.Millisecond, Log: sledtest.Logger(t, "rss")}
	setupCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, err := rss.Dial(setupCtx, boots, rssOpts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetupRack(setupCtx, rss.SetupOptions{RackID: trustquorum.RackID(uuid.New())}); err != nil {
		t.Fatalf("rack setup: %v", err)
	}
	c.Close()
	for i := range n {
		sledtest.WaitFor(t, 30*time.Second, fmt.Sprintf("sled %d's sled agent after rack setup", i), func() error { return answers(i) })
	}

	for _, p := range procs {
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = p.cmd.Wait()
	}
	procs[0] = startSledProcess(t, bin, sleds[0].args)
	lockCtx, cancelLock := context.WithTimeout(ctx, time.Minute)
	defer cancelLock()
	one, err := rss.Dial(lockCtx, boots[:1], rssOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	for _, s := range one.Sleds() {
		sledtest.WaitFor(t, 30*time.Second, fmt.Sprintf("%s to report itself locked", s.ID), func() error {
			st, err := one.Status(lockCtx, s.ID)
			if err != nil {
				return err
			}
			if st.StorageLock.State != storage.Locked || st.StorageLock.Attempts < 3 ||
				!strings.Contains(st.StorageLock.Reason, "gathering the rack secret's shares") {
				return fmt.Errorf("storage lock %+v", st.StorageLock)
			}
			return nil
		})
	}
	if answers(0) == nil {
		t.Fatal("sled 0 unlocked with one share of K=2")
	}
	procs[1] = startSledProcess(t, bin, sleds[1].args)
	for i := range 2 {
		sledtest.WaitFor(t, 30*time.Second, fmt.Sprintf("sled %d to unlock once K are up", i), func() error { return answers(i) })
	}
	for _, s := range one.Sleds() {
		st, err := one.Status(lockCtx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if st.StorageLock.State != storage.Unlocked || st.StorageLock.Epoch != 1 {
			t.Fatalf("%s after the second returned: %+v", s.ID, st.StorageLock)
		}
	}
}

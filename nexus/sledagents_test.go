package nexus_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/sledagent"
)

// How sled agents and Nexus meet: registration, re-registration and the
// inventory a sled reports. (The sled agent's own tests run without a
// Nexus; these need both.)

func randomArtifact(t *testing.T, n int) ([]byte, string) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

func sledClient(t *testing.T, s *racktest.Sled) client.SledAgent {
	t.Helper()
	c := s.AsNexus(t)
	return c
}

// A sled that starts before Nexus keeps trying and registers soon after
// Nexus comes up, without waiting for its 30 s period.
func TestSledStartedBeforeNexusRegistersWhenNexusAppears(t *testing.T) {
	// Reserve a port for Nexus's internal API, then free it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	internalAddr := ln.Addr().String()
	ln.Close()

	sled := racktest.StartSled(t, "https://"+internalAddr, sledagent.Config{})
	sc := sled.AsNexus(t)
	racktest.WaitFor(t, 5*time.Second, "a failed registration attempt", func() error {
		if sled.Registration().LastAttempt.IsZero() {
			return context.DeadlineExceeded
		}
		return nil
	})
	h, err := sc.Health(context.Background())
	if err != nil || !strings.HasPrefix(h.Checks["nexus_registration"], "not registered yet") {
		t.Fatalf("health before Nexus: %+v %v", h, err)
	}

	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{InternalAddr: internalAddr})
	start := time.Now()
	racktest.WaitRegistered(t, nx.Client, sled)
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("registration took %s after Nexus started", d)
	}
	racktest.WaitFor(t, 5*time.Second, "health to report registration", func() error {
		h, err := sc.Health(context.Background())
		if err != nil {
			return err
		}
		if h.Checks["nexus_registration"] != "ok" {
			return context.DeadlineExceeded
		}
		return nil
	})
}

func TestSledIdentitySurvivesRestart(t *testing.T) {
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	dir := t.TempDir()
	first := racktest.StartSled(t, nx.InternalURL(), sledagent.Config{DataDir: dir})
	id, serial := first.ID(), first.Baseboard().Serial
	racktest.WaitRegistered(t, nx.Client, first)
	first.Stop()

	second := racktest.StartSled(t, nx.InternalURL(), sledagent.Config{DataDir: dir})
	if second.ID() != id || second.Baseboard().Serial != serial {
		t.Fatalf("restart changed identity: %s/%s → %s/%s", id, serial, second.ID(), second.Baseboard().Serial)
	}
	racktest.WaitFor(t, 10*time.Second, "the new address to be recorded", func() error {
		listed, err := nx.Client.SledList(context.Background())
		if err != nil {
			return err
		}
		if len(listed) != 1 {
			t.Fatalf("a restarted sled must not appear twice: %d sleds listed", len(listed))
		}
		if listed[0].SledAgentAddress != second.Address() {
			return fmt.Errorf("address %s, want %s", listed[0].SledAgentAddress, second.Address())
		}
		return nil
	})
}

// The sled reports its M.2s and artifact config generation to Nexus on
// start, and again promptly when either changes (well before its periodic
// registration).
func TestSledReportsInventoryToNexus(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	ctx := context.Background()
	// This test sets the sled's config itself: Nexus's replication task
	// would push the rack's generation to the sled and race it.
	if _, err := nx.Client.BackgroundTaskSetEnabled(ctx, tufreplication.Name, false); err != nil {
		t.Fatal(err)
	}
	sled := racktest.StartSled(t, nx.InternalURL(), sledagent.Config{CreateM2Dirs: true,
		M2PollInterval: 20 * time.Millisecond, RegisterInterval: time.Hour})
	racktest.WaitRegistered(t, nx.Client, sled)

	inventory := func(what string, ok func(api.Sled) bool) api.Sled {
		t.Helper()
		var got api.Sled
		racktest.WaitFor(t, 10*time.Second, what, func() error {
			var err error
			if got, err = nx.Client.SledGet(ctx, sled.ID()); err != nil {
				return err
			}
			if !ok(got) {
				return fmt.Errorf("inventory %+v gen %v", got.M2s, got.ArtifactGeneration)
			}
			return nil
		})
		return got
	}
	got := inventory("the first inventory", func(s api.Sled) bool {
		return s.ArtifactGeneration != nil && *s.ArtifactGeneration == 0 && len(s.M2s) == 2 && s.M2s[0].Present && s.M2s[1].Present
	})
	if got.M2s[0].Path != sled.Config.M2Dirs[0] || got.M2s[0].FreeBytes == 0 || got.M2s[0].TotalBytes == 0 {
		t.Fatalf("M.2 inventory %+v", got.M2s)
	}

	_, sha := randomArtifact(t, 10)
	if _, err := sledClient(t, sled).ArtifactConfigPut(ctx, api.ArtifactConfig{Generation: 3, Artifacts: []string{sha}}); err != nil {
		t.Fatal(err)
	}
	inventory("the new generation", func(s api.Sled) bool { return *s.ArtifactGeneration == 3 })

	// A device vanishes at once: rename it away rather than deleting it
	// file by file while the sled may be writing to it.
	if err := os.Rename(sled.Config.M2Dirs[1], sled.Config.M2Dirs[1]+".gone"); err != nil {
		t.Fatal(err)
	}
	got = inventory("the missing M.2", func(s api.Sled) bool { return !s.M2s[1].Present })
	if !got.M2s[0].Present {
		t.Fatalf("the other M.2 is reported missing too: %+v", got.M2s)
	}
	if err := os.Mkdir(sled.Config.M2Dirs[1], 0o755); err != nil {
		t.Fatal(err)
	}
	inventory("the returned M.2", func(s api.Sled) bool { return s.M2s[1].Present })
}

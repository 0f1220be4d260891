package sledagent_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/sledagent"
)

func TestMain(m *testing.M) { testdb.Main(m) }

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

	sled := racktest.StartSled(t, "http://"+internalAddr, sledagent.Config{})
	sc, err := client.NewSledAgent(sled.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
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

func TestSledAgentRequiresDataDir(t *testing.T) {
	if _, err := sledagent.New(sledagent.Config{ListenAddr: "127.0.0.1:0", RepoDepotAddr: "127.0.0.1:0"}, racktest.Logger(t, "sled")); err == nil {
		t.Fatal("sled agent started without a data dir")
	}
}

package trustquorum_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/trustquorum"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/sledagent/storage"
)

// sledRecord is Nexus's record of the sled with baseboard b.
func sledRecord(t *testing.T, nx *racktest.Nexus, b api.Baseboard) (api.Sled, error) {
	t.Helper()
	list, err := nx.Client.SledList(context.Background())
	if err != nil {
		return api.Sled{}, err
	}
	for _, s := range list {
		if s.Baseboard == b {
			return s, nil
		}
	}
	return api.Sled{}, fmt.Errorf("no sled %s", b)
}

// A sled removed from the trust quorum is expunged in Nexus's records as
// the epoch that leaves it out commits, learns it is expunged, stays
// locked when it boots again (its sled agent never starts), and its
// certificate can no longer register.
func TestRemovedSledStaysLockedAndCannotRegister(t *testing.T) {
	t.Parallel()
	r := newRack(t, 5, 0, false)
	gone := r.board(4)

	// Nexus sees every member's storage unlocked (from the statuses the
	// manager records).
	runOnce(t, r.Nexus)
	for i := range 5 {
		s, err := sledRecord(t, r.Nexus, r.board(i))
		if err != nil {
			t.Fatal(err)
		}
		if s.Health.StorageLock != storage.Unlocked {
			t.Fatalf("sled %d's storage lock in Nexus: %q", i, s.Health.StorageLock)
		}
	}
	id := r.Processes[4].Server().ID()

	if _, err := r.Nexus.Client.TrustQuorumMembership(ctxT(t), api.TrustQuorumMembership{Remove: []api.Baseboard{gone}}); err != nil {
		t.Fatal(err)
	}
	r.assertCommitted(r.Nexus, 2, span(0, 4))
	if s, err := sledRecord(t, r.Nexus, gone); err != nil || s.Policy != api.SledPolicyExpunged {
		t.Fatalf("the removed sled's record: %+v %v", s, err)
	}
	racktest.WaitFor(t, 30*time.Second, "the removed sled to know it is expunged, and say so", func() error {
		st := r.nodeStatus(4)
		if st.Expunged == nil || st.Expunged.Epoch != 2 {
			return fmt.Errorf("expunged: %+v", st.Expunged)
		}
		if st.StorageLock.State != storage.Expunged {
			return fmt.Errorf("storage lock %+v", st.StorageLock)
		}
		return nil
	})

	// Replication gives it nothing: a repo uploaded now reaches the four
	// members only.
	built := r.Upload(r.Nexus, tufgen.Demo("1.0.0"), "repo.zip")
	racktest.WaitFor(t, 60*time.Second, "the members to hold the repo", func() error {
		for _, a := range built.Artifacts {
			for i := range 4 {
				for _, m2 := range r.Processes[i].Config.Agent.M2Dirs {
					if !racktest.Verified(racktest.ArtifactPath(m2, a.SHA256), a.SHA256) {
						return fmt.Errorf("member %d lacks %s on %s", i, a.SHA256, m2)
					}
				}
			}
		}
		return nil
	})
	if st := racktest.ReplicationStatus(t, r.Nexus); st.Sleds != 4 {
		t.Fatalf("replication's last run counted %d sleds, want the 4 members", st.Sleds)
	}
	for _, a := range built.Artifacts {
		for _, m2 := range r.Processes[4].Config.Agent.M2Dirs {
			if _, err := os.Stat(racktest.ArtifactPath(m2, a.SHA256)); err == nil {
				t.Fatalf("the removed sled was given %s", a.SHA256)
			}
		}
	}

	// Its next boot: it knows it is out, and its disks stay locked.
	r.Processes[4].Stop()
	r.Processes[4].Start()
	racktest.WaitFor(t, 30*time.Second, "the restarted sled to report its disks locked for good", func() error {
		if st := r.nodeStatus(4).StorageLock; st.State != storage.Expunged {
			return fmt.Errorf("storage lock %+v", st)
		}
		return nil
	})
	// The members still serve shares to each other meanwhile; the removed
	// sled gets none, and never starts its sled agent.
	time.Sleep(time.Second)
	if r.Processes[4].Server() != nil {
		t.Fatal("the removed sled started its sled agent")
	}
	if st := r.nodeStatus(4); st.StorageLock.State != storage.Expunged {
		t.Fatalf("the removed sled's storage lock: %+v", st.StorageLock)
	}

	// Its certificate is still the rack CA's, but it may not register.
	hc := sledtest.HTTPClient(t, rackpki.Sled(gone.Part, gone.Serial))
	nc, err := client.NewNexusInternal(r.Nexus.InternalURL(), hc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = nc.SledRegister(ctxT(t), id, api.SledRegistration{Baseboard: gone, SledAgentAddress: "127.0.0.1:1", RepoDepotPort: 2})
	if err := isCode(err, 403, api.CodeSledExpunged); err != nil {
		t.Fatal(err)
	}
	// Nor as a new sled id: its baseboard belongs to the expunged record.
	_, err = nc.SledRegister(ctxT(t), uuid.New(), api.SledRegistration{Baseboard: gone, SledAgentAddress: "127.0.0.1:1", RepoDepotPort: 2})
	if err := isCode(err, 403, api.CodeSledExpunged); err != nil {
		t.Fatalf("registering under a new id: %v", err)
	}
}

// A spare sled, running only its bootstrap agent, added end to end: Nexus
// lists it as uninitialised, the operator adds it, the epoch commits
// (through a member's proxy), the manager asks it (proxied) to start its
// sled agent, it unlocks its disks, registers, and replication gives it
// every artifact on both M.2s.
func TestSpareAddedEndToEnd(t *testing.T) {
	t.Parallel()
	r := newRack(t, 4, 1, false)
	built := r.Upload(r.Nexus, tufgen.Demo("1.0.0"), "repo.zip")
	spareP := r.Processes[4]
	spare := r.board(4)
	waitUninitialized(t, r.Nexus, spare)
	if st := r.nodeStatus(4).StorageLock; st.State != storage.Locked || spareP.Server() != nil {
		t.Fatalf("the spare before it is added: %+v, sled agent %v", st, spareP.Server() != nil)
	}
	if _, err := r.Nexus.Client.TrustQuorumMembership(ctxT(t), api.TrustQuorumMembership{Add: []api.Baseboard{spare}}); err != nil {
		t.Fatal(err)
	}
	r.assertCommitted(r.Nexus, 2, span(0, 5))
	racktest.WaitProcessesRegistered(t, r.Nexus, spareP)
	if st := r.nodeStatus(4).StorageLock; st.State != storage.Unlocked || st.Epoch != 2 {
		t.Fatalf("the added sled's storage: %+v", st)
	}
	racktest.WaitFor(t, 60*time.Second, "the added sled to hold every artifact on both M.2s", func() error {
		for _, a := range built.Artifacts {
			for _, m2 := range spareP.Config.Agent.M2Dirs {
				if !racktest.Verified(racktest.ArtifactPath(m2, a.SHA256), a.SHA256) {
					return fmt.Errorf("%s lacks %s", m2, a.SHA256)
				}
			}
		}
		return nil
	})
	// The manager's status says it started the sled agent.
	task, err := r.Nexus.Client.BackgroundTaskGet(ctxT(t), trustquorum.Name)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, run := range task.History {
		var st trustquorum.Status
		if json.Unmarshal(run.Status, &st) == nil && st.Lifetime.SledAgentsStarted > 0 &&
			slices.ContainsFunc(st.Did, func(d string) bool {
				return strings.HasPrefix(d, "started the sled agent of "+spare.Part+"/"+spare.Serial)
			}) {
			found = true
		}
	}
	if !found {
		t.Fatalf("no run of the manager says it started the spare's sled agent: %s", task.Status)
	}
	runOnce(t, r.Nexus)
	if s, err := sledRecord(t, r.Nexus, spare); err != nil || s.Health.StorageLock != storage.Unlocked {
		t.Fatalf("Nexus's record of the added sled: %+v %v", s, err)
	}
}

// A member that cannot gather K shares stays locked, and Nexus sees it:
// the manager reads it through another member's proxy and records its
// lock, which the sled's health shows; once enough members are back it
// unlocks, and Nexus sees that too.
func TestLockedSledIsReportedInNexus(t *testing.T) {
	t.Parallel()
	r := newRack(t, 5, 0, false)
	for i := 1; i < 5; i++ {
		r.Processes[i].Stop()
	}
	// Sled 0 and sled 1: two shares of K=3.
	r.Processes[1].Start()
	lockIn := func(want string) error {
		if err := r.Nexus.ActivateTask(trustquorum.Name, "test"); err != nil {
			return err
		}
		s, err := sledRecord(t, r.Nexus, r.board(1))
		if err != nil {
			return err
		}
		if s.Health.StorageLock != want {
			return fmt.Errorf("sled 1's storage lock in Nexus: %q", s.Health.StorageLock)
		}
		return nil
	}
	racktest.WaitFor(t, 30*time.Second, "Nexus to see sled 1 locked", func() error { return lockIn(storage.Locked) })
	if r.Processes[1].Server() != nil {
		t.Fatal("sled 1 runs its sled agent with two of three shares")
	}
	st, err := r.Nexus.Client.TrustQuorumStatus(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.Serial == r.board(1).Serial && (n.Status == nil || n.Via == "direct" ||
			!strings.Contains(n.Status.StorageLockReason, "gathering the rack secret's shares")) {
			t.Fatalf("Nexus's view of the locked sled: %+v %+v", n, n.Status)
		}
	}
	r.Processes[2].Start()
	racktest.WaitFor(t, 30*time.Second, "Nexus to see sled 1 unlocked", func() error { return lockIn(storage.Unlocked) })
	racktest.WaitProcessesRegistered(t, r.Nexus, r.Processes[1], r.Processes[2])
}

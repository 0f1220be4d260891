package trustquorum_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/sledtest"
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

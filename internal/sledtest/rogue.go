package sledtest

import (
	"context"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent/bootstrap/bootnet"
	"github.com/rackplane/rackplane/trustquorum"
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// ForgePrepare plays a rogue sled holding a certificate of the rack's CA
// (baseboard part:ROGUE): it connects to the bootstrap agent at addr and
// prepares there a configuration of epoch that differs from the one the
// target holds (its members: the target, other and the rogue, which
// coordinates). A node that holds epoch keeps its own configuration and
// raises the alarm mismatched_configurations naming the rogue, which is
// what the alarm surfaces are tested with: the protocol raises alarms
// only for conditions that must never happen.
func ForgePrepare(t testing.TB, addr string, rack trustquorum.RackID, epoch trustquorum.Epoch, target, other trustquorum.BaseboardID) trustquorum.BaseboardID {
	t.Helper()
	rogue := trustquorum.BaseboardID{Part: target.Part, Serial: "ROGUE"}
	members := []trustquorum.BaseboardID{target, other, rogue}
	slices.SortFunc(members, trustquorum.BaseboardID.Compare)
	secret, err := tqcrypto.NewSecret(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	defer secret.Zero()
	shares, err := tqcrypto.Split(secret, len(members), 2)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &trustquorum.Configuration{RackID: rack, Epoch: epoch, Coordinator: rogue, Threshold: 2}
	var share tqcrypto.Share
	for i, id := range members {
		cfg.Members = append(cfg.Members, trustquorum.Member{ID: id, ShareDigest: shares[i].Digest(), X: shares[i].X()})
		if id == target {
			share = shares[i]
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := bootnet.Dial(ctx, addr, bootnet.DialOptions{Bundle: Bundle(t, rackpki.Sled(rogue.Part, rogue.Serial))})
	if err != nil {
		t.Fatal(err)
	}
	// The connection stays up until the test ends: closing it at once
	// could cut the frame off before the target reads it.
	t.Cleanup(func() { conn.Close(bootnet.ErrShutdown) })
	frame, err := trustquorum.EncodeMsg(trustquorum.PeerMsg{RackID: rack, Body: trustquorum.PrepareMsg{Config: cfg, Share: share}})
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Send(bootnet.KindMsg, frame); err != nil {
		t.Fatal(err)
	}
	return rogue
}

package trustquorum

import (
	"maps"
	"slices"

	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// LrtqShares is the number of shares LRTQ splits its secret into.
const LrtqShares = tqcrypto.MaxShares

// LrtqSharePkg is what an LRTQ sled stores: its share, the digests of all
// 255 shares (so any share can be checked whoever hands it over), and for an
// initial member its encrypted spare shares and the record of which learner
// got which spare.
type LrtqSharePkg struct {
	RackID    RackID
	Threshold uint8
	Share     tqcrypto.Share
	// ShareDigests[x-1] is the digest of the share whose x coordinate is x;
	// the 255 shares use every x from 1 to 255.
	ShareDigests []tqcrypto.Digest
	// Spares is nil for a learner.
	Spares *EncryptedRackSecrets
	// Handouts maps learners to the x of the spare they were given. It is
	// persisted before the package is sent, so a share once handed out is
	// never handed to someone else.
	Handouts map[BaseboardID]uint8
}

// VerifyShare checks a share against the 255 recorded digests.
func (p *LrtqSharePkg) VerifyShare(s tqcrypto.Share) error {
	if s.IsZero() || int(s.X()) > len(p.ShareDigests) {
		return tqcrypto.ErrShareLength
	}
	return tqcrypto.VerifyShare(s, p.ShareDigests[s.X()-1])
}

// ExpungedMarker records that a peer told this node it is not a member of
// epoch Epoch. It is permanent until a factory reset.
type ExpungedMarker struct {
	Epoch Epoch
	From  BaseboardID
}

// LrtqSetup is what the sled that performed LRTQ rack setup keeps of it.
// Every initial member's package is in Pending, persisted before the first
// LrtqInitMsg goes out, until that member acknowledges it; so an initiator
// that crashes half-way resends the same packages when it comes back
// instead of leaving the rack split between two secrets. Once Pending is
// empty only the membership remains (a bounded record that keeps a repeated
// InitLrtq from the rack-setup service a no-op).
type LrtqSetup struct {
	RackID RackID
	// Members are all initial members, this sled included, sorted.
	Members []BaseboardID
	// Pending holds the packages not yet acknowledged, by member. They
	// are dropped when the initiator commits a trust-quorum epoch: the
	// rack no longer uses LRTQ, and they hold shares of its secret.
	Pending map[BaseboardID]*LrtqSharePkg
}

// PersistentState is everything a node must find again after a restart. The
// driver stores it (on every M.2) whenever NodeCtx.PersistentStateChanged
// reports true, before sending anything or replying.
//
// It holds only what the protocol can still use, so that its size (and the
// cost of every persist) does not grow with the rack's history. Once the
// node has committed epoch L, it keeps L's configuration and share (peers
// collect shares of L to coordinate the next epoch, to load the rack
// secret, and members of L that missed its Prepare rebuild their share from
// them) and every configuration and share of an epoch above L (prepared,
// or learnt committed and waiting for its share to be rebuilt). Everything
// below L is dropped when L commits: the node answers any request about an
// older epoch from L alone (CommitAdvance or Expunged), and the secrets of
// older epochs travel encrypted in L's configuration. The LRTQ package,
// and the initiator's unacknowledged setup packages, are dropped as well
// once a trust-quorum epoch commits: from then on the node never hands out
// or uses an LRTQ share. Commits keeps every epoch committed here (numbers
// only, which status reports); of those only L's configuration remains.
type PersistentState struct {
	Lrtq *LrtqSharePkg
	// LrtqRetired records that the node held an LRTQ package and dropped
	// it when the rack moved to the trust quorum, so that a late upgrade
	// request is refused as "already upgraded" rather than "no LRTQ".
	LrtqRetired bool
	// LrtqSetup is set only on the sled that performed LRTQ rack setup.
	LrtqSetup *LrtqSetup
	Configs   map[Epoch]*Configuration
	Shares    map[Epoch]tqcrypto.Share
	Commits   map[Epoch]bool
	Expunged  *ExpungedMarker
}

// NewPersistentState returns an empty state, that of a sled fresh from the
// factory.
func NewPersistentState() PersistentState {
	return PersistentState{
		Configs: map[Epoch]*Configuration{},
		Shares:  map[Epoch]tqcrypto.Share{},
		Commits: map[Epoch]bool{},
	}
}

func (s *PersistentState) ensureMaps() {
	if s.Configs == nil {
		s.Configs = map[Epoch]*Configuration{}
	}
	if s.Shares == nil {
		s.Shares = map[Epoch]tqcrypto.Share{}
	}
	if s.Commits == nil {
		s.Commits = map[Epoch]bool{}
	}
}

// LatestConfig returns the configuration with the highest epoch, or nil.
func (s *PersistentState) LatestConfig() *Configuration {
	var best *Configuration
	for _, c := range s.Configs {
		if best == nil || c.Epoch > best.Epoch {
			best = c
		}
	}
	return best
}

// LatestCommittedEpoch returns the highest committed epoch, 0 if none.
func (s *PersistentState) LatestCommittedEpoch() Epoch {
	var best Epoch
	for e := range s.Commits {
		best = max(best, e)
	}
	return best
}

// LatestCommittedConfig returns the configuration of the latest commit.
func (s *PersistentState) LatestCommittedConfig() *Configuration {
	if e := s.LatestCommittedEpoch(); e != 0 {
		return s.Configs[e]
	}
	return nil
}

// CommittedEpochs returns the committed epochs in ascending order.
func (s *PersistentState) CommittedEpochs() []Epoch {
	return slices.Sorted(maps.Keys(s.Commits))
}

// Prepared reports whether the node holds both configuration and share of e.
func (s *PersistentState) Prepared(e Epoch) bool {
	_, ok := s.Shares[e]
	return ok && s.Configs[e] != nil
}

// LrtqOnly reports whether the node holds an LRTQ package and has not yet
// committed a trust-quorum epoch.
func (s *PersistentState) LrtqOnly() bool {
	return s.Lrtq != nil && s.LatestCommittedEpoch() == 0
}

// RackID returns the rack this node belongs to, if it knows.
func (s *PersistentState) RackID() (RackID, bool) {
	if c := s.LatestConfig(); c != nil {
		return c.RackID, true
	}
	if s.Lrtq != nil {
		return s.Lrtq.RackID, true
	}
	return RackID{}, false
}

// LatestEpochSeen is the highest epoch the node has a configuration for.
func (s *PersistentState) LatestEpochSeen() Epoch {
	if c := s.LatestConfig(); c != nil {
		return c.Epoch
	}
	if s.Lrtq != nil {
		return LrtqEpoch
	}
	return 0
}

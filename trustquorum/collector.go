package trustquorum

import (
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// collector gathers verified shares of one epoch, at most one per member.
// It is the only way shares reach Combine or Rebuild, which is what makes
// "never combine fewer than K verified shares from distinct members" hold.
type collector struct {
	epoch  Epoch
	config *Configuration // nil when collecting LRTQ shares
	lrtq   *LrtqSharePkg  // set when collecting LRTQ shares
	shares map[BaseboardID]tqcrypto.Share
	xs     map[uint8]bool
}

func newCollector(cfg *Configuration) *collector {
	return &collector{epoch: cfg.Epoch, config: cfg, shares: map[BaseboardID]tqcrypto.Share{}, xs: map[uint8]bool{}}
}

func newLrtqCollector(pkg *LrtqSharePkg) *collector {
	return &collector{epoch: LrtqEpoch, lrtq: pkg, shares: map[BaseboardID]tqcrypto.Share{}, xs: map[uint8]bool{}}
}

func (c *collector) threshold() int {
	if c.lrtq != nil {
		return int(c.lrtq.Threshold)
	}
	return int(c.config.Threshold)
}

// add verifies s as from's share and keeps it. For the trust quorum the
// digest is the one recorded for from; for LRTQ, where spares move between
// sleds, any of the 255 digests will do but each x counts once (a share
// handed out twice, see seed 000, must not count twice).
func (c *collector) add(from BaseboardID, s tqcrypto.Share) bool {
	if _, dup := c.shares[from]; dup || c.done() {
		return false
	}
	if c.lrtq != nil {
		if c.lrtq.VerifyShare(s) != nil {
			return false
		}
	} else {
		m, ok := c.config.Member(from)
		if !ok || tqcrypto.VerifyShare(s, m.ShareDigest) != nil || s.X() != m.X {
			return false
		}
	}
	if c.xs[s.X()] {
		return false
	}
	c.xs[s.X()] = true
	c.shares[from] = s.Clone()
	return true
}

func (c *collector) has(from BaseboardID) bool {
	_, ok := c.shares[from]
	return ok
}

func (c *collector) done() bool { return len(c.shares) >= c.threshold() }

// list returns the shares in member order, so Combine sees the same input
// order on every run.
func (c *collector) list() []tqcrypto.Share {
	out := make([]tqcrypto.Share, 0, len(c.shares))
	for _, id := range sortedKeys(c.shares) {
		out = append(out, c.shares[id])
	}
	return out
}

func (c *collector) zero() {
	for _, s := range c.shares {
		s.Zero()
	}
	clear(c.shares)
}

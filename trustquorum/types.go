package trustquorum

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// Limits on membership from the spec.
const (
	MinMembers   = 3
	MaxMembers   = 32
	MinThreshold = 2
	MaxThreshold = 31
)

// LrtqEpoch is the epoch that LRTQ occupies; an LRTQ upgrade uses a later one.
const LrtqEpoch Epoch = 1

// Epoch numbers configurations. Nexus assigns them, strictly increasing
// per rack; 0 means "none".
type Epoch uint64

// RackID identifies a rack (a UUID).
type RackID [16]byte

// String formats the id as a UUID.
func (r RackID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], r[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], r[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], r[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], r[8:10])
	b[23] = '-'
	hex.Encode(b[24:], r[10:])
	return string(b[:])
}

// MarshalText encodes the id as a UUID string.
func (r RackID) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses a UUID string.
func (r *RackID) UnmarshalText(b []byte) error {
	if len(b) != 36 || b[8] != '-' || b[13] != '-' || b[18] != '-' || b[23] != '-' {
		return fmt.Errorf("%w: rack id is not a UUID", ErrMalformed)
	}
	var raw [32]byte
	n := 0
	for i, c := range b {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			continue
		}
		raw[n] = c
		n++
	}
	if _, err := hex.Decode(r[:], raw[:]); err != nil {
		return fmt.Errorf("%w: rack id is not a UUID", ErrMalformed)
	}
	return nil
}

// BaseboardID is a sled's hardware identity. On the bootstrap network the
// driver takes it from the peer's certificate, never from a message.
type BaseboardID struct {
	Part   string `json:"part"`
	Serial string `json:"serial"`
}

func (b BaseboardID) String() string { return b.Part + ":" + b.Serial }

// Compare orders ids by part, then serial. Shares are assigned to members in
// this order.
func (b BaseboardID) Compare(o BaseboardID) int {
	if c := cmp.Compare(b.Part, o.Part); c != 0 {
		return c
	}
	return cmp.Compare(b.Serial, o.Serial)
}

// maxIDLen bounds the strings of a BaseboardID so that a hostile frame
// cannot make us keep arbitrarily large identities.
const maxIDLen = 128

func (b BaseboardID) valid() bool {
	return b.Part != "" && b.Serial != "" && len(b.Part) <= maxIDLen && len(b.Serial) <= maxIDLen
}

// Member is one member of a configuration: who, the digest of its share and
// the share's x coordinate.
type Member struct {
	ID          BaseboardID     `json:"id"`
	ShareDigest tqcrypto.Digest `json:"share_digest"`
	X           uint8           `json:"x"`
}

// EncryptedRackSecrets is the public, encrypted chain of earlier secrets.
type EncryptedRackSecrets struct {
	Salt       [tqcrypto.SaltSize]byte `json:"salt"`
	Ciphertext []byte                  `json:"ciphertext"`
}

// Configuration describes one epoch. It holds no secret, so Nexus stores it
// and may send it to anyone.
type Configuration struct {
	RackID      RackID      `json:"rack_id"`
	Epoch       Epoch       `json:"epoch"`
	Coordinator BaseboardID `json:"coordinator"`
	// Members is sorted by ID; that is the order shares were assigned in.
	Members              []Member              `json:"members"`
	Threshold            uint8                 `json:"threshold"`
	EncryptedRackSecrets *EncryptedRackSecrets `json:"encrypted_rack_secrets,omitempty"`
}

// Member returns the entry for id.
func (c *Configuration) Member(id BaseboardID) (Member, bool) {
	i, ok := slices.BinarySearchFunc(c.Members, id, func(m Member, id BaseboardID) int { return m.ID.Compare(id) })
	if !ok {
		return Member{}, false
	}
	return c.Members[i], true
}

// IsMember reports whether id is a member.
func (c *Configuration) IsMember(id BaseboardID) bool {
	_, ok := c.Member(id)
	return ok
}

// MemberIDs returns the members' ids in sorted order.
func (c *Configuration) MemberIDs() []BaseboardID {
	out := make([]BaseboardID, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.ID
	}
	return out
}

// Equal reports whether two configurations are identical.
func (c *Configuration) Equal(o *Configuration) bool {
	if c.RackID != o.RackID || c.Epoch != o.Epoch || c.Coordinator != o.Coordinator ||
		c.Threshold != o.Threshold || !slices.Equal(c.Members, o.Members) {
		return false
	}
	if (c.EncryptedRackSecrets == nil) != (o.EncryptedRackSecrets == nil) {
		return false
	}
	if c.EncryptedRackSecrets != nil {
		a, b := c.EncryptedRackSecrets, o.EncryptedRackSecrets
		return a.Salt == b.Salt && slices.Equal(a.Ciphertext, b.Ciphertext)
	}
	return true
}

// Clone returns a deep copy.
func (c *Configuration) Clone() *Configuration {
	n := *c
	n.Members = slices.Clone(c.Members)
	if c.EncryptedRackSecrets != nil {
		e := *c.EncryptedRackSecrets
		e.Ciphertext = slices.Clone(e.Ciphertext)
		n.EncryptedRackSecrets = &e
	}
	return &n
}

// Validate checks the structural rules every configuration obeys, whoever
// sent it.
func (c *Configuration) Validate() error {
	if err := validateSizes(len(c.Members), int(c.Threshold)); err != nil {
		return err
	}
	if c.Epoch < LrtqEpoch {
		return fmt.Errorf("%w: epoch %d", ErrMalformed, c.Epoch)
	}
	seenX := map[uint8]bool{}
	for i, m := range c.Members {
		if !m.ID.valid() {
			return fmt.Errorf("%w: bad member id", ErrMalformed)
		}
		if i > 0 && c.Members[i-1].ID.Compare(m.ID) >= 0 {
			return fmt.Errorf("%w: members not sorted or repeated", ErrMalformed)
		}
		if m.X == 0 || seenX[m.X] {
			return fmt.Errorf("%w: share x coordinates must be distinct and non-zero", ErrMalformed)
		}
		seenX[m.X] = true
	}
	if !c.IsMember(c.Coordinator) {
		return fmt.Errorf("%w: coordinator is not a member", ErrMalformed)
	}
	if e := c.EncryptedRackSecrets; e != nil && len(e.Ciphertext) > maxCiphertext {
		return fmt.Errorf("%w: encrypted rack secrets too long", ErrMalformed)
	}
	return nil
}

// maxCiphertext allows a long history (tens of thousands of epochs) while
// still bounding what a frame can make us hold.
const maxCiphertext = 1 << 19

func validateSizes(n, k int) error {
	if n < MinMembers || n > MaxMembers {
		return fmt.Errorf("%w: %d members, want %d..%d", ErrInvalidMembership, n, MinMembers, MaxMembers)
	}
	if k < MinThreshold || k > MaxThreshold || k >= n {
		return fmt.Errorf("%w: threshold %d for %d members", ErrInvalidThreshold, k, n)
	}
	return nil
}

func sortIDs(ids []BaseboardID) {
	slices.SortFunc(ids, BaseboardID.Compare)
}

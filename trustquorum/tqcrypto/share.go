package tqcrypto

import (
	"crypto/sha3"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"runtime"

	"github.com/hashicorp/vault/shamir"
)

// ShareSize is the length of one share: the 32 y-bytes of the sharing
// polynomials followed by the x coordinate, the layout of vault's shamir.
const ShareSize = SecretSize + 1

// MaxShares is the most shares a secret can be split into (x is one byte
// and x = 0 is the secret itself).
const MaxShares = 255

// Share is one Shamir share of a rack secret. Like Secret it never prints or
// marshals its bytes. A Share value is a handle: copies alias the same
// storage, so only the owner of the last copy should call Zero.
type Share struct {
	*shareBox
}

// shareBox is the handle that copies of a Share share; its bytes are a
// separate allocation so that a cleanup attached to the box can clear them
// once no Share refers to the box any more.
type shareBox struct {
	b *[ShareSize]byte
}

// ShareFromBytes copies b into a new Share after checking its length and
// that its x coordinate is not zero (x = 0 would be the secret itself).
func ShareFromBytes(b []byte) (Share, error) {
	if len(b) != ShareSize || b[ShareSize-1] == 0 {
		return Share{}, ErrShareLength
	}
	s := newShareStorage()
	copy(s.b[:], b)
	return s, nil
}

func newShareStorage() Share {
	box := &shareBox{b: new([ShareSize]byte)}
	runtime.AddCleanup(box, func(p *[ShareSize]byte) { clear(p[:]) }, box.b)
	return Share{box}
}

// IsZero reports whether the share is the empty value.
func (s Share) IsZero() bool { return s.shareBox == nil }

// X returns the share's x coordinate.
func (s Share) X() uint8 { return s.b[ShareSize-1] }

// Expose returns the share bytes; the slice aliases the share's storage,
// which is cleared once the last Share copy is unreachable, so keep the Share
// alive (runtime.KeepAlive) while using the slice.
func (s Share) Expose() []byte { return s.b[:] }

// Digest returns SHA3-256 of the share bytes, the value recorded in a
// configuration and checked before a share received from anyone is used.
func (s Share) Digest() Digest {
	defer runtime.KeepAlive(s.shareBox)
	return Digest(sha3.Sum256(s.b[:]))
}

// Equal compares two shares in constant time.
func (s Share) Equal(o Share) bool {
	if s.shareBox == nil || o.shareBox == nil {
		return s.shareBox == o.shareBox
	}
	return subtle.ConstantTimeCompare(s.b[:], o.b[:]) == 1
}

// Clone returns a share with its own storage.
func (s Share) Clone() Share {
	c := newShareStorage()
	*c.b = *s.b
	return c
}

// Zero clears the share's storage (and so every alias of it).
func (s Share) Zero() {
	if s.shareBox != nil {
		clear(s.b[:])
	}
}

func (s Share) String() string                 { return "Share" + redacted }
func (s Share) GoString() string               { return "tqcrypto.Share" + redacted }
func (s Share) Format(f fmt.State, verb rune)  { _, _ = io.WriteString(f, s.String()) }
func (s Share) MarshalJSON() ([]byte, error)   { return nil, errRefuseMarshal }
func (s Share) MarshalText() ([]byte, error)   { return nil, errRefuseMarshal }
func (s Share) MarshalBinary() ([]byte, error) { return nil, errRefuseMarshal }
func (s *Share) UnmarshalJSON(_ []byte) error  { return errRefuseMarshal }
func (s *Share) UnmarshalText(_ []byte) error  { return errRefuseMarshal }

// Digest is a SHA3-256 digest of a share. It is public information.
type Digest [32]byte

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// MarshalText encodes the digest as lowercase hex.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText decodes a hex digest.
func (d *Digest) UnmarshalText(b []byte) error {
	if len(b) != 2*len(d) {
		return fmt.Errorf("tqcrypto: digest must be %d hex characters", 2*len(d))
	}
	_, err := hex.Decode(d[:], b)
	return err
}

// VerifyShare checks s against the digest recorded for its sender. Every
// share received from a peer goes through here before it is used.
func VerifyShare(s Share, want Digest) error {
	if s.shareBox == nil {
		return ErrShareLength
	}
	got := s.Digest()
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return ErrShareDigestMismatch
	}
	return nil
}

// Split splits secret into n shares, any k of which recover it. The shares'
// x coordinates are chosen by vault's shamir (a random permutation), so they
// are not reproducible from a seed; nothing in the protocol branches on them.
func Split(secret *Secret, n, k int) ([]Share, error) {
	if k < 2 || n < k || n > MaxShares {
		return nil, ErrInvalidThreshold
	}
	raw, err := shamir.Split(secret.Expose(), n, k)
	runtime.KeepAlive(secret)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidThreshold, err)
	}
	out := make([]Share, len(raw))
	for i, r := range raw {
		s, err := ShareFromBytes(r)
		clear(r)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// Combine recovers the secret from at least k shares. shamir.Combine cannot
// tell a right answer from a wrong one, so this refuses fewer than k shares
// and repeated x coordinates; the caller must also have verified every share
// against its sender's digest and taken at most one share per member.
// Exactly k shares are used: more add nothing but cost.
func Combine(shares []Share, k int) (*Secret, error) {
	return combineAt(shares, k, 0)
}

// Rebuild evaluates the sharing polynomial at x from k verified shares and
// checks the result against want, the digest recorded for the member whose
// share it is. It is how a member that missed Prepare recovers its share.
func Rebuild(shares []Share, k int, x uint8, want Digest) (Share, error) {
	if x == 0 {
		return Share{}, ErrShareLength
	}
	y, err := combineAt(shares, k, x)
	if err != nil {
		return Share{}, err
	}
	defer y.Zero()
	s := newShareStorage()
	copy(s.b[:SecretSize], y.Expose())
	s.b[ShareSize-1] = x
	if err := VerifyShare(s, want); err != nil {
		s.Zero()
		return Share{}, err
	}
	return s, nil
}

// combineAt returns the polynomial's value at x. Addition in GF(2^8) is XOR,
// so translating every sample's x by target (x XOR target) turns "value at
// target" into "value at zero", which is what shamir.Combine computes.
func combineAt(shares []Share, k int, target uint8) (*Secret, error) {
	if k < 2 || k > MaxShares {
		return nil, ErrInvalidThreshold
	}
	if len(shares) < k {
		return nil, ErrTooFewShares
	}
	seen := make(map[uint8]bool, k)
	parts := make([][]byte, 0, k)
	defer func() {
		for _, p := range parts {
			clear(p)
		}
	}()
	for _, s := range shares[:k] {
		if s.shareBox == nil {
			return nil, ErrShareLength
		}
		x := s.X()
		if seen[x] || x == target {
			// A sample at the target itself would translate to x = 0,
			// which is not a share; it can only mean a duplicate.
			return nil, ErrDuplicateShare
		}
		seen[x] = true
		p := make([]byte, ShareSize)
		copy(p, s.b[:])
		p[ShareSize-1] = x ^ target
		parts = append(parts, p)
	}
	raw, err := shamir.Combine(parts)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDuplicateShare, err)
	}
	defer clear(raw)
	if target == 0 && allZero(raw) {
		// A valid rack secret is never zero, so this is wrong input.
		return nil, ErrZeroSecret
	}
	s := newSecretStorage()
	copy(s.b[:], raw)
	return s, nil
}

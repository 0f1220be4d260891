// Package tqcrypto holds the cryptography of the trust quorum: rack secrets,
// their Shamir shares and share digests, the encrypted chain of earlier rack
// secrets that every configuration carries, and the derivation of disk keys.
//
// It is deliberately small and free of protocol state so that it can be
// reviewed on its own. Secret material lives in types whose String, Format,
// GoString and MarshalJSON never reveal it, and whose backing arrays are
// zeroed when they are dropped (through runtime.AddCleanup) or when Zero is
// called. Go cannot promise that no copy survives elsewhere (the garbage
// collector may move nothing, but callers may copy what Expose returns), so
// callers that copy secret bytes must clear their copies themselves.
package tqcrypto

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"runtime"
)

// SecretSize is the length in bytes of a rack secret.
const SecretSize = 32

// Errors returned by this package. They never contain secret material.
var (
	ErrZeroSecret          = errors.New("tqcrypto: secret is all zero")
	ErrSecretLength        = errors.New("tqcrypto: secret has the wrong length")
	ErrShareLength         = errors.New("tqcrypto: share has the wrong length")
	ErrTooFewShares        = errors.New("tqcrypto: fewer shares than the threshold")
	ErrDuplicateShare      = errors.New("tqcrypto: duplicate share")
	ErrShareDigestMismatch = errors.New("tqcrypto: share does not match its digest")
	ErrInvalidThreshold    = errors.New("tqcrypto: invalid threshold or share count")
	ErrCiphertextLength    = errors.New("tqcrypto: ciphertext has the wrong length")
	ErrDecrypt             = errors.New("tqcrypto: decryption failed")
	ErrPlaintextFormat     = errors.New("tqcrypto: decrypted rack secrets are malformed")
	ErrRandom              = errors.New("tqcrypto: reading randomness failed")
)

const redacted = "[REDACTED]"

// Secret is a 32-byte rack secret (or a key derived from one). The zero
// value is not a valid secret; use NewSecret or SecretFromBytes.
type Secret struct {
	// b is a separate allocation so that a cleanup attached to the Secret
	// can clear it: the cleanup must not keep the Secret itself reachable.
	b *[SecretSize]byte
}

func newSecretStorage() *Secret {
	s := &Secret{b: new([SecretSize]byte)}
	runtime.AddCleanup(s, func(b *[SecretSize]byte) { clear(b[:]) }, s.b)
	return s
}

// NewSecret reads a fresh secret from r. An all-zero value is drawn again: the
// spec forbids it, and it lets reconstruction treat zero as a sure failure.
func NewSecret(r io.Reader) (*Secret, error) {
	s := newSecretStorage()
	for range 16 {
		if _, err := io.ReadFull(r, s.b[:]); err != nil {
			s.Zero()
			return nil, fmt.Errorf("%w: %v", ErrRandom, err)
		}
		if !allZero(s.b[:]) {
			return s, nil
		}
	}
	// Sixteen all-zero draws mean the reader is broken, not unlucky.
	return nil, ErrZeroSecret
}

// SecretFromBytes copies b into a new Secret. It refuses wrong lengths and
// the all-zero value.
func SecretFromBytes(b []byte) (*Secret, error) {
	if len(b) != SecretSize {
		return nil, ErrSecretLength
	}
	if allZero(b) {
		return nil, ErrZeroSecret
	}
	s := newSecretStorage()
	copy(s.b[:], b)
	return s, nil
}

// Expose returns the secret bytes. The slice aliases the Secret's storage,
// so it is cleared by Zero and by the cleanup once the Secret is
// unreachable: keep the Secret alive (runtime.KeepAlive) while using it.
func (s *Secret) Expose() []byte { return s.b[:] }

// Equal compares two secrets in constant time.
func (s *Secret) Equal(o *Secret) bool {
	if s == nil || o == nil {
		return s == o
	}
	return subtle.ConstantTimeCompare(s.b[:], o.b[:]) == 1
}

// Clone returns an independent copy.
func (s *Secret) Clone() *Secret {
	c := newSecretStorage()
	*c.b = *s.b
	return c
}

// Zero clears the secret now rather than when the collector gets to it.
func (s *Secret) Zero() {
	if s != nil && s.b != nil {
		clear(s.b[:])
	}
}

// String, GoString, Format and MarshalJSON exist so that a Secret handed to a
// logger or fmt by mistake prints a redaction, never the bytes.
func (s *Secret) String() string                 { return "Secret" + redacted }
func (s *Secret) GoString() string               { return "tqcrypto.Secret" + redacted }
func (s *Secret) Format(f fmt.State, verb rune)  { _, _ = io.WriteString(f, s.String()) }
func (s *Secret) MarshalJSON() ([]byte, error)   { return nil, errRefuseMarshal }
func (s *Secret) MarshalText() ([]byte, error)   { return nil, errRefuseMarshal }
func (s *Secret) MarshalBinary() ([]byte, error) { return nil, errRefuseMarshal }
func (s *Secret) UnmarshalJSON(_ []byte) error   { return errRefuseMarshal }
func (s *Secret) UnmarshalText(_ []byte) error   { return errRefuseMarshal }
func (s *Secret) UnmarshalBinary(_ []byte) error { return errRefuseMarshal }

var errRefuseMarshal = errors.New("tqcrypto: secret material is never marshalled implicitly")

func allZero(b []byte) bool {
	var acc byte
	for _, v := range b {
		acc |= v
	}
	return acc == 0
}

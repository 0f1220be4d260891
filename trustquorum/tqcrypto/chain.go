package tqcrypto

import (
	"crypto/hkdf"
	"crypto/sha3"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"

	"golang.org/x/crypto/chacha20poly1305"
)

// SaltSize is the length of the random HKDF salt stored with a ciphertext.
const SaltSize = 32

const (
	rackSecretsInfo = "rackplane-trust-quorum-v1-rack-secrets"
	diskKeyInfo     = "rackplane-disk-v1-"
	lrtqSparesInfo  = "rackplane-lrtq-v1-spare-shares"
	epochSecretSize = 8 + SecretSize
)

// EncryptedRackSecrets is the chain of earlier rack secrets carried by a
// configuration, encrypted under a key derived from that configuration's own
// rack secret. It is public (Nexus stores it).
type EncryptedRackSecrets struct {
	Salt       [SaltSize]byte
	Ciphertext []byte
}

// EpochSecret pairs an epoch with its rack secret.
type EpochSecret struct {
	Epoch  uint64
	Secret *Secret
}

func hkdfSHA3(secret, salt []byte, info string) (*Secret, error) {
	k, err := hkdf.Key(sha3.New256, secret, salt, info, SecretSize)
	if err != nil {
		return nil, err
	}
	defer clear(k)
	s := newSecretStorage()
	copy(s.b[:], k)
	return s, nil
}

// rackSecretsKey derives the key that encrypts configuration epoch's chain.
func rackSecretsKey(newSecret *Secret, salt []byte, rackID [16]byte, epoch uint64) (*Secret, error) {
	info := make([]byte, 0, len(rackSecretsInfo)+16+8)
	info = append(info, rackSecretsInfo...)
	info = append(info, rackID[:]...)
	info = binary.BigEndian.AppendUint64(info, epoch)
	defer runtime.KeepAlive(newSecret)
	return hkdfSHA3(newSecret.Expose(), salt, string(info))
}

// seal encrypts with a zero nonce. That is safe only because every key
// sealed here is derived with a fresh random salt and used exactly once.
func seal(key *Secret, plaintext []byte) ([]byte, error) {
	defer runtime.KeepAlive(key)
	aead, err := chacha20poly1305.New(key.Expose())
	if err != nil {
		return nil, err
	}
	var nonce [chacha20poly1305.NonceSize]byte
	return aead.Seal(nil, nonce[:], plaintext, nil), nil
}

func open(key *Secret, ciphertext []byte) ([]byte, error) {
	defer runtime.KeepAlive(key)
	aead, err := chacha20poly1305.New(key.Expose())
	if err != nil {
		return nil, err
	}
	var nonce [chacha20poly1305.NonceSize]byte
	pt, err := aead.Open(nil, nonce[:], ciphertext, nil)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// sealRecords draws a fresh salt, derives the key from it and seals pt
// under that key (used for this one message only).
func sealRecords(rand io.Reader, pt []byte, deriveKey func(salt []byte) (*Secret, error)) (EncryptedRackSecrets, error) {
	var out EncryptedRackSecrets
	if _, err := io.ReadFull(rand, out.Salt[:]); err != nil {
		return out, fmt.Errorf("%w: %v", ErrRandom, err)
	}
	key, err := deriveKey(out.Salt[:])
	if err != nil {
		return out, err
	}
	defer key.Zero()
	out.Ciphertext, err = seal(key, pt)
	return out, err
}

// openRecords checks that enc holds whole records of size bytes (at least
// min of them), derives its key and decrypts it. The caller clears the
// plaintext.
func openRecords(enc EncryptedRackSecrets, size, min int, deriveKey func(salt []byte) (*Secret, error)) ([]byte, error) {
	n := len(enc.Ciphertext) - chacha20poly1305.Overhead
	if n < min*size || n%size != 0 {
		return nil, ErrCiphertextLength
	}
	key, err := deriveKey(enc.Salt[:])
	if err != nil {
		return nil, err
	}
	defer key.Zero()
	return open(key, enc.Ciphertext)
}

// EncryptRackSecrets encrypts the secrets of every committed epoch before
// configuration epoch under a key derived from newSecret. The secrets must be
// in strictly ascending epoch order, all below epoch.
func EncryptRackSecrets(rand io.Reader, newSecret *Secret, rackID [16]byte, epoch uint64, olds []EpochSecret) (EncryptedRackSecrets, error) {
	var out EncryptedRackSecrets
	if len(olds) == 0 {
		return out, fmt.Errorf("%w: no secrets to encrypt", ErrPlaintextFormat)
	}
	pt := make([]byte, 0, len(olds)*epochSecretSize)
	defer func() { clear(pt) }()
	var prev uint64
	for i, o := range olds {
		if (i > 0 && o.Epoch <= prev) || o.Epoch >= epoch || o.Secret == nil {
			return out, fmt.Errorf("%w: epochs must ascend below %d", ErrPlaintextFormat, epoch)
		}
		prev = o.Epoch
		pt = binary.BigEndian.AppendUint64(pt, o.Epoch)
		pt = append(pt, o.Secret.Expose()...)
	}
	return sealRecords(rand, pt, func(salt []byte) (*Secret, error) {
		return rackSecretsKey(newSecret, salt, rackID, epoch)
	})
}

// DecryptRackSecrets reverses EncryptRackSecrets. It checks the framing
// (whole 40-byte records, epochs ascending below epoch, no zero secret), so a
// wrong key, a tampered ciphertext or a bad encoder is reported, never
// returned as secrets.
func DecryptRackSecrets(secret *Secret, rackID [16]byte, epoch uint64, enc EncryptedRackSecrets) ([]EpochSecret, error) {
	pt, err := openRecords(enc, epochSecretSize, 1, func(salt []byte) (*Secret, error) {
		return rackSecretsKey(secret, salt, rackID, epoch)
	})
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	out := make([]EpochSecret, 0, len(pt)/epochSecretSize)
	var prev uint64
	for off := 0; off < len(pt); off += epochSecretSize {
		e := binary.BigEndian.Uint64(pt[off:])
		if (off > 0 && e <= prev) || e >= epoch {
			ZeroAll(out)
			return nil, ErrPlaintextFormat
		}
		prev = e
		s, err := SecretFromBytes(pt[off+8 : off+epochSecretSize])
		if err != nil {
			ZeroAll(out)
			return nil, ErrPlaintextFormat
		}
		out = append(out, EpochSecret{Epoch: e, Secret: s})
	}
	return out, nil
}

// ZeroAll zeroes every secret in the list.
func ZeroAll(list []EpochSecret) {
	for _, es := range list {
		es.Secret.Zero()
	}
}

// DeriveDiskKey derives the key for one disk from an epoch's rack secret:
// HKDF-SHA3-256 with salt SHA3-256(rack id) and info "rackplane-disk-v1-" ‖
// disk serial.
func DeriveDiskKey(secret *Secret, rackID [16]byte, diskSerial string) (*Secret, error) {
	salt := sha3.Sum256(rackID[:])
	defer runtime.KeepAlive(secret)
	return hkdfSHA3(secret.Expose(), salt[:], diskKeyInfo+diskSerial)
}

// SealSpareShares encrypts an LRTQ member's spare shares under a key derived
// from the LRTQ rack secret and a fresh salt bound to the rack and member.
func SealSpareShares(rand io.Reader, secret *Secret, rackID [16]byte, member string, spares []Share) (EncryptedRackSecrets, error) {
	pt := make([]byte, 0, len(spares)*ShareSize)
	defer func() { clear(pt) }()
	for _, s := range spares {
		pt = append(pt, s.Expose()...)
	}
	return sealRecords(rand, pt, func(salt []byte) (*Secret, error) {
		return sparesKey(secret, salt, rackID, member)
	})
}

// OpenSpareShares reverses SealSpareShares.
func OpenSpareShares(secret *Secret, rackID [16]byte, member string, enc EncryptedRackSecrets) ([]Share, error) {
	pt, err := openRecords(enc, ShareSize, 0, func(salt []byte) (*Secret, error) {
		return sparesKey(secret, salt, rackID, member)
	})
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	out := make([]Share, 0, len(pt)/ShareSize)
	for off := 0; off < len(pt); off += ShareSize {
		s, err := ShareFromBytes(pt[off : off+ShareSize])
		if err != nil {
			return nil, ErrPlaintextFormat
		}
		out = append(out, s)
	}
	return out, nil
}

func sparesKey(secret *Secret, salt []byte, rackID [16]byte, member string) (*Secret, error) {
	info := make([]byte, 0, len(lrtqSparesInfo)+16+len(member))
	info = append(info, lrtqSparesInfo...)
	info = append(info, rackID[:]...)
	info = append(info, member...)
	defer runtime.KeepAlive(secret)
	return hkdfSHA3(secret.Expose(), salt, string(info))
}

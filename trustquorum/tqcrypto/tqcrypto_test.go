package tqcrypto

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"
)

func seq(from byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = from + byte(i)
	}
	return b
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustSecret(t *testing.T, b []byte) *Secret {
	t.Helper()
	s, err := SecretFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testRand(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	return rand.NewChaCha8(s)
}

// The expected values below were computed independently with Python's
// "cryptography" package (HKDF over SHA3-256, ChaCha20-Poly1305), so they
// pin the framing of the spec, not merely this code's own output.
const (
	katCiphertext = "a159e53ffffaec9517d16031a0a56e9ba6aecd930d429fc75b65709b13b1b11af515c5d1d61f8563719d493e255e5708bd22c11eee866c89f3c8fae40c899d535546367cac2572efdeac164e6613b0bbfd82be397ae40f7626079a5f938047fa"
	katDiskKey    = "c9c4c89773ad589c102859ef3bd381dad0046e6c28f115415805f22d017558fd"
	katDigest     = "f7b83039ff915ee67c8586ba2d4b9c348733d9c75863056efa4581e80a09b66e"
)

func katInputs(t *testing.T) (*Secret, [16]byte, []EpochSecret) {
	secret := mustSecret(t, seq(1, 32))
	var rack [16]byte
	copy(rack[:], seq(0xa0, 16))
	olds := []EpochSecret{
		{Epoch: 2, Secret: mustSecret(t, bytes.Repeat([]byte{0x11}, 32))},
		{Epoch: 5, Secret: mustSecret(t, bytes.Repeat([]byte{0x22}, 32))},
	}
	return secret, rack, olds
}

func TestRackSecretsKnownAnswer(t *testing.T) {
	secret, rack, olds := katInputs(t)
	enc, err := EncryptRackSecrets(bytes.NewReader(seq(0x40, 32)), secret, rack, 7, olds)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc.Salt[:], seq(0x40, 32)) {
		t.Fatalf("salt not taken from the reader")
	}
	if got := hex.EncodeToString(enc.Ciphertext); got != katCiphertext {
		t.Fatalf("ciphertext\n got %s\nwant %s", got, katCiphertext)
	}
	// Decrypting the independently computed ciphertext yields the inputs.
	enc.Ciphertext = mustHex(t, katCiphertext)
	got, err := DecryptRackSecrets(secret, rack, 7, enc)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Epoch != 2 || got[1].Epoch != 5 ||
		!got[0].Secret.Equal(olds[0].Secret) || !got[1].Secret.Equal(olds[1].Secret) {
		t.Fatalf("decrypted %v", got)
	}
}

func TestDiskKeyKnownAnswer(t *testing.T) {
	secret, rack, _ := katInputs(t)
	k, err := DeriveDiskKey(secret, rack, "disk-0001")
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(k.Expose()); got != katDiskKey {
		t.Fatalf("disk key %s want %s", got, katDiskKey)
	}
	other, _ := DeriveDiskKey(secret, rack, "disk-0002")
	if other.Equal(k) {
		t.Fatal("different disks derived the same key")
	}
}

func TestShareDigestKnownAnswer(t *testing.T) {
	b := seq(0, 33)
	b[32] = 32 // x must be non-zero; seq(0,33) already ends in 32
	s, err := ShareFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Digest().String(); got != katDigest {
		t.Fatalf("digest %s want %s", got, katDigest)
	}
}

func TestDecryptRejectsTamperingAndWrongInputs(t *testing.T) {
	secret, rack, olds := katInputs(t)
	enc, err := EncryptRackSecrets(testRand(1), secret, rack, 7, olds)
	if err != nil {
		t.Fatal(err)
	}
	for i := range enc.Ciphertext {
		bad := enc
		bad.Ciphertext = bytes.Clone(enc.Ciphertext)
		bad.Ciphertext[i] ^= 0x01
		if _, err := DecryptRackSecrets(secret, rack, 7, bad); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("flipped byte %d: err %v", i, err)
		}
	}
	badSalt := enc
	badSalt.Salt[0] ^= 1
	if _, err := DecryptRackSecrets(secret, rack, 7, badSalt); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("tampered salt: %v", err)
	}
	if _, err := DecryptRackSecrets(secret, rack, 8, enc); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrong epoch: %v", err)
	}
	otherRack := rack
	otherRack[0] ^= 1
	if _, err := DecryptRackSecrets(secret, otherRack, 7, enc); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrong rack: %v", err)
	}
	wrong := mustSecret(t, seq(2, 32))
	if _, err := DecryptRackSecrets(wrong, rack, 7, enc); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrong key: %v", err)
	}
	for _, n := range []int{0, 16, 16 + 39, 16 + 41, len(enc.Ciphertext) - 1, len(enc.Ciphertext) + 1} {
		bad := enc
		bad.Ciphertext = make([]byte, n)
		if _, err := DecryptRackSecrets(secret, rack, 7, bad); !errors.Is(err, ErrCiphertextLength) {
			t.Fatalf("length %d: err %v", n, err)
		}
	}
}

func TestDecryptRejectsBadFraming(t *testing.T) {
	// A correctly authenticated plaintext with bad structure (descending
	// epochs, epoch not below the configuration, zero secret) must be refused.
	secret, rack, _ := katInputs(t)
	cases := map[string][]byte{
		"descending": append(append(be(5), bytes.Repeat([]byte{1}, 32)...), append(be(2), bytes.Repeat([]byte{1}, 32)...)...),
		"not below":  append(be(7), bytes.Repeat([]byte{1}, 32)...),
		"zero":       append(be(1), make([]byte, 32)...),
	}
	for name, pt := range cases {
		salt := seq(9, 32)
		key, _ := rackSecretsKey(secret, salt, rack, 7)
		ct, _ := seal(key, pt)
		var enc EncryptedRackSecrets
		copy(enc.Salt[:], salt)
		enc.Ciphertext = ct
		if _, err := DecryptRackSecrets(secret, rack, 7, enc); !errors.Is(err, ErrPlaintextFormat) {
			t.Errorf("%s: err %v", name, err)
		}
	}
	if _, err := EncryptRackSecrets(testRand(1), secret, rack, 7, nil); !errors.Is(err, ErrPlaintextFormat) {
		t.Errorf("empty chain: %v", err)
	}
	s := mustSecret(t, seq(3, 32))
	if _, err := EncryptRackSecrets(testRand(1), secret, rack, 7, []EpochSecret{{Epoch: 7, Secret: s}}); !errors.Is(err, ErrPlaintextFormat) {
		t.Errorf("epoch not below: %v", err)
	}
}

func be(v uint64) []byte {
	return []byte{byte(v >> 56), byte(v >> 48), byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

func split(t *testing.T, n, k int) (*Secret, []Share) {
	t.Helper()
	secret, err := NewSecret(testRand(uint64(n*100 + k)))
	if err != nil {
		t.Fatal(err)
	}
	shares, err := Split(secret, n, k)
	if err != nil {
		t.Fatal(err)
	}
	return secret, shares
}

func TestSplitCombineRebuild(t *testing.T) {
	for _, nk := range [][2]int{{3, 2}, {5, 3}, {16, 9}, {32, 17}, {255, 33}} {
		n, k := nk[0], nk[1]
		secret, shares := split(t, n, k)
		if len(shares) != n {
			t.Fatalf("got %d shares", len(shares))
		}
		rng := rand.New(testRand(uint64(n)))
		for trial := 0; trial < 5; trial++ {
			perm := rng.Perm(n)
			pick := make([]Share, k)
			for i := range pick {
				pick[i] = shares[perm[i]]
			}
			got, err := Combine(pick, k)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(secret) {
				t.Fatalf("n=%d k=%d: combine gave a different secret", n, k)
			}
			// Rebuild a share that is not among the samples.
			target := shares[perm[k]]
			rebuilt, err := Rebuild(pick, k, target.X(), target.Digest())
			if err != nil {
				t.Fatalf("rebuild: %v", err)
			}
			if !rebuilt.Equal(target) {
				t.Fatal("rebuilt share differs")
			}
		}
	}
}

func TestCombineRefusesBadInput(t *testing.T) {
	_, shares := split(t, 5, 3)
	if _, err := Combine(shares[:2], 3); !errors.Is(err, ErrTooFewShares) {
		t.Fatalf("too few: %v", err)
	}
	dup := []Share{shares[0], shares[1], shares[0]}
	if _, err := Combine(dup, 3); !errors.Is(err, ErrDuplicateShare) {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := Combine([]Share{shares[0], {}, shares[1]}, 3); !errors.Is(err, ErrShareLength) {
		t.Fatalf("empty share: %v", err)
	}
	if _, err := Combine(shares, 1); !errors.Is(err, ErrInvalidThreshold) {
		t.Fatalf("threshold 1: %v", err)
	}
	// Rebuilding at the x of one of the samples is a duplicate.
	if _, err := Rebuild(shares[:3], 3, shares[0].X(), shares[0].Digest()); !errors.Is(err, ErrDuplicateShare) {
		t.Fatalf("rebuild at sample x: %v", err)
	}
	// A rebuild from too few shares produces a wrong value, which the
	// digest check catches, so it is refused rather than returned.
	if _, err := Rebuild(shares[:2], 2, shares[4].X(), shares[4].Digest()); !errors.Is(err, ErrShareDigestMismatch) {
		t.Fatalf("rebuild from too few: %v", err)
	}
	if _, err := ShareFromBytes(make([]byte, 32)); !errors.Is(err, ErrShareLength) {
		t.Fatal("short share accepted")
	}
	if _, err := ShareFromBytes(make([]byte, 33)); !errors.Is(err, ErrShareLength) {
		t.Fatal("share with x=0 accepted")
	}
	if _, err := Split(mustSecret(t, seq(1, 32)), 3, 4); !errors.Is(err, ErrInvalidThreshold) {
		t.Fatal("k > n accepted")
	}
}

func TestForgedShareFailsVerification(t *testing.T) {
	_, shares := split(t, 5, 3)
	forged := shares[1].Clone()
	forged.Expose()[0] ^= 0x80
	if err := VerifyShare(forged, shares[1].Digest()); !errors.Is(err, ErrShareDigestMismatch) {
		t.Fatalf("forged share verified: %v", err)
	}
	// Another member's genuine share does not verify as this member's.
	if err := VerifyShare(shares[2], shares[1].Digest()); !errors.Is(err, ErrShareDigestMismatch) {
		t.Fatalf("swapped share verified: %v", err)
	}
	if err := VerifyShare(shares[1], shares[1].Digest()); err != nil {
		t.Fatal(err)
	}
}

func TestMixedSharesGiveWrongSecret(t *testing.T) {
	// This documents why verification against digests matters:
	// shamir.Combine happily returns garbage for shares of two secrets.
	s1, a := split(t, 5, 3)
	_, b := split(t, 6, 3)
	got, err := Combine([]Share{a[0], a[1], b[2]}, 3)
	if err == nil && got.Equal(s1) {
		t.Fatal("mixed shares recovered the secret; test is meaningless")
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	secret := mustSecret(t, bytes.Repeat([]byte{0xab}, 32))
	share, _ := ShareFromBytes(bytes.Repeat([]byte{0xab}, 33))
	type holder struct {
		S  *Secret
		Sh Share
	}
	h := holder{secret, share}
	outs := []string{
		fmt.Sprint(secret), fmt.Sprintf("%v %+v %#v %x %s %q", secret, secret, secret, secret, secret, secret),
		fmt.Sprint(share), fmt.Sprintf("%v %+v %#v %x %X %s", share, share, share, share, share, share),
		fmt.Sprintf("%v %+v %#v", h, h, h),
	}
	for _, o := range outs {
		if strings.Contains(strings.ToLower(o), "abab") || strings.Contains(o, "171") {
			t.Fatalf("secret leaked: %s", o)
		}
		if !strings.Contains(o, "REDACTED") {
			t.Fatalf("no redaction in %q", o)
		}
	}
	if _, err := json.Marshal(h); err == nil {
		t.Fatal("json marshalled secret material")
	}
}

func TestZero(t *testing.T) {
	s := mustSecret(t, seq(1, 32))
	b := s.Expose()
	s.Zero()
	if !allZero(b) {
		t.Fatal("Zero left bytes behind")
	}
	sh, _ := ShareFromBytes(seq(1, 33))
	c := sh.Clone()
	sh.Zero()
	if !allZero(sh.Expose()) || allZero(c.Expose()) {
		t.Fatal("share zeroing wrong")
	}
}

func TestNewSecretRefusesZeroReader(t *testing.T) {
	if _, err := NewSecret(bytes.NewReader(make([]byte, 32*16))); !errors.Is(err, ErrZeroSecret) {
		t.Fatalf("zero reader: %v", err)
	}
	if _, err := NewSecret(bytes.NewReader(make([]byte, 5))); !errors.Is(err, ErrRandom) {
		t.Fatalf("short reader: %v", err)
	}
	if _, err := SecretFromBytes(make([]byte, 32)); !errors.Is(err, ErrZeroSecret) {
		t.Fatal("zero secret accepted")
	}
}

func TestSpareShares(t *testing.T) {
	secret, shares := split(t, 10, 3)
	var rack [16]byte
	enc, err := SealSpareShares(testRand(4), secret, rack, "m1", shares[2:6])
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenSpareShares(secret, rack, "m1", enc)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if !got[i].Equal(shares[2+i]) {
			t.Fatal("spare mismatch")
		}
	}
	if _, err := OpenSpareShares(secret, rack, "m2", enc); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("other member's spares opened: %v", err)
	}
	enc.Ciphertext = enc.Ciphertext[1:]
	if _, err := OpenSpareShares(secret, rack, "m1", enc); !errors.Is(err, ErrCiphertextLength) {
		t.Fatalf("short: %v", err)
	}
}

func BenchmarkSplit32(b *testing.B) {
	secret, _ := NewSecret(testRand(1))
	for b.Loop() {
		if _, err := Split(secret, 32, 17); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyShare(b *testing.B) {
	secret, _ := NewSecret(testRand(1))
	shares, _ := Split(secret, 32, 17)
	d := shares[3].Digest()
	for b.Loop() {
		if err := VerifyShare(shares[3], d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCombine32(b *testing.B) {
	secret, _ := NewSecret(testRand(1))
	shares, _ := Split(secret, 32, 17)
	for b.Loop() {
		if _, err := Combine(shares[:17], 17); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRebuild32(b *testing.B) {
	secret, _ := NewSecret(testRand(1))
	shares, _ := Split(secret, 32, 17)
	d := shares[31].Digest()
	for b.Loop() {
		if _, err := Rebuild(shares[:17], 17, shares[31].X(), d); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDroppedSecretsAreCleared checks that the cleanup clears the storage of
// a Secret and a Share once nothing refers to them any more.
func TestDroppedSecretsAreCleared(t *testing.T) {
	var secretBytes, shareBytes []byte
	func() {
		s, err := SecretFromBytes(seq(1, 32))
		if err != nil {
			t.Fatal(err)
		}
		sh, err := ShareFromBytes(seq(1, 33))
		if err != nil {
			t.Fatal(err)
		}
		// Keep only the backing arrays, not the handles.
		secretBytes, shareBytes = s.Expose(), sh.Expose()
	}()
	for i := 0; i < 200 && !(allZero(secretBytes) && allZero(shareBytes)); i++ {
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	if !allZero(secretBytes) || !allZero(shareBytes) {
		t.Fatal("dropped secret material was not cleared")
	}
}

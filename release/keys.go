// Package release builds and signs rackplane releases: TUF repositories,
// in a zip, in the layout Nexus accepts.
//
// A release is signed by four TUF roles (root, timestamp, snapshot,
// targets), each with its own ed25519 keys and signature threshold: a
// Keyring. The root metadata names every role's keys and thresholds; an
// operator registers version 1 of it with Nexus as a trust root, and every
// later version must be signed by a threshold of the previous version's
// root keys and of its own (RotateRoot). Build writes one release of a
// Lineage (the keys and the root history) as a zip: the artifacts, an
// artifacts manifest, and signed targets, snapshot and timestamp metadata.
// Composite artifacts (a host OS image, the RoT images, the control plane's
// zones) are gzip-compressed tarballs of their parts, laid out as Omicron's
// tufaceous lays them out (see Composite and Expand).
//
// The package is what cmd/rackrelease, rackdev's demo repo and the tests
// (through internal/tufgen) use. Everything is deterministic given the
// randomness passed in: the same keys and inputs give byte-identical
// archives.
package release

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Role names, as TUF spells them.
const (
	RoleRoot      = metadata.ROOT
	RoleTimestamp = metadata.TIMESTAMP
	RoleSnapshot  = metadata.SNAPSHOT
	RoleTargets   = metadata.TARGETS
)

// Roles lists the four roles in the order keys are made and listed.
var Roles = []string{RoleRoot, RoleTimestamp, RoleSnapshot, RoleTargets}

// Key is an ed25519 signing key.
type Key struct {
	ID     string
	seed   []byte
	meta   *metadata.Key
	signer signature.Signer
}

// NewKey makes a key from 32 bytes of rng.
func NewKey(rng io.Reader) (*Key, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(rng, seed); err != nil {
		return nil, fmt.Errorf("release: key seed: %w", err)
	}
	return KeyFromSeed(seed)
}

// KeyFromSeed makes the key whose ed25519 seed is seed.
func KeyFromSeed(seed []byte) (*Key, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("release: an ed25519 seed is %d bytes, not %d", ed25519.SeedSize, len(seed))
	}
	priv := ed25519.NewKeyFromSeed(seed)
	signer, err := signature.LoadED25519Signer(priv)
	if err != nil {
		return nil, err
	}
	meta, err := metadata.KeyFromPublicKey(priv.Public())
	if err != nil {
		return nil, err
	}
	id, err := meta.ID()
	if err != nil {
		return nil, err
	}
	return &Key{ID: id, seed: slices.Clone(seed), meta: meta, signer: signer}, nil
}

// Metadata is the public key as TUF metadata lists it.
func (k *Key) Metadata() *metadata.Key { return k.meta }

// RoleKeys are one role's keys and how many of them must sign.
type RoleKeys struct {
	Threshold int
	Keys      []*Key
}

// Keyring holds the keys of the roles, by role name. A signing machine may
// hold only some roles (root keys are often kept apart): each command
// says which roles it needs.
type Keyring map[string]*RoleKeys

// KeyringOptions shape GenerateKeyring.
type KeyringOptions struct {
	// Thresholds per role (default 1).
	Thresholds map[string]int
	// Keys per role (default, and at least: the role's threshold).
	Keys map[string]int
}

// GenerateKeyring makes keys for every role from rng, role by role in
// Roles order.
func GenerateKeyring(rng io.Reader, o KeyringOptions) (Keyring, error) {
	k := Keyring{}
	for _, role := range Roles {
		th := max(o.Thresholds[role], 1)
		n := max(o.Keys[role], th)
		rk := &RoleKeys{Threshold: th}
		for range n {
			key, err := NewKey(rng)
			if err != nil {
				return nil, err
			}
			rk.Keys = append(rk.Keys, key)
		}
		k[role] = rk
	}
	return k, nil
}

// Need returns an error naming the first of roles the keyring lacks keys
// for, or nil.
func (k Keyring) Need(roles ...string) error {
	for _, role := range roles {
		if rk := k[role]; rk == nil || len(rk.Keys) == 0 {
			return fmt.Errorf("release: no %s keys (expected %s.key.json in the key directory)", role, role)
		}
	}
	return nil
}

// keyFile is one role's keys on disk. The private part is the ed25519
// seed, hex-encoded; the key id is kept so a tampered file is noticed.
type keyFile struct {
	Role      string        `json:"role"`
	Threshold int           `json:"threshold"`
	Keys      []keyFileItem `json:"keys"`
}

type keyFileItem struct {
	KeyID   string `json:"keyid"`
	Scheme  string `json:"scheme"`
	Public  string `json:"public"`
	Private string `json:"private"`
}

// KeyFileName is the file a role's keys are saved in, inside a key
// directory.
func KeyFileName(role string) string { return role + ".key.json" }

// Save writes each role's keys to dir/<role>.key.json, readable by the
// owner only. An existing file is never overwritten: keys are not
// something to lose by a repeated command.
func (k Keyring) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	for _, role := range Roles {
		rk := k[role]
		if rk == nil {
			continue
		}
		kf := keyFile{Role: role, Threshold: rk.Threshold}
		for _, key := range rk.Keys {
			kf.Keys = append(kf.Keys, keyFileItem{KeyID: key.ID, Scheme: key.meta.Scheme,
				Public: key.meta.Value.PublicKey, Private: hex.EncodeToString(key.seed)})
		}
		b, err := json.MarshalIndent(kf, "", "  ")
		if err != nil {
			return err
		}
		path := filepath.Join(dir, KeyFileName(role))
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("release: %w (keys are never overwritten; use another directory)", err)
		}
		_, err = f.Write(append(b, '\n'))
		if serr := f.Sync(); err == nil {
			err = serr
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("release: write %s: %w", path, err)
		}
	}
	return nil
}

// LoadKeyring reads the role key files found in dir. Roles without a file
// are left out; Need says whether the ones a command needs are there.
func LoadKeyring(dir string) (Keyring, error) {
	k := Keyring{}
	for _, role := range Roles {
		path := filepath.Join(dir, KeyFileName(role))
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("release: %w", err)
		}
		var kf keyFile
		if err := json.Unmarshal(b, &kf); err != nil {
			return nil, fmt.Errorf("release: %s: %w", path, err)
		}
		if kf.Role != role {
			return nil, fmt.Errorf("release: %s holds %q keys, not %s keys", path, kf.Role, role)
		}
		rk := &RoleKeys{Threshold: kf.Threshold}
		for i, item := range kf.Keys {
			seed, err := hex.DecodeString(item.Private)
			if err != nil {
				return nil, fmt.Errorf("release: %s: key %d: %w", path, i, err)
			}
			key, err := KeyFromSeed(seed)
			if err != nil {
				return nil, fmt.Errorf("release: %s: key %d: %w", path, i, err)
			}
			if key.ID != item.KeyID {
				return nil, fmt.Errorf("release: %s: key %d is recorded as %s but its private part is key %s; "+
					"the file was changed", path, i, item.KeyID, key.ID)
			}
			rk.Keys = append(rk.Keys, key)
		}
		if rk.Threshold < 1 || rk.Threshold > len(rk.Keys) {
			return nil, fmt.Errorf("release: %s: threshold %d with %d keys can never be met", path, rk.Threshold, len(rk.Keys))
		}
		k[role] = rk
	}
	return k, nil
}

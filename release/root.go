package release

import (
	"fmt"
	"slices"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// RootOptions shape one version of root metadata.
type RootOptions struct {
	Version int64
	Expires time.Time
	// Consistent turns on consistent snapshots: V.role.json metadata and
	// <sha256>.<name> target files.
	Consistent bool
}

// RootMetadata is the unsigned root metadata naming every role's keys and
// threshold in k. Sign it with SignRoot.
func RootMetadata(k Keyring, o RootOptions) (*metadata.Metadata[metadata.RootType], error) {
	if err := k.Need(Roles...); err != nil {
		return nil, err
	}
	root := metadata.Root(o.Expires)
	root.Signed.Version = max(o.Version, 1)
	root.Signed.ConsistentSnapshot = o.Consistent
	for _, role := range Roles {
		for _, key := range k[role].Keys {
			if err := root.Signed.AddKey(key.meta, role); err != nil {
				return nil, err
			}
		}
		root.Signed.Roles[role].Threshold = k[role].Threshold
	}
	return root, nil
}

// SignRoot signs root metadata with each of signers, in order, and
// returns the document.
func SignRoot(root *metadata.Metadata[metadata.RootType], signers []*Key) ([]byte, error) {
	for _, key := range signers {
		if _, err := root.Sign(key.signer); err != nil {
			return nil, err
		}
	}
	return root.ToBytes(true)
}

// NewRoot is root version 1 of a new lineage, signed by its own root keys.
func NewRoot(k Keyring, expires time.Time, consistent bool) ([]byte, error) {
	m, err := RootMetadata(k, RootOptions{Version: 1, Expires: expires, Consistent: consistent})
	if err != nil {
		return nil, err
	}
	return SignRoot(m, k[RoleRoot].Keys)
}

// RotateRoot is the root version after prev: it names next's keys and is
// signed by next's root keys and by oldRoot, the previous version's root
// keys, as a rotation must be. CheckRotation says whether the signatures
// meet both thresholds.
func RotateRoot(prev []byte, oldRoot []*Key, next Keyring, expires time.Time) ([]byte, error) {
	p, err := ParseRoot(prev)
	if err != nil {
		return nil, err
	}
	m, err := RootMetadata(next, RootOptions{Version: p.Signed.Version + 1, Expires: expires,
		Consistent: p.Signed.ConsistentSnapshot})
	if err != nil {
		return nil, err
	}
	return SignRoot(m, append(slices.Clone(next[RoleRoot].Keys), oldRoot...))
}

// CheckRotation checks that next is the version after prev and signed by
// a threshold of prev's root keys and of its own.
func CheckRotation(prev, next []byte) error {
	p, err := ParseRoot(prev)
	if err != nil {
		return err
	}
	n, err := ParseRoot(next)
	if err != nil {
		return err
	}
	if n.Signed.Version != p.Signed.Version+1 {
		return fmt.Errorf("release: root version %d does not follow version %d", n.Signed.Version, p.Signed.Version)
	}
	if err := p.VerifyDelegate(metadata.ROOT, n); err != nil {
		return fmt.Errorf("release: root version %d is not signed by a threshold of version %d's root keys: %w",
			n.Signed.Version, p.Signed.Version, err)
	}
	if err := n.VerifyDelegate(metadata.ROOT, n); err != nil {
		return fmt.Errorf("release: root version %d is not signed by a threshold of its own root keys: %w",
			n.Signed.Version, err)
	}
	return nil
}

// ParseRoot reads root metadata.
func ParseRoot(b []byte) (*metadata.Metadata[metadata.RootType], error) {
	m, err := metadata.Root().FromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("release: not root metadata: %w", err)
	}
	return m, nil
}

// CheckKeysMatchRoot checks that root names exactly k's keys and
// thresholds for each of roles, so that what k signs the root accepts.
func CheckKeysMatchRoot(k Keyring, root []byte, roles ...string) error {
	m, err := ParseRoot(root)
	if err != nil {
		return err
	}
	for _, role := range roles {
		rk, r := k[role], m.Signed.Roles[role]
		if rk == nil || r == nil {
			return fmt.Errorf("release: no %s keys", role)
		}
		have := 0
		for _, key := range rk.Keys {
			if slices.Contains(r.KeyIDs, key.ID) {
				have++
			}
		}
		if have < r.Threshold {
			return fmt.Errorf("release: root version %d needs %d %s signatures from its keys, and the key directory holds "+
				"only %d of them; use the keys this root names", m.Signed.Version, r.Threshold, role, have)
		}
	}
	return nil
}

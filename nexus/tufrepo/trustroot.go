package tufrepo

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"sort"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rackplane/rackplane/api"
)

// CheckTrustRoot refuses a root.json that must not become a trust root,
// for what go-tuf's loading does not catch (trustedmetadata.New checks the
// root's signatures; call both). It refuses a top-level role whose
// threshold is 0 (metadata with no signatures would verify) or exceeds the
// role's distinct keys (no metadata of that role could ever verify, so
// every upload would fail later with a less useful error), a role naming
// a key the root does not define, and one public key listed under two key
// ids (one key holder would count twice toward a threshold for any
// verifier that counts ids). Keys are compared by their public key
// material, not by id or encoding.
func CheckTrustRoot(rootJSON []byte) error {
	root, err := metadata.Root().FromBytes(rootJSON)
	if err != nil {
		return errf(api.CodeInvalidTrustRoot, "the body is not TUF root metadata: %v", err)
	}
	ids := make([]string, 0, len(root.Signed.Keys))
	for id := range root.Signed.Keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	byKey := map[string]string{}
	for _, id := range ids {
		fp, ferr := keyFingerprint(root.Signed.Keys[id])
		if ferr != nil {
			return errf(api.CodeInvalidTrustRoot, "key %s in the root is not a public key this Nexus can verify with "+
				"(type %q): %v", id, root.Signed.Keys[id].Type, ferr)
		}
		if other, dup := byKey[fp]; dup {
			return errf(api.CodeTrustRootDuplicateKey, "the root lists one public key under two key ids, %s and %s; "+
				"each key must be listed once, so that one key holder cannot count twice toward a threshold", other, id)
		}
		byKey[fp] = id
	}
	for _, role := range []string{metadata.ROOT, metadata.TIMESTAMP, metadata.SNAPSHOT, metadata.TARGETS} {
		r := root.Signed.Roles[role]
		if r == nil {
			return errf(api.CodeInvalidTrustRoot, "the root defines no %s role", role)
		}
		distinct := map[string]bool{}
		for _, id := range r.KeyIDs {
			if _, ok := root.Signed.Keys[id]; !ok {
				return errf(api.CodeInvalidTrustRoot, "the %s role lists key id %s, which the root does not define", role, id)
			}
			distinct[id] = true
		}
		switch {
		case r.Threshold < 1:
			return errf(api.CodeTrustRootThreshold, "the %s role has threshold %d; it must be at least 1, or %s "+
				"metadata with no signatures at all would verify", role, r.Threshold, role)
		case r.Threshold > len(distinct):
			return errf(api.CodeTrustRootThreshold, "the %s role needs %d signatures but lists only %d distinct keys; "+
				"no %s metadata could ever verify", role, r.Threshold, len(distinct), role)
		}
	}
	return nil
}

// keyFingerprint identifies a key by its public key material: the SHA-256
// of its PKIX encoding, whatever the id or the encoding in the root.
func keyFingerprint(k *metadata.Key) (string, error) {
	pub, err := k.ToPublicKey()
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

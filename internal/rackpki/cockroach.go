package rackpki

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/rackplane/rackplane/internal/fsutil"
)

// CockroachDB's certificates come from the rack CA too, so that one CA
// (and one `nexus pki init`) secures the whole deployment. They follow
// CockroachDB's rules rather than the rack's: the principal is the
// subject's common name ("node" for a node, the SQL user for a client) and
// the files are named as CockroachDB's --certs-dir expects. They carry no
// rack identity (no urn:rackplane URI), so no rack listener accepts them:
// a database client certificate opens the database and nothing else.

// CockroachNodeUser is the principal of a node certificate.
const CockroachNodeUser = "node"

// sqlUser is what a client certificate may name: a SQL user name as
// CockroachDB spells one (lower case; letters, digits, _ . -).
var sqlUser = regexp.MustCompile(`^[a-z_][a-z0-9_.-]{0,62}$`)

// CockroachNodeFiles names a node's certificate and key in its certs dir.
func CockroachNodeFiles() (cert, key string) { return "node.crt", "node.key" }

// CockroachClientFiles names a SQL user's client certificate and key.
func CockroachClientFiles(user string) (cert, key string) {
	return "client." + user + ".crt", "client." + user + ".key"
}

// IssueCockroachNode issues a CockroachDB node certificate into dir
// (node.crt, node.key and ca.crt). opts.Hosts must name every address the
// node is reached at: its --advertise-addr and --join names, and
// localhost for health checks inside its container. A node presents the
// same certificate as a server and, to other nodes, as a client.
func (ca *CA) IssueCockroachNode(dir string, opts IssueOptions) (*x509.Certificate, error) {
	if len(opts.Hosts) == 0 {
		return nil, errors.New("rackpki: a CockroachDB node certificate needs the node's host names (--host)")
	}
	certFile, keyFile := CockroachNodeFiles()
	return ca.issueCockroach(dir, certFile, keyFile, CockroachNodeUser,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, opts)
}

// IssueCockroachClient issues a client certificate for SQL user user into
// dir (client.<user>.crt, client.<user>.key and ca.crt).
func (ca *CA) IssueCockroachClient(dir, user string, opts IssueOptions) (*x509.Certificate, error) {
	if !sqlUser.MatchString(user) {
		return nil, fmt.Errorf("rackpki: %q is not a SQL user name (lower case letters, digits, _ . -)", user)
	}
	if user == CockroachNodeUser {
		return nil, errors.New(`rackpki: "node" is the nodes' own principal; name a SQL user`)
	}
	if len(opts.Hosts) > 0 {
		return nil, errors.New("rackpki: a client certificate names no hosts")
	}
	certFile, keyFile := CockroachClientFiles(user)
	return ca.issueCockroach(dir, certFile, keyFile, user, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, opts)
}

func (ca *CA) issueCockroach(dir, certFile, keyFile, principal string, usage []x509.ExtKeyUsage,
	opts IssueOptions) (*x509.Certificate, error) {
	cert, err := ca.sign(&x509.Certificate{Subject: pkix.Name{CommonName: principal}, ExtKeyUsage: usage}, opts)
	if err != nil {
		return nil, fmt.Errorf("rackpki: issue CockroachDB certificate for %s: %w", principal, err)
	}
	if err := writeFiles(dir, certFile, keyFile, cert, ca); err != nil {
		return nil, err
	}
	return cert.Leaf, nil
}

// writeFiles writes a certificate, its key (mode 0600: CockroachDB refuses
// a key others can read) and, when dir has none, the CA certificate.
func writeFiles(dir, certFile, keyFile string, cert tls.Certificate, ca *CA) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("rackpki: %w", err)
	}
	if err := writeKey(filepath.Join(dir, keyFile), cert.PrivateKey.(*ecdsa.PrivateKey)); err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, certFile), pemCert(cert.Leaf.Raw), 0o644); err != nil {
		return fmt.Errorf("rackpki: %w", err)
	}
	caPath := filepath.Join(dir, CACertFile)
	if _, err := os.Stat(caPath); errors.Is(err, os.ErrNotExist) {
		if err := fsutil.WriteFileAtomic(caPath, pemCert(ca.Cert.Raw), 0o644); err != nil {
			return fmt.Errorf("rackpki: %w", err)
		}
	}
	return nil
}

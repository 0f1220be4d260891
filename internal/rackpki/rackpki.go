// Package rackpki is the rack's public-key infrastructure: one rack CA,
// and certificates that name who holds them — a sled by its baseboard, a
// Nexus by its instance id, the rack-setup service by its role — in a URI
// SAN.
//
// Identity on every mutual-TLS listener of the rack comes from the peer's
// verified certificate, never from a message field or a request body, and
// never from a host name: a sled's address changes, its baseboard does not.
// So TLS clients here do not check host names; they verify the chain
// against the rack CA and then check the identity the certificate names
// (VerifyIdentity).
//
// The package has one function per verb: InitCA makes a CA, Issue signs a
// certificate for an identity, LoadCA/Load read them back, and
// ServerTLS/ClientTLS/PeerIdentity use them.
package rackpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rackplane/rackplane/internal/fsutil"
)

// Kind is what an identity names.
type Kind string

// The identities of the rack.
const (
	KindSled  Kind = "sled"
	KindNexus Kind = "nexus"
	// KindRSS is the rack-setup service (rackdev plays it): it may only
	// initialise a rack over the bootstrap network.
	KindRSS Kind = "rss"
)

const urnPrefix = "urn:rackplane:"

// Identity is who a certificate names.
type Identity struct {
	Kind Kind
	// Part and Serial are a sled's baseboard (KindSled only).
	Part, Serial string
	// NexusID is a Nexus instance id (KindNexus only).
	NexusID string
}

// Sled is the identity of the sled with baseboard part/serial.
func Sled(part, serial string) Identity { return Identity{Kind: KindSled, Part: part, Serial: serial} }

// Nexus is the identity of the Nexus instance id.
func Nexus(id string) Identity { return Identity{Kind: KindNexus, NexusID: id} }

// RSS is the rack-setup service's identity.
func RSS() Identity { return Identity{Kind: KindRSS} }

// URI is the identity as it appears in a certificate's URI SAN:
// urn:rackplane:sled:<part>:<serial>, urn:rackplane:nexus:<id> or
// urn:rackplane:rss. Components are percent-escaped, so a ':' inside a
// serial cannot shift the boundary between part and serial.
func (id Identity) URI() string {
	switch id.Kind {
	case KindSled:
		return urnPrefix + "sled:" + escape(id.Part) + ":" + escape(id.Serial)
	case KindNexus:
		return urnPrefix + "nexus:" + escape(id.NexusID)
	case KindRSS:
		return urnPrefix + "rss"
	}
	return ""
}

func (id Identity) String() string { return id.URI() }

// escape percent-escapes s for one URN component, ':' included.
func escape(s string) string { return strings.ReplaceAll(url.PathEscape(s), ":", "%3A") }

// Valid reports whether id names someone.
func (id Identity) Valid() error {
	switch id.Kind {
	case KindSled:
		if id.Part == "" || id.Serial == "" {
			return errors.New("a sled identity needs a baseboard part and serial")
		}
	case KindNexus:
		if id.NexusID == "" {
			return errors.New("a Nexus identity needs an instance id")
		}
	case KindRSS:
	default:
		return fmt.Errorf("unknown identity kind %q", id.Kind)
	}
	return nil
}

// ParseURI parses an identity URI (the inverse of Identity.URI).
func ParseURI(s string) (Identity, error) {
	rest, ok := strings.CutPrefix(s, urnPrefix)
	if !ok {
		return Identity{}, fmt.Errorf("%q is not a rackplane identity", s)
	}
	parts := strings.Split(rest, ":")
	unesc := func(p string) (string, error) { return url.PathUnescape(p) }
	var id Identity
	switch {
	case parts[0] == string(KindSled) && len(parts) == 3:
		part, err1 := unesc(parts[1])
		serial, err2 := unesc(parts[2])
		if err := errors.Join(err1, err2); err != nil {
			return Identity{}, fmt.Errorf("%q: %w", s, err)
		}
		id = Sled(part, serial)
	case parts[0] == string(KindNexus) && len(parts) == 2:
		nid, err := unesc(parts[1])
		if err != nil {
			return Identity{}, fmt.Errorf("%q: %w", s, err)
		}
		id = Nexus(nid)
	case parts[0] == string(KindRSS) && len(parts) == 1:
		id = RSS()
	default:
		return Identity{}, fmt.Errorf("%q is not a rackplane identity", s)
	}
	if err := id.Valid(); err != nil {
		return Identity{}, fmt.Errorf("%q: %w", s, err)
	}
	return id, nil
}

// IdentityOf returns the one rackplane identity cert names in its URI SANs.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range cert.URIs {
		id, err := ParseURI(u.String())
		if err != nil {
			continue
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, errors.New("the certificate names no rackplane identity")
	case 1:
		return found[0], nil
	}
	return Identity{}, errors.New("the certificate names more than one rackplane identity")
}

// CA is the rack's certificate authority. Only the machine that made it
// holds Key; everyone else has Cert alone (see LoadCA and Bundle.Pool).
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Bundle is what one party holds: its certificate and key, and the CA
// certificate it verifies peers against.
type Bundle struct {
	Identity Identity
	Cert     tls.Certificate
	Leaf     *x509.Certificate
	CACert   *x509.Certificate
}

// Pool is a pool holding only the rack CA.
func (b *Bundle) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(b.CACert)
	return p
}

// File names inside a PKI directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// CertFile and KeyFile are the names Issue writes for a party named name.
func CertFile(name string) string { return name + ".crt" }

// KeyFile is the private key file written beside CertFile(name).
func KeyFile(name string) string { return name + ".key" }

// DefaultValidity is how long certificates are valid when not told.
const DefaultValidity = 365 * 24 * time.Hour

// NewCA makes a new rack CA in memory, valid for validity
// (DefaultValidity when zero). Save writes it out.
func NewCA(rackName string, validity time.Duration) (*CA, error) {
	if validity <= 0 {
		validity = DefaultValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("rackpki: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "rackplane rack CA " + rackName},
		NotBefore:             now.Add(-time.Hour), // small clock skew between machines
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("rackpki: create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("rackpki: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Save writes the CA as dir/ca.crt and dir/ca.key (mode 0600). It refuses
// to overwrite an existing CA key.
func (ca *CA) Save(dir string) error {
	key, ok := ca.Key.(*ecdsa.PrivateKey)
	if !ok {
		return errors.New("rackpki: only a CA made here can be saved")
	}
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return fmt.Errorf("rackpki: %s already holds a CA key; refusing to replace it", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("rackpki: %w", err)
	}
	if err := writeKey(filepath.Join(dir, CAKeyFile), key); err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, CACertFile), pemCert(ca.Cert.Raw), 0o644); err != nil {
		return fmt.Errorf("rackpki: %w", err)
	}
	return nil
}

// InitCA makes a new rack CA and saves it in dir (see NewCA and Save).
func InitCA(dir, rackName string, validity time.Duration) (*CA, error) {
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return nil, fmt.Errorf("rackpki: %s already holds a CA key; refusing to replace it", dir)
	}
	ca, err := NewCA(rackName, validity)
	if err != nil {
		return nil, err
	}
	if err := ca.Save(dir); err != nil {
		return nil, err
	}
	return ca, nil
}

// LoadCA reads the CA (certificate and key) from dir.
func LoadCA(dir string) (*CA, error) {
	cert, err := readCert(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	key, err := readKey(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// IssueOptions are optional fields of a certificate.
type IssueOptions struct {
	// Validity defaults to DefaultValidity; it never outlasts the CA.
	Validity time.Duration
	// Hosts are DNS names or IP addresses to put in the certificate as
	// well, for clients outside the rack that check host names (a
	// browser on the external API).
	Hosts []string
	// Now is the issue time (tests make expired certificates with it).
	Now time.Time
}

// Issue makes a key and a certificate for id, signed by ca, usable as both
// TLS client and server.
func (ca *CA) Issue(id Identity, opts IssueOptions) (*Bundle, error) {
	if err := id.Valid(); err != nil {
		return nil, fmt.Errorf("rackpki: %w", err)
	}
	u, err := url.Parse(id.URI())
	if err != nil {
		return nil, fmt.Errorf("rackpki: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: id.URI()},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{u},
	}
	cert, err := ca.sign(tmpl, opts)
	if err != nil {
		return nil, fmt.Errorf("rackpki: issue %s: %w", id, err)
	}
	return &Bundle{Identity: id, Cert: cert, Leaf: cert.Leaf, CACert: ca.Cert}, nil
}

// sign makes a key and signs a certificate for it from tmpl, filling in
// the serial number, the validity (never beyond the CA's), the key usage
// and opts.Hosts.
func (ca *CA) sign(tmpl *x509.Certificate, opts IssueOptions) (tls.Certificate, error) {
	if ca.Key == nil {
		return tls.Certificate{}, errors.New("this CA has no private key here; issue on the machine that holds it")
	}
	if opts.Validity <= 0 {
		opts.Validity = DefaultValidity
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	notAfter := now.Add(opts.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl.SerialNumber = randomSerial()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), notAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	for _, h := range opts.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// IssueFiles issues a certificate for id and writes it as
// dir/CertFile(name) and dir/KeyFile(name) (mode 0600), beside a copy of
// the CA certificate (dir/ca.crt) when dir has none: dir is then all a
// party needs (see Load).
func (ca *CA) IssueFiles(dir, name string, id Identity, opts IssueOptions) (*Bundle, error) {
	b, err := ca.Issue(id, opts)
	if err != nil {
		return nil, err
	}
	if err := writeFiles(dir, CertFile(name), KeyFile(name), b.Cert, ca); err != nil {
		return nil, err
	}
	return b, nil
}

// Load reads a party's certificate, key and CA certificate from files, and
// checks that the certificate is signed by that CA and names an identity.
func Load(certFile, keyFile, caFile string) (*Bundle, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("rackpki: load %s: %w", certFile, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("rackpki: %s: %w", certFile, err)
	}
	cert.Leaf = leaf
	caCert, err := readCert(caFile)
	if err != nil {
		return nil, err
	}
	b := &Bundle{Cert: cert, Leaf: leaf, CACert: caCert}
	id, err := VerifyChain(b.Pool(), []*x509.Certificate{leaf}, time.Now())
	if err != nil {
		return nil, fmt.Errorf("rackpki: %s is not usable with CA %s: %w", certFile, caFile, err)
	}
	b.Identity = id
	return b, nil
}

// LoadDir is Load of dir/CertFile(name), dir/KeyFile(name), dir/ca.crt.
func LoadDir(dir, name string) (*Bundle, error) {
	return Load(filepath.Join(dir, CertFile(name)), filepath.Join(dir, KeyFile(name)), filepath.Join(dir, CACertFile))
}

// LoadFromFlags loads a party's bundle as command lines name it: either a
// directory holding name.crt, name.key and ca.crt, or the three files.
// It returns nil, nil when nothing is given.
func LoadFromFlags(certFile, keyFile, caFile, dir, name string) (*Bundle, error) {
	switch {
	case dir != "" && (certFile != "" || keyFile != "" || caFile != ""):
		return nil, errors.New("give either --tls-dir or --tls-cert, --tls-key and --tls-ca, not both")
	case dir != "":
		return LoadDir(dir, name)
	case certFile == "" && keyFile == "" && caFile == "":
		return nil, nil
	case certFile == "" || keyFile == "" || caFile == "":
		return nil, errors.New("--tls-cert, --tls-key and --tls-ca go together")
	}
	return Load(certFile, keyFile, caFile)
}

// VerifyChain checks that chain[0] is signed by a CA in pool and valid at
// now for client and server use, and returns the identity it names.
func VerifyChain(pool *x509.CertPool, chain []*x509.Certificate, now time.Time) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, errors.New("no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots: pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return Identity{}, fmt.Errorf("certificate not trusted: %w", err)
	}
	return IdentityOf(chain[0])
}

// Accept decides whether a verified peer identity may connect.
type Accept func(Identity) error

// AnyIdentity accepts every identity the rack CA signed.
func AnyIdentity(Identity) error { return nil }

// OnlyKinds accepts identities of the given kinds.
func OnlyKinds(kinds ...Kind) Accept {
	return func(id Identity) error {
		for _, k := range kinds {
			if id.Kind == k {
				return nil
			}
		}
		return fmt.Errorf("%s may not connect here", id)
	}
}

// Exactly accepts only want.
func Exactly(want Identity) Accept {
	return func(id Identity) error {
		if id != want {
			return fmt.Errorf("expected %s, the peer is %s", want, id)
		}
		return nil
	}
}

// ErrNoPeerCertificate is returned by PeerIdentity for a connection whose
// peer presented no certificate.
var ErrNoPeerCertificate = errors.New("the peer presented no certificate")

// PeerIdentity is the identity of a connection's verified peer. Use it
// only on connections made with ServerTLS or ClientTLS, which verify the
// chain during the handshake.
func PeerIdentity(cs *tls.ConnectionState) (Identity, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return Identity{}, ErrNoPeerCertificate
	}
	return IdentityOf(cs.PeerCertificates[0])
}

// ServerTLS is a server configuration that requires a client certificate
// from the rack CA and lets accept refuse the identity it names (the
// handshake fails then). now is the clock certificates are judged by (nil:
// time.Now).
func (b *Bundle) ServerTLS(accept Accept, now func() time.Time) *tls.Config {
	if now == nil {
		now = time.Now
	}
	pool := b.Pool()
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{b.Cert},
		// Verification is ours (VerifyConnection) so that the identity
		// check runs in the same place as the chain check.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeer(pool, cs, accept, now())
		},
	}
}

// ClientTLS is a client configuration that presents b's certificate and
// accepts a server whose certificate the rack CA signed and accept allows.
// Host names are not checked: identity is the certificate's URI SAN.
func (b *Bundle) ClientTLS(accept Accept, now func() time.Time) *tls.Config {
	if now == nil {
		now = time.Now
	}
	pool := b.Pool()
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{b.Cert},
		// The standard verification checks host names, which mean
		// nothing in the rack; VerifyConnection does the chain and the
		// identity instead, and it always runs.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeer(pool, cs, accept, now())
		},
	}
}

func verifyPeer(pool *x509.CertPool, cs tls.ConnectionState, accept Accept, now time.Time) error {
	id, err := VerifyChain(pool, cs.PeerCertificates, now)
	if err != nil {
		return err
	}
	if accept != nil {
		if err := accept(id); err != nil {
			return err
		}
	}
	return nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("rackpki: %w", err)
	}
	if err := fsutil.WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("rackpki: %w", err)
	}
	return nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("rackpki: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("rackpki: %s holds no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("rackpki: %s: %w", path, err)
	}
	return c, nil
}

func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("rackpki: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("rackpki: %s holds no PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("rackpki: %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("rackpki: %s: not a signing key", path)
	}
	return s, nil
}

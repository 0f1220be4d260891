package rackpki

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// CockroachDB's files, as its --certs-dir and a pgx client read them, make
// a mutual TLS connection under the rack CA: the node's certificate names
// the principal "node" and the node's hosts, the client's names its SQL
// user. Neither is a rack identity, so rack listeners refuse them.
func TestCockroachCertificates(t *testing.T) {
	ca, err := NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nodeDir, clientDir := t.TempDir(), t.TempDir()
	node, err := ca.IssueCockroachNode(nodeDir, IssueOptions{Hosts: []string{"crdb-1", "localhost", "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if node.Subject.CommonName != "node" || !slices.Equal(node.DNSNames, []string{"crdb-1", "localhost"}) ||
		len(node.IPAddresses) != 1 || len(node.URIs) != 0 {
		t.Fatalf("node certificate: CN %q, DNS %v, IPs %v, URIs %v", node.Subject.CommonName, node.DNSNames,
			node.IPAddresses, node.URIs)
	}
	if _, err := ca.IssueCockroachClient(clientDir, "rackplane", IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"node.crt", "node.key", "ca.crt"} {
		if _, err := os.Stat(filepath.Join(nodeDir, f)); err != nil {
			t.Fatalf("node dir: %v", err)
		}
	}
	for name, want := range map[string]os.FileMode{"node.key": 0o600, "node.crt": 0o644} {
		fi, err := os.Stat(filepath.Join(nodeDir, name))
		if err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %v (%v), want %v", name, fi.Mode().Perm(), err, want)
		}
	}
	nodeCert, err := tls.LoadX509KeyPair(filepath.Join(nodeDir, "node.crt"), filepath.Join(nodeDir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := tls.LoadX509KeyPair(filepath.Join(clientDir, "client.rackplane.crt"),
		filepath.Join(clientDir, "client.rackplane.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(clientDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no certificate")
	}

	// The node as server, requiring a client certificate from the CA.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{nodeCert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	users := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			users <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			users <- "handshake: " + err.Error()
			return
		}
		_, _ = io.WriteString(c, "ok")
		users <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	}()
	// The client checks the node's name, as sslmode=verify-full does.
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{Certificates: []tls.Certificate{clientCert}, RootCAs: pool,
		ServerName: "crdb-1", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if u := <-users; u != "rackplane" {
		t.Fatalf("the node saw client %q, want the SQL user rackplane", u)
	}

	// Not a rack identity: a rack listener refuses it.
	if _, err := Load(filepath.Join(clientDir, "client.rackplane.crt"), filepath.Join(clientDir, "client.rackplane.key"),
		filepath.Join(clientDir, "ca.crt")); err == nil {
		t.Fatal("a database client certificate loaded as a rack identity")
	}
	nx := mustIssue(t, ca, Nexus("3f1c7e2a-5b8d-4c61-9a0e-2d4b6f8a1c3e"), IssueOptions{Hosts: []string{"127.0.0.1"}})
	addr, got := serve(t, nx.ServerTLS(AnyIdentity, nil))
	_ = dial(addr, &tls.Config{Certificates: []tls.Certificate{clientCert}, RootCAs: pool, ServerName: "127.0.0.1",
		MinVersion: tls.VersionTLS12})
	if r := <-got; r.err == nil {
		t.Fatalf("a rack listener accepted a database client certificate as %v", r.id)
	}
}

func TestCockroachCertificatesRefuseBadNames(t *testing.T) {
	ca, err := NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"", "Root", "node", "a b", "x;y", strings.Repeat("a", 64)} {
		if _, err := ca.IssueCockroachClient(t.TempDir(), user, IssueOptions{}); err == nil {
			t.Errorf("client certificate for %q issued", user)
		}
	}
	if _, err := ca.IssueCockroachNode(t.TempDir(), IssueOptions{}); err == nil {
		t.Error("node certificate without hosts issued")
	}
}

package rackpki

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIdentityURIRoundTrip(t *testing.T) {
	for _, id := range []Identity{
		Sled("rackplane-sim", "SIM-0001"),
		Sled("part:with:colons", "serial/with%odd chars"),
		Nexus("6d4f0f5e-7a39-4c55-9b5e-5b1f3f7c2a10"),
		RSS(),
	} {
		got, err := ParseURI(id.URI())
		if err != nil {
			t.Fatalf("%v: %v", id, err)
		}
		if got != id {
			t.Errorf("round trip of %q gave %+v, want %+v", id.URI(), got, id)
		}
	}
	for _, bad := range []string{
		"", "urn:rackplane:", "urn:rackplane:sled:p", "urn:rackplane:sled:p:s:x", "urn:rackplane:sled::s",
		"urn:rackplane:nexus:", "urn:rackplane:rss:x", "urn:other:sled:p:s", "urn:rackplane:sled:p:%zz",
	} {
		if id, err := ParseURI(bad); err == nil {
			t.Errorf("ParseURI(%q) = %+v, want an error", bad, id)
		}
	}
}

func TestIssueAndLoadFromFiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := InitCA(filepath.Join(dir, "ca"), "test", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InitCA(filepath.Join(dir, "ca"), "test", 0); err == nil {
		t.Fatal("InitCA replaced an existing CA")
	}
	if fi, err := os.Stat(filepath.Join(dir, "ca", CAKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode: %v %v", fi.Mode(), err)
	}
	loaded, err := LoadCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Fatal("LoadCA returned another certificate")
	}
	id := Sled("p", "s1")
	if _, err := loaded.IssueFiles(filepath.Join(dir, "sled1"), "sled", id, IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := LoadDir(filepath.Join(dir, "sled1"), "sled")
	if err != nil {
		t.Fatal(err)
	}
	if b.Identity != id {
		t.Fatalf("loaded identity %v, want %v", b.Identity, id)
	}
	if fi, err := os.Stat(filepath.Join(dir, "sled1", KeyFile("sled"))); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode: %v %v", fi.Mode(), err)
	}

	// A certificate from another CA does not load against this CA.
	other, err := NewCA("other", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.IssueFiles(filepath.Join(dir, "evil"), "sled", id, IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = Load(filepath.Join(dir, "evil", CertFile("sled")), filepath.Join(dir, "evil", KeyFile("sled")),
		filepath.Join(dir, "ca", CACertFile))
	if err == nil || !strings.Contains(err.Error(), "not trusted") {
		t.Fatalf("a foreign certificate loaded: %v", err)
	}
}

// serve accepts one TLS connection and reports the client identity it saw
// (or the handshake error).
func serve(t *testing.T, cfg *tls.Config) (addr string, got <-chan result) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			ch <- result{err: err}
			return
		}
		cs := tc.ConnectionState()
		id, err := PeerIdentity(&cs)
		_, _ = io.WriteString(c, "ok")
		ch <- result{id: id, err: err}
	}()
	return ln.Addr().String(), ch
}

type result struct {
	id  Identity
	err error
}

func dial(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	// TLS 1.3 client certificates are checked after the client's
	// handshake returns: a read surfaces the server's refusal.
	buf := make([]byte, 2)
	_, err = io.ReadFull(c, buf)
	return err
}

func mustIssue(t *testing.T, ca *CA, id Identity, opts IssueOptions) *Bundle {
	t.Helper()
	b, err := ca.Issue(id, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMutualTLS(t *testing.T) {
	ca, err := NewCA("test", 0)
	if err != nil {
		t.Fatal(err)
	}
	nexus := mustIssue(t, ca, Nexus("n1"), IssueOptions{})
	sled := mustIssue(t, ca, Sled("p", "s1"), IssueOptions{})
	sled2 := mustIssue(t, ca, Sled("p", "s2"), IssueOptions{})

	t.Run("identity from the certificate", func(t *testing.T) {
		addr, got := serve(t, sled.ServerTLS(AnyIdentity, nil))
		if err := dial(addr, nexus.ClientTLS(Exactly(sled.Identity), nil)); err != nil {
			t.Fatal(err)
		}
		r := <-got
		if r.err != nil || r.id != nexus.Identity {
			t.Fatalf("server saw %v, %v", r.id, r.err)
		}
	})
	t.Run("server refuses an identity it does not accept", func(t *testing.T) {
		addr, got := serve(t, sled.ServerTLS(OnlyKinds(KindNexus), nil))
		if err := dial(addr, sled2.ClientTLS(AnyIdentity, nil)); err == nil {
			t.Fatal("a sled got through a Nexus-only listener")
		}
		if r := <-got; r.err == nil || !strings.Contains(r.err.Error(), "may not connect") {
			t.Fatalf("server: %v", r.err)
		}
	})
	t.Run("client refuses a server that is not who it expected", func(t *testing.T) {
		addr, _ := serve(t, sled2.ServerTLS(AnyIdentity, nil))
		err := dial(addr, nexus.ClientTLS(Exactly(sled.Identity), nil))
		if err == nil || !strings.Contains(err.Error(), "expected urn:rackplane:sled:p:s1") {
			t.Fatalf("dial: %v", err)
		}
	})
	t.Run("another CA is refused both ways", func(t *testing.T) {
		other, err := NewCA("other", 0)
		if err != nil {
			t.Fatal(err)
		}
		// Same identity, foreign CA: the name alone buys nothing.
		fake := mustIssue(t, other, Nexus("n1"), IssueOptions{})
		addr, got := serve(t, sled.ServerTLS(AnyIdentity, nil))
		// This client does not check the server, so the refusal seen is
		// the server's own.
		lax := &tls.Config{Certificates: []tls.Certificate{fake.Cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
		if err := dial(addr, lax); err == nil {
			t.Fatal("a foreign client got through")
		}
		if r := <-got; r.err == nil || !strings.Contains(r.err.Error(), "not trusted") {
			t.Fatalf("server: %v", r.err)
		}
		addr, _ = serve(t, fake.ServerTLS(AnyIdentity, nil))
		if err := dial(addr, nexus.ClientTLS(AnyIdentity, nil)); err == nil || !strings.Contains(err.Error(), "not trusted") {
			t.Fatalf("a foreign server was accepted: %v", err)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		addr, got := serve(t, sled.ServerTLS(AnyIdentity, nil))
		cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
		if err := dial(addr, cfg); err == nil {
			t.Fatal("a client without a certificate got through")
		}
		if r := <-got; r.err == nil {
			t.Fatal("server accepted a client without a certificate")
		}
	})
	t.Run("expired certificate", func(t *testing.T) {
		old := mustIssue(t, ca, Nexus("n1"), IssueOptions{Now: time.Now().Add(-48 * time.Hour), Validity: time.Hour})
		addr, got := serve(t, sled.ServerTLS(AnyIdentity, nil))
		if err := dial(addr, old.ClientTLS(AnyIdentity, nil)); err == nil {
			t.Fatal("an expired client certificate got through")
		}
		r := <-got
		var inv interface{ Error() string }
		if r.err == nil || !errors.As(r.err, &inv) || !strings.Contains(r.err.Error(), "expired") {
			t.Fatalf("server: %v", r.err)
		}
	})
}

func TestIdentityOfRefusesAmbiguousCertificates(t *testing.T) {
	ca, err := NewCA("test", 0)
	if err != nil {
		t.Fatal(err)
	}
	b := mustIssue(t, ca, Sled("p", "s"), IssueOptions{})
	leaf := *b.Leaf
	leaf.URIs = append(leaf.URIs, b.Leaf.URIs[0], b.Leaf.URIs[0])
	leaf.URIs[1] = mustURL(t, Sled("p", "other").URI())
	if _, err := IdentityOf(&leaf); err == nil {
		t.Fatal("a certificate naming two identities was accepted")
	}
	leaf.URIs = nil
	if _, err := IdentityOf(&leaf); err == nil {
		t.Fatal("a certificate naming no identity was accepted")
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

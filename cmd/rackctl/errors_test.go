package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/nexus/model"
	"github.com/rackplane/rackplane/sledagent"
)

// httpsCert makes a CA (written to a PEM file, for --ca-cert) and a server
// certificate it signed for 127.0.0.1, as an operator's external
// certificate would be.
func httpsCert(t *testing.T) (caFile string, cert tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "operator test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nexus external"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// silentListener accepts connections and never answers.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// closedPort is a loopback port nothing listens on (it was just freed).
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func hostOf(rawURL string) string { return rawURL[strings.Index(rawURL, "://")+3:] }

// Every way an operator's command can fail, through the real binary
// against real listeners: the text form and the --json form are compared
// with testdata/errors/*.golden, and neither may carry a raw Go error.
func TestErrorMessagesGolden(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nx := racktest.StartNexus(t, testdb.New(t).URL, nexus.Config{})
	caFile, cert := httpsCert(t)
	tlsNx := racktest.StartNexus(t, testdb.New(t).URL, nexus.Config{ExternalTLS: &cert})
	sled := racktest.StartSled(t, nx.InternalURL(), sledagent.Config{})
	viewer := nx.Token(t, "dashboards", model.RoleViewer, 0)
	revoked := nx.Token(t, "departed", model.RoleViewer, 0)
	expired := nx.Token(t, "shortlived", model.RoleViewer, time.Second)
	toks, err := nx.Client.TokenList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		if tok.Name == "departed" {
			if _, err := nx.Client.TokenRevoke(ctx, tok.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	racktest.WaitFor(t, 10*time.Second, "the short-lived token to expire", func() error {
		c, err := client.NewNexus(nx.ExternalURL(), nil)
		if err != nil {
			return err
		}
		if _, err := c.WithToken(expired).SledList(ctx); client.ErrorCode(err) != api.CodeTokenExpired {
			return fmt.Errorf("not expired yet: %v", err)
		}
		return nil
	})
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		if r.URL.Path == "/v1/system/hardware/sleds" {
			fmt.Fprint(w, "<html><body>a dashboard</body></html>")
			return
		}
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, "<html><body><h1>404 Not Found</h1></body></html>")
	}))
	t.Cleanup(web.Close)
	other := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(other.Close)

	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notZip := write("notes.zip", []byte("release notes, not a release\n"))
	gz := write("release.tar.gz.zip", []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0})
	truncated := write("truncated.zip", []byte("PK\x03\x04 and then nothing a zip reader can use"))
	emptyToken := write("empty-token", nil)
	if err := os.Chmod(emptyToken, 0o600); err != nil {
		t.Fatal(err)
	}

	ext, tlsExt := hostOf(nx.ExternalURL()), hostOf(tlsNx.ExternalURL())
	var m masker
	m.literalMask(ext, "NEXUS")
	m.literalMask(hostOf(nx.InternalURL()), "NEXUS_INTERNAL")
	m.literalMask(tlsExt, "NEXUS_TLS")
	m.literalMask(sled.Address(), "SLED_API")
	m.literalMask(hostOf(web.URL), "WEB")
	m.literalMask(hostOf(other.URL), "OTHER_WEB")
	m.literalMask(dir, "DIR")
	m.literalMask(caFile, "CA_FILE")
	silent, closed := silentListener(t), closedPort(t)
	m.literalMask(silent, "SILENT")
	m.literalMask(closed, "CLOSED")
	m.regexpMask(`request [0-9a-z-]{8,}\)`, "request ID)")
	m.regexpMask(`rp_[A-Za-z0-9_-]{20,}`, "rp_TOKEN")
	m.regexpMask(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`, "TIME")
	m.regexpMask(`"request_id":"[^"]*"`, `"request_id":"ID"`)

	admin := []string{"RACKPLANE_TOKEN=" + nx.AdminToken}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		exit int
	}{
		// Command-line mistakes: exit 2, nothing sent.
		{"usage_unknown_command", admin, []string{"frobnicate"}, 2},
		{"usage_misspelt_group", admin, []string{"sled", "list"}, 2},
		{"usage_unknown_verb", admin, []string{"repo", "frobnicate"}, 2},
		{"usage_missing_verb", admin, []string{"sleds"}, 2},
		{"usage_unknown_flag", admin, []string{"sleds", "list", "--bogus"}, 2},
		{"usage_single_dash", admin, []string{"-json", "sleds", "list"}, 2},
		{"usage_flag_without_value", admin, []string{"sleds", "list", "--nexus"}, 2},
		{"usage_bad_duration", admin, []string{"--timeout", "soon", "sleds", "list"}, 2},
		{"usage_extra_argument", admin, []string{"--nexus", nx.ExternalURL(), "sleds", "list", "extra"}, 2},
		{"usage_url_with_v1", admin, []string{"--nexus", nx.ExternalURL() + "/v1", "sleds", "list"}, 2},
		{"usage_url_without_scheme", admin, []string{"--nexus", ext, "sleds", "list"}, 2},
		{"usage_unknown_help_topic", admin, []string{"help", "frobnicate"}, 2},
		{"no_token", nil, []string{"--nexus", nx.ExternalURL(), "sleds", "list"}, 2},
		{"empty_token_file", nil, []string{"--nexus", nx.ExternalURL(), "--token-file", emptyToken, "sleds", "list"}, 2},
		{"missing_token_file", nil, []string{"--nexus", nx.ExternalURL(), "--token-file", filepath.Join(dir, "nope"), "sleds", "list"}, 1},
		// Files: refused before a byte is sent.
		{"upload_directory", admin, []string{"--nexus", nx.ExternalURL(), "repo", "upload", dir}, 1},
		{"upload_missing_file", admin, []string{"--nexus", nx.ExternalURL(), "repo", "upload", filepath.Join(dir, "missing.zip")}, 1},
		{"upload_not_a_zip", admin, []string{"--nexus", nx.ExternalURL(), "repo", "upload", notZip}, 1},
		{"upload_gzip", admin, []string{"--nexus", nx.ExternalURL(), "repo", "upload", gz}, 1},
		{"upload_truncated_zip", admin, []string{"--nexus", nx.ExternalURL(), "repo", "upload", truncated}, 1},
		{"trust_root_not_json", admin, []string{"--nexus", nx.ExternalURL(), "trust-root", "add", notZip}, 1},
		// Pointed at the wrong thing.
		{"https_to_http_nexus", admin, []string{"--nexus", "https://" + ext, "sleds", "list"}, 1},
		{"http_to_https_nexus", admin, []string{"--nexus", "http://" + tlsExt, "sleds", "list"}, 1},
		{"https_untrusted_certificate", admin, []string{"--nexus", tlsNx.ExternalURL(), "sleds", "list"}, 1},
		{"http_to_internal_port", admin, []string{"--nexus", "http://" + hostOf(nx.InternalURL()), "sleds", "list"}, 1},
		{"https_to_internal_port", admin, []string{"--nexus", nx.InternalURL(), "sleds", "list"}, 1},
		{"https_to_sled_api", admin, []string{"--nexus", "https://" + sled.Address(), "sleds", "list"}, 1},
		{"not_nexus_404", admin, []string{"--nexus", other.URL, "sleds", "list"}, 1},
		{"not_nexus_html", admin, []string{"--nexus", web.URL, "sleds", "list"}, 1},
		{"connection_refused", admin, []string{"--nexus", "http://" + closed, "sleds", "list"}, 1},
		{"unknown_host", admin, []string{"--nexus", "http://nosuchhost.invalid:12220", "sleds", "list"}, 1},
		{"timeout", admin, []string{"--nexus", "http://" + silent, "--timeout", "300ms", "sleds", "list"}, 1},
		// Nexus says no.
		{"invalid_token", nil, []string{"--nexus", nx.ExternalURL(), "--token", "rp_not-a-token", "sleds", "list"}, 1},
		{"revoked_token", []string{"RACKPLANE_TOKEN=" + revoked}, []string{"--nexus", nx.ExternalURL(), "sleds", "list"}, 1},
		{"expired_token", nil, []string{"--nexus", nx.ExternalURL(), "--token", expired, "sleds", "list"}, 1},
		{"viewer_changes_something", nil, []string{"--nexus", nx.ExternalURL(), "--token", viewer, "bgtasks", "disable", "sled_liveness"}, 1},
		{"not_found", admin, []string{"--nexus", nx.ExternalURL(), "repo", "show", "9.9.9"}, 1},
		{"sled_not_found", admin, []string{"--nexus", nx.ExternalURL(), "sleds", "show", "NO-SUCH-SERIAL"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var record strings.Builder
			var jsonOut string
			for _, asJSON := range []bool{false, true} {
				args := tc.args
				if asJSON {
					args = append([]string{"--json"}, args...)
				}
				code, stdout, stderr := rackctlMain(t, tc.env, args...)
				fmt.Fprintf(&record, "$ rackctl %s\nexit %d\n%s", m.apply(strings.Join(args, " ")), code, m.apply(stderr))
				if code != tc.exit {
					t.Errorf("%q: exit %d, want %d (stderr %q)", args, code, tc.exit, stderr)
				}
				if stdout != "" {
					t.Errorf("%q: printed on stdout: %q", args, stdout)
				}
				if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
					t.Errorf("%q: stderr is not one line: %q", args, stderr)
				}
				if rawGoError.MatchString(stderr) {
					t.Errorf("%q: a raw Go error reached the operator: %q", args, stderr)
				}
				if asJSON {
					jsonOut = stderr
				} else if !strings.HasPrefix(stderr, "rackctl: ") {
					t.Errorf("%q: stderr does not start with rackctl: %q", args, stderr)
				}
			}
			var body struct {
				Error struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(jsonOut), &body); err != nil || body.Error.Code == "" || body.Error.Message == "" {
				t.Errorf("--json error %q: %v", jsonOut, err)
			}
			golden(t, filepath.Join("errors", tc.name), record.String())
		})
	}

	// The untrusted certificate's fix works: with --ca-cert it answers.
	code, out, errOut := rackctlMain(t, admin, "--nexus", tlsNx.ExternalURL(), "--ca-cert", caFile, "--token", tlsNx.AdminToken, "sleds", "list")
	if code != 0 || !strings.HasSuffix(out, "0 sled(s)\n") || errOut != "" {
		t.Errorf("with --ca-cert: exit %d %q %q", code, out, errOut)
	}
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/rackplane/rackplane/api"
)

// usageError is a command-line mistake (exit status 2).
type usageError string

func (u usageError) Error() string { return string(u) }

// failure is a refusal rackctl makes itself, before or instead of asking
// Nexus (exit status 1): a stable code for scripts and one sentence that
// says what to do.
type failure struct{ code, msg string }

func (f *failure) Error() string { return f.msg }

func fail(code, format string, a ...any) error {
	return &failure{code: code, msg: fmt.Sprintf(format, a...)}
}

// fileProblem explains why a file named on the command line (what says
// which argument or flag) cannot be used.
func fileProblem(what, path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail("file_not_found", "%s: %s does not exist", what, path)
	case errors.Is(err, fs.ErrPermission):
		return fail("file_not_readable", "%s: %s cannot be read (permission denied)", what, path)
	case errors.Is(err, syscall.EISDIR):
		return fail("is_a_directory", "%s: %s is a directory, not a file", what, path)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fail("file_unreadable", "%s: cannot %s %s: %v", what, pe.Op, path, pe.Err)
	}
	return fail("file_unreadable", "%s: %s: %v", what, path, err)
}

// report is an error as the operator sees it.
type report struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	RequestID  string `json:"request_id,omitempty"`
	HTTPStatus int    `json:"http_status,omitempty"`
	exit       int
}

// print writes r as one line, or as {"error": r} under --json.
func (r report) print(w io.Writer, asJSON bool) {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(struct {
			Error report `json:"error"`
		}{r})
		return
	}
	line := r.Message
	if r.HTTPStatus != 0 {
		// Nexus's own refusals carry their code (and request id, to find
		// the server's log lines), as scripts and support ask for them.
		line += " (" + r.Code
		if r.RequestID != "" {
			line += ", request " + r.RequestID
		}
		line += ")"
	}
	fmt.Fprintln(w, "rackctl: "+line)
}

// describe turns any error a command returns into one actionable sentence:
// no Go error text (dial tcp, x509:, EOF) reaches the operator as it is.
func describe(ctx context.Context, err error, g *globals) report {
	var ue usageError
	var f *failure
	var apiErr *api.Error
	switch {
	case errors.As(err, &ue):
		return report{Code: "usage", Message: string(ue), exit: 2}
	case errors.As(err, &f):
		return report{Code: f.code, Message: f.msg, exit: 1}
	case errors.As(err, &apiErr):
		return describeAPI(ctx, apiErr, g)
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return report{Code: "interrupted", Message: "interrupted; nothing more was sent", exit: 130}
	}
	return describeTransport(ctx, err, g)
}

// describeAPI explains a non-2xx answer.
func describeAPI(ctx context.Context, e *api.Error, g *globals) report {
	r := report{Code: e.ErrorCode, Message: e.Message, RequestID: e.RequestID, HTTPStatus: e.StatusCode, exit: 1}
	switch {
	case e.StatusCode == 400 && strings.Contains(e.Message, "HTTP request to an HTTPS server"):
		// Go's TLS servers answer a plain-HTTP request so.
		return plainReport(probeReport(ctx, g, "wrong_scheme", fmt.Sprintf("%s serves HTTPS, not HTTP: use --nexus %s", hostPort(g.nexusURL),
			withScheme(g.nexusURL, "https"))))
	case strings.HasPrefix(e.ErrorCode, "http_"):
		// Not one of Nexus's error bodies: something else answers there.
		return plainReport("wrong_server", fmt.Sprintf("the server at %s answered HTTP %d and is not Nexus's external API (check --nexus)",
			g.nexusURL, e.StatusCode))
	case e.StatusCode == 401:
		r.Message = fmt.Sprintf("Nexus refused the token from %s: %s", g.tokenSource, e.Message)
	case e.StatusCode == 403 && e.ErrorCode == api.CodeForbidden:
		r.Message = fmt.Sprintf("%s; pass an admin token (this one came from %s)", e.Message, g.tokenSource)
	}
	return r
}

func plainReport(code, msg string) report { return report{Code: code, Message: msg, exit: 1} }

// describeTransport explains a request that got no HTTP answer.
func describeTransport(ctx context.Context, err error, g *globals) report {
	base := g.nexusURL
	hostport := hostPort(base)
	var dnsErr *net.DNSError
	var urlErr *url.Error
	var verifyErr *tls.CertificateVerificationError
	var alert tls.AlertError
	var recordErr tls.RecordHeaderError
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	msg := err.Error()
	switch {
	case errors.As(err, &dnsErr):
		return plainReport("unknown_host", fmt.Sprintf("cannot find the host %q of --nexus %s (DNS lookup failed)", dnsErr.Name, base))
	case errors.Is(err, syscall.ECONNREFUSED):
		return plainReport("unreachable", fmt.Sprintf("cannot reach Nexus at %s: nothing is listening at %s (is Nexus running? "+
			"is --nexus, or $%s, its external API?)", base, hostport, envNexusURL))
	case errors.As(err, &urlErr) && urlErr.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return plainReport("timeout", fmt.Sprintf("Nexus at %s did not answer within %s (raise --timeout for a slow link or a busy Nexus)",
			base, g.timeout))
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return plainReport("wrong_scheme", fmt.Sprintf("%s serves plain HTTP, not HTTPS: use --nexus %s", hostport, withScheme(base, "http")))
	case errors.As(err, &verifyErr):
		return plainReport(probeReport(ctx, g, "untrusted_certificate", untrusted(verifyErr, hostport)))
	case errors.As(err, &recordErr), strings.Contains(msg, "malformed HTTP response"):
		return plainReport(probeReport(ctx, g, "wrong_scheme", fmt.Sprintf("%s does not speak %s; check the scheme of --nexus", hostport,
			strings.ToUpper(schemeOf(base)))))
	case errors.As(err, &alert), strings.Contains(msg, "tls: "):
		return plainReport(probeReport(ctx, g, "tls_refused", fmt.Sprintf("%s refused the TLS handshake; it is not Nexus's external API", hostport)))
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return plainReport(probeReport(ctx, g, "connection_closed", fmt.Sprintf("%s closed the connection before answering (is --nexus Nexus's external API, "+
			"and is it up?)", hostport)))
	case errors.As(err, &syntaxErr), errors.As(err, &typeErr):
		return plainReport("wrong_server", fmt.Sprintf("the server at %s answered with something other than Nexus's JSON; "+
			"is --nexus Nexus's external API (and is rackctl as new as Nexus)?", base))
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return plainReport("unreachable", fmt.Sprintf("no route to %s from this machine (check --nexus and the network)", hostport))
	}
	return plainReport("error", fmt.Sprintf("talking to Nexus at %s failed: %s", base, msg))
}

// untrusted says why the server's certificate was not accepted.
func untrusted(e *tls.CertificateVerificationError, hostport string) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	why := "is not trusted"
	switch {
	case errors.As(e.Err, &unknown):
		why = "is signed by an authority this machine does not trust"
	case errors.As(e.Err, &host):
		why = "does not name " + host.Host
	case errors.As(e.Err, &invalid) && invalid.Reason == x509.Expired:
		why = "has expired (or is not valid yet)"
	}
	return fmt.Sprintf("the certificate of %s %s; pass the CA that signed Nexus's external certificate with --ca-cert FILE", hostport, why)
}

// probeReport names what listens at --nexus when it is one of the rack's
// mutual-TLS listeners (Nexus's internal API, a sled), which an operator
// may point rackctl at by mistake; otherwise it returns the fallback
// sentence. It looks at the server's certificate and whether the server
// asks for one, and sends nothing.
func probeReport(ctx context.Context, g *globals, code, fallback string) (string, string) {
	hostport := hostPort(g.nexusURL)
	p := probeTLS(ctx, hostport, min(g.timeout, 3*time.Second))
	if !p.mutualTLS {
		if p.tls && strings.HasPrefix(g.nexusURL, "http://") {
			return "wrong_scheme", fmt.Sprintf("%s serves HTTPS, not HTTP: use --nexus %s", hostport, withScheme(g.nexusURL, "https"))
		}
		return code, fallback
	}
	what := "a rack-internal listener (mutual TLS, for rack components)"
	for _, id := range p.identities {
		switch {
		case strings.HasPrefix(id, "urn:rackplane:nexus:"):
			what = "Nexus's internal API (mutual TLS, for sleds)"
		case strings.HasPrefix(id, "urn:rackplane:sled:"):
			what = "a sled's API or depot (mutual TLS, for Nexus)"
		}
	}
	return "internal_listener", fmt.Sprintf("%s is %s, not the operator API: point --nexus at Nexus's external API "+
		"(port 12220 unless configured otherwise)", hostport, what)
}

// tlsProbe is what a TLS handshake showed about a listener.
type tlsProbe struct {
	tls, mutualTLS bool
	identities     []string
}

// probeTLS opens a TLS connection to hostport to see what listens there.
// It verifies nothing because it trusts nothing it learns: it only reads
// the certificate's URI SANs and whether the server asked for a client
// certificate (it is given none), then closes without sending a byte of
// HTTP.
func probeTLS(ctx context.Context, hostport string, timeout time.Duration) tlsProbe {
	var p tlsProbe
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // read-only diagnosis, see above
		MinVersion:         tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			p.mutualTLS = true
			return &tls.Certificate{}, nil
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) > 0 {
				if c, err := x509.ParseCertificate(raw[0]); err == nil {
					for _, u := range c.URIs {
						p.identities = append(p.identities, u.String())
					}
				}
			}
			return nil
		},
	}}
	conn, err := d.DialContext(ctx, "tcp", hostport)
	if conn != nil {
		conn.Close()
	}
	p.tls = err == nil || p.mutualTLS || len(p.identities) > 0
	return p
}

// hostPort is the host:port a base URL connects to.
func hostPort(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

func schemeOf(base string) string {
	if i := strings.Index(base, "://"); i > 0 {
		return base[:i]
	}
	return "http"
}

// withScheme is base with its scheme replaced.
func withScheme(base, scheme string) string {
	if i := strings.Index(base, "://"); i > 0 {
		return scheme + base[i:]
	}
	return scheme + "://" + base
}

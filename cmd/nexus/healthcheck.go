package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/envflag"
)

// runHealthcheck is `nexus healthcheck`: ask a Nexus's /healthz and exit 0
// only when it answers ok. Container health checks run it; the image has
// no curl, and this speaks the API's own client.
func runHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var url, caFile string
	var timeout time.Duration
	fs := envflag.New("nexus healthcheck", "usage: nexus healthcheck [--url URL] [--ca FILE] [--timeout D]")
	fs.SetOutput(stderr)
	fs.String(&url, "url", "RACKPLANE_NEXUS_URL", "http://127.0.0.1:12220", "base URL of the Nexus external API to check")
	fs.String(&caFile, "ca", "RACKPLANE_HEALTHCHECK_CA", "",
		"CA certificate (PEM) the external API's HTTPS certificate is checked against (default: the system's)")
	fs.Duration(&timeout, "timeout", "RACKPLANE_HEALTHCHECK_TIMEOUT", 5*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return exitUsage(err, stderr)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nexus: unexpected argument %q (see --help)\n", fs.Arg(0))
		return 2
	}
	hc := &http.Client{Timeout: timeout}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			fmt.Fprintln(stderr, "nexus: --ca:", err)
			return 2
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintf(stderr, "nexus: --ca: %s holds no PEM certificate\n", caFile)
			return 2
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	nx, err := client.NewNexus(url, hc)
	if err != nil {
		fmt.Fprintln(stderr, "nexus: --url:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	h, err := nx.Health(ctx)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "nexus: %s is not healthy: %v\n", url, err)
		return 1
	case h.Status != "ok":
		fmt.Fprintf(stderr, "nexus: %s is not healthy: status %q, checks %v\n", url, h.Status, h.Checks)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", url)
	return 0
}

package main

import (
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/rackpki"
)

// runPKI is `nexus pki init|issue`: the rack CA and its certificates for a
// real deployment (rackdev makes its own). The CA's key stays in the
// directory init made; issue writes a party's certificate, key and a copy
// of the CA certificate into the directory that party will be given.
func runPKI(args []string, stdout, stderr io.Writer) int {
	const usage = `usage:
  nexus pki init --dir DIR [--name RACK] [--validity DURATION]
  nexus pki issue --ca-dir DIR --out DIR (--nexus ID | --sled PART:SERIAL | --rss) [--validity DURATION] [--host NAME]...
  nexus pki issue --ca-dir DIR --out DIR (--cockroach-node --host NAME... | --cockroach-client USER) [--validity DURATION]`
	if len(args) == 0 || (args[0] != "init" && args[0] != "issue") {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("nexus pki "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var dir, caDir, out, name, nexusID, sled, crdbClient string
	var rss, crdbNode bool
	var validity time.Duration
	var hosts multi
	fs.DurationVar(&validity, "validity", rackpki.DefaultValidity, "how long the certificate is valid")
	if args[0] == "init" {
		fs.StringVar(&dir, "dir", "", "directory for ca.crt and ca.key (required; keep it on the machine that made it)")
		fs.StringVar(&name, "name", "rack", "the rack's name, in the CA's subject")
	} else {
		fs.StringVar(&caDir, "ca-dir", "", "the CA's directory (from pki init; required)")
		fs.StringVar(&out, "out", "", "directory to write the certificate, its key and ca.crt into (required)")
		fs.StringVar(&nexusID, "nexus", "", "issue for the Nexus with this instance id (its --id, or <data-dir>/nexus-id)")
		fs.StringVar(&sled, "sled", "", "issue for the sled with this baseboard, PART:SERIAL")
		fs.BoolVar(&rss, "rss", false, "issue for the rack-setup service")
		fs.BoolVar(&crdbNode, "cockroach-node", false,
			"issue a CockroachDB node certificate (node.crt, node.key) naming the --host names the node is reached at")
		fs.StringVar(&crdbClient, "cockroach-client", "",
			"issue a CockroachDB client certificate (client.USER.crt, client.USER.key) for SQL user USER")
		fs.Var(&hosts, "host", "a DNS name or IP address to add, for clients that check host names (repeatable)")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage(err, stderr)
	}
	if args[0] == "init" {
		if dir == "" {
			fmt.Fprintln(stderr, "nexus: pki init needs --dir")
			return 2
		}
		ca, err := rackpki.InitCA(dir, name, validity)
		if err != nil {
			fmt.Fprintln(stderr, "nexus:", err)
			return 1
		}
		fmt.Fprintf(stdout, "rack CA %q made in %s, valid until %s; keep %s there\n", name, dir,
			ca.Cert.NotAfter.Format(time.RFC3339), rackpki.CAKeyFile)
		return 0
	}
	var id rackpki.Identity
	var file string
	switch {
	case countTrue(nexusID != "", sled != "", rss, crdbNode, crdbClient != "") != 1:
		fmt.Fprintln(stderr, "nexus: pki issue needs exactly one of --nexus, --sled, --rss, --cockroach-node and --cockroach-client")
		return 2
	case crdbNode || crdbClient != "":
		return issueCockroach(caDir, out, crdbClient, hosts, validity, stdout, stderr)
	case nexusID != "":
		if _, err := uuid.Parse(nexusID); err != nil {
			fmt.Fprintf(stderr, "nexus: --nexus %q is not a UUID\n", nexusID)
			return 2
		}
		id, file = rackpki.Nexus(nexusID), "nexus"
	case sled != "":
		part, serial, ok := strings.Cut(sled, ":")
		if !ok || part == "" || serial == "" {
			fmt.Fprintf(stderr, "nexus: --sled %q must be PART:SERIAL\n", sled)
			return 2
		}
		id, file = rackpki.Sled(part, serial), "sled"
	default:
		id, file = rackpki.RSS(), "rss"
	}
	if caDir == "" || out == "" {
		fmt.Fprintln(stderr, "nexus: pki issue needs --ca-dir and --out")
		return 2
	}
	ca, err := rackpki.LoadCA(caDir)
	if err != nil {
		fmt.Fprintln(stderr, "nexus:", err)
		return 1
	}
	b, err := ca.IssueFiles(out, file, id, rackpki.IssueOptions{Validity: validity, Hosts: hosts})
	if err != nil {
		fmt.Fprintln(stderr, "nexus:", err)
		return 1
	}
	fmt.Fprintf(stdout, "issued %s in %s (%s, %s, %s), valid until %s\n", id, out, rackpki.CertFile(file),
		rackpki.KeyFile(file), rackpki.CACertFile, b.Leaf.NotAfter.Format(time.RFC3339))
	return 0
}

func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// issueCockroach is `pki issue --cockroach-node|--cockroach-client`: a
// CockroachDB certificate under the rack CA, in the files CockroachDB's
// --certs-dir (and a client's sslcert/sslkey) expect.
func issueCockroach(caDir, out, user string, hosts []string, validity time.Duration, stdout, stderr io.Writer) int {
	if caDir == "" || out == "" {
		fmt.Fprintln(stderr, "nexus: pki issue needs --ca-dir and --out")
		return 2
	}
	ca, err := rackpki.LoadCA(caDir)
	if err != nil {
		fmt.Fprintln(stderr, "nexus:", err)
		return 1
	}
	opts := rackpki.IssueOptions{Validity: validity, Hosts: hosts}
	var cert *x509.Certificate
	var certFile, keyFile string
	if user == "" {
		cert, err = ca.IssueCockroachNode(out, opts)
		certFile, keyFile = rackpki.CockroachNodeFiles()
	} else {
		cert, err = ca.IssueCockroachClient(out, user, opts)
		certFile, keyFile = rackpki.CockroachClientFiles(user)
	}
	if err != nil {
		fmt.Fprintln(stderr, "nexus:", err)
		return 2
	}
	fmt.Fprintf(stdout, "issued CockroachDB certificate for %s in %s (%s, %s, %s), valid until %s\n", cert.Subject.CommonName,
		out, certFile, keyFile, rackpki.CACertFile, cert.NotAfter.Format(time.RFC3339))
	return 0
}

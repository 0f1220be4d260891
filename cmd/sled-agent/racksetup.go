package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rackplane/rackplane/internal/envflag"
	"github.com/rackplane/rackplane/internal/fsutil"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent/bootstrap/rss"
	"github.com/rackplane/rackplane/trustquorum"
)

const rackSetupUsage = `sled-agent rack-setup: the rack-setup service, run once when a rack is first installed.

It dials the bootstrap agent of every initial sled over the bootstrap network (mutual TLS, with
the rack-setup certificate: nexus pki issue --rss), commits the trust quorum's first epoch (or,
with --lrtq, sets up LRTQ) on all of them, and hands the rack to Nexus (PUT /v1/rack-setup on its
internal API). Each sled then unlocks its data disks and starts its sled agent. Run again, it
finishes what an interrupted run left and changes nothing on a rack already set up.

Usage:
  sled-agent rack-setup --tls-dir DIR --bootstrap-peers HOST:PORT,... --nexus-url URL --rack-id-file FILE

Flags:
`

// runRackSetup is `sled-agent rack-setup`.
func runRackSetup(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var tlsDir, peers, nexusURL, rackIDFile, logLevel string
	var lrtq bool
	var timeout time.Duration
	fs := envflag.New("sled-agent rack-setup", rackSetupUsage)
	fs.SetOutput(stderr)
	fs.String(&tlsDir, "tls-dir", "RACKPLANE_RSS_TLS_DIR", "", "directory holding rss.crt, rss.key and ca.crt (required)")
	fs.String(&peers, "bootstrap-peers", "RACKPLANE_SLED_BOOTSTRAP_PEERS", "",
		"bootstrap addresses of every initial sled, comma-separated (required; at least three)")
	fs.String(&nexusURL, "nexus-url", "RACKPLANE_NEXUS_INTERNAL_URL", "", "base URL of Nexus's internal API (required)")
	fs.String(&rackIDFile, "rack-id-file", "RACKPLANE_RSS_RACK_ID_FILE", "",
		"file holding the rack's id, made on the first run (required: a second run must set up the same rack)")
	fs.Bool(&lrtq, "lrtq", "", false, "set the rack up with LRTQ, the older scheme, instead of trust-quorum epoch 1")
	fs.Duration(&timeout, "timeout", "", 5*time.Minute, "how long to wait for the sleds and Nexus")
	fs.String(&logLevel, "log-level", "RACKPLANE_LOG_LEVEL", "info", "log level: trace, debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "sled-agent rack-setup:", err)
		return 2
	}
	var missing []string
	for flag, v := range map[string]string{"--tls-dir": tlsDir, "--bootstrap-peers": peers, "--nexus-url": nexusURL,
		"--rack-id-file": rackIDFile} {
		if v == "" {
			missing = append(missing, flag)
		}
	}
	if len(missing) > 0 || fs.NArg() > 0 || timeout <= 0 {
		fmt.Fprintf(stderr, "sled-agent rack-setup: needs --tls-dir, --bootstrap-peers, --nexus-url and --rack-id-file, "+
			"a positive --timeout and no other arguments (see --help)\n")
		return 2
	}
	if err := rackSetup(ctx, tlsDir, strings.Split(peers, ","), nexusURL, rackIDFile, lrtq, timeout, logLevel, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "sled-agent rack-setup:", err)
		return 1
	}
	return 0
}

func rackSetup(ctx context.Context, tlsDir string, peers []string, nexusURL, rackIDFile string, lrtq bool,
	timeout time.Duration, logLevel string, stdout, stderr io.Writer) error {
	bundle, err := rackpki.LoadDir(tlsDir, "rss")
	if err != nil {
		return err
	}
	if bundle.Identity.Kind != rackpki.KindRSS {
		return fmt.Errorf("%s holds a %s certificate; rack setup needs the rack-setup certificate (nexus pki issue --rss)",
			tlsDir, bundle.Identity.Kind)
	}
	log, err := logging.New(stderr, "rack-setup", logging.Options{Level: logLevel})
	if err != nil {
		return err
	}
	// The id is kept so that a run interrupted after the sleds took epoch
	// 1 and before Nexus recorded it is finished by the next run, for the
	// same rack, instead of starting another.
	id, err := fsutil.LoadOrCreateUUID(rackIDFile)
	if err != nil {
		return fmt.Errorf("rack id: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := rss.Dial(ctx, peers, rss.Options{Bundle: bundle, PollInterval: 250 * time.Millisecond, Log: log})
	if err != nil {
		return fmt.Errorf("dial the sleds' bootstrap agents: %w", err)
	}
	defer c.Close()
	start := time.Now()
	res, handed, err := c.SetUpAndHandOff(ctx, rss.SetupOptions{RackID: trustquorum.RackID(id), Lrtq: lrtq}, nexusURL)
	if err != nil {
		return err
	}
	what := "trust-quorum epoch 1 committed"
	if lrtq {
		what = "LRTQ set up"
	}
	fmt.Fprintf(stdout, "rack %s: %s on %d sleds (coordinator %s, %s)\n", id, what, len(res.Members),
		res.Coordinator.Serial, time.Since(start).Round(time.Millisecond))
	switch handed {
	case rss.PastEpochOne:
		fmt.Fprintf(stdout, "rack %s is at trust-quorum epoch %d: set up and handed over long ago; nothing to do\n",
			id, res.LatestCommitted)
	case rss.HandedNow:
		fmt.Fprintf(stdout, "rack %s handed to Nexus at %s: each sled now unlocks its data disks and starts its sled agent\n",
			id, nexusURL)
	case rss.HandedAlready:
		fmt.Fprintf(stdout, "rack %s: Nexus had it recorded already; nothing changed\n", id)
	}
	return nil
}

// Command sled-agent runs one sled: its bootstrap agent (the trust quorum,
// on the bootstrap network, from start) and its sled agent (the sled API
// Nexus drives, with the artifact store on the sled's M.2s, the repo depot
// other sleds copy artifacts from, and registration with Nexus).
//
// The sled's identity is its certificate (--tls-cert/--tls-key/--tls-ca or
// --tls-dir), which it must have: every listener of the sled serves mutual
// TLS under the rack CA.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rackplane/rackplane/internal/envflag"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/sledagent/sled"
)

const usage = `sled-agent: the rackplane agent on one sled.

Usage:
  sled-agent --data-dir DIR --m2 DIR --m2 DIR --tls-dir DIR --bootstrap-peers ADDR,... [flags]`

// DefaultBootstrapListen is the bootstrap network's listen address.
const DefaultBootstrapListen = ":12346"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stderr))
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	var cfg sledagent.Config
	var logLevel, logFormat string
	var scrubRate int
	var tlsCert, tlsKey, tlsCA, tlsDir string
	var bootListen, bootAdvertise, bootPeers string
	var bootstrapOnly bool
	fs := envflag.New("sled-agent", usage)
	fs.SetOutput(stderr)
	fs.String(&cfg.DataDir, "data-dir", "RACKPLANE_SLED_DATA_DIR", "", "directory for the sled's identity and local state (required)")
	fs.String(&cfg.ListenAddr, "listen", "RACKPLANE_SLED_LISTEN", sledagent.DefaultListenAddr, "listen address of the sled API")
	fs.String(&cfg.RepoDepotAddr, "repo-depot-listen", "RACKPLANE_SLED_REPO_DEPOT_LISTEN", sledagent.DefaultRepoDepotAddr,
		"listen address of the repo depot")
	fs.String(&cfg.AdvertiseHost, "advertise-host", "RACKPLANE_SLED_ADVERTISE_HOST", "",
		"host Nexus and other sleds use to reach this sled (default: the listen host, or the hostname)")
	fs.String(&cfg.NexusURL, "nexus-url", "RACKPLANE_NEXUS_INTERNAL_URL", sledagent.DefaultNexusURL, "base URL of Nexus's internal API")
	fs.String(&cfg.Baseboard.Part, "baseboard-part", "RACKPLANE_SLED_BASEBOARD_PART", "",
		"baseboard part number (default: the certificate's, or "+sledagent.DefaultBaseboardPart+" without one); "+
			"refused when it disagrees with the certificate")
	fs.String(&cfg.Baseboard.Serial, "baseboard-serial", "RACKPLANE_SLED_BASEBOARD_SERIAL", "",
		"baseboard serial number (default: the certificate's, or SIM-<first 8 hex digits of the sled id> without one); "+
			"refused when it disagrees with the certificate")
	fs.String(&tlsCert, "tls-cert", "RACKPLANE_SLED_TLS_CERT", "", "the sled's certificate (PEM), naming its baseboard")
	fs.String(&tlsKey, "tls-key", "RACKPLANE_SLED_TLS_KEY", "", "the sled certificate's private key (PEM)")
	fs.String(&tlsCA, "tls-ca", "RACKPLANE_SLED_TLS_CA", "", "the rack CA's certificate (PEM)")
	fs.String(&tlsDir, "tls-dir", "RACKPLANE_SLED_TLS_DIR", "",
		"directory holding sled.crt, sled.key and ca.crt (instead of --tls-cert, --tls-key and --tls-ca)")
	fs.String(&bootListen, "bootstrap-listen", "RACKPLANE_SLED_BOOTSTRAP_LISTEN", DefaultBootstrapListen,
		"listen address of the bootstrap network (needs the certificate)")
	fs.String(&bootAdvertise, "bootstrap-advertise", "RACKPLANE_SLED_BOOTSTRAP_ADVERTISE", "",
		"the address other sleds have for this one in their --bootstrap-peers (default: the listen address); "+
			"of each pair of sleds, the one with the higher address dials")
	fs.String(&bootPeers, "bootstrap-peers", "RACKPLANE_SLED_BOOTSTRAP_PEERS", "",
		"comma-separated bootstrap addresses of the rack's sleds (this one's may be among them)")
	fs.Bool(&bootstrapOnly, "bootstrap-only", "RACKPLANE_SLED_BOOTSTRAP_ONLY", false,
		"run only the bootstrap agent; the sled agent starts when start-sled-agent arrives over the bootstrap network")
	fs.Duration(&cfg.RegisterInterval, "register-interval", "RACKPLANE_SLED_REGISTER_INTERVAL", sledagent.DefaultRegisterInterval,
		"how often to re-register with Nexus")
	fs.Strings(&cfg.M2Dirs, "m2", "RACKPLANE_SLED_M2", "directory standing in for an M.2 device (repeat for each; normally two); "+
		"a device is present while its directory exists")
	fs.Bool(&cfg.CreateM2Dirs, "m2-create", "RACKPLANE_SLED_M2_CREATE", false,
		"create the --m2 directories that are missing at start (dev racks; otherwise a missing one is an absent device)")
	fs.Duration(&cfg.M2PollInterval, "m2-poll-interval", "RACKPLANE_SLED_M2_POLL_INTERVAL", sledagent.DefaultM2PollInterval,
		"how often to check the M.2 directories for arrival and departure")
	fs.Int(&scrubRate, "scrub-bytes-per-second", "RACKPLANE_SLED_SCRUB_BYTES_PER_SECOND", sledagent.DefaultScrubRate,
		"how fast the scrub re-reads stored artifacts to find corrupt copies: it runs at start and then continuously")
	fs.Duration(&cfg.ScrubInterval, "scrub-interval", "RACKPLANE_SLED_SCRUB_INTERVAL", sledagent.DefaultScrubInterval,
		"least time between the starts of two scrub passes (a small store is not re-read in a loop); "+
			"negative: scrub only when asked over the API (copies served to other sleds are checked regardless)")
	fs.Duration(&cfg.ArtifactReconcileInterval, "artifact-reconcile-interval", "RACKPLANE_SLED_ARTIFACT_RECONCILE_INTERVAL",
		sledagent.DefaultReconcile, "how often to delete unwanted artifacts and refill M.2s from each other without a trigger")
	fs.Int(&cfg.MaxConcurrentCopies, "max-concurrent-copies", "RACKPLANE_SLED_MAX_CONCURRENT_COPIES", sledagent.DefaultMaxCopies,
		"how many copy-from-depot transfers may run at once")
	fs.Duration(&cfg.ShutdownGrace, "shutdown-grace", "RACKPLANE_SHUTDOWN_GRACE", 10*time.Second,
		"how long shutdown waits for in-flight requests")
	fs.String(&logLevel, "log-level", "RACKPLANE_LOG_LEVEL", "info", "log level: trace, debug, info, warn, error")
	fs.String(&logFormat, "log-format", "RACKPLANE_LOG_FORMAT", "json", "log format: json, pretty or auto")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "sled-agent:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sled-agent: unexpected argument %q (see --help)\n", fs.Arg(0))
		return 2
	}
	if cfg.DataDir == "" {
		fmt.Fprintln(stderr, "sled-agent: --data-dir is required (see --help)")
		return 2
	}
	if scrubRate < 1 || cfg.MaxConcurrentCopies < 1 || cfg.M2PollInterval <= 0 || cfg.ArtifactReconcileInterval <= 0 {
		fmt.Fprintln(stderr, "sled-agent: --scrub-bytes-per-second and --max-concurrent-copies must be at least 1, "+
			"--m2-poll-interval and --artifact-reconcile-interval positive")
		return 2
	}
	cfg.ScrubRate = int64(scrubRate)
	bundle, err := rackpki.LoadFromFlags(tlsCert, tlsKey, tlsCA, tlsDir, "sled")
	if err != nil {
		fmt.Fprintln(stderr, "sled-agent:", err)
		return 2
	}
	if bundle == nil {
		fmt.Fprintln(stderr, "sled-agent: the sled's certificate is required (--tls-dir, or --tls-cert, --tls-key and --tls-ca; "+
			"`nexus pki issue --sled PART:SERIAL` makes one)")
		return 2
	}
	sc := sled.Config{
		Agent: cfg, Identity: bundle, BootstrapOnly: bootstrapOnly,
		Bootstrap: bootstrap.Config{ListenAddr: bootListen, AdvertiseAddr: bootAdvertise, Peers: splitList(bootPeers)},
	}
	log, err := logging.New(stderr, "sled-agent", logging.Options{Level: logLevel, Format: logFormat})
	if err != nil {
		fmt.Fprintln(stderr, "sled-agent:", err)
		return 2
	}
	s, err := sled.New(sc, log)
	if errors.Is(err, sled.ErrBaseboardMismatch) {
		fmt.Fprintln(stderr, "sled-agent:", err)
		return 2
	}
	if err != nil {
		log.Error().Err(err).Msg("sled failed to start")
		return 1
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := s.Run(ctx); err != nil {
		log.Error().Err(err).Msg("sled stopped with an error")
		return 1
	}
	return 0
}

// loadIdentity reads the sled's certificate, nil when none is given.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Command sled-agent runs one sled: its bootstrap agent (the trust quorum,
// on the bootstrap network, from start) and its sled agent (the sled API
// Nexus drives, with the artifact store on the sled's M.2s, the repo depot
// other sleds copy artifacts from, and registration with Nexus).
//
// The sled's identity is its certificate (--tls-cert/--tls-key/--tls-ca or
// --tls-dir), which it must have: every listener of the sled serves mutual
// TLS under the rack CA.
package main

//go:generate go test -run ^TestConfigurationReference$ . -args -update-docs

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

	"github.com/rackplane/rackplane/internal/buildinfo"
	"github.com/rackplane/rackplane/internal/envflag"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/sledagent/sled"
)

const usage = `sled-agent: the rackplane agent on one sled.

Usage:
  sled-agent --data-dir DIR --m2 DIR --m2 DIR --tls-dir DIR --bootstrap-peers ADDR,... [flags]
  sled-agent rack-setup --help     (the rack-setup service, run once when a rack is installed)`

// DefaultBootstrapListen is the bootstrap network's listen address.
const DefaultBootstrapListen = ":12346"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// options are everything the flags set.
type options struct {
	cfg                                  sledagent.Config
	logLevel, logFormat                  string
	scrubRate                            int
	tlsCert, tlsKey, tlsCA, tlsDir       string
	bootListen, bootAdvertise, bootPeers string
	bootstrapOnly, version               bool
	dataDisks                            []string
}

// newFlags defines every flag of the sled agent into o.
func newFlags(o *options) *envflag.Set {
	fs := envflag.New("sled-agent", usage)
	fs.String(&o.cfg.DataDir, "data-dir", "RACKPLANE_SLED_DATA_DIR", "", "directory for the sled's identity and local state (required)")
	fs.String(&o.cfg.ListenAddr, "listen", "RACKPLANE_SLED_LISTEN", sledagent.DefaultListenAddr, "listen address of the sled API")
	fs.String(&o.cfg.RepoDepotAddr, "repo-depot-listen", "RACKPLANE_SLED_REPO_DEPOT_LISTEN", sledagent.DefaultRepoDepotAddr,
		"listen address of the repo depot")
	fs.String(&o.cfg.AdvertiseHost, "advertise-host", "RACKPLANE_SLED_ADVERTISE_HOST", "",
		"host Nexus and other sleds use to reach this sled (default: the listen host, or the hostname)")
	fs.String(&o.cfg.NexusURL, "nexus-url", "RACKPLANE_NEXUS_INTERNAL_URL", sledagent.DefaultNexusURL, "base URL of Nexus's internal API")
	fs.String(&o.cfg.Baseboard.Part, "baseboard-part", "RACKPLANE_SLED_BASEBOARD_PART", "",
		"baseboard part number (default: the certificate's, or "+sledagent.DefaultBaseboardPart+" without one); "+
			"refused when it disagrees with the certificate")
	fs.String(&o.cfg.Baseboard.Serial, "baseboard-serial", "RACKPLANE_SLED_BASEBOARD_SERIAL", "",
		"baseboard serial number (default: the certificate's, or SIM-<first 8 hex digits of the sled id> without one); "+
			"refused when it disagrees with the certificate")
	fs.String(&o.tlsCert, "tls-cert", "RACKPLANE_SLED_TLS_CERT", "", "the sled's certificate (PEM), naming its baseboard")
	fs.String(&o.tlsKey, "tls-key", "RACKPLANE_SLED_TLS_KEY", "", "the sled certificate's private key (PEM)")
	fs.String(&o.tlsCA, "tls-ca", "RACKPLANE_SLED_TLS_CA", "", "the rack CA's certificate (PEM)")
	fs.String(&o.tlsDir, "tls-dir", "RACKPLANE_SLED_TLS_DIR", "",
		"directory holding sled.crt, sled.key and ca.crt (instead of --tls-cert, --tls-key and --tls-ca)")
	fs.String(&o.bootListen, "bootstrap-listen", "RACKPLANE_SLED_BOOTSTRAP_LISTEN", DefaultBootstrapListen,
		"listen address of the bootstrap network (needs the certificate)")
	fs.String(&o.bootAdvertise, "bootstrap-advertise", "RACKPLANE_SLED_BOOTSTRAP_ADVERTISE", "",
		"the address other sleds have for this one in their --bootstrap-peers (default: the listen address); "+
			"of each pair of sleds, the one with the higher address dials")
	fs.String(&o.bootPeers, "bootstrap-peers", "RACKPLANE_SLED_BOOTSTRAP_PEERS", "",
		"comma-separated bootstrap addresses of the rack's sleds (this one's may be among them)")
	fs.Bool(&o.bootstrapOnly, "bootstrap-only", "RACKPLANE_SLED_BOOTSTRAP_ONLY", false,
		"run only the bootstrap agent; the sled agent starts when start-sled-agent arrives over the bootstrap network")
	fs.Duration(&o.cfg.RegisterInterval, "register-interval", "RACKPLANE_SLED_REGISTER_INTERVAL", sledagent.DefaultRegisterInterval,
		"how often to re-register with Nexus")
	fs.Strings(&o.cfg.M2Dirs, "m2", "RACKPLANE_SLED_M2", "directory standing in for an M.2 device (repeat for each; normally two); "+
		"a device is present while its directory exists")
	fs.Strings(&o.dataDisks, "data-disk", "RACKPLANE_SLED_DATA_DISK", "directory standing in for a data disk (U.2; repeat for "+
		"each); with any, the sled agent starts only once they are unlocked with the rack secret (K members' shares), "+
		"and the sled id is kept sealed on them")
	fs.Bool(&o.cfg.CreateM2Dirs, "m2-create", "RACKPLANE_SLED_M2_CREATE", false,
		"create the --m2 directories that are missing at start (dev racks; otherwise a missing one is an absent device)")
	fs.Duration(&o.cfg.M2PollInterval, "m2-poll-interval", "RACKPLANE_SLED_M2_POLL_INTERVAL", sledagent.DefaultM2PollInterval,
		"how often to check the M.2 directories for arrival and departure")
	fs.Int(&o.scrubRate, "scrub-bytes-per-second", "RACKPLANE_SLED_SCRUB_BYTES_PER_SECOND", sledagent.DefaultScrubRate,
		"how fast the scrub re-reads stored artifacts to find corrupt copies: it runs at start and then continuously")
	fs.Duration(&o.cfg.ScrubInterval, "scrub-interval", "RACKPLANE_SLED_SCRUB_INTERVAL", sledagent.DefaultScrubInterval,
		"least time between the starts of two scrub passes (a small store is not re-read in a loop); "+
			"negative: scrub only when asked over the API (copies served to other sleds are checked regardless)")
	fs.Duration(&o.cfg.ArtifactReconcileInterval, "artifact-reconcile-interval", "RACKPLANE_SLED_ARTIFACT_RECONCILE_INTERVAL",
		sledagent.DefaultReconcile, "how often to delete unwanted artifacts and refill M.2s from each other without a trigger")
	fs.Int(&o.cfg.MaxConcurrentCopies, "max-concurrent-copies", "RACKPLANE_SLED_MAX_CONCURRENT_COPIES", sledagent.DefaultMaxCopies,
		"how many copy-from-depot transfers may run at once")
	fs.Duration(&o.cfg.ShutdownGrace, "shutdown-grace", "RACKPLANE_SHUTDOWN_GRACE", 10*time.Second,
		"how long shutdown waits for in-flight requests")
	fs.String(&o.logLevel, "log-level", "RACKPLANE_LOG_LEVEL", "info", "log level: trace, debug, info, warn, error")
	fs.String(&o.logFormat, "log-format", "RACKPLANE_LOG_FORMAT", "json", "log format: json, pretty or auto")
	fs.Bool(&o.version, "version", "", false, "print the version and exit")
	return fs
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "rack-setup" {
		return runRackSetup(ctx, args[1:], stdout, stderr)
	}
	var o options
	fs := newFlags(&o)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "sled-agent:", err)
		return 2
	}
	if o.version {
		fmt.Fprintln(stdout, buildinfo.Line("sled-agent"))
		return 0
	}
	cfg := o.cfg
	logLevel, logFormat, scrubRate := o.logLevel, o.logFormat, o.scrubRate
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
	bundle, err := rackpki.LoadFromFlags(o.tlsCert, o.tlsKey, o.tlsCA, o.tlsDir, "sled")
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
		Agent: cfg, Identity: bundle, BootstrapOnly: o.bootstrapOnly, Storage: sled.Storage{Dirs: o.dataDisks},
		Bootstrap: bootstrap.Config{ListenAddr: o.bootListen, AdvertiseAddr: o.bootAdvertise, Peers: splitList(o.bootPeers)},
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

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

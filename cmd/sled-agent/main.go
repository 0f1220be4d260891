// Command sled-agent runs the agent on one sled: the sled API Nexus drives
// (with the artifact store on the sled's M.2s), the repo depot other sleds
// copy artifacts from, and registration with Nexus.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rackplane/rackplane/internal/envflag"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/sledagent"
)

const usage = `sled-agent: the rackplane agent on one sled.

Usage:
  sled-agent --data-dir DIR --m2 DIR --m2 DIR [flags]`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stderr))
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	var cfg sledagent.Config
	var logLevel, logFormat string
	var scrubRate int
	fs := envflag.New("sled-agent", usage)
	fs.SetOutput(stderr)
	fs.String(&cfg.DataDir, "data-dir", "RACKPLANE_SLED_DATA_DIR", "", "directory for the sled's identity and local state (required)")
	fs.String(&cfg.ListenAddr, "listen", "RACKPLANE_SLED_LISTEN", sledagent.DefaultListenAddr, "listen address of the sled API")
	fs.String(&cfg.RepoDepotAddr, "repo-depot-listen", "RACKPLANE_SLED_REPO_DEPOT_LISTEN", sledagent.DefaultRepoDepotAddr,
		"listen address of the repo depot")
	fs.String(&cfg.AdvertiseHost, "advertise-host", "RACKPLANE_SLED_ADVERTISE_HOST", "",
		"host Nexus and other sleds use to reach this sled (default: the listen host, or the hostname)")
	fs.String(&cfg.NexusURL, "nexus-url", "RACKPLANE_NEXUS_INTERNAL_URL", sledagent.DefaultNexusURL, "base URL of Nexus's internal API")
	fs.String(&cfg.Baseboard.Part, "baseboard-part", "RACKPLANE_SLED_BASEBOARD_PART", sledagent.DefaultBaseboardPart,
		"baseboard part number")
	fs.String(&cfg.Baseboard.Serial, "baseboard-serial", "RACKPLANE_SLED_BASEBOARD_SERIAL", "",
		"baseboard serial number (default: SIM-<first 8 hex digits of the sled id>)")
	fs.Duration(&cfg.RegisterInterval, "register-interval", "RACKPLANE_SLED_REGISTER_INTERVAL", sledagent.DefaultRegisterInterval,
		"how often to re-register with Nexus")
	fs.Strings(&cfg.M2Dirs, "m2", "RACKPLANE_SLED_M2", "directory standing in for an M.2 device (repeat for each; normally two); "+
		"a device is present while its directory exists")
	fs.Bool(&cfg.CreateM2Dirs, "m2-create", "RACKPLANE_SLED_M2_CREATE", false,
		"create the --m2 directories that are missing at start (dev racks; otherwise a missing one is an absent device)")
	fs.Duration(&cfg.M2PollInterval, "m2-poll-interval", "RACKPLANE_SLED_M2_POLL_INTERVAL", sledagent.DefaultM2PollInterval,
		"how often to check the M.2 directories for arrival and departure")
	fs.Duration(&cfg.ScrubInterval, "scrub-interval", "RACKPLANE_SLED_SCRUB_INTERVAL", sledagent.DefaultScrubInterval,
		"time between scrub passes that re-hash stored artifacts (negative disables)")
	fs.Int(&scrubRate, "scrub-rate", "RACKPLANE_SLED_SCRUB_RATE", sledagent.DefaultScrubRate,
		"scrub read rate limit, in bytes per second")
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
		fmt.Fprintln(stderr, "sled-agent: --scrub-rate and --max-concurrent-copies must be at least 1, "+
			"--m2-poll-interval and --artifact-reconcile-interval positive")
		return 2
	}
	cfg.ScrubRate = int64(scrubRate)
	log, err := logging.New(stderr, "sled-agent", logging.Options{Level: logLevel, Format: logFormat})
	if err != nil {
		fmt.Fprintln(stderr, "sled-agent:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := sledagent.New(cfg, log)
	if err != nil {
		log.Error().Err(err).Msg("sled agent failed to start")
		return 1
	}
	if err := srv.Run(ctx); err != nil {
		log.Error().Err(err).Msg("sled agent stopped with an error")
		return 1
	}
	return 0
}

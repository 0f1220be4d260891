// Command rackdev runs a whole development rack on this machine: a
// PostgreSQL with its data in the data dir, one Nexus and N sleds on
// loopback, each sled with two directories standing in for its M.2
// devices, a certificate from a rack CA made in the data dir, and a
// bootstrap agent on the bootstrap network. Playing the rack-setup
// service, it commits trust-quorum epoch 1 over the sleds. It prints every
// address and some rackctl commands to try, and on Ctrl-C stops everything
// and removes a data dir it made. Started again on a kept data dir, it
// resumes the same rack. With --smoke it starts everything, checks it, and
// exits (CI uses this).
package main

//go:generate go test -run ^TestConfigurationReference$ . -args -update-docs

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/buildinfo"
	"github.com/rackplane/rackplane/internal/envflag"
	"github.com/rackplane/rackplane/internal/fsutil"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/pgtemp"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/model"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/sledagent/bootstrap/rss"
	"github.com/rackplane/rackplane/sledagent/sled"
	"github.com/rackplane/rackplane/sledagent/storage"
	"github.com/rackplane/rackplane/trustquorum"
)

const usage = `rackdev: run a development rack (PostgreSQL, Nexus, sled agents) on this machine.

Usage:
  go run ./cmd/rackdev [flags]`

type options struct {
	sleds        int
	spares       int
	dataDir      string
	keep         bool
	databaseURL  string
	externalAddr string
	internalAddr string
	smoke        bool
	logLevel     string
	waitTimeout  time.Duration
	lrtq         bool
	tls          bool
	noDemo       bool
	version      bool
	processes    bool
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// newFlags defines every flag of rackdev into o.
func newFlags(o *options) *envflag.Set {
	fs := envflag.New("rackdev", usage)
	fs.Int(&o.sleds, "sleds", "RACKDEV_SLEDS", 4, "number of sled agents")
	fs.Int(&o.spares, "spare-sleds", "RACKDEV_SPARE_SLEDS", 0,
		"number of spare sleds: running only their bootstrap agent, not in rack setup, to be added with\n"+
			"rackctl trust-quorum add SERIAL (needs --sleds 3 or more)")
	fs.String(&o.dataDir, "data-dir", "RACKDEV_DATA_DIR", "",
		"directory for all state, the database's included: run again on the same one, the rack resumes "+
			"(default: a new temp dir, removed on exit unless --keep)")
	fs.Bool(&o.keep, "keep", "RACKDEV_KEEP", false, "keep the data directory on exit")
	fs.String(&o.databaseURL, "database-url", "RACKDEV_DATABASE_URL", "",
		"use this existing database instead of starting PostgreSQL in the data dir")
	fs.String(&o.externalAddr, "nexus-external-addr", "RACKDEV_NEXUS_EXTERNAL_ADDR", "127.0.0.1:12220",
		"Nexus external API listen address (--smoke uses a free port)")
	fs.String(&o.internalAddr, "nexus-internal-addr", "RACKDEV_NEXUS_INTERNAL_ADDR", "127.0.0.1:12221",
		"Nexus internal API listen address (--smoke uses a free port)")
	fs.Bool(&o.smoke, "smoke", "", false, "start everything, check health and registration, then exit")
	fs.String(&o.logLevel, "log-level", "RACKDEV_LOG_LEVEL", "info", "log level of the components' log files")
	fs.Duration(&o.waitTimeout, "wait", "RACKDEV_WAIT", time.Minute, "how long to wait for the rack to come up")
	fs.Bool(&o.tls, "tls", "RACKDEV_TLS", false,
		"serve the external API over HTTPS with a certificate of the rack CA for 127.0.0.1 and localhost\n"+
			"(rackctl then needs --ca-cert <data-dir>/pki/ca.crt)")
	fs.Bool(&o.lrtq, "lrtq", "RACKDEV_LRTQ", false, "set the rack up with LRTQ instead of trust-quorum epoch 1 (to try the upgrade)")
	fs.Bool(&o.noDemo, "no-demo", "RACKDEV_NO_DEMO", false,
		"register no demo trust root and upload no demo repo (the rack starts with no repos, so your own 1.0.0 is the first)")
	fs.Bool(&o.version, "version", "", false, "print the version and exit")
	fs.Bool(&o.processes, "processes", "RACKDEV_PROCESSES", false,
		"run each sled as a sled-agent child process, restarted when it dies (Nexus stays in rackdev's process)")
	return fs
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runContext(ctx, args, stdout, stderr)
}

// runContext is run until ctx is done (Ctrl-C, or a test that is through).
func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	fs := newFlags(&o)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if o.version {
		fmt.Fprintln(stdout, buildinfo.Line("rackdev"))
		return 0
	}
	if o.sleds < 1 || o.sleds > 64 {
		fmt.Fprintln(stderr, "rackdev: --sleds must be from 1 to 64")
		return 2
	}
	if o.spares < 0 || o.spares+o.sleds > 64 {
		fmt.Fprintln(stderr, "rackdev: --spare-sleds must be from 0 to 64 less --sleds")
		return 2
	}
	if o.spares > 0 && o.processes {
		fmt.Fprintln(stderr, "rackdev: --spare-sleds does not go with --processes yet")
		return 2
	}
	if o.spares > 0 && o.sleds < trustquorum.MinMembers {
		fmt.Fprintf(stderr, "rackdev: --spare-sleds needs a trust quorum: --sleds %d or more\n", trustquorum.MinMembers)
		return 2
	}
	if o.smoke {
		o.externalAddr, o.internalAddr = "127.0.0.1:0", "127.0.0.1:0"
	}
	rack, err := start(ctx, o, stdout)
	if rack != nil {
		defer rack.close(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "rackdev:", err)
		return 1
	}
	// With a trust quorum the sled agents start only once the sleds
	// unlock their data disks: after rack setup (or, on a kept rack, once
	// K of them are up).
	if err := rack.setupTrustQuorum(ctx, o.waitTimeout, stdout); err != nil {
		fmt.Fprintln(stderr, "rackdev: rack setup:", err)
		return 1
	}
	if err := rack.check(ctx, o.waitTimeout); err != nil {
		fmt.Fprintln(stderr, "rackdev:", err)
		return 1
	}
	demo, built, err := rack.writeDemo()
	if err != nil {
		fmt.Fprintln(stderr, "rackdev: demo repo:", err)
		return 1
	}
	switch {
	case rack.resumed:
		// The rack has the repos it had: uploading the demo again could
		// restore a repo its user pruned, or clash with their own 1.0.0.
		if err := rack.waitConverged(ctx, o.waitTimeout, stdout); err != nil {
			fmt.Fprintln(stderr, "rackdev:", err)
			return 1
		}
	case o.noDemo:
		fmt.Fprintf(stdout, "rackdev: --no-demo: no trust root registered, no repo uploaded (the demo release and its root "+
			"are in %s if you want them)\n", filepath.Dir(rack.demoZip()))
	default:
		hashes, err := rack.uploadDemoRepo(ctx, demo, built, stdout)
		if err != nil {
			fmt.Fprintln(stderr, "rackdev: demo repo:", err)
			return 1
		}
		if err := rack.waitReplicated(ctx, hashes, o.waitTimeout, stdout); err != nil {
			fmt.Fprintln(stderr, "rackdev: demo repo:", err)
			return 1
		}
	}
	rack.printSummary(stdout)
	if o.smoke {
		fmt.Fprintln(stdout, "smoke: ok")
		return 0
	}
	fmt.Fprintln(stdout, "\nPress Ctrl-C to stop the rack.")
	<-ctx.Done()
	return 0
}

// rack is everything rackdev started.
type rack struct {
	o options
	// adminToken is the operator token rackdev made (or kept from an
	// earlier run on the same data dir), also in tokenFile().
	adminToken string
	dataDir    string
	ownDir     bool
	// resumed is set when the data dir held a rack from an earlier run
	// (its database among it): the same rack goes on.
	resumed bool
	pg      *pgtemp.Cluster
	dbURL   string
	nexus   *nexus.Server
	sleds   []*sled.Sled
	// spares run only their bootstrap agent until added (--spare-sleds).
	spares []*sled.Sled
	pki    string
	// externalCA, when the external API serves HTTPS (--tls), is the CA
	// file clients need to trust it.
	externalCA string
	rss        *rackpki.Bundle
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	logFiles   []*os.File
	runErrs    chan error

	// children are the sleds under --processes (sleds is empty then).
	children []*childSled
}

func start(parent context.Context, o options, stdout io.Writer) (*rack, error) {
	r := &rack{o: o, runErrs: make(chan error, o.sleds+o.spares+1)}
	ctx, cancel := context.WithCancel(parent)
	r.cancel = cancel

	r.dataDir = o.dataDir
	if r.dataDir == "" {
		d, err := os.MkdirTemp("", "rackdev-")
		if err != nil {
			return r, err
		}
		r.dataDir, r.ownDir = d, true
	}
	if err := os.MkdirAll(filepath.Join(r.dataDir, "logs"), 0o755); err != nil {
		return r, err
	}
	fmt.Fprintf(stdout, "rackdev: data and logs in %s\n", r.dataDir)
	if err := r.startDatabase(ctx, stdout); err != nil {
		return r, err
	}

	nlog, err := r.logger("nexus")
	if err != nil {
		return r, err
	}
	nexusDir := filepath.Join(r.dataDir, "nexus")
	id, err := nexus.LoadOrCreateID(nexusDir)
	if err != nil {
		return r, err
	}
	// The rack CA, kept in the data dir, and a certificate for every
	// party: Nexus, the rack-setup service (rackdev itself) and each sled.
	// Every listener but the external API is mutual TLS under it.
	ca, err := r.rackCA()
	if err != nil {
		return r, err
	}
	nexusTLS, err := ca.IssueFiles(filepath.Join(r.pki, "nexus"), "nexus", rackpki.Nexus(id.String()), rackpki.IssueOptions{})
	if err != nil {
		return r, err
	}
	if r.rss, err = ca.IssueFiles(filepath.Join(r.pki, "rss"), "rss", rackpki.RSS(), rackpki.IssueOptions{}); err != nil {
		return r, err
	}
	// The external API is bound to loopback by default; --tls serves it
	// over HTTPS as well, with a certificate for the names a browser and
	// rackctl use on this machine.
	var externalTLS *tls.Certificate
	if o.tls {
		ext, err := ca.IssueFiles(filepath.Join(r.pki, "nexus-external"), "nexus", rackpki.Nexus(id.String()),
			rackpki.IssueOptions{Hosts: []string{"127.0.0.1", "::1", "localhost"}})
		if err != nil {
			return r, err
		}
		externalTLS = &ext.Cert
		r.externalCA = filepath.Join(r.pki, "ca.crt")
	}
	r.nexus, err = nexus.New(ctx, nexus.Config{
		ID: id, TLS: nexusTLS, ExternalAddr: o.externalAddr, InternalAddr: o.internalAddr,
		ExternalTLS: externalTLS,
		DatabaseURL: r.dbURL, AutoMigrate: true, DataDir: nexusDir,
		Tasks: nexustasks.Registrar(nexustasks.Config{}),
	}, nlog)
	if err != nil {
		return r, fmt.Errorf("%w (if a port is taken, pass --nexus-external-addr/--nexus-internal-addr 127.0.0.1:0)", err)
	}
	if r.adminToken, err = r.ensureAdminToken(ctx); err != nil {
		return r, err
	}
	r.goRun(ctx, "nexus", r.nexus.Run)

	if o.processes {
		return r, r.startChildSleds(ctx, ca, stdout)
	}
	var peers []string
	// With a trust quorum every sled has data disks, unlocked with the
	// rack secret before its sled agent starts.
	dataDisks := o.sleds >= trustquorum.MinMembers
	for i := range o.sleds + o.spares {
		name := fmt.Sprintf("sled-%d", i)
		slog, err := r.logger(name)
		if err != nil {
			return r, err
		}
		id, err := ca.IssueFiles(filepath.Join(r.pki, name), "sled", rackpki.Sled(sledagent.DefaultBaseboardPart, fmt.Sprintf("SIM-%04d", i+1)), rackpki.IssueOptions{})
		if err != nil {
			return r, err
		}
		dir := filepath.Join(r.dataDir, name)
		var disks sled.Storage
		if dataDisks {
			disks.Dirs = []string{filepath.Join(dir, "u2-a"), filepath.Join(dir, "u2-b")}
		}
		spare := i >= o.sleds
		s, err := sled.New(sled.Config{
			Agent: sledagent.Config{
				DataDir:       dir,
				ListenAddr:    "127.0.0.1:0",
				RepoDepotAddr: "127.0.0.1:0",
				NexusURL:      r.nexus.InternalURL(),
				M2Dirs:        []string{filepath.Join(dir, "m2-a"), filepath.Join(dir, "m2-b")},
				CreateM2Dirs:  true,
			},
			Identity:      id,
			Bootstrap:     bootstrap.Config{ListenAddr: "127.0.0.1:0"},
			BootstrapOnly: spare,
			Storage:       disks,
		}, slog)
		if err != nil {
			return r, fmt.Errorf("%s: %w", name, err)
		}
		if spare {
			r.spares = append(r.spares, s)
		} else {
			r.sleds = append(r.sleds, s)
		}
		peers = append(peers, s.BootstrapAddr())
	}
	for i, s := range append(slices.Clone(r.sleds), r.spares...) {
		s.Agent().SetPeers(peers)
		r.goRun(ctx, fmt.Sprintf("sled-%d", i), s.Run)
	}
	return r, nil
}

// startDatabase starts PostgreSQL with its data in <data-dir>/postgres,
// so that a later run on the same data dir resumes the same rack: the
// same database (repos, tokens, generations), beside the same sleds, CA
// and Nexus id. It says whether the rack is fresh or resumed. A data dir
// that holds sleds but no database (an older rackdev's, or one run with
// --database-url) is refused: its sleds hold generations no fresh
// database has.
func (r *rack) startDatabase(ctx context.Context, stdout io.Writer) error {
	if r.o.databaseURL != "" {
		r.dbURL = r.o.databaseURL
		fmt.Fprintln(stdout, "rackdev: using the given database; the rack in it is whatever it holds")
		return nil
	}
	pgDir := filepath.Join(r.dataDir, "postgres")
	_, err := os.Stat(filepath.Join(pgDir, "PG_VERSION"))
	r.resumed = err == nil
	if !r.resumed {
		for _, left := range []string{filepath.Join("nexus", "nexus-id"), filepath.Join("sled-0", "sled-id"),
			filepath.Join("sled-0", "u2-a", storage.DiskFile)} {
			if _, err := os.Stat(filepath.Join(r.dataDir, left)); err == nil {
				return fmt.Errorf("%s holds a rack's sleds and Nexus but not its database (an older rackdev's, or "+
					"one run with --database-url): its sleds hold artifact generations a new database would not "+
					"have. Start with another --data-dir, or remove this one", r.dataDir)
			}
		}
	}
	if r.ownDir && os.Geteuid() == 0 {
		// Run as root, the server runs as the postgres user, which must
		// enter this (private) temp dir to reach its data.
		if err := os.Chmod(r.dataDir, 0o711); err != nil {
			return err
		}
	}
	if r.resumed {
		fmt.Fprintf(stdout, "rackdev: resuming the rack kept in %s: its database, sleds, tokens and CA\n", r.dataDir)
	} else {
		fmt.Fprintf(stdout, "rackdev: a fresh rack; PostgreSQL keeps its data in %s\n", pgDir)
	}
	pg, err := pgtemp.Start(ctx, pgtemp.Options{DataDir: pgDir, LogPath: filepath.Join(r.dataDir, "logs", "postgres.log")})
	if err != nil {
		return err
	}
	r.pg = pg
	if pg.Fresh() {
		if err := createDatabase(ctx, pg.URL("postgres"), "rackplane"); err != nil {
			return err
		}
	}
	r.dbURL = pg.URL("rackplane")
	return nil
}

// waitConverged waits until the replication task reports every sled
// holding every live artifact, as a resumed rack should at once: its
// sleds and database agree on the generation.
func (r *rack) waitConverged(ctx context.Context, timeout time.Duration, stdout io.Writer) error {
	start := time.Now()
	nx, err := r.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		task, err := nx.BackgroundTaskGet(ctx, tufreplication.Name)
		var st api.ReplicationStatus
		if err == nil && len(task.Status) > 0 {
			err = json.Unmarshal(task.Status, &st)
		}
		switch {
		case err != nil:
			last = err.Error()
		case st.Stopped != "":
			last = st.Stopped
		case st.Converged && st.Sleds >= len(r.sleds)+len(r.children):
			repos, err := nx.RepoList(ctx, false)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "rackdev: resumed with %d live repos, replicated to every sled at generation %d "+
				"(%s)\n", len(repos), st.Generation, time.Since(start).Round(time.Millisecond))
			return nil
		default:
			last = fmt.Sprintf("not converged: %d requests, %d in flight, %d of %d sleds", st.Requests, st.InFlight,
				st.Sleds, len(r.nodes()))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the resumed rack did not converge within %s: %s (see logs/nexus.log)", timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// rackCA makes the rack CA in <data-dir>/pki, or loads the one an earlier
// run made there.
func (r *rack) rackCA() (*rackpki.CA, error) {
	r.pki = filepath.Join(r.dataDir, "pki")
	if _, err := os.Stat(filepath.Join(r.pki, rackpki.CAKeyFile)); err == nil {
		return rackpki.LoadCA(r.pki)
	}
	return rackpki.InitCA(r.pki, "rackdev", 0)
}

// setupTrustQuorum plays the rack-setup service: over the bootstrap
// network it has one sled coordinate epoch 1 over all of them and commits
// it on each (or sets up LRTQ with --lrtq), then hands the rack to Nexus
// over its internal API. A rack kept from an earlier run that Nexus
// already governs is not set up again.
func (r *rack) setupTrustQuorum(ctx context.Context, timeout time.Duration, stdout io.Writer) error {
	if len(r.nodes()) < trustquorum.MinMembers {
		fmt.Fprintf(stdout, "rackdev: %d sleds; the trust quorum needs %d, so no rack setup\n", len(r.nodes()), trustquorum.MinMembers)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nx, err := r.client()
	if err != nil {
		return err
	}
	var st api.TrustQuorumStatus
	for {
		// Nexus may still be starting.
		if st, err = nx.TrustQuorumStatus(ctx); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nexus not up within %s: %w", timeout, err)
		case err := <-r.runErrs:
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	if st.LatestCommitted != nil {
		fmt.Fprintf(stdout, "rackdev: the rack is set up already (trust-quorum epoch %d %s)\n",
			st.LatestCommitted.Epoch, st.LatestCommitted.State)
		return nil
	}
	var addrs []string
	for _, s := range r.nodes() {
		addrs = append(addrs, s.BootstrapAddr())
	}
	c, err := rss.Dial(ctx, addrs, rss.Options{Bundle: r.rss, PollInterval: 20 * time.Millisecond})
	if err != nil {
		return err
	}
	defer c.Close()
	// The id lives in the data dir too, so a rack kept but never handed
	// over (an earlier run stopped half-way) is set up with the same one.
	id, err := fsutil.LoadOrCreateUUID(filepath.Join(r.dataDir, "rack-id"))
	if err != nil {
		return err
	}
	start := time.Now()
	res, handed, err := c.SetUpAndHandOff(ctx, rss.SetupOptions{RackID: trustquorum.RackID(id), Lrtq: r.o.lrtq},
		r.nexus.InternalURL())
	if err != nil {
		return err
	}
	what := "trust-quorum epoch 1 committed"
	if r.o.lrtq {
		what = "LRTQ set up"
	}
	fmt.Fprintf(stdout, "rackdev: %s on %d sleds over the bootstrap network (coordinator %s, %s)\n",
		what, len(res.Members), res.Coordinator.Serial, time.Since(start).Round(time.Millisecond))
	if handed == rss.PastEpochOne {
		// A kept data dir whose sleds moved past epoch 1, with a database
		// that is new this run: there is no epoch 1 to hand over.
		fmt.Fprintf(stdout, "rackdev: the sleds are at trust-quorum epoch %d but this Nexus's database is new; "+
			"not handing the rack over (start on a fresh --data-dir, or keep the database with --database-url)\n",
			res.LatestCommitted)
		return nil
	}
	fmt.Fprintf(stdout, "rackdev: rack %s handed to Nexus\n", id)
	return nil
}

func (r *rack) goRun(ctx context.Context, name string, fn func(context.Context) error) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := fn(ctx); err != nil {
			r.runErrs <- fmt.Errorf("%s: %w", name, err)
		}
	}()
}

// logger returns a JSON logger writing to logs/<name>.log.
func (r *rack) logger(name string) (zerolog.Logger, error) {
	f, err := os.OpenFile(filepath.Join(r.dataDir, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return zerolog.Nop(), err
	}
	r.logFiles = append(r.logFiles, f)
	return logging.New(f, name, logging.Options{Level: r.o.logLevel})
}

func createDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	return err
}

// check waits until Nexus and every sled agent are healthy and every sled
// is registered.
func (r *rack) check(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nx, err := r.client()
	if err != nil {
		return err
	}
	var lastErr error
	for {
		select {
		case err := <-r.runErrs:
			return err
		default:
		}
		lastErr = r.checkOnce(ctx, nx)
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rack not up within %s: %w", timeout, lastErr)
		case err := <-r.runErrs:
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (r *rack) checkOnce(ctx context.Context, nx client.Nexus) error {
	if _, err := nx.Health(ctx); err != nil {
		return fmt.Errorf("nexus health: %w", err)
	}
	if r.o.processes {
		return r.checkChildrenOnce(ctx, nx)
	}
	want := map[uuid.UUID]bool{}
	for i, s := range r.sleds {
		if s.Server() == nil {
			lock := s.Agent().StorageLockState()
			return fmt.Errorf("sled-%d has no sled agent yet: its data disks are %s (%s)", i, lock.State, lock.Reason)
		}
		want[s.Server().ID()] = true
	}
	for _, s := range r.sleds {
		sc, err := client.NewSledAgent(s.Server().URL(), r.sledHTTP())
		if err != nil {
			return err
		}
		if _, err := sc.Health(ctx); err != nil {
			return fmt.Errorf("sled %s health: %w", s.Server().ID(), err)
		}
	}
	sleds, err := nx.SledList(ctx)
	if err != nil {
		return fmt.Errorf("list sleds: %w", err)
	}
	registered := 0
	for _, s := range sleds {
		if want[s.ID] {
			registered++
		}
	}
	if registered != len(want) {
		return fmt.Errorf("%d of %d sleds registered", registered, len(want))
	}
	return nil
}

func (r *rack) printSummary(w io.Writer) {
	fmt.Fprintln(w, "\nrackplane dev rack is up.")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if r.pg != nil {
		fmt.Fprintf(tw, "  database\t%s  (data in %s)\n", r.dbURL, filepath.Join(r.dataDir, "postgres"))
	} else {
		fmt.Fprintf(tw, "  database\t(given) %s\n", r.dbURL)
	}
	fmt.Fprintf(tw, "  nexus external API\t%s\n", r.nexus.ExternalURL())
	fmt.Fprintf(tw, "  nexus internal API\t%s\n", r.nexus.InternalURL())
	for i, s := range r.children {
		fmt.Fprintf(tw, "  sled-%d %s\tapi %s  depot %s  bootstrap %s  (process %d)\n", i, s.Serial(), s.URL(), s.DepotURL(),
			s.BootstrapAddr(), s.child.PID())
	}
	for i, s := range append(slices.Clone(r.sleds), r.spares...) {
		if srv := s.Server(); srv != nil {
			fmt.Fprintf(tw, "  sled-%d %s\tapi %s  depot %s  bootstrap %s\n", i, s.Baseboard().Serial, srv.URL(), srv.DepotURL(), s.BootstrapAddr())
			continue
		}
		if st := s.Storage(); st != nil && st.Formatted() {
			// Added in an earlier run: it starts its sled agent once it
			// has unlocked its disks.
			lock := s.Agent().StorageLockState()
			fmt.Fprintf(tw, "  sled-%d %s\tadded earlier; its data disks are %s (%s), bootstrap %s\n", i,
				s.Baseboard().Serial, lock.State, lock.Reason, s.BootstrapAddr())
			continue
		}
		fmt.Fprintf(tw, "  sled-%d %s\tspare: bootstrap agent only, at %s (add it: rackctl trust-quorum add %s)\n", i,
			s.Baseboard().Serial, s.BootstrapAddr(), s.Baseboard().Serial)
	}
	fmt.Fprintf(tw, "  admin token\t%s  (also in %s)\n", r.adminToken, r.tokenFile())
	fmt.Fprintf(tw, "  rack CA and certificates\t%s\n", r.pki)
	fmt.Fprintf(tw, "  logs\t%s\n", filepath.Join(r.dataDir, "logs"))
	fmt.Fprintf(tw, "  demo release and its root\t%s  %s\n", r.demoZip(), r.demoRoot())
	tw.Flush()
	flagPart := ""
	if r.nexus.ExternalURL() != defaultRackctlURL {
		flagPart = " --nexus " + r.nexus.ExternalURL()
	}
	if r.externalCA != "" {
		flagPart += " --ca-cert " + r.externalCA
	}
	fmt.Fprintln(w, "\nTry (rackctl reads the token file named by $RACKPLANE_TOKEN_FILE):")
	fmt.Fprintf(w, "  export RACKPLANE_TOKEN_FILE=%s\n", r.tokenFile())
	fmt.Fprintf(w, "  go run ./cmd/rackctl%s sleds list\n", flagPart)
	fmt.Fprintf(w, "  go run ./cmd/rackctl%s repo list\n", flagPart)
	if r.o.noDemo {
		fmt.Fprintf(w, "  go run ./cmd/rackctl%s trust-root add %s\n", flagPart, r.demoRoot())
	} else {
		fmt.Fprintf(w, "  go run ./cmd/rackctl%s repo show %s\n", flagPart, demoVersion)
	}
	fmt.Fprintf(w, "  go run ./cmd/rackctl%s repo upload %s\n", flagPart, r.demoZip())
	fmt.Fprintf(w, "  go run ./cmd/rackctl%s bgtasks show tuf_artifact_replication\n", flagPart)
	fmt.Fprintf(w, "  go run ./cmd/rackctl%s trust-quorum status\n", flagPart)
	if r.o.lrtq {
		fmt.Fprintf(w, "  go run ./cmd/rackctl%s trust-quorum upgrade-from-lrtq --wait\n", flagPart)
	}
	curlCA := ""
	if r.externalCA != "" {
		curlCA = " --cacert " + r.externalCA
	}
	fmt.Fprintf(w, "  curl%s -H \"Authorization: Bearer $(cat %s)\" %s/v1/system/hardware/sleds\n", curlCA, r.tokenFile(),
		r.nexus.ExternalURL())
	fmt.Fprintf(w, "\nStatus pages: %s/ui/background-tasks (sign in with the admin token)\n", r.nexus.ExternalURL())
}

// The demo release rackdev uploads, signed by a lineage made from a fixed
// seed so that its trust root is the same on every run.
const (
	demoVersion = "1.0.0"
	demoZip     = "demo-repo-1.0.0.zip"
)

// writeDemo writes the demo release and its trust root to
// <data-dir>/demo (the user may upload them again, or themselves under
// --no-demo) and returns the lineage that signed them. Beside the plain
// artifacts it carries one composite of every kind, which Nexus expands
// into parts.
func (r *rack) writeDemo() (*tufgen.Lineage, *tufgen.Built, error) {
	l, err := tufgen.NewLineage(rand.NewChaCha8([32]byte{'r', 'a', 'c', 'k', 'd', 'e', 'v'}), tufgen.LineageOptions{Consistent: true})
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(filepath.Dir(r.demoZip()), 0o755); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(r.demoRoot(), l.TrustRoot(), 0o644); err != nil {
		return nil, nil, err
	}
	repo := tufgen.Demo(demoVersion)
	repo.Artifacts = append(repo.Artifacts, tufgen.Composites(demoVersion).Artifacts...)
	built, err := l.BuildFile(r.demoZip(), repo)
	if err != nil {
		return nil, nil, err
	}
	return l, built, nil
}

// demoZip and demoRoot are where the demo release and its root are.
func (r *rack) demoZip() string  { return filepath.Join(r.dataDir, "demo", demoZip) }
func (r *rack) demoRoot() string { return filepath.Join(r.dataDir, "demo", "root.json") }

// uploadDemoRepo registers the demo trust root and uploads the demo
// release. It returns the hashes of every artifact and part recorded.
func (r *rack) uploadDemoRepo(ctx context.Context, l *tufgen.Lineage, built *tufgen.Built, stdout io.Writer) ([]string, error) {
	nx, err := r.client()
	if err != nil {
		return nil, err
	}
	if _, _, err := nx.TrustRootAdd(ctx, l.TrustRoot()); err != nil {
		return nil, err
	}
	f, err := os.Open(r.demoZip())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	res, err := nx.RepoUpload(ctx, demoZip, f, built.Size, nil)
	if err != nil {
		return nil, err
	}
	detail, err := nx.RepoGet(ctx, res.Repo.SystemVersion)
	if err != nil {
		return nil, err
	}
	hashes, parts := make([]string, len(detail.Artifacts)), 0
	for i, a := range detail.Artifacts {
		hashes[i] = a.SHA256
		if a.PartOf != nil {
			parts++
		}
	}
	fmt.Fprintf(stdout, "rackdev: demo repo %s %s (%d artifacts, %d of them parts of its %d composites)\n",
		res.Repo.SystemVersion, res.Status, res.Repo.ArtifactCount, parts, len(built.Artifacts)-len(tufgen.Demo(demoVersion).Artifacts))
	return hashes, nil
}

// waitReplicated waits until every sled holds every artifact of the demo
// repo on each of its M.2s, as the sleds themselves report it.
func (r *rack) waitReplicated(ctx context.Context, hashes []string, timeout time.Duration, stdout io.Writer) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		missing := 0
		for _, s := range r.nodes() {
			sc, err := client.NewSledAgent(s.URL(), r.sledHTTP())
			if err != nil {
				return err
			}
			list, err := sc.ArtifactList(ctx)
			for _, h := range hashes {
				if err != nil || list.M2Present == 0 || list.Artifacts[h] < list.M2Present {
					missing++
				}
			}
		}
		if missing == 0 {
			fmt.Fprintf(stdout, "rackdev: every sled holds the demo repo on each M.2 (replicated in %s)\n",
				time.Since(start).Round(time.Millisecond))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not replicated within %s: %d sled copies missing (see logs/nexus.log and "+
				"`rackctl bgtasks show tuf_artifact_replication`)", timeout, missing)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// defaultRackctlURL is rackctl's default --nexus.
const defaultRackctlURL = "http://127.0.0.1:12220"

// close stops everything in reverse order and removes what rackdev made.
func (r *rack) close(w io.Writer) {
	r.stopChildren()
	if r.cancel != nil {
		r.cancel()
	}
	r.wg.Wait()
	if r.pg != nil {
		r.pg.Close()
	}
	for _, f := range r.logFiles {
		f.Close()
	}
	if r.ownDir && !r.o.keep {
		os.RemoveAll(r.dataDir)
		fmt.Fprintln(w, "rackdev: stopped and cleaned up")
	} else if r.dataDir != "" {
		fmt.Fprintf(w, "rackdev: stopped; state kept in %s\n", r.dataDir)
	}
}

// tokenFile is where rackdev keeps its admin token.
func (r *rack) tokenFile() string { return filepath.Join(r.dataDir, "admin-token") }

// client is a client of the rack's external API with the admin token.
func (r *rack) client() (client.Nexus, error) {
	var hc *http.Client
	if r.externalCA != "" {
		// rackdev checks the certificate as rackctl --ca-cert does: by
		// the rack CA and the host name.
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.rss.Pool(), MinVersion: tls.VersionTLS12}}}
	}
	nx, err := client.NewNexus(r.nexus.ExternalURL(), hc)
	if err != nil {
		return nx, err
	}
	return nx.WithToken(r.adminToken), nil
}

// ensureAdminToken keeps the admin token of an earlier run on the same
// data dir while it still works, and otherwise makes one the way an
// operator's first is made (at the console) and writes it to tokenFile
// (mode 0600).
func (r *rack) ensureAdminToken(ctx context.Context) (string, error) {
	if b, err := os.ReadFile(r.tokenFile()); err == nil {
		tok := strings.TrimSpace(string(b))
		if actor, err := r.nexus.App().Authenticate(ctx, tok); err == nil && actor.Role == model.RoleAdmin {
			return tok, nil
		}
	}
	made, err := r.nexus.App().CreateToken(app.WithActor(ctx, app.ConsoleActor()), "rackdev-admin", model.RoleAdmin, 0)
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	if err := fsutil.WriteFileAtomic(r.tokenFile(), []byte(made.Secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return made.Secret, nil
}

// sledHTTP talks to the sleds' APIs as the rack-setup service (which may
// read them, not change them).
func (r *rack) sledHTTP() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: r.rss.ClientTLS(rackpki.OnlyKinds(rackpki.KindSled), nil)}}
}

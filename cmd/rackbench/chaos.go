package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/trustquorum"
	"github.com/rackplane/rackplane/bgtasks/tufpruner"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/pgtemp"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/supervise"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/bootstrap/rss"
	tq "github.com/rackplane/rackplane/trustquorum"
)

// chaosOptions are rackbench chaos's flags.
type chaosOptions struct {
	seed     uint64
	duration time.Duration
	sleds    int
	nexuses  int
	dir      string
	binDir   string
	// converge bounds the wait for convergence after the last fault.
	converge time.Duration
	// gap is the mean time between two faults.
	gap time.Duration
	// tq sets the rack up with the trust quorum (rack setup over all but
	// the last two sleds) and changes its membership during the run.
	tq bool
}

func runChaos(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := chaosOptions{}
	fs := flag.NewFlagSet("rackbench chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Uint64Var(&o.seed, "seed", 0, "seed of the fault schedule and the workload (default: drawn, and printed)")
	fs.DurationVar(&o.duration, "duration", 30*time.Minute, "how long faults are injected")
	fs.IntVar(&o.sleds, "sleds", 8, "sled-agent processes")
	fs.IntVar(&o.nexuses, "nexus", 2, "Nexus processes on the one database")
	fs.StringVar(&o.dir, "dir", "", "work directory, kept afterwards (default: a new temp dir, removed when every invariant holds)")
	fs.StringVar(&o.binDir, "bin-dir", "", "directory holding nexus and sled-agent (default: go build them into <dir>/bin)")
	fs.DurationVar(&o.converge, "converge-timeout", 5*time.Minute, "how long the rack may take to converge after the last fault")
	fs.DurationVar(&o.gap, "fault-gap", 0, "mean time between faults (default: duration/120, at least 3 s)")
	fs.BoolVar(&o.tq, "trust-quorum", true, "set the rack up with the trust quorum and change its membership during the run")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if o.sleds < 3 || o.nexuses < 1 || o.duration <= 0 {
		fmt.Fprintln(stderr, "rackbench chaos: --sleds must be at least 3, --nexus at least 1, --duration positive")
		return 2
	}
	if o.tq && o.sleds < tq.MinMembers+2 {
		fmt.Fprintf(stderr, "rackbench chaos: the trust-quorum part needs --sleds %d or more (or --trust-quorum=false)\n", tq.MinMembers+2)
		return 2
	}
	if o.seed == 0 {
		o.seed = rand.Uint64()
	}
	if o.gap <= 0 {
		o.gap = max(o.duration/120, 3*time.Second)
	}
	res, err := chaos(ctx, o, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "rackbench chaos:", err)
		return 1
	}
	if !res.ok() {
		fmt.Fprintf(stderr, "rackbench chaos: invariants failed (seed %d; replay with --seed %d)\n", o.seed, o.seed)
		return 1
	}
	return 0
}

// chaosRack is the rack of processes the chaos run starts.
type chaosRack struct {
	o       chaosOptions
	dir     string
	bin     string
	logDir  string
	pg      *pgtemp.Cluster
	pgMu    sync.Mutex
	dbURL   string
	dbRelay *relay
	ca      *rackpki.CA
	rss     *rackpki.Bundle
	token   string
	lineage *tufgen.Lineage
	nexus   []*chaosNexus
	sleds   []*chaosSled
	// nexusRelay fronts the first Nexus's internal API for half the
	// sleds (and for every sled's copies from its depot).
	nexusRelay *relay
	rnd        *backoff.Rand
	supLog     zerolog.Logger
	logFiles   []*os.File
	rackID     uuid.UUID
}

type chaosNexus struct {
	name         string
	id           uuid.UUID
	externalAddr string
	internalAddr string
	dataDir      string
	child        *supervise.Child
	api          client.Nexus
}

type chaosSled struct {
	name      string
	serial    string
	dataDir   string
	m2        []string
	apiAddr   string
	depotAddr string
	bootAddr  string
	nexusURL  string
	child     *supervise.Child
}

// chaosPolicy restarts quickly (the run wants to see the rack heal, not
// wait on systemd's pace) and gives up only on a process that cannot
// start at all.
var chaosPolicy = supervise.Policy{
	Backoff:     backoff.Policy{Initial: time.Second, Max: 5 * time.Second, Jitter: 0.5},
	Burst:       30,
	Interval:    5 * time.Minute,
	StopTimeout: 15 * time.Second,
}

// buildBinaries builds nexus and sled-agent into dir, from the module
// this source belongs to.
func buildBinaries(ctx context.Context, dir string, w io.Writer) error {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		return fmt.Errorf("go env GOMOD: run from the repository or pass --bin-dir (%v)", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	fmt.Fprintln(w, "building ./cmd/nexus and ./cmd/sled-agent ...")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), "./cmd/nexus", "./cmd/sled-agent")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, b)
	}
	return nil
}

// startRack starts PostgreSQL, migrates, makes the PKI and the admin
// token, and starts every Nexus and sled process under supervision.
func startChaosRack(ctx context.Context, o chaosOptions, dir string, w io.Writer) (*chaosRack, error) {
	r := &chaosRack{o: o, dir: dir, logDir: filepath.Join(dir, "logs"),
		rnd: backoff.NewRand(rand.NewPCG(o.seed, 0x5eed))}
	if err := os.MkdirAll(r.logDir, 0o755); err != nil {
		return r, err
	}
	supLog, err := r.logFile("supervisor")
	if err != nil {
		return r, err
	}
	r.supLog = zerolog.New(supLog).With().Timestamp().Logger()
	r.bin = o.binDir
	if r.bin == "" {
		r.bin = filepath.Join(dir, "bin")
		if err := buildBinaries(ctx, r.bin, w); err != nil {
			return r, err
		}
	}

	// PostgreSQL on loopback TCP too, so that a relay can stand between
	// it and the first Nexus.
	pgPort, err := freePort()
	if err != nil {
		return r, err
	}
	fmt.Fprintln(w, "starting PostgreSQL ...")
	r.pg, err = pgtemp.Start(ctx, pgtemp.Options{DataDir: filepath.Join(dir, "postgres"), LogPath: filepath.Join(r.logDir, "postgres.log"),
		Settings: map[string]string{"listen_addresses": "127.0.0.1", "port": strconv.Itoa(pgPort)}})
	if err != nil {
		return r, err
	}
	if err := createDB(ctx, r.pg.URL("postgres"), "rackplane"); err != nil {
		return r, err
	}
	r.dbURL = r.pg.URL("rackplane")
	if r.dbRelay, err = newRelay("database", fmt.Sprintf("127.0.0.1:%d", pgPort)); err != nil {
		return r, err
	}
	migrate := exec.CommandContext(ctx, r.binPath("nexus"), "migrate", "up", "--database-url", r.dbURL)
	if b, err := migrate.CombinedOutput(); err != nil {
		return r, fmt.Errorf("nexus migrate up: %v\n%s", err, b)
	}
	tok, err := exec.CommandContext(ctx, r.binPath("nexus"), "token", "create", "--database-url", r.dbURL, "--name", "chaos").Output()
	if err != nil {
		return r, fmt.Errorf("nexus token create: %w", err)
	}
	r.token = strings.TrimSpace(string(tok))

	pki := filepath.Join(dir, "pki")
	if r.ca, err = rackpki.InitCA(pki, "chaos", 0); err != nil {
		return r, err
	}
	if r.rss, err = r.ca.IssueFiles(filepath.Join(pki, "rss"), "rss", rackpki.RSS(), rackpki.IssueOptions{}); err != nil {
		return r, err
	}
	var key [32]byte
	copy(key[:], fmt.Sprintf("chaos %d", o.seed))
	if r.lineage, err = tufgen.NewLineage(rand.NewChaCha8(key), tufgen.LineageOptions{Consistent: true}); err != nil {
		return r, err
	}

	for i := range o.nexuses {
		if err := r.startNexus(ctx, i); err != nil {
			return r, err
		}
	}
	// Sleds 0, 2, 4, ... reach the first Nexus through the relay; the
	// others reach the second Nexus directly (or the first, with one).
	var bootPeers []string
	for i := range o.sleds {
		s := &chaosSled{name: fmt.Sprintf("sled-%d", i), serial: fmt.Sprintf("CHAOS-%02d", i+1), dataDir: filepath.Join(dir, fmt.Sprintf("sled-%d", i))}
		s.m2 = []string{filepath.Join(s.dataDir, "m2-a"), filepath.Join(s.dataDir, "m2-b")}
		for _, a := range []*string{&s.apiAddr, &s.depotAddr, &s.bootAddr} {
			p, err := freePort()
			if err != nil {
				return r, err
			}
			*a = fmt.Sprintf("127.0.0.1:%d", p)
		}
		s.nexusURL = "https://" + r.nexusRelay.Addr()
		if i%2 == 1 && len(r.nexus) > 1 {
			s.nexusURL = "https://" + r.nexus[1].internalAddr
		}
		r.sleds = append(r.sleds, s)
		bootPeers = append(bootPeers, s.bootAddr)
	}
	for _, s := range r.sleds {
		if err := r.startSled(s, bootPeers); err != nil {
			return r, err
		}
	}
	return r, nil
}

func (r *chaosRack) binPath(name string) string { return filepath.Join(r.bin, name) }

func (r *chaosRack) logFile(name string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(r.logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err == nil {
		r.logFiles = append(r.logFiles, f)
	}
	return f, err
}

// startNexus starts Nexus i with the flags nexus.service's environment
// file gives it (as flags here), its own certificate and data dir. The
// first Nexus reaches the database through the database relay and is
// reached by sleds through the Nexus relay.
func (r *chaosRack) startNexus(ctx context.Context, i int) error {
	n := &chaosNexus{name: fmt.Sprintf("nexus-%d", i), id: uuid.New(), dataDir: filepath.Join(r.dir, fmt.Sprintf("nexus-%d", i))}
	for _, a := range []*string{&n.externalAddr, &n.internalAddr} {
		p, err := freePort()
		if err != nil {
			return err
		}
		*a = fmt.Sprintf("127.0.0.1:%d", p)
	}
	tlsDir := filepath.Join(r.dir, "pki", n.name)
	if _, err := r.ca.IssueFiles(tlsDir, "nexus", rackpki.Nexus(n.id.String()), rackpki.IssueOptions{}); err != nil {
		return err
	}
	dbURL, advertise := r.dbURL, "https://"+n.internalAddr
	if i == 0 {
		dbURL = fmt.Sprintf("postgres://postgres@%s/rackplane?sslmode=disable", r.dbRelay.Addr())
		var err error
		if r.nexusRelay, err = newRelay("nexus-0 internal", n.internalAddr); err != nil {
			return err
		}
		advertise = "https://" + r.nexusRelay.Addr()
	}
	args := []string{"--id", n.id.String(), "--tls-dir", tlsDir, "--data-dir", n.dataDir,
		"--database-url", dbURL, "--database-wait", "2m",
		"--external-addr", n.externalAddr, "--internal-addr", n.internalAddr, "--internal-advertise-url", advertise,
		"--tuf-repos-kept", "3", "--min-sled-replication", "3", "--shutdown-grace", "5s",
		// Faster than production, so that a run of minutes sees many
		// prunes and replication runs.
		"--task-period", tufpruner.Name + "=20s", "--task-period", tufreplication.Name + "=10s",
		"--task-period", trustquorum.Name + "=5s", "--sled-liveness-threshold", "30s",
		"--log-level", "info", "--log-format", "json"}
	out, err := r.logFile(n.name)
	if err != nil {
		return err
	}
	n.child, err = supervise.Start(supervise.Spec{Name: n.name, Path: r.binPath("nexus"), Args: args, Output: out}, chaosPolicy, r.rnd, r.supLog)
	if err != nil {
		return err
	}
	if n.api, err = client.NewNexus("http://"+n.externalAddr, &http.Client{Timeout: 2 * time.Minute}); err != nil {
		return err
	}
	n.api = n.api.WithToken(r.token)
	if err := waitHealthy(ctx, n.api, time.Minute); err != nil {
		return fmt.Errorf("%s: %w (log in %s)", n.name, err, out.Name())
	}
	r.nexus = append(r.nexus, n)
	return nil
}

// startSled starts a sled-agent process with the flags sled-agent.env
// gives it (as flags), its certificate under the rack CA and two M.2
// directories.
func (r *chaosRack) startSled(s *chaosSled, peers []string) error {
	tlsDir := filepath.Join(r.dir, "pki", s.name)
	if _, err := r.ca.IssueFiles(tlsDir, "sled", rackpki.Sled(sledagent.DefaultBaseboardPart, s.serial), rackpki.IssueOptions{}); err != nil {
		return err
	}
	args := []string{"--data-dir", s.dataDir, "--m2", s.m2[0], "--m2", s.m2[1], "--m2-create",
		"--tls-dir", tlsDir, "--nexus-url", s.nexusURL,
		"--listen", s.apiAddr, "--repo-depot-listen", s.depotAddr,
		"--bootstrap-listen", s.bootAddr, "--bootstrap-peers", strings.Join(peers, ","),
		"--m2-poll-interval", "500ms", "--artifact-reconcile-interval", "10s", "--scrub-interval", "20s",
		"--register-interval", "5s", "--shutdown-grace", "5s", "--log-level", "info", "--log-format", "json"}
	out, err := r.logFile(s.name)
	if err != nil {
		return err
	}
	s.child, err = supervise.Start(supervise.Spec{Name: s.name, Path: r.binPath("sled-agent"), Args: args, Output: out}, chaosPolicy, r.rnd, r.supLog)
	return err
}

// sledClient reads a sled's API as the rack-setup service.
func (r *chaosRack) sledClient(s *chaosSled) (client.SledAgent, error) {
	return client.NewSledAgent("https://"+s.apiAddr, &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: r.rss.ClientTLS(rackpki.OnlyKinds(rackpki.KindSled), nil)}})
}

// waitUp waits until every Nexus and sled answers and every sled is
// registered.
func (r *chaosRack) waitUp(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if last = r.upOnce(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("rack not up within %s: %w", timeout, last)
}

func (r *chaosRack) upOnce(ctx context.Context) error {
	for _, n := range r.nexus {
		if _, err := n.api.Health(ctx); err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
	}
	for _, s := range r.sleds {
		sc, err := r.sledClient(s)
		if err != nil {
			return err
		}
		if _, err := sc.Health(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	list, err := r.nexus[0].api.SledList(ctx)
	if err != nil {
		return err
	}
	if len(list) < len(r.sleds) {
		return fmt.Errorf("%d of %d sleds registered", len(list), len(r.sleds))
	}
	return nil
}

// setupRack plays the rack-setup service over the first n sleds: epoch 1
// over them, handed to the first Nexus.
func (r *chaosRack) setupRack(ctx context.Context, n int, w io.Writer) error {
	var addrs []string
	for _, s := range r.sleds[:n] {
		addrs = append(addrs, s.bootAddr)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c, err := rss.Dial(ctx, addrs, rss.Options{Bundle: r.rss, PollInterval: 50 * time.Millisecond})
	if err != nil {
		return err
	}
	defer c.Close()
	r.rackID = uuid.New()
	res, err := c.SetupRack(ctx, rss.SetupOptions{RackID: tq.RackID(r.rackID)})
	if err != nil {
		return err
	}
	if _, _, err := c.HandOff(ctx, "https://"+r.nexus[0].internalAddr, tq.RackID(r.rackID), res); err != nil {
		return err
	}
	fmt.Fprintf(w, "rack set up: trust-quorum epoch 1 over %d sleds (coordinator %s), handed to %s\n", n, res.Coordinator.Serial, r.nexus[0].name)
	return nil
}

// stop stops every process (sleds first, then Nexus, then the
// database) and the relays.
func (r *chaosRack) stop() {
	ctx := context.Background()
	var wg sync.WaitGroup
	for _, s := range r.sleds {
		if s.child != nil {
			wg.Add(1)
			go func() { defer wg.Done(); s.child.Stop(ctx) }()
		}
	}
	wg.Wait()
	for _, n := range r.nexus {
		if n.child != nil {
			wg.Add(1)
			go func() { defer wg.Done(); n.child.Stop(ctx) }()
		}
	}
	wg.Wait()
	for _, rl := range []*relay{r.dbRelay, r.nexusRelay} {
		if rl != nil {
			rl.Close()
		}
	}
	if r.pg != nil {
		r.pgMu.Lock()
		r.pg.Close()
		r.pgMu.Unlock()
	}
	for _, f := range r.logFiles {
		f.Close()
	}
}

func createDB(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	return err
}

func freePort() (int, error) {
	addr, err := freeAddr()
	if err != nil {
		return 0, err
	}
	_, p, _ := strings.Cut(addr, ":")
	return strconv.Atoi(p)
}

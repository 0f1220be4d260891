// Command rackbench measures whole-system figures against this machine's
// own limits, measured in the same run, and prints their ratio.
//
//	go run ./cmd/rackbench upload --size 1GiB,4GiB
//	go run ./cmd/rackbench replicate
//
// Subcommands:
//
//	upload     upload a generated TUF repo to a Nexus child process
//	replicate  replicate a generated TUF repo to sled agents in this
//	           process; time the planner at rack scale
//	chaos      the rack chaos test: PostgreSQL, Nexus and sled processes
//	           under a seeded schedule of faults, invariants checked after
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/buildinfo"
	"github.com/rackplane/rackplane/internal/iolimit"
	"github.com/rackplane/rackplane/internal/pgtemp"
	"github.com/rackplane/rackplane/internal/tufgen"
)

const usage = `rackbench: whole-system benchmarks, each printed as a ratio to this machine's limit.

Usage:
  go run ./cmd/rackbench --version
  go run ./cmd/rackbench upload [--size 1GiB,4GiB] [--artifacts 48] [--nexus-bin PATH] [--external-tls http|https|both]
  go run ./cmd/rackbench replicate [--size 256MiB] [--sleds 16] [--artifacts 4,64] [--plan-sleds 1000] [--plan-artifacts 10000]
  go run ./cmd/rackbench chaos [--seed N] [--duration 30m] [--sleds 8] [--nexus 2] [--dir DIR]`

// subcommand is one benchmark.
type subcommand struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func subcommands() []subcommand {
	return []subcommand{
		{"upload", "upload a generated TUF repo to a Nexus child process", runUpload},
		{"replicate", "replicate a generated TUF repo to sled agents; time the planner at rack scale", runReplicate},
		{"chaos", "a rack of processes under a seeded schedule of faults; checks every invariant after", runChaos},
	}
}

func main() {
	// Interrupting a benchmark cancels it, so that it still stops what it
	// started and removes its work dir (gigabytes, for replicate).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version" || args[0] == "version") {
		fmt.Fprintln(stdout, buildinfo.Line("rackbench"))
		return 0
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stdout, usage)
		for _, s := range subcommands() {
			fmt.Fprintf(stdout, "  %-10s %s\n", s.name, s.summary)
		}
		return 0
	}
	for _, s := range subcommands() {
		if s.name == args[0] {
			return s.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "rackbench: unknown benchmark %q (run rackbench help)\n", args[0])
	return 2
}

// parseSize reads "1GiB", "256MiB", "64KiB" or a plain byte count.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSuffix(s, suffix), m
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with an optional KiB, MiB or GiB suffix", s)
	}
	return n * mult, nil
}

type uploadOptions struct {
	sizes     []int64
	artifacts int
	nexusBin  string
	dir       string
	// externalTLS is how the external API is reached: "http", "https",
	// or "both" (one upload each, to measure what TLS costs).
	externalTLS string
}

func runUpload(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o uploadOptions
	var sizes string
	fs := flag.NewFlagSet("rackbench upload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&sizes, "size", "1GiB,4GiB", "sizes of the generated repos' artifacts, one upload run each (comma-separated)")
	fs.IntVar(&o.artifacts, "artifacts", 48, "number of artifacts")
	fs.StringVar(&o.nexusBin, "nexus-bin", "", "nexus binary (default: go build ./cmd/nexus)")
	fs.StringVar(&o.dir, "dir", "", "work directory (default: a new temp dir, removed afterwards)")
	fs.StringVar(&o.externalTLS, "external-tls", "both",
		"upload over http, https, or both (one upload each, to measure what TLS costs)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	for _, f := range strings.Split(sizes, ",") {
		n, err := parseSize(strings.TrimSpace(f))
		if err != nil {
			fmt.Fprintln(stderr, "rackbench:", err)
			return 2
		}
		o.sizes = append(o.sizes, n)
	}
	return report("upload", stderr, benchUpload(ctx, o, stdout))
}

// parseFlags parses args, then fs's --size flag into size. It returns the
// exit code to stop with, or -1 to go on.
func parseFlags(fs *flag.FlagSet, args []string, size *int64, stderr io.Writer) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var err error
	if *size, err = parseSize(fs.Lookup("size").Value.String()); err != nil {
		fmt.Fprintln(stderr, "rackbench:", err)
		return 2
	}
	return -1
}

// report turns a benchmark's outcome into its exit code.
func report(name string, stderr io.Writer, err error) int {
	if err != nil {
		fmt.Fprintf(stderr, "rackbench %s: %v\n", name, err)
		return 1
	}
	return 0
}

func benchUpload(ctx context.Context, o uploadOptions, w io.Writer) error {
	dir, cleanup, err := workDir(o.dir)
	if err != nil {
		return err
	}
	defer cleanup()
	bin := o.nexusBin
	if bin == "" {
		bin = filepath.Join(dir, "nexus-bin")
		fmt.Fprintln(w, "building ./cmd/nexus ...")
		if out, err := exec.Command("go", "build", "-o", bin, "./cmd/nexus").CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/nexus (run from the repository root or pass --nexus-bin): %v\n%s", err, out)
		}
	}
	modes, err := tlsModes(o.externalTLS)
	if err != nil {
		return err
	}
	pg, l, err := startBench(ctx, w, "bench")
	if err != nil {
		return err
	}
	defer pg.Close()
	var results []uploadResult
	for i, size := range o.sizes {
		res, err := uploadSize(ctx, w, uploadSizeRun{bin: bin, dir: filepath.Join(dir, fmt.Sprintf("size-%d", i)), pg: pg,
			lineage: l, size: size, artifacts: o.artifacts, modes: modes, run: i})
		if err != nil {
			return err
		}
		results = append(results, res)
	}
	for _, r := range results {
		r.print(w)
	}
	return nil
}

// uploadSizeRun is one archive size's measurement.
type uploadSizeRun struct {
	bin       string
	dir       string
	pg        *pgtemp.Cluster
	lineage   *tufgen.Lineage
	size      int64
	artifacts int
	modes     []bool
	run       int
}

// uploadResult is one archive size's figures.
type uploadResult struct {
	archive   int64
	artifacts int
	// once and twice are the machine's one- and two-pass limits (the
	// mean of the measurements before and after the uploads).
	once, twice             time.Duration
	onceBefore, onceAfter   time.Duration
	twiceBefore, twiceAfter time.Duration
	runs                    []uploadRun
}

func (r uploadResult) print(w io.Writer) {
	fmt.Fprintf(w, "\nTUF upload of %d MiB (%d artifacts)\n", r.archive>>20, r.artifacts)
	fmt.Fprintf(w, "  machine limit, one pass  %8.2f s  %8.1f MB/s  (read+SHA-256+durable write; before %.2f s, after %.2f s)\n",
		r.once.Seconds(), iolimit.MBps(r.archive, r.once), r.onceBefore.Seconds(), r.onceAfter.Seconds())
	fmt.Fprintf(w, "  machine limit, two passes%8.2f s  %8.1f MB/s  (the old upload path's floor; before %.2f s, after %.2f s)\n",
		r.twice.Seconds(), iolimit.MBps(r.archive, r.twice), r.twiceBefore.Seconds(), r.twiceAfter.Seconds())
	for _, u := range r.runs {
		fmt.Fprintf(w, "  upload over %-12s %8.2f s  %8.1f MB/s  ratio %5.2f to one pass (target <= 1.2; %.2f to two)  "+
			"nexus peak RSS %6.1f MiB = %.2f of 128 MiB (target < 1)  status %s\n",
			u.transport(), u.took.Seconds(), iolimit.MBps(r.archive, u.took), u.took.Seconds()/r.once.Seconds(),
			u.took.Seconds()/r.twice.Seconds(), float64(u.peakRSS)/(1<<20), float64(u.peakRSS)/(128<<20), u.status)
	}
	if len(r.runs) == 2 {
		fmt.Fprintf(w, "  cost of TLS              %8.2f×   (HTTPS upload time ÷ HTTP upload time, same run)\n",
			r.runs[1].took.Seconds()/r.runs[0].took.Seconds())
	}
}

// uploadSize generates an archive of the size, measures the machine's
// limits either side of one upload per transport, and removes the
// archive.
func uploadSize(ctx context.Context, w io.Writer, s uploadSizeRun) (uploadResult, error) {
	res := uploadResult{artifacts: s.artifacts}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return res, err
	}
	defer os.RemoveAll(s.dir)
	fmt.Fprintf(w, "generating a %d MiB repo of %d artifacts ...\n", s.size>>20, s.artifacts)
	zipPath := filepath.Join(s.dir, "repo.zip")
	// Sizes in the local headers, as rackrelease and tufaceous write
	// releases.
	repo := tufgen.Sized(fmt.Sprintf("1.0.%d", s.run), s.size, s.artifacts, 1+uint64(s.run))
	repo.HeaderSizes = true
	built, err := s.lineage.BuildFile(zipPath, repo)
	if err != nil {
		return res, err
	}
	res.archive = built.Size
	limits := func(when string) (time.Duration, time.Duration, error) {
		// Flush the generated archive (and anything else dirty) first, so
		// the kernel's writeback of it does not compete with what is
		// measured.
		syscall.Sync()
		fmt.Fprintf(w, "measuring this machine's read+SHA-256+write, once and twice, %s the uploads ...\n", when)
		once, err := iolimit.Once(zipPath, s.dir)
		if err != nil {
			return 0, 0, err
		}
		syscall.Sync()
		twice, err := iolimit.Twice(zipPath, s.dir)
		return once, twice, err
	}
	if res.onceBefore, res.twiceBefore, err = limits("before"); err != nil {
		return res, err
	}
	for i, useTLS := range s.modes {
		syscall.Sync()
		run, err := uploadOnce(ctx, w, uploadTarget{bin: s.bin, dir: filepath.Join(s.dir, fmt.Sprintf("run%d", i)), pg: s.pg,
			lineage: s.lineage, zipPath: zipPath, size: built.Size, tls: useTLS, db: fmt.Sprintf("s%d_%d", s.run, i)})
		if err != nil {
			return res, err
		}
		res.runs = append(res.runs, run)
	}
	if res.onceAfter, res.twiceAfter, err = limits("after"); err != nil {
		return res, err
	}
	// The disk's speed wanders between runs; each limit is the mean of
	// the measurements either side of the uploads.
	res.once, res.twice = (res.onceBefore+res.onceAfter)/2, (res.twiceBefore+res.twiceAfter)/2
	return res, nil
}

// tlsModes reads --external-tls: whether each upload uses TLS.
func tlsModes(s string) ([]bool, error) {
	switch s {
	case "http":
		return []bool{false}, nil
	case "https":
		return []bool{true}, nil
	case "both":
		return []bool{false, true}, nil
	}
	return nil, fmt.Errorf("--external-tls %q: want http, https or both", s)
}

// uploadTarget is one Nexus to start and upload to.
type uploadTarget struct {
	bin     string
	dir     string
	pg      *pgtemp.Cluster
	lineage *tufgen.Lineage
	zipPath string
	size    int64
	tls     bool
	// db names the run's database (each run gets its own).
	db string
}

// uploadRun is what one upload measured.
type uploadRun struct {
	tls     bool
	took    time.Duration
	peakRSS int64
	status  string
}

func (r uploadRun) transport() string {
	if r.tls {
		return "HTTPS"
	}
	return "HTTP"
}

// uploadOnce starts a Nexus child process on a database of its own,
// uploads the archive to it once, stops it and reports the time and the
// process's peak memory.
func uploadOnce(ctx context.Context, w io.Writer, t uploadTarget) (uploadRun, error) {
	run := uploadRun{tls: t.tls}
	if err := os.MkdirAll(t.dir, 0o755); err != nil {
		return run, err
	}
	fmt.Fprintf(w, "starting nexus (external API over %s) ...\n", run.transport())
	dbURL, err := createDatabase(ctx, t.pg, "rackplane_"+strings.ToLower(run.transport())+"_"+t.db)
	if err != nil {
		return run, err
	}
	addr, err := freeAddr()
	if err != nil {
		return run, err
	}
	logFile, err := os.Create(filepath.Join(t.dir, "nexus.log"))
	if err != nil {
		return run, err
	}
	defer logFile.Close()
	// The Nexus certificate is made as a deployment makes it; it names
	// 127.0.0.1 too, so it serves the external API when TLS is measured.
	nexusID := uuid.New().String()
	pkiDir := filepath.Join(t.dir, "pki-nexus")
	for _, args := range [][]string{
		{"pki", "init", "--dir", filepath.Join(t.dir, "pki-ca")},
		{"pki", "issue", "--ca-dir", filepath.Join(t.dir, "pki-ca"), "--out", pkiDir, "--nexus", nexusID, "--host", "127.0.0.1"},
	} {
		if out, err := exec.Command(t.bin, args...).CombinedOutput(); err != nil {
			return run, fmt.Errorf("nexus %v: %w\n%s", args, err, out)
		}
	}
	limit := strconv.FormatInt(2*t.size+(1<<20), 10)
	args := []string{"--id", nexusID, "--tls-dir", pkiDir,
		"--database-url", dbURL, "--auto-migrate", "--data-dir", filepath.Join(t.dir, "nexus-data"),
		"--external-addr", addr, "--internal-addr", "127.0.0.1:0", "--upload-max-bytes", limit,
		"--tuf-max-expansion", limit, "--log-level", "info"}
	hc := &http.Client{}
	base := "http://" + addr
	if t.tls {
		args = append(args, "--external-tls-cert", filepath.Join(pkiDir, "nexus.crt"),
			"--external-tls-key", filepath.Join(pkiDir, "nexus.key"))
		pem, err := os.ReadFile(filepath.Join(pkiDir, "ca.crt"))
		if err != nil {
			return run, err
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return run, errors.New("no certificate in ca.crt")
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}}
		base = "https://" + addr
	}
	cmd := exec.Command(t.bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return run, err
	}
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	nx, err := client.NewNexus(base, hc)
	if err != nil {
		return run, err
	}
	if err := waitHealthy(ctx, nx, 30*time.Second); err != nil {
		return run, err
	}
	// The benchmark authenticates as an operator would, with a token made
	// at the console.
	tok, err := exec.Command(t.bin, "token", "create", "--database-url", dbURL, "--name", "rackbench").Output()
	if err != nil {
		return run, fmt.Errorf("nexus token create: %w", err)
	}
	nx = nx.WithToken(strings.TrimSpace(string(tok)))
	if _, _, err := nx.TrustRootAdd(ctx, t.lineage.TrustRoot()); err != nil {
		return run, err
	}
	fmt.Fprintf(w, "uploading over %s ...\n", run.transport())
	f, err := os.Open(t.zipPath)
	if err != nil {
		return run, err
	}
	start := time.Now()
	res, err := nx.RepoUpload(ctx, "repo.zip", f, t.size, nil)
	run.took = time.Since(start)
	f.Close()
	if err != nil {
		return run, fmt.Errorf("upload: %w", err)
	}
	run.status = res.Status
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return run, err
	}
	if err := cmd.Wait(); err != nil {
		return run, fmt.Errorf("nexus exited: %w (log in %s)", err, logFile.Name())
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return run, errors.New("no rusage for the nexus process")
	}
	run.peakRSS = ru.Maxrss << 10 // Linux reports KiB
	// The next run starts from a quiet disk: this one's depot goes.
	return run, os.RemoveAll(filepath.Join(t.dir, "nexus-data"))
}

// workDir returns dir, or when it is empty a new temp dir that cleanup
// removes (a given dir is kept, for looking at afterwards).
func workDir(dir string) (_ string, cleanup func(), err error) {
	if dir != "" {
		return dir, func() {}, os.MkdirAll(dir, 0o755)
	}
	d, err := os.MkdirTemp("", "rackbench-")
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// startBench starts PostgreSQL and makes the signing lineage of the
// generated repos (seeded, so every run signs the same way).
func startBench(ctx context.Context, w io.Writer, seed string) (*pgtemp.Cluster, *tufgen.Lineage, error) {
	var key [32]byte
	copy(key[:], seed)
	l, err := tufgen.NewLineage(rand.NewChaCha8(key), tufgen.LineageOptions{Consistent: true})
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintln(w, "starting PostgreSQL ...")
	pg, err := pgtemp.Start(ctx, pgtemp.Options{})
	return pg, l, err
}

// createDatabase creates database name in pg and returns its URL.
func createDatabase(ctx context.Context, pg *pgtemp.Cluster, name string) (string, error) {
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return pg.URL(name), nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitHealthy(ctx context.Context, nx client.Nexus, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := nx.Health(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nexus not healthy after %s: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Command rackbench measures whole-system figures against this machine's
// own limits, measured in the same run, and prints their ratio.
//
//	go run ./cmd/rackbench upload --size 1GiB
//	go run ./cmd/rackbench replicate
//
// Subcommands:
//
//	upload     upload a generated TUF repo to a Nexus child process
//	replicate  replicate a generated TUF repo to sled agents in this
//	           process; time the planner at rack scale
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
  go run ./cmd/rackbench upload [--size 1GiB] [--artifacts 48] [--nexus-bin PATH]
  go run ./cmd/rackbench replicate [--size 256MiB] [--sleds 16] [--artifacts 4,64] [--plan-sleds 1000] [--plan-artifacts 10000]`

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
	size      int64
	artifacts int
	nexusBin  string
	dir       string
	// externalTLS is how the external API is reached: "http", "https",
	// or "both" (one upload each, to measure what TLS costs).
	externalTLS string
}

func runUpload(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o uploadOptions
	fs := flag.NewFlagSet("rackbench upload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("size", "1GiB", "size of the generated repo's artifacts")
	fs.IntVar(&o.artifacts, "artifacts", 48, "number of artifacts")
	fs.StringVar(&o.nexusBin, "nexus-bin", "", "nexus binary (default: go build ./cmd/nexus)")
	fs.StringVar(&o.dir, "dir", "", "work directory (default: a new temp dir, removed afterwards)")
	fs.StringVar(&o.externalTLS, "external-tls", "both",
		"upload over http, https, or both (one upload each, to measure what TLS costs)")
	if code := parseFlags(fs, args, &o.size, stderr); code >= 0 {
		return code
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

	pg, l, err := startBench(ctx, w, "bench")
	if err != nil {
		return err
	}
	defer pg.Close()
	fmt.Fprintf(w, "generating a %d MiB repo of %d artifacts ...\n", o.size>>20, o.artifacts)
	zipPath := filepath.Join(dir, "repo.zip")
	built, err := l.BuildFile(zipPath, tufgen.Sized("1.0.0", o.size, o.artifacts, 1))
	if err != nil {
		return err
	}

	modes, err := tlsModes(o.externalTLS)
	if err != nil {
		return err
	}
	// Flush the generated archive (and anything else dirty) first, so the
	// kernel's writeback of it does not compete with what is measured.
	syscall.Sync()
	fmt.Fprintln(w, "measuring this machine's read+SHA-256+write, twice, before the upload ...")
	limitBefore, err := iolimit.Twice(zipPath, dir)
	if err != nil {
		return err
	}
	var runs []uploadRun
	for i, useTLS := range modes {
		syscall.Sync()
		run, err := uploadOnce(ctx, w, uploadTarget{bin: bin, dir: filepath.Join(dir, fmt.Sprintf("run%d", i)), pg: pg,
			lineage: l, zipPath: zipPath, size: built.Size, tls: useTLS})
		if err != nil {
			return err
		}
		runs = append(runs, run)
	}

	syscall.Sync()
	fmt.Fprintln(w, "measuring this machine's read+SHA-256+write, twice, after the upload ...")
	limitAfter, err := iolimit.Twice(zipPath, dir)
	if err != nil {
		return err
	}
	// The disk's speed wanders between runs; the limit is the mean of the
	// measurements either side of the upload.
	limit := (limitBefore + limitAfter) / 2
	fmt.Fprintf(w, "\nTUF upload of %d MiB (%d artifacts)\n", built.Size>>20, o.artifacts)
	fmt.Fprintf(w, "  machine limit (2 passes) %8.2f s  %8.1f MB/s  (before %.2f s, after %.2f s)\n", limit.Seconds(),
		iolimit.MBps(built.Size, limit), limitBefore.Seconds(), limitAfter.Seconds())
	for _, r := range runs {
		fmt.Fprintf(w, "  upload over %-12s %8.2f s  %8.1f MB/s  ratio %5.2f (target <= 1.5)  nexus peak RSS %6.1f MiB (target < 128)  status %s\n",
			r.transport(), r.took.Seconds(), iolimit.MBps(built.Size, r.took), r.took.Seconds()/limit.Seconds(),
			float64(r.peakRSS)/(1<<20), r.status)
	}
	if len(runs) == 2 {
		fmt.Fprintf(w, "  cost of TLS              %8.2f×   (HTTPS upload time ÷ HTTP upload time, same run)\n",
			runs[1].took.Seconds()/runs[0].took.Seconds())
	}
	return nil
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
	dbURL, err := createDatabase(ctx, t.pg, "rackplane_"+strings.ToLower(run.transport()))
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

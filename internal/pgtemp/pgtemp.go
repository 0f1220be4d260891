// Package pgtemp runs a throwaway PostgreSQL cluster from the system's
// PostgreSQL server binaries, for tests and for rackdev.
//
// The cluster lives in a fresh directory under the system temp dir, listens on
// a unix socket only, and is tuned for speed over durability (fsync off),
// because nothing in it outlives the process that started it. Its
// transactions are SERIALIZABLE by default, matching CockroachDB, so that
// retry paths in the datastore run for real in tests.
//
// With Options.DataDir the cluster's data is kept there instead, across
// runs (rackdev's --data-dir): the first Start creates it, later ones
// start the cluster it holds. Such a cluster writes durably (fsync on,
// commits acknowledged before they are flushed), since it is meant to
// outlive its process; only its socket and lock live in a temp dir.
//
// Servers must not outlive their owner even when the owner is killed: the
// postmaster is started with a parent-death signal, and every cluster
// directory carries a lock file held for the owner's lifetime, so the next
// Start removes directories whose owner is gone.
package pgtemp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoPostgres reports that the PostgreSQL server binaries are not installed.
var ErrNoPostgres = errors.New("PostgreSQL server binaries (initdb, postgres) not found; install them with: apt-get install postgresql")

// dirPrefix names cluster directories so that stale ones can be found.
const dirPrefix = "rackplane-pg-"

// Options tune a cluster. The zero value is a good default.
type Options struct {
	// Settings are extra postgresql.conf settings (name → value), applied
	// after the defaults.
	Settings map[string]string
	// StartTimeout bounds how long Start waits for the server to accept
	// connections. Zero means 60 s.
	StartTimeout time.Duration
	// DataDir, when set, keeps the cluster's data in this directory
	// across runs: Close stops the server and leaves it.
	DataDir string
	// LogPath is the server's log file (default: in the temp dir).
	LogPath string
}

// ErrUnreachable reports a DataDir the postgres user cannot reach: when
// running as root the server runs as that user, who must be able to
// traverse every directory above it.
var ErrUnreachable = errors.New("the postgres user cannot reach the data directory")

// Cluster is a running (or stopped) throwaway PostgreSQL cluster.
type Cluster struct {
	// Dir is the cluster's private directory (data, socket, logs).
	Dir string

	binDir    string
	dataDir   string
	socketDir string
	logPath   string
	cred      *syscall.Credential
	opts      Options
	lock      *os.File

	// persistent is set when the data lives in Options.DataDir; fresh when
	// this Start created it.
	persistent, fresh bool

	mu   sync.Mutex
	proc *os.Process
	done chan struct{} // closed when the postmaster has exited
}

// Fresh reports whether Start created the cluster's data (always, unless
// Options.DataDir held a cluster already).
func (c *Cluster) Fresh() bool { return c.fresh }

// FindBinaries returns the directory holding initdb and postgres: the first
// one found on PATH, else the newest /usr/lib/postgresql/*/bin.
func FindBinaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	best, bestVer := "", -1
	for _, m := range matches {
		v, err := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m))))
		if err == nil && v > bestVer {
			best, bestVer = filepath.Dir(m), v
		}
	}
	if best == "" {
		return "", ErrNoPostgres
	}
	return best, nil
}

// Start creates a new cluster and starts its server.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	binDir, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	reapStale()

	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgtemp: %w", err)
	}
	c := &Cluster{
		Dir:       dir,
		binDir:    binDir,
		dataDir:   filepath.Join(dir, "data"),
		socketDir: filepath.Join(dir, "sock"),
		logPath:   filepath.Join(dir, "postgres.log"),
		opts:      opts,
		fresh:     true,
	}
	if opts.DataDir != "" {
		abs, err := filepath.Abs(opts.DataDir)
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtemp: %w", err)
		}
		c.dataDir, c.persistent = abs, true
		if _, err := os.Stat(filepath.Join(abs, "PG_VERSION")); err == nil {
			c.fresh = false
		}
	}
	if opts.LogPath != "" {
		c.logPath = opts.LogPath
	}
	if err := c.prepare(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if c.fresh {
		if err := c.initdb(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.Start(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// prepare makes the directory layout and, when running as root, hands it to
// the postgres user: initdb and postgres refuse to run as root.
func (c *Cluster) prepare() error {
	lock, err := os.OpenFile(filepath.Join(c.Dir, "owner.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("pgtemp: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return fmt.Errorf("pgtemp: lock %s: %w", c.Dir, err)
	}
	c.lock = lock
	if err := os.Mkdir(c.socketDir, 0o700); err != nil {
		return fmt.Errorf("pgtemp: %w", err)
	}
	switch {
	case !c.persistent:
		if err := os.Mkdir(c.dataDir, 0o700); err != nil {
			return fmt.Errorf("pgtemp: %w", err)
		}
	case c.fresh:
		// initdb wants the directory empty or absent; a kept cluster's
		// is left as it is.
		if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
			return fmt.Errorf("pgtemp: %w", err)
		}
	}
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("pgtemp: running as root needs a postgres user to run the server as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	// The postgres user must be able to traverse the top directory but
	// not list it.
	if err := os.Chmod(c.Dir, 0o711); err != nil {
		return fmt.Errorf("pgtemp: %w", err)
	}
	for _, d := range []string{c.dataDir, c.socketDir} {
		if err := os.Chown(d, uid, gid); err != nil {
			return fmt.Errorf("pgtemp: %w", err)
		}
	}
	if c.persistent {
		if err := reachable(filepath.Dir(c.dataDir), uint32(uid), uint32(gid)); err != nil {
			return err
		}
		if c.opts.LogPath != "" {
			// The server appends to its log as the postgres user.
			f, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return fmt.Errorf("pgtemp: %w", err)
			}
			f.Close()
		}
	}
	return nil
}

// reachable checks that a process of uid/gid may traverse dir and every
// directory above it.
func reachable(dir string, uid, gid uint32) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("pgtemp: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		mode := fi.Mode().Perm()
		switch {
		case !ok, mode&0o001 != 0:
		case st.Uid == uid && mode&0o100 != 0, st.Gid == gid && mode&0o010 != 0:
		default:
			return fmt.Errorf("%w: running as root, PostgreSQL runs as the postgres user, which may not enter %s "+
				"(mode %04o); choose a data directory it can reach (chmod o+x %s, or one under /var/tmp)",
				ErrUnreachable, d, mode, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGKILL}
	return cmd
}

func (c *Cluster) initdb(ctx context.Context) error {
	args := []string{"-D", c.dataDir, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"}
	if !c.persistent {
		args = append(args, "--no-sync")
	}
	cmd := c.command(ctx, "initdb", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtemp: initdb: %w\n%s", err, out)
	}
	return nil
}

// settings returns the server's command-line settings.
func (c *Cluster) settings() []string {
	durability := map[string]string{"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
	if c.persistent {
		// Kept data must survive a crash of the machine; a lost last
		// commit or two after one is fine for a dev rack.
		durability = map[string]string{"fsync": "on", "synchronous_commit": "off", "full_page_writes": "on"}
	}
	conf := map[string]string{
		"listen_addresses":              "",
		"unix_socket_directories":       c.socketDir,
		"default_transaction_isolation": "serializable",
		"max_connections":               "300",
		"shared_buffers":                "64MB",
		"log_min_messages":              "warning",
		"timezone":                      "UTC",
	}
	for k, v := range durability {
		conf[k] = v
	}
	for k, v := range c.opts.Settings {
		conf[k] = v
	}
	var args []string
	for k, v := range conf {
		args = append(args, "-c", k+"="+v)
	}
	return args
}

// Start starts the server of a stopped cluster (Start the function already
// calls it once). Tests use Stop and Start to restart the database under a
// running Nexus.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	if c.proc != nil {
		c.mu.Unlock()
		return errors.New("pgtemp: server already running")
	}
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.mu.Unlock()
		return fmt.Errorf("pgtemp: %w", err)
	}
	type startResult struct {
		proc *os.Process
		err  error
	}
	started := make(chan startResult, 1)
	done := make(chan struct{})
	// The parent-death signal fires when the thread that forked the
	// postmaster exits, not the process. Fork from a goroutine locked to its
	// thread, and keep that goroutine (and so the thread) alive until the
	// postmaster exits.
	go func() {
		runtime.LockOSThread()
		defer logf.Close()
		cmd := c.command(context.Background(), "postgres", append([]string{"-D", c.dataDir}, c.settings()...)...)
		cmd.Stdout = logf
		cmd.Stderr = logf
		if err := cmd.Start(); err != nil {
			started <- startResult{err: err}
			close(done)
			runtime.UnlockOSThread()
			return
		}
		started <- startResult{proc: cmd.Process}
		_ = cmd.Wait()
		close(done)
		// Leave the thread locked: it is discarded when this goroutine
		// returns, and the postmaster is gone already.
	}()
	res := <-started
	err = res.err
	if err == nil {
		c.proc, c.done = res.proc, done
	}
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("pgtemp: start postgres: %w", err)
	}
	return c.waitReady(ctx, done)
}

func (c *Cluster) waitReady(ctx context.Context, done <-chan struct{}) error {
	timeout := c.opts.StartTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-done:
			c.mu.Lock()
			c.proc = nil
			c.mu.Unlock()
			return fmt.Errorf("pgtemp: postgres exited during start-up:\n%s", c.logTail())
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(cctx, c.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			c.Stop()
			return fmt.Errorf("pgtemp: postgres did not accept connections within %s: %v\n%s", timeout, err, c.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Cluster) logTail() string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

// URL returns a connection URL for database dbname over the unix socket.
func (c *Cluster) URL(dbname string) string {
	q := url.Values{"host": {c.socketDir}, "sslmode": {"disable"}}
	if port := c.opts.Settings["port"]; port != "" {
		// The socket's name carries the port.
		q.Set("port", port)
	}
	return (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/" + dbname, RawQuery: q.Encode()}).String()
}

// PID returns the postmaster's process id, or 0 when it is not running.
func (c *Cluster) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return 0
	}
	return c.proc.Pid
}

// Stop shuts the server down (fast shutdown: open sessions are cut) and
// waits for it to exit. The data stays, so Start can bring it back.
func (c *Cluster) Stop() {
	c.mu.Lock()
	proc, done := c.proc, c.done
	c.proc = nil
	c.mu.Unlock()
	if proc == nil {
		return
	}
	_ = proc.Signal(syscall.SIGINT)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = proc.Kill()
		<-done
	}
}

// Close stops the server and removes the cluster's directory (a DataDir
// is kept).
func (c *Cluster) Close() {
	c.Stop()
	_ = os.RemoveAll(c.Dir)
	if c.lock != nil {
		c.lock.Close()
	}
}

// reapMinAge protects the lock files of owners that are still starting.
var reapMinAge = time.Minute

// reapStale removes cluster directories whose owner process is gone: their
// lock file can be locked again. Best effort; errors are ignored.
func reapStale() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, dir := range matches {
		f, err := os.OpenFile(filepath.Join(dir, "owner.lock"), os.O_RDWR, 0)
		if err != nil {
			// A directory without a lock file is still being set up, or is
			// not ours; leave it.
			continue
		}
		// A lock file that is unlocked but young may belong to an owner
		// between creating and locking it.
		fi, err := f.Stat()
		young := err != nil || time.Since(fi.ModTime()) < reapMinAge
		if !young && syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			if strings.HasPrefix(filepath.Base(dir), dirPrefix) {
				_ = os.RemoveAll(dir)
			}
		}
		f.Close()
	}
}

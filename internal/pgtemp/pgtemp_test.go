package pgtemp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestStartQueryStopStartClose(t *testing.T) {
	ctx := context.Background()
	c, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	var iso string
	if err := conn.QueryRow(ctx, "SHOW default_transaction_isolation").Scan(&iso); err != nil || iso != "serializable" {
		t.Fatalf("default isolation %q (%v), want serializable", iso, err)
	}
	conn.Close(ctx)

	c.Stop()
	if _, err := pgx.Connect(ctx, c.URL("postgres")); err == nil {
		t.Fatal("server still answers after Stop")
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	conn.Close(ctx)
	dir := c.Dir
	c.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("Close left %s behind (%v)", dir, err)
	}
}

// When the process that started a cluster is killed outright, its server
// dies with it, and the next Start removes the directory it left.
func TestServerDiesWithKilledOwner(t *testing.T) {
	if os.Getenv("PGTEMP_CHILD") == "1" {
		c, err := Start(context.Background(), Options{})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("started", c.PID(), c.Dir)
		select {} // wait to be killed
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerDiesWithKilledOwner$")
	cmd.Env = append(os.Environ(), "PGTEMP_CHILD=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("child: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "started" {
		cmd.Process.Kill()
		t.Fatalf("child said %q", line)
	}
	pid, _ := strconv.Atoi(f[1])
	dir := f[2]
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("postmaster %d not running: %v", pid, err)
	}

	cmd.Process.Kill()
	cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("postmaster %d outlived its killed owner", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("expected the killed owner's dir %s to remain until reaped: %v", dir, err)
	}
	old := reapMinAge
	reapMinAge = 0
	defer func() { reapMinAge = old }()
	c, err := Start(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("stale dir %s not reaped (%v)", dir, err)
	}
	if _, err := os.Stat(c.Dir); err != nil {
		t.Fatalf("reaper removed the live cluster's dir: %v", err)
	}
}

// traversable makes the test's own temp dirs enterable by the postgres
// user, which runs the server when the tests run as root.
func traversable(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != os.TempDir() && d != "/" && d != "."; d = filepathDir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
}

func filepathDir(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// A cluster with a DataDir keeps its data there: a second Start on the
// same directory finds what the first wrote, and Close removes only the
// temp dir (socket, lock).
func TestDataDirOutlivesTheCluster(t *testing.T) {
	ctx := context.Background()
	parent := t.TempDir()
	traversable(t, parent)
	dataDir := parent + "/pg"
	logPath := parent + "/postgres.log"
	c, err := Start(ctx, Options{DataDir: dataDir, LogPath: logPath})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Fresh() {
		t.Fatal("a new data dir is not fresh")
	}
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	var fsync string
	if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil || fsync != "on" {
		t.Fatalf("a kept cluster has fsync %q (%v)", fsync, err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v TEXT); INSERT INTO kept VALUES ('still here')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	first := c.Dir
	c.Close()
	if _, err := os.Stat(first); !os.IsNotExist(err) {
		t.Fatalf("Close left the temp dir %s (%v)", first, err)
	}
	if _, err := os.Stat(dataDir + "/PG_VERSION"); err != nil {
		t.Fatalf("Close removed the data dir: %v", err)
	}
	if b, err := os.ReadFile(logPath); err != nil || len(b) == 0 {
		t.Fatalf("no server log at %s (%v)", logPath, err)
	}

	c, err = Start(ctx, Options{DataDir: dataDir, LogPath: logPath})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Fresh() {
		t.Fatal("a kept cluster is started as fresh")
	}
	conn, err = pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != "still here" {
		t.Fatalf("after a restart: %q, %v", v, err)
	}
}

// Running as root, the server runs as the postgres user: a data dir that
// user cannot reach is refused, saying how to fix it, before initdb runs.
// (reachable is what Start asks then; here for a made-up user, so the
// test means the same whoever runs it.)
func TestUnreachableDataDirIsRefused(t *testing.T) {
	locked := t.TempDir() // 0700
	const nobody = 65534
	if err := reachable(locked+"/pg", nobody, nobody); err == nil {
		// locked+"/pg" does not exist: reachable stats it first.
		t.Fatal("a missing directory is reachable")
	}
	if err := os.Mkdir(locked+"/pg", 0o700); err != nil {
		t.Fatal(err)
	}
	err := reachable(locked+"/pg", nobody, nobody)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "chmod o+x "+locked) {
		t.Fatalf("an unreachable dir: %v", err)
	}
	if err := os.Chmod(locked, 0o711); err != nil {
		t.Fatal(err)
	}
	traversable(t, locked)
	if err := os.Chmod(locked+"/pg", 0o711); err != nil {
		t.Fatal(err)
	}
	if err := reachable(locked+"/pg", nobody, nobody); err != nil {
		t.Fatalf("a traversable dir: %v", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chmod(locked, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := Start(context.Background(), Options{DataDir: locked + "/pg"}); !errors.Is(err, ErrUnreachable) {
			t.Fatalf("Start as root on an unreachable dir: %v", err)
		}
	}
}

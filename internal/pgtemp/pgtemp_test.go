package pgtemp

import (
	"bufio"
	"context"
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

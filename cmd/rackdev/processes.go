package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/supervise"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/sled"
)

// devSled is what rackdev needs of a sled, whether it runs in rackdev's
// own process or as a child process (--processes).
type devSled interface {
	ID() uuid.UUID
	Serial() string
	URL() string
	DepotURL() string
	BootstrapAddr() string
}

// inProcSled is a sled running in rackdev's process.
type inProcSled struct{ s *sled.Sled }

func (p inProcSled) ID() uuid.UUID         { return p.s.Server().ID() }
func (p inProcSled) Serial() string        { return p.s.Baseboard().Serial }
func (p inProcSled) URL() string           { return p.s.Server().URL() }
func (p inProcSled) DepotURL() string      { return p.s.Server().DepotURL() }
func (p inProcSled) BootstrapAddr() string { return p.s.BootstrapAddr() }

// childSled is a sled-agent child process under rackdev's supervisor.
type childSled struct {
	name, serial              string
	id                        uuid.UUID
	api, depot, boot, dataDir string
	child                     *supervise.Child
}

func (c *childSled) ID() uuid.UUID         { return c.id }
func (c *childSled) Serial() string        { return c.serial }
func (c *childSled) URL() string           { return "https://" + c.api }
func (c *childSled) DepotURL() string      { return "https://" + c.depot }
func (c *childSled) BootstrapAddr() string { return c.boot }

// nodes lists the rack's sleds in either mode.
func (r *rack) nodes() []devSled {
	if r.o.processes {
		out := make([]devSled, len(r.children))
		for i, c := range r.children {
			out[i] = c
		}
		return out
	}
	out := make([]devSled, len(r.sleds))
	for i, s := range r.sleds {
		out[i] = inProcSled{s}
	}
	return out
}

// sledAgentBinary finds the sled-agent to run: one beside the rackdev
// executable (an installed rackdev comes with the binaries of its
// release), else one built from this module into <data-dir>/bin, once
// per run, so that `go run ./cmd/rackdev --processes` runs the sled agent
// of the same source.
func (r *rack) sledAgentBinary(ctx context.Context, stdout io.Writer) (string, error) {
	if exe, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(exe), "sled-agent")
		if fi, err := os.Stat(beside); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			fmt.Fprintf(stdout, "rackdev: --processes: running %s\n", beside)
			return beside, nil
		}
	}
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	root := strings.TrimSpace(string(gomod))
	if err != nil || root == "" || root == os.DevNull {
		return "", fmt.Errorf("--processes: no sled-agent beside rackdev, and no Go module here to build one from "+
			"(run from the repository, or install sled-agent beside rackdev): %v", err)
	}
	bin := filepath.Join(r.dataDir, "bin", "sled-agent")
	fmt.Fprintf(stdout, "rackdev: --processes: building ./cmd/sled-agent into %s ...\n", bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/sled-agent")
	cmd.Dir = filepath.Dir(root)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("--processes: go build ./cmd/sled-agent: %v\n%s", err, out)
	}
	return bin, nil
}

// startChildSleds starts every sled as a sled-agent child process, with
// the flags sled-agent.service's environment file gives a sled (here as
// flags): its certificate directory, its two M.2s, Nexus's internal URL,
// its listeners and every sled's bootstrap address; but no data disks
// yet (the in-process rack's sleds have them since storage unlock), so
// each sled agent starts at once and its id is in its data dir. A supervisor restarts
// one that dies, as systemd would (supervise.DefaultPolicy mirrors the
// unit's Restart=on-failure, RestartSec and StartLimitBurst).
func (r *rack) startChildSleds(ctx context.Context, ca *rackpki.CA, stdout io.Writer) error {
	bin, err := r.sledAgentBinary(ctx, stdout)
	if err != nil {
		return err
	}
	supLog, err := os.OpenFile(filepath.Join(r.dataDir, "logs", "supervisor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	r.logFiles = append(r.logFiles, supLog)
	// Restarts go to the terminal too: a sled dying is news.
	console := zerolog.ConsoleWriter{Out: stdout, NoColor: true, TimeFormat: "15:04:05"}
	log := zerolog.New(zerolog.MultiLevelWriter(supLog, console)).With().Timestamp().Str("component", "rackdev-supervisor").Logger()
	rnd := backoff.NewRand(nil)

	var peers []string
	for i := range r.o.sleds {
		c := &childSled{name: fmt.Sprintf("sled-%d", i), serial: fmt.Sprintf("SIM-%04d", i+1), dataDir: filepath.Join(r.dataDir, fmt.Sprintf("sled-%d", i))}
		for _, a := range []*string{&c.api, &c.depot, &c.boot} {
			if *a, err = loopbackAddr(); err != nil {
				return err
			}
		}
		r.children = append(r.children, c)
		peers = append(peers, c.boot)
	}
	for _, c := range r.children {
		tlsDir := filepath.Join(r.pki, c.name)
		if _, err := ca.IssueFiles(tlsDir, "sled", rackpki.Sled(sledagent.DefaultBaseboardPart, c.serial), rackpki.IssueOptions{}); err != nil {
			return err
		}
		out, err := os.OpenFile(filepath.Join(r.dataDir, "logs", c.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		r.logFiles = append(r.logFiles, out)
		args := []string{"--data-dir", c.dataDir,
			"--m2", filepath.Join(c.dataDir, "m2-a"), "--m2", filepath.Join(c.dataDir, "m2-b"), "--m2-create",
			"--tls-dir", tlsDir, "--nexus-url", r.nexus.InternalURL(),
			"--listen", c.api, "--repo-depot-listen", c.depot,
			"--bootstrap-listen", c.boot, "--bootstrap-peers", strings.Join(peers, ","),
			"--log-level", r.o.logLevel, "--log-format", "json"}
		if c.child, err = supervise.Start(supervise.Spec{Name: c.name, Path: bin, Args: args, Output: out}, supervise.DefaultPolicy, rnd, log); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	// A sled's id is made by the process on its first start; rackdev
	// waits for it, to know which registrations to wait for.
	deadline := time.Now().Add(r.o.waitTimeout)
	for _, c := range r.children {
		for {
			b, err := os.ReadFile(filepath.Join(c.dataDir, "sled-id"))
			if err == nil {
				if c.id, err = uuid.Parse(strings.TrimSpace(string(b))); err == nil {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s made no sled id within %s (see logs/%s.log)", c.name, r.o.waitTimeout, c.name)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-c.child.Done():
				return fmt.Errorf("%s exited at start (%v; see logs/%s.log)", c.name, c.child.Err(), c.name)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	fmt.Fprintf(stdout, "rackdev: %d sleds running as sled-agent processes (restarted when they die; supervisor log in logs/supervisor.log)\n",
		len(r.children))
	return nil
}

// stopChildren stops the sled processes (SIGTERM, then SIGKILL after the
// policy's timeout), all at once, before Nexus and the database stop.
func (r *rack) stopChildren() {
	var wg sync.WaitGroup
	for _, c := range r.children {
		if c.child != nil {
			wg.Add(1)
			go func() { defer wg.Done(); c.child.Stop(context.Background()) }()
		}
	}
	wg.Wait()
}

// loopbackAddr picks a free port on loopback for a child to listen on.
func loopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// checkChildrenOnce is checkOnce under --processes: every sled process
// answers on its API and is registered with Nexus.
func (r *rack) checkChildrenOnce(ctx context.Context, nx client.Nexus) error {
	want := map[uuid.UUID]bool{}
	for _, c := range r.children {
		if c.child.PID() == 0 {
			return fmt.Errorf("%s is not running (see logs/supervisor.log and logs/%s.log)", c.name, c.name)
		}
		sc, err := client.NewSledAgent(c.URL(), r.sledHTTP())
		if err != nil {
			return err
		}
		if _, err := sc.Health(ctx); err != nil {
			return fmt.Errorf("%s health: %w", c.name, err)
		}
		want[c.id] = true
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

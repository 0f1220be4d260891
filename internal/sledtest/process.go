package sledtest

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/sledagent/sled"
)

// Process is a whole sled process in the test (sledagent/sled): its
// bootstrap agent on the bootstrap network and, unless it runs only that,
// its sled agent. It can be stopped (as by a crash: both agents go, the
// M.2s keep their ledgers) and started again on the same directories and
// bootstrap address.
type Process struct {
	t      testing.TB
	Index  int
	Bundle *rackpki.Bundle
	Config sled.Config

	logs io.Writer

	mu     sync.Mutex
	s      *sled.Sled
	cancel context.CancelFunc
	done   chan error
}

// ProcessOptions configure NewProcesses.
type ProcessOptions struct {
	// NexusURL is the Nexus internal API the sled agents register with.
	NexusURL string
	// Part names the sleds' baseboards (part:SIM-000N from the test CA);
	// default sledagent.DefaultBaseboardPart.
	Part string
	// BootstrapOnly sleds (by index) start without their sled agent.
	BootstrapOnly map[int]bool
	// Logs, when set, receives every sled's JSON log lines at debug level
	// instead of the test log (tests that read them).
	Logs io.Writer
	// DataDisks gives every sled two data disks (temp dirs): its sled
	// agent starts only once they are unlocked (package sled).
	DataDisks bool
	// Tweak adjusts each sled's configuration before it is made.
	Tweak func(i int, c *sled.Config)
}

// NewProcesses makes n sled processes with certificates of the test CA,
// temp-dir M.2s, loopback listeners and every sled's bootstrap address as
// its peers, and runs them. They stop when the test ends.
func NewProcesses(t testing.TB, n int, o ProcessOptions) []*Process {
	t.Helper()
	if o.Part == "" {
		o.Part = sledagent.DefaultBaseboardPart
	}
	var out []*Process
	for i := range n {
		dir := t.TempDir()
		cfg := sled.Config{
			Agent: sledagent.Config{
				DataDir: dir, ListenAddr: "127.0.0.1:0", RepoDepotAddr: "127.0.0.1:0", NexusURL: o.NexusURL,
				M2Dirs: []string{filepath.Join(dir, "m2-a"), filepath.Join(dir, "m2-b")}, CreateM2Dirs: true,
				M2PollInterval: 100 * time.Millisecond, ScrubInterval: -1, ShutdownGrace: 2 * time.Second,
			},
			Identity: Bundle(t, rackpki.Sled(o.Part, fmt.Sprintf("SIM-%04d", i+1))),
			Bootstrap: bootstrap.Config{
				ListenAddr: "127.0.0.1:0", Jitter: rand.New(rand.NewPCG(uint64(i), 1)),
				BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second,
			},
			BootstrapOnly: o.BootstrapOnly[i],
		}
		if o.DataDisks {
			cfg.Storage = sled.Storage{Dirs: []string{filepath.Join(dir, "u2-a"), filepath.Join(dir, "u2-b")},
				RetryMin: 50 * time.Millisecond, RetryMax: time.Second, RekeyCheck: time.Second}
		}
		if o.Tweak != nil {
			o.Tweak(i, &cfg)
		}
		p := &Process{t: t, Index: i, Bundle: cfg.Identity, Config: cfg, logs: o.Logs}
		p.open()
		// A restart listens where the first run did, so peers find it.
		p.Config.Bootstrap.ListenAddr = p.s.BootstrapAddr()
		out = append(out, p)
	}
	peers := BootstrapAddrs(out)
	for _, p := range out {
		p.Config.Bootstrap.Peers = peers
		p.s.Agent().SetPeers(peers)
		p.run()
	}
	return out
}

// BootstrapAddrs lists the processes' bootstrap addresses.
func BootstrapAddrs(ps []*Process) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.BootstrapAddr())
	}
	return out
}

func (p *Process) open() {
	p.t.Helper()
	name := "sled " + p.Config.Identity.Identity.Serial
	log := Logger(p.t, name)
	if p.logs != nil {
		var err error
		if log, err = logging.New(p.logs, name, logging.Options{Level: "debug"}); err != nil {
			p.t.Fatal(err)
		}
	}
	s, err := sled.New(p.Config, log)
	if err != nil {
		p.t.Fatalf("sled %d: %v", p.Index, err)
	}
	p.mu.Lock()
	p.s = s
	p.mu.Unlock()
}

func (p *Process) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	p.mu.Lock()
	p.cancel, p.done = cancel, done
	s := p.s
	p.mu.Unlock()
	go func() { done <- s.Run(ctx) }()
	p.t.Cleanup(p.Stop)
}

// Stop stops the process (both agents) and waits for it; stopping a
// stopped one does nothing.
func (p *Process) Stop() {
	p.mu.Lock()
	cancel, done := p.cancel, p.done
	p.cancel = nil
	p.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	if err := <-done; err != nil {
		p.t.Errorf("sled %d: %v", p.Index, err)
	}
}

// Start runs a stopped process again, from what its M.2s and data dir
// hold, on the same bootstrap address.
func (p *Process) Start() {
	p.t.Helper()
	p.open()
	p.s.Agent().SetPeers(p.Config.Bootstrap.Peers)
	p.run()
}

// Sled is the running sled process.
func (p *Process) Sled() *sled.Sled {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.s
}

// Running reports whether the process runs.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cancel != nil
}

// Agent is its bootstrap agent.
func (p *Process) Agent() *bootstrap.Agent { return p.Sled().Agent() }

// BootstrapAddr is its bootstrap address.
func (p *Process) BootstrapAddr() string { return p.Sled().BootstrapAddr() }

// Server is its sled agent (nil while it runs only its bootstrap agent).
func (p *Process) Server() *sledagent.Server { return p.Sled().Server() }

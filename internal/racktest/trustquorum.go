package racktest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/sledagent/bootstrap/rss"
	"github.com/rackplane/rackplane/trustquorum"
)

// startTrustQuorum starts the rack's sled processes and sets the rack up
// as rackdev does: the rack-setup service dials every initial sled's
// bootstrap agent, commits epoch 1 (or LRTQ) over them and hands the rack
// to Nexus. Every sled has data disks: its sled agent starts (and
// registers) once epoch 1 is committed and it gathered K shares.
func (r *Rack) startTrustQuorum() {
	t := r.T
	t.Helper()
	spare := map[int]bool{}
	for i := r.cfg.Sleds; i < r.cfg.Sleds+r.cfg.Spares; i++ {
		spare[i] = true
	}
	r.Processes = sledtest.NewProcesses(t, r.cfg.Sleds+r.cfg.Spares, sledtest.ProcessOptions{
		NexusURL: r.Nexus.InternalURL(), BootstrapOnly: spare, DataDisks: true,
	})
	r.RackID = trustquorum.RackID(uuid.New())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := rss.Dial(ctx, sledtest.BootstrapAddrs(r.Processes[:r.cfg.Sleds]),
		rss.Options{Bundle: sledtest.Bundle(t, rackpki.RSS()), PollInterval: 20 * time.Millisecond, Log: Logger(t, "rss")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var handed rss.Handed
	r.Setup, handed, err = c.SetUpAndHandOff(ctx, rss.SetupOptions{RackID: r.RackID, Lrtq: r.cfg.Lrtq}, r.Nexus.InternalURL())
	if err != nil || handed != rss.HandedNow {
		t.Fatalf("rack setup: handed %v, %v", handed, err)
	}
	WaitProcessesRegistered(t, r.Nexus, r.Processes[:r.cfg.Sleds]...)
}

// WaitProcessesRegistered waits until nx lists the sled agent of every
// given process.
func WaitProcessesRegistered(t testing.TB, nx *Nexus, ps ...*sledtest.Process) {
	t.Helper()
	WaitFor(t, 30*time.Second, "sled processes to register", func() error {
		listed, err := nx.Client.SledList(context.Background())
		if err != nil {
			return err
		}
		have := map[api.Baseboard]string{}
		for _, s := range listed {
			have[s.Baseboard] = s.SledAgentAddress
		}
		for _, p := range ps {
			srv := p.Server()
			if srv == nil {
				return fmt.Errorf("sled %d has no sled agent", p.Index)
			}
			if have[srv.Baseboard()] != srv.Address() {
				return fmt.Errorf("sled %s not registered at %s yet", srv.Baseboard(), srv.Address())
			}
		}
		return nil
	})
}

// Baseboard is process p's baseboard as the API names it.
func Baseboard(p *sledtest.Process) api.Baseboard {
	id := p.Bundle.Identity
	return api.Baseboard{Part: id.Part, Serial: id.Serial}
}

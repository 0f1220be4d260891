package trustquorum_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/bgtasks/trustquorum"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/sledagent/bootstrap/rss"
	"github.com/rackplane/rackplane/sledagent/sled"
	tq "github.com/rackplane/rackplane/trustquorum"
)

// BenchmarkMembershipChange32 measures a membership change of a 32-sled
// rack end to end: from the operator's request to the external API until
// the database records the epoch committed. Every change is made while
// the manager runs in its Nexus as it does in production (triggered by
// the request, following up on its own); the rack alternates between 31
// and 32 members (a bootstrap-only spare added, committed through a
// member's proxy, then removed), so every change is of a 32-sled rack.
// "coordinator_crash" kills the coordinator's sled process as soon as
// the request returns and starts it again: Nexus notices (the coordinator
// lost the epoch, or never started it) and either sends the request again
// or aborts and retries at the next epoch with another coordinator.
//
// The floor, measured in the same run on a rack of 32 sled processes of
// its own (before the Nexus rack starts), is the runtime's own
// reconfiguration driven as Nexus drives it but with nothing in between:
// reconfigure at the coordinator, poll its status every 2 ms until every
// member prepared, commit every member at once (what
// sledagent/sled.BenchmarkReconfigure32 measures).
//
//	go test ./bgtasks/trustquorum/ -run '^$' -bench MembershipChange32 -benchtime 10x
//
// RACKPLANE_BENCH_M2_DIR (say /dev/shm) puts the sleds' M.2s there, to see
// the orchestration without the disk.
func BenchmarkMembershipChange32(b *testing.B) {
	floor := reconfigureFloor(b, 32, 10)
	for _, crash := range []bool{false, true} {
		name := "no_crash"
		if crash {
			name = "coordinator_crash"
		}
		b.Run(name, func(b *testing.B) { benchChange(b, crash, floor) })
	}
}

func benchTweak(i int, c *sled.Config) {
	if d := os.Getenv("RACKPLANE_BENCH_M2_DIR"); d != "" {
		base, err := os.MkdirTemp(d, "rackplane-bench-")
		if err != nil {
			panic(err)
		}
		c.Agent.M2Dirs = []string{filepath.Join(base, "m2-a"), filepath.Join(base, "m2-b")}
	}
}

func benchChange(b *testing.B, crash bool, floor []time.Duration) {
	spares := (b.N + 1) / 2
	r := &rack{racktest.StartRack(b, racktest.RackConfig{Sleds: 31, Spares: spares, TrustQuorum: true, Nexus: nexus.Config{
		Tasks: nexustasks.Registrar(nexustasks.Config{TrustQuorum: nexustasks.TrustQuorumConfig{
			NoProgress: 3 * time.Second, FollowUp: 10 * time.Millisecond}}),
		TaskPeriods: map[string]time.Duration{trustquorum.Name: time.Hour},
	}})}
	var spareBoards []api.Baseboard
	for i := 31; i < 31+spares; i++ {
		spareBoards = append(spareBoards, r.board(i))
	}
	waitUninitialized(b, r.Nexus, spareBoards...)
	ctx := context.Background()
	var took []time.Duration
	aborts := 0
	b.ResetTimer()
	for i := range b.N {
		req := api.TrustQuorumMembership{Add: []api.Baseboard{spareBoards[i/2]}}
		if i%2 == 1 {
			req = api.TrustQuorumMembership{Remove: []api.Baseboard{spareBoards[i/2]}}
		}
		start := time.Now()
		c, err := r.Nexus.Client.TrustQuorumMembership(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if crash {
			p := r.Processes[r.index(c.Coordinator)]
			p.Stop()
			p.Start()
		}
		epoch := waitCommitted(b, r, c.ChangeID)
		took = append(took, time.Since(start))
		if epoch != c.Epoch {
			aborts++
		}
	}
	b.StopTimer()
	p50, p99 := percentiles(took)
	f50, f99 := percentiles(floor)
	b.ReportMetric(float64(p50.Microseconds())/1000, "committed-p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "committed-p99-ms")
	b.ReportMetric(float64(f50.Microseconds())/1000, "floor-p50-ms")
	b.ReportMetric(float64(p50)/float64(f50), "x-floor-p50")
	b.ReportMetric(0, "ns/op")
	if b.N > 1 {
		fmt.Fprintf(os.Stdout, "membership change of a 32-sled rack, %s, %d changes (%d retried at a later epoch):\n"+
			"  request -> committed in the database  p50 %8s  p99 %8s\n"+
			"  floor (the runtime's reconfiguration, driven directly, %d epochs)  p50 %8s  p99 %8s\n"+
			"  ratio  p50 %.1fx  p99 %.1fx\n",
			b.Name(), b.N, aborts, ms(p50), ms(p99), len(floor), ms(f50), ms(f99),
			float64(p50)/float64(f50), float64(p99)/float64(f99))
	}
}

// waitCommitted polls the database every 5 ms until an epoch of change
// is committed, and returns it.
func waitCommitted(b *testing.B, r *rack, change uuid.UUID) uint64 {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		var epoch int64
		err := r.DB.Pool.QueryRow(context.Background(), `SELECT epoch FROM trust_quorum_configuration
			WHERE change_id = $1 AND state = 'committed'`, change).Scan(&epoch)
		if err == nil {
			return uint64(epoch)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatalf("change %s not committed within 2 minutes", change)
	return 0
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	idx := func(q float64) int { return min(len(s)-1, max(0, int(q*float64(len(s))+0.999999)-1)) }
	return s[idx(0.50)], s[idx(0.99)]
}

// reconfigureFloor sets up n sled processes of their own (no Nexus:
// registration meets a listener that refuses it) over the bootstrap
// network and times epochs reconfigurations of them driven directly, as
// a Nexus without a database, an API or a task would: the floor of what
// Nexus's orchestration can take. The processes stop before it returns.
func reconfigureFloor(b *testing.B, n, epochs int) []time.Duration {
	refuser := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no Nexus here", http.StatusServiceUnavailable)
	}))
	defer refuser.Close()
	ps := sledtest.NewProcesses(b, n, sledtest.ProcessOptions{NexusURL: refuser.URL, Tweak: benchTweak})
	defer func() {
		for _, p := range ps {
			p.Stop()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rack := tq.RackID(uuid.New())
	c, err := rss.Dial(ctx, sledtest.BootstrapAddrs(ps), rss.Options{Bundle: sledtest.Bundle(b, rackpki.RSS()),
		PollInterval: 5 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	_, err = c.SetupRack(ctx, rss.SetupOptions{RackID: rack})
	c.Close()
	if err != nil {
		b.Fatal(err)
	}
	hc := sledtest.HTTPClient(b, rackpki.Nexus("bench-floor"))
	sleds := make([]client.SledAgent, n)
	members := make([]api.Baseboard, n)
	for i, p := range ps {
		if sleds[i], err = client.NewSledAgent("https://"+p.Server().Address(), hc); err != nil {
			b.Fatal(err)
		}
		members[i] = racktest.Baseboard(p)
	}
	var out []time.Duration
	for e := uint64(2); e < uint64(2+epochs); e++ {
		coord := int(e) % n
		start := time.Now()
		if _, err := sleds[coord].TQReconfigure(ctx, api.TQReconfigureRequest{RackID: uuid.UUID(rack), Epoch: e,
			LastCommittedEpoch: e - 1, Members: members, Threshold: uint8(n/2 + 1)}); err != nil {
			b.Fatal(err)
		}
		var cfg *api.TQConfiguration
		for cfg == nil {
			cs, err := sleds[coord].TQCoordinatorStatus(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if cs.State == "preparing" && cs.Epoch == e && len(cs.Acked) == n {
				cfg = cs.Configuration
			}
			time.Sleep(2 * time.Millisecond)
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range sleds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = sleds[i].TQCommit(ctx, api.TQCommitRequest{RackID: uuid.UUID(rack), Epoch: e})
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		out = append(out, time.Since(start))
	}
	return out
}

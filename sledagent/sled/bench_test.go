package sled_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/sledagent/bootstrap/bootnet"
	"github.com/rackplane/rackplane/sledagent/ledger"
)

// BenchmarkReconfigure32 measures a 32-sled reconfiguration over real TLS
// on loopback, driven as Nexus drives it: reconfigure at the coordinator,
// poll its coordinator-status until every member prepared, then commit on
// every member at once. Each iteration is one new epoch. "faults" pauses
// the wire to 10% of the members (3 of 31) before the epoch starts and
// resets those connections once the coordinator is preparing, so their
// Prepare is lost and must be re-sent after the coordinator redials.
//
// The floor, measured in the same run, interleaved with the epochs, is the
// same number of request/response round trips with the same fan-out on
// established TLS connections, with nothing done at either end: Nexus to
// coordinator (reconfigure), coordinator to 31 members in parallel (share
// collection, then prepare), Nexus to coordinator (the last status poll),
// Nexus to 32 members in parallel (commit). The benchmark also times the
// persistence an epoch needs, alone: the coordinator's ledger write, then
// 31 members' at once, then 32 at once, each of the coordinator's current
// ledger record to two directories beside the sleds' M.2s; the sum of both
// floors is what the protocol cannot go below on this machine.
//
// The M.2 directories are in the test's temp dir, so every ledger persist
// pays the machine's fsync (twice: both M.2s); RACKPLANE_BENCH_M2_DIR
// (say /dev/shm) puts them elsewhere, to see the runtime without the disk.
//
//	go test ./sledagent/sled/ -run '^$' -bench Reconfigure32 -benchtime 30x
func BenchmarkReconfigure32(b *testing.B) {
	for _, faults := range []bool{false, true} {
		name := "no_faults"
		if faults {
			name = "faults_10pct"
		}
		b.Run(name, func(b *testing.B) { benchReconfigure(b, 32, faults) })
	}
}

func benchReconfigure(b *testing.B, n int, faults bool) {
	var fwds []*forwarder
	var coord int
	r := newRack(b, n, rackOpts{m2Base: os.Getenv("RACKPLANE_BENCH_M2_DIR"), beforeRun: func(r *rack) {
		order := r.byAddr()
		coord = order[0]
		if faults {
			for _, m := range order[1 : 1+max(1, (n-1)/10)] {
				fwds = append(fwds, r.forward(coord, m))
			}
		}
	}})
	members := all(n)
	r.waitConnected(members...)
	r.commitEpoch(coord, 1, 0, members)
	floor := newFloor(b, r, coord)

	var prepared, committed, floors, disks []time.Duration
	persistSum0, persistN0 := r.persistTotals()
	b.ResetTimer()
	for i := range b.N {
		epoch := uint64(i + 2)
		for _, f := range fwds {
			f.pause()
		}
		start := time.Now()
		r.reconfigure(coord, epoch, epoch-1, members)
		if faults {
			r.waitPreparing(coord, epoch)
			for _, f := range fwds {
				f.reset()
				f.resume()
			}
		}
		cfg := r.pollAcked(coord, epoch, n)
		prepared = append(prepared, time.Since(start))
		var wg sync.WaitGroup
		for _, m := range members {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.commit(m, nil, cfg)
			}()
		}
		wg.Wait()
		committed = append(committed, time.Since(start))
		b.StopTimer()
		floors = append(floors, floor.once())
		disks = append(disks, floor.persistOnce())
		b.StartTimer()
	}
	b.StopTimer()
	persistSum, persistN := r.persistTotals()
	p50p, p99p := percentiles(prepared)
	p50c, p99c := percentiles(committed)
	p50f, p99f := percentiles(floors)
	p50d, p99d := percentiles(disks)
	b.ReportMetric(float64(p50c.Microseconds())/1000, "commit-p50-ms")
	b.ReportMetric(float64(p99c.Microseconds())/1000, "commit-p99-ms")
	b.ReportMetric(float64(p50f.Microseconds())/1000, "floor-p50-ms")
	b.ReportMetric(float64(p50c)/float64(p50f), "x-floor-p50")
	b.ReportMetric(0, "ns/op") // the per-epoch figures above are the result
	if b.N > 1 {
		where := "the temp dir"
		if d := os.Getenv("RACKPLANE_BENCH_M2_DIR"); d != "" {
			where = d
		}
		fmt.Fprintf(os.Stdout, "reconfigure %d sleds, %s, %d epochs, M.2s in %s:\n"+
			"  prepared   p50 %8s  p99 %8s\n"+
			"  committed  p50 %8s  p99 %8s\n"+
			"  floor      p50 %8s  p99 %8s  (%d round trips on established TLS connections)\n"+
			"  ratio committed/floor  p50 %.1fx  p99 %.1fx\n"+
			"  persistence alone  p50 %8s  p99 %8s  (1, then 31, then 32 ledger writes at once)\n"+
			"  ratio committed/(floor + persistence)  p50 %.1fx  p99 %.1fx\n"+
			"  (ledger persists: %.0f per epoch, mean %s each, fsynced on both M.2s)\n",
			n, b.Name(), b.N, where, ms(p50p), ms(p99p), ms(p50c), ms(p99c), ms(p50f), ms(p99f), floor.trips,
			float64(p50c)/float64(p50f), float64(p99c)/float64(p99f),
			ms(p50d), ms(p99d), float64(p50c)/float64(p50f+p50d), float64(p99c)/float64(p99f+p99d),
			(persistN-persistN0)/float64(b.N), ms(time.Duration((persistSum-persistSum0)/(persistN-persistN0)*float64(time.Second))))
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	idx := func(q float64) int { return min(len(s)-1, max(0, int(q*float64(len(s))+0.999999)-1)) }
	return s[idx(0.50)], s[idx(0.99)]
}

// persistTotals sums the ledger-persist histograms of every sled.
func (r *rack) persistTotals() (seconds, count float64) {
	for _, s := range r.sleds {
		mfs, err := s.s.Registry().Gather()
		if err != nil {
			r.t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "rackplane_trust_quorum_persist_seconds" {
				for _, m := range mf.GetMetric() {
					seconds += m.GetHistogram().GetSampleSum()
					count += float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return seconds, count
}

// waitPreparing polls until the coordinator has made the configuration.
func (r *rack) waitPreparing(coord int, epoch uint64) {
	r.t.Helper()
	c := r.api(coord, nil)
	for {
		cs, err := c.TQCoordinatorStatus(context.Background())
		if err != nil {
			r.t.Fatal(err)
		}
		if cs.State == "preparing" && cs.Epoch == epoch {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// pollAcked is waitAcked with a tighter poll, for the benchmark.
func (r *rack) pollAcked(coord int, epoch uint64, n int) *api.TQConfiguration {
	r.t.Helper()
	c := r.api(coord, nil)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		cs, err := c.TQCoordinatorStatus(context.Background())
		if err != nil {
			r.t.Fatal(err)
		}
		if cs.State == "preparing" && cs.Epoch == epoch && len(cs.Acked) == n {
			return cs.Configuration
		}
		// Every 2 ms: often enough to add little to the figure, rarely
		// enough not to load the coordinator (Nexus polls far less).
		time.Sleep(2 * time.Millisecond)
	}
	r.t.Fatalf("epoch %d: not every member prepared within 30s", epoch)
	return nil
}

// floor is the benchmark's reference: TLS endpoints on loopback that only
// answer, connected as the rack is (Nexus to every sled, coordinator to
// every member), and the payload sizes of the real messages.
type floor struct {
	t       testing.TB
	r       *rack
	coordi  int
	dirs    [][]string            // two per sled
	nexus   map[int]*bootnet.Conn // to each sled
	coord   map[int]*bootnet.Conn // from the coordinator to each member
	trips   int
	payload map[string][]byte
}

type echo struct{}

func (echo) Connected(*bootnet.Conn)           {}
func (echo) Disconnected(*bootnet.Conn)        {}
func (echo) Message(_ *bootnet.Conn, b []byte) { clear(b) }
func (echo) Request(c *bootnet.Conn, r *bootnet.Request) {
	_ = c.Reply(r.ID, json.RawMessage(r.Body), nil)
}

// recorder notes the connections a network makes.
type recorder struct {
	mu    sync.Mutex
	conns map[string]*bootnet.Conn // by peer serial
	echo
}

func (r *recorder) Connected(c *bootnet.Conn) {
	r.mu.Lock()
	r.conns[c.Peer().Serial] = c
	r.mu.Unlock()
}

func newFloor(t testing.TB, r *rack, coord int) *floor {
	t.Helper()
	n := len(r.sleds)
	issue := func(serial string) *rackpki.Bundle {
		bd, err := r.ca.Issue(rackpki.Sled("floor", serial), rackpki.IssueOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return bd
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	start := func(serial string, h bootnet.Handler) *bootnet.Network {
		nw, err := bootnet.New(bootnet.Config{Bundle: issue(serial), ListenAddr: "127.0.0.2:0", Handler: h, Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = nw.Run(ctx) }()
		return nw
	}
	nexusRec := &recorder{conns: map[string]*bootnet.Conn{}}
	coordRec := &recorder{conns: map[string]*bootnet.Conn{}}
	nx := start("nexus", nexusRec)
	co := start("s0", coordRec)
	nets := []*bootnet.Network{co}
	for i := 1; i < n; i++ {
		nets = append(nets, start(fmt.Sprintf("s%d", i), echo{}))
	}
	var all []string
	for _, nw := range nets {
		all = append(all, nw.Addr())
	}
	nx.SetPeers(all)
	co.SetPeers(append(all, nx.Addr()))
	for _, nw := range nets[1:] {
		nw.SetPeers([]string{nx.Addr(), co.Addr()})
	}
	f := &floor{t: t, r: r, coordi: coord, nexus: map[int]*bootnet.Conn{}, coord: map[int]*bootnet.Conn{}}
	for _, s := range r.sleds {
		var ds []string
		for _, m := range s.cfg.Agent.M2Dirs {
			d := m + "-floor"
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			ds = append(ds, d)
		}
		f.dirs = append(f.dirs, ds)
	}
	waitFor(t, 20*time.Second, "the floor's connections", func() error {
		nexusRec.mu.Lock()
		coordRec.mu.Lock()
		defer nexusRec.mu.Unlock()
		defer coordRec.mu.Unlock()
		// Either side of a pair may have dialed; both record it.
		if len(nexusRec.conns) < n || len(coordRec.conns) < n {
			return fmt.Errorf("nexus has %d, coordinator %d", len(nexusRec.conns), len(coordRec.conns))
		}
		for i := range n {
			f.nexus[i] = nexusRec.conns[fmt.Sprintf("s%d", i)]
			if i > 0 {
				f.coord[i] = coordRec.conns[fmt.Sprintf("s%d", i)]
			}
		}
		return nil
	})
	// Sizes of the real messages at 32 members, encoded.
	f.payload = map[string][]byte{
		"reconfigure": make([]byte, 1500),
		"get_share":   make([]byte, 120),
		"prepare":     make([]byte, 5200),
		"status":      make([]byte, 5200),
		"commit":      make([]byte, 100),
	}
	return f
}

// persistOnce times an epoch's ledger writes alone.
func (f *floor) persistOnce() time.Duration {
	l := ledger.New[json.RawMessage](bootstrap.LedgerFile)
	var dirs []string
	for _, m := range f.r.sleds[f.coordi].cfg.Agent.M2Dirs {
		dirs = append(dirs, filepath.Join(m, bootstrap.LedgerDir))
	}
	rec, err := l.Read(dirs[:1])
	if err != nil || !rec.Found {
		f.t.Fatalf("the coordinator's ledger: %v", err)
	}
	write := func(i int) {
		if _, err := l.Write(f.dirs[i], rec.Record); err != nil {
			f.t.Fatal(err)
		}
	}
	stage := func(idx []int) {
		var wg sync.WaitGroup
		for _, i := range idx {
			wg.Add(1)
			go func() { defer wg.Done(); write(i) }()
		}
		wg.Wait()
	}
	var members []int
	for i := range f.r.sleds {
		if i != f.coordi {
			members = append(members, i)
		}
	}
	start := time.Now()
	stage([]int{f.coordi})
	stage(members)
	stage(all(len(f.r.sleds)))
	return time.Since(start)
}

// once times one floor epoch.
func (f *floor) once() time.Duration {
	ctx := context.Background()
	call := func(c *bootnet.Conn, kind string) {
		var out []byte
		if err := c.Call(ctx, "echo", f.payload[kind], &out); err != nil {
			f.t.Fatal(err)
		}
	}
	fan := func(conns map[int]*bootnet.Conn, kind string) int {
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Add(1)
			go func() { defer wg.Done(); call(c, kind) }()
		}
		wg.Wait()
		return len(conns)
	}
	start := time.Now()
	call(f.nexus[0], "reconfigure")
	trips := 1
	trips += fan(f.coord, "get_share")
	trips += fan(f.coord, "prepare")
	call(f.nexus[0], "status")
	trips++
	trips += fan(f.nexus, "commit")
	d := time.Since(start)
	f.trips = trips
	return d
}

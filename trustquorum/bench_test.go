package trustquorum_test

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	tq "github.com/rackplane/rackplane/trustquorum"
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

func cpuNanos(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkReconfiguration32 measures one reconfiguration of a 32-member
// rack on the simulated network (every message encoded and decoded): the
// coordinator collects shares of the last epoch, prepares the 31 others
// (one of them new), and every member commits. Each iteration starts from
// the same ledgers (epoch 1 committed), restored outside the timed part, so
// the figure does not drift with b.N. It reports the messages one
// reconfiguration takes and the CPU time (user+system) per member.
func BenchmarkReconfiguration32(b *testing.B) {
	const n = 32
	names := make([]string, n+1)
	for i := range names {
		names[i] = fmt.Sprintf("m%02d", i)
	}
	c := newCluster(b, names...)
	old, next := c.ids[:n], c.ids[1:]
	c.commitEpoch(old[1], 1, 0, old)
	ledgers := map[tq.BaseboardID][]byte{}
	for _, id := range c.ids {
		l, err := tq.EncodeState(c.state(id))
		if err != nil {
			b.Fatal(err)
		}
		ledgers[id] = l
	}
	restore := func() {
		for i, id := range c.ids {
			st, err := tq.DecodeState(ledgers[id])
			if err != nil {
				b.Fatal(err)
			}
			c.ctxs[id] = tq.NewNodeCtx(id, st)
			c.nodes[id] = tq.NewNode(c.ctxs[id], tq.Config{Rand: rand.NewChaCha8([32]byte{byte(i)})})
		}
		for _, a := range c.ids {
			for _, p := range c.ids {
				if a != p {
					c.nodes[a].OnConnect(c.ctxs[a], p)
				}
			}
		}
		c.flush()
		c.net = nil
	}
	var msgs int
	var cpu int64
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		restore()
		b.StartTimer()
		before := cpuNanos(b)
		coord := next[0]
		if err := c.nodes[coord].CoordinateReconfiguration(c.ctxs[coord], tq.ReconfigureMsg{RackID: c.rack, Epoch: 2, LastCommittedEpoch: 1, Members: next, Threshold: n/2 + 1}); err != nil {
			b.Fatal(err)
		}
		c.flush()
		for len(c.net) > 0 {
			env := c.net[0]
			c.net = c.net[1:]
			msgs++
			c.handle(env.To, env.From, roundTrip(b, env.Msg))
		}
		for _, m := range next {
			if st, err := c.nodes[m].Commit(c.ctxs[m], c.rack, 2); err != nil || st != tq.CommitCommitted {
				b.Fatalf("commit %s: %v %v", m, st, err)
			}
		}
		c.flush()
		cpu += cpuNanos(b) - before
	}
	b.ReportMetric(float64(msgs)/float64(b.N), "msgs/reconfig")
	b.ReportMetric(float64(cpu)/float64(b.N)/n, "cpu-ns/member")
}

// BenchmarkLrtqSetup measures the LRTQ split into 255 shares with spare
// packages for eight initial members.
func BenchmarkLrtqSetup(b *testing.B) {
	var rack tq.RackID
	ids := make([]tq.BaseboardID, 8)
	for i := range ids {
		ids[i] = tq.BaseboardID{Part: "b", Serial: fmt.Sprint(i)}
	}
	r := rand.NewChaCha8([32]byte{})
	for b.Loop() {
		if _, err := tq.NewLrtqPackages(r, rack, ids); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkShareVerify255 verifies one share against the 255 LRTQ digests.
func BenchmarkShareVerify255(b *testing.B) {
	var rack tq.RackID
	ids := []tq.BaseboardID{{Part: "b", Serial: "0"}, {Part: "b", Serial: "1"}, {Part: "b", Serial: "2"}}
	pkgs, err := tq.NewLrtqPackages(rand.NewChaCha8([32]byte{}), rack, ids)
	if err != nil {
		b.Fatal(err)
	}
	p := pkgs[ids[0]]
	for b.Loop() {
		if err := p.VerifyShare(p.Share); err != nil {
			b.Fatal(err)
		}
	}
	_ = tqcrypto.ShareSize
}

// BenchmarkLedgerGrowth32 measures what one persist and one load of a
// member's state cost after the second and after the 30th epoch of a
// 32-member rack (EncodeState, then DecodeState of the result), timed
// alternately in the same run. The second epoch's figure is the floor. With
// the state pruned to what the protocol still uses, the state grows only by
// the encrypted chain of older secrets (40 bytes an epoch, 54 in base64)
// and one commit number an epoch, so late/early follows late-bytes /
// early-bytes (about 1.35 at the 30th epoch), where before pruning every
// configuration and share ever committed was written and parsed again.
//
//	go test ./trustquorum -run '^$' -bench LedgerGrowth32 -benchtime 2000x
func BenchmarkLedgerGrowth32(b *testing.B) {
	const n, epochs = 32, 30
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("m%02d", i)
	}
	c := newCluster(b, names...)
	member := c.ids[n-1]
	var early, late []byte
	for e := tq.Epoch(1); e <= epochs; e++ {
		c.commitEpoch(c.ids[int(e)%(n-1)], e, e-1, c.ids)
		l, err := tq.EncodeState(c.state(member))
		if err != nil {
			b.Fatal(err)
		}
		switch e {
		case 2:
			early = l
		case epochs:
			late = l
		}
	}
	states := [2]tq.PersistentState{}
	for i, l := range [][]byte{early, late} {
		st, err := tq.DecodeState(l)
		if err != nil {
			b.Fatal(err)
		}
		states[i] = st
	}
	var spent [2]time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		which := i % 2
		start := time.Now()
		l, err := tq.EncodeState(&states[which])
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tq.DecodeState(l); err != nil {
			b.Fatal(err)
		}
		spent[which] += time.Since(start)
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 / float64((b.N+1)/2) }
	b.ReportMetric(per(spent[0]), "early-µs")
	b.ReportMetric(per(spent[1]), "late-µs")
	b.ReportMetric(float64(spent[1])/float64(spent[0]), "late/early")
	b.ReportMetric(float64(len(early)), "early-bytes")
	b.ReportMetric(float64(len(late)), "late-bytes")
}

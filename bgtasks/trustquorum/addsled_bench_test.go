package trustquorum_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/bgtasks/trustquorum"
	"github.com/rackplane/rackplane/internal/iolimit"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
)

// BenchmarkAddSledUntilReplicated measures adding a sled end to end: from
// the operator's trust-quorum add (the request rackctl trust-quorum add
// makes) until the new sled holds every artifact of a 256 MiB repo on both
// its M.2s. In between: the epoch is prepared and committed (the spare
// through a member's proxy), the manager has the spare start its sled
// agent, it gathers K shares and unlocks its data disks, registers, and
// replication copies every artifact to it.
//
// The floor is the replication limit measured in the same run, the way
// rackbench replicate measures it: iolimit.StoreCopies hashing and
// durably writing the same artifacts to the new sled's two M.2s on the
// same file system, once before and once after each add (their mean).
// The ratio is what the lifecycle adds on top of moving the bytes.
//
//	go test ./bgtasks/trustquorum -run '^$' -bench AddSledUntilReplicated -benchtime 1x
//
// RACKPLANE_BENCH_REPO_MIB changes the repo size (default 256).
func BenchmarkAddSledUntilReplicated(b *testing.B) {
	size := int64(256)
	if v := os.Getenv("RACKPLANE_BENCH_REPO_MIB"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			b.Fatalf("RACKPLANE_BENCH_REPO_MIB=%q", v)
		}
		size = n
	}
	size <<= 20
	const members = 4
	r := &rack{racktest.StartRack(b, racktest.RackConfig{Sleds: members, Spares: b.N, TrustQuorum: true, Nexus: nexus.Config{
		Tasks: nexustasks.Registrar(nexustasks.Config{TrustQuorum: nexustasks.TrustQuorumConfig{
			NoProgress: 10 * time.Second, FollowUp: 20 * time.Millisecond}}),
		TaskPeriods: map[string]time.Duration{trustquorum.Name: time.Hour},
	}})}
	built := r.Upload(r.Nexus, tufgen.Sized("1.0.0", size, 16, 7), "repo.zip")
	holdsAll := func(i int) error {
		for _, a := range built.Artifacts {
			for _, m2 := range r.Processes[i].Config.Agent.M2Dirs {
				if _, err := os.Stat(racktest.ArtifactPath(m2, a.SHA256)); err != nil {
					return fmt.Errorf("sled %d lacks %s on %s", i, a.SHA256, m2)
				}
			}
		}
		return nil
	}
	sledtest.WaitFor(b, 10*time.Minute, "the members to hold the repo", func() error {
		for i := range members {
			if err := holdsAll(i); err != nil {
				return err
			}
		}
		return nil
	})
	// What the limit writes: the same artifacts, read back from a member.
	var data [][]byte
	for _, a := range built.Artifacts {
		d, err := os.ReadFile(racktest.ArtifactPath(r.Processes[0].Config.Agent.M2Dirs[0], a.SHA256))
		if err != nil {
			b.Fatal(err)
		}
		data = append(data, d)
	}
	limit := func() time.Duration {
		root := b.TempDir()
		dirs := []string{filepath.Join(root, "m2-a"), filepath.Join(root, "m2-b")}
		syscall.Sync()
		took, err := iolimit.StoreCopies(data, dirs, 2)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.RemoveAll(root); err != nil {
			b.Fatal(err)
		}
		syscall.Sync()
		return took
	}
	var spares []api.Baseboard
	for i := members; i < members+b.N; i++ {
		spares = append(spares, r.board(i))
	}
	waitUninitialized(b, r.Nexus, spares...)
	ctx := context.Background()
	var took, floor time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		before := limit()
		b.StartTimer()
		start := time.Now()
		if _, err := r.Nexus.Client.TrustQuorumMembership(ctx, api.TrustQuorumMembership{Add: []api.Baseboard{spares[i]}}); err != nil {
			b.Fatal(err)
		}
		sledtest.WaitFor(b, 10*time.Minute, "the added sled to hold every artifact", func() error { return holdsAll(members + i) })
		took += time.Since(start)
		b.StopTimer()
		floor += (before + limit()) / 2
		b.StartTimer()
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(took.Seconds()/n, "s/add")
	b.ReportMetric(floor.Seconds()/n, "limit-s")
	b.ReportMetric(took.Seconds()/floor.Seconds(), "ratio")
	b.ReportMetric(0, "ns/op")
	b.Logf("repo %d MiB in %d artifacts; add → every artifact on both M.2s %.2f s; limit (hash+write of the same copies) %.2f s; ratio %.2f",
		size>>20, len(built.Artifacts), took.Seconds()/n, floor.Seconds()/n, took.Seconds()/floor.Seconds())
}

package nexus_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/iolimit"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
)

var benchUploadSize = flag.Int64("tuf.bench-size", 64<<20, "bytes of artifacts in BenchmarkUpload's repo")

// BenchmarkUpload uploads a generated repo to an in-process Nexus (a fresh
// database and depot each time) and reports MB/s next to this machine's
// read+SHA-256+durable write of the same bytes once, measured in the same
// run, and their ratio (target <= 1.2). Whole-process figures, with peak
// RSS: go run ./cmd/rackbench upload.
//
//	go test ./nexus -run XXX -bench Upload -tuf.bench-size 268435456
func BenchmarkUpload(b *testing.B) {
	dir := b.TempDir()
	l := newLineage(b, 50, tufgen.LineageOptions{Consistent: true})
	zipPath := filepath.Join(dir, "repo.zip")
	repo := tufgen.Sized("1.0.0", *benchUploadSize, 16, 1)
	repo.HeaderSizes = true // as rackrelease and tufaceous write releases
	built, err := l.BuildFile(zipPath, repo)
	if err != nil {
		b.Fatal(err)
	}
	syscall.Sync()
	limit, err := iolimit.Once(zipPath, dir)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(built.Size)
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		db := testdb.New(b)
		nx := racktest.StartNexus(b, db.URL, nexus.Config{UploadMaxBytes: 2 * built.Size})
		addRoot(b, nx.Client, l.TrustRoot())
		f, err := os.Open(zipPath)
		if err != nil {
			b.Fatal(err)
		}
		syscall.Sync()
		b.StartTimer()
		start := time.Now()
		res, err := nx.Client.RepoUpload(context.Background(), "repo.zip", f, built.Size, nil)
		total += time.Since(start)
		b.StopTimer()
		f.Close()
		if err != nil || res.Status != api.UploadInserted {
			b.Fatalf("upload: %v %+v", err, res)
		}
		nx.Stop()
	}
	per := total / time.Duration(b.N)
	b.ReportMetric(iolimit.MBps(built.Size, limit), "limit-MB/s")
	b.ReportMetric(per.Seconds()/limit.Seconds(), "ratio")
}

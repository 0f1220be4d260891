package artifacts_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/sledagent/artifacts"
)

// BenchmarkPutTwoM2s measures PUT /artifacts/{sha256} of a 64 MiB artifact
// through the real HTTP handler into two M.2 directories (hash, write to
// both, fsync, rename), against this machine's own limit for the same work
// measured in the same run: SHA-256 of the bytes plus writing them to two
// files and fsyncing both, with no HTTP and no store. It reports both rates
// and their ratio (1.0 = the store costs nothing beyond the disk and hash).
//
//	go test -run '^$' -bench PutTwoM2s -benchtime 20x ./sledagent/artifacts/
func BenchmarkPutTwoM2s(b *testing.B) {
	const size = 64 << 20
	a := newArtifact(b, size)
	r := newRig(b, rigOptions{noRun: true})
	r.putConfig(1, a)
	c, err := client.NewSledAgent(r.api.BaseURL(), &http.Client{})
	if err != nil {
		b.Fatal(err)
	}

	// The limit is measured between the puts (timer stopped), so both
	// see the same disk: this machine's write-back varies a lot over a run.
	var limitTime time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for dev := range r.dirs {
			if err := os.Remove(r.file(dev, a.sha)); err != nil && !os.IsNotExist(err) {
				b.Fatal(err)
			}
		}
		limitTime += writeHashLimit(b, a.data, r.dirs)
		b.StartTimer()
		res, err := c.ArtifactPut(context.Background(), a.sha, 1, bytes.NewReader(a.data), size)
		if err != nil || len(res.Written) != 2 {
			b.Fatalf("put: %+v %v", res, err)
		}
	}
	b.StopTimer()
	put := float64(size) * float64(b.N) / b.Elapsed().Seconds() / 1e6
	limit := float64(size) * float64(b.N) / limitTime.Seconds() / 1e6
	b.ReportMetric(put, "put_MB/s")
	b.ReportMetric(limit, "limit_MB/s")
	b.ReportMetric(put/limit, "ratio")
}

// writeHashLimit returns the time taken hashing data while writing it to a
// file in each dir and fsyncing them, the floor cost of a two-M.2 put, with
// the hash and the writes of each chunk overlapped as the store does them.
func writeHashLimit(b *testing.B, data []byte, dirs []string) time.Duration {
	b.Helper()
	var files []*os.File
	for _, d := range dirs {
		f, err := os.CreateTemp(filepath.Join(d, artifacts.UpdateDir, artifacts.TmpDir), "limit-*")
		if err != nil {
			b.Fatal(err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		files = append(files, f)
	}
	start := time.Now()
	h := sha256.New()
	const chunk = 1 << 20
	errs := make([]error, len(files))
	for off := 0; off < len(data); off += chunk {
		// The same overlap the store uses: each file and the hash at once.
		p := data[off:min(off+chunk, len(data))]
		var wg sync.WaitGroup
		for i, f := range files {
			wg.Add(1)
			go func() { defer wg.Done(); _, errs[i] = f.Write(p) }()
		}
		h.Write(p)
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	_ = h.Sum(nil)
	var wg sync.WaitGroup
	for _, f := range files {
		wg.Add(1)
		go func() { defer wg.Done(); f.Sync() }()
	}
	wg.Wait()
	return time.Since(start)
}

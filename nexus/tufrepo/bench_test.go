package tufrepo_test

import (
	"archive/zip"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus/tufrepo"
)

var benchSize = flag.Int64("tufrepo.bench-size", 64<<20, "bytes of artifacts in BenchmarkVerify's archive")

// benchArchive writes a consistent-snapshot archive of about size bytes in
// n artifacts to a file and opens it.
func benchArchive(b *testing.B, size int64, n int) (*os.File, int64, *tufgen.Lineage) {
	b.Helper()
	l := lineage(b, 70, tufgen.LineageOptions{Consistent: true})
	path := filepath.Join(b.TempDir(), "repo.zip")
	built, err := l.BuildFile(path, tufgen.Sized("1.0.0", size, n, 1))
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f, built.Size, l
}

// BenchmarkVerify opens, verifies and copies out every artifact of an
// archive on disk (48 artifacts, as a release has), as the upload path
// does but into io.Discard, next to this machine's floor for the same
// file: one pass reading it through SHA-256, which the copy must do at
// the least. The two alternate within the run, so both see the same page
// cache and the same neighbours. Reports ratio (the verifier's time over
// the floor's) and checks-µs, the time Open and Verify take before the
// first artifact byte is copied (zip structure, entry, metadata and
// manifest checks).
//
//	go test ./nexus/tufrepo -run XXX -bench Verify -benchtime 20x
func BenchmarkVerify(b *testing.B) {
	f, size, l := benchArchive(b, *benchSize, 48)
	roots := []tufrepo.TrustRoot{{ID: uuid.New(), JSON: l.TrustRoot()}}
	buf := make([]byte, 1<<20)
	floor := func() {
		h := sha256.New()
		if _, err := io.CopyBuffer(h, io.NewSectionReader(f, 0, size), buf); err != nil {
			b.Fatal(err)
		}
	}
	floor() // warm the page cache for both
	var checks, verify, base time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		start := time.Now()
		floor()
		base += time.Since(start)
		b.StartTimer()

		start = time.Now()
		a, err := tufrepo.Open(f, size, tufrepo.Options{})
		if err != nil {
			b.Fatal(err)
		}
		v, err := a.Verify(roots, nil)
		if err != nil {
			b.Fatal(err)
		}
		checks += time.Since(start)
		for _, target := range v.Targets() {
			if err := a.CopyTarget(v, target, io.Discard, buf); err != nil {
				b.Fatal(err)
			}
		}
		verify += time.Since(start)
	}
	b.ReportMetric(float64(size)/base.Seconds()*float64(b.N)/1e6, "floor-MB/s")
	b.ReportMetric(verify.Seconds()/base.Seconds(), "ratio")
	b.ReportMetric(float64(checks.Microseconds())/float64(b.N), "checks-µs")
}

// BenchmarkOpenDirectory is Open alone on an archive of many small entries
// (so the directory is all there is to read), next to the floor of
// archive/zip reading the same directory and finding every entry's data,
// which is what any reader does before it can read an entry. ratio is how
// much the cross-checks cost on top of that.
//
//	go test ./nexus/tufrepo -run XXX -bench OpenDirectory
func BenchmarkOpenDirectory(b *testing.B) {
	for _, n := range []int{64, 1024} {
		b.Run(fmt.Sprintf("entries-%d", n), func(b *testing.B) {
			f, size, _ := benchArchive(b, int64(n)*256, n)
			floor := func() {
				zr, err := zip.NewReader(f, size)
				if err != nil {
					b.Fatal(err)
				}
				for _, e := range zr.File {
					if _, err := e.DataOffset(); err != nil {
						b.Fatal(err)
					}
				}
			}
			var open, base time.Duration
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				start := time.Now()
				floor()
				base += time.Since(start)
				b.StartTimer()
				start = time.Now()
				if _, err := tufrepo.Open(f, size, tufrepo.Options{}); err != nil {
					b.Fatal(err)
				}
				open += time.Since(start)
			}
			b.ReportMetric(float64(base.Microseconds())/float64(b.N), "floor-µs")
			b.ReportMetric(open.Seconds()/base.Seconds(), "ratio")
		})
	}
}

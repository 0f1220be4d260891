package tufrepo

import (
	"archive/zip"
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/rackplane/rackplane/internal/tufgen"
)

type tempSpool string

func (d tempSpool) CreateTemp(purpose string) (*os.File, error) {
	return os.CreateTemp(string(d), ".tmp-"+purpose+"-*")
}

// The parser finds every entry of archives real writers make, whole,
// where the directory says it is: the streamed bytes, not a fallback
// read of the kept archive, are what Verify checks.
func TestStreamFindsEveryEntry(t *testing.T) {
	t.Parallel()
	l, err := tufgen.NewLineage(rand.NewChaCha8([32]byte{9}), tufgen.LineageOptions{Consistent: true})
	if err != nil {
		t.Fatal(err)
	}
	archives := map[string][]byte{}
	for name, r := range map[string]tufgen.Repo{"stored": tufgen.Demo("1.0.0"), "deflated": func() tufgen.Repo {
		r := tufgen.Demo("1.0.1")
		r.Defects.Deflate = true
		return r
	}(), "header-sizes": func() tufgen.Repo {
		r := tufgen.Demo("1.0.2")
		r.HeaderSizes = true
		return r
	}()} {
		b, _, err := l.BuildBytes(r)
		if err != nil {
			t.Fatal(err)
		}
		archives[name] = b
		z, err := tufgen.ReadZip(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, form := range []tufgen.DescriptorForm{tufgen.NoDescriptor, tufgen.Descriptor32NoSig, tufgen.Descriptor64, tufgen.Descriptor64NoSig} {
			for i := range z.Entries {
				z.Entries[i].Descriptor = form
			}
			archives[name+"-form"+string(rune('0'+form))] = z.Bytes()
		}
	}
	fixtures, _ := filepath.Glob(filepath.Join("testdata", "realzip", "*.zip"))
	for _, f := range fixtures {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		archives[filepath.Base(f)] = b
	}
	for name, archive := range archives {
		t.Run(name, func(t *testing.T) {
			zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
			if err != nil {
				t.Fatal(err)
			}
			r, err := Receive(bytes.NewReader(archive), tempSpool(t.TempDir()), ReceiveOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if len(r.entries) != len(zr.File) {
				t.Fatalf("streamed %d entries, the directory has %d", len(r.entries), len(zr.File))
			}
			for i, f := range zr.File {
				e := r.entries[i]
				off, _ := f.DataOffset()
				dir := f.Name[len(f.Name)-1] == '/'
				if e.name != f.Name || e.dataOff != off || (!dir && !e.complete) || e.size != int64(f.UncompressedSize64) ||
					e.rawLen != int64(f.CompressedSize64) || (!dir && e.crc != f.CRC32) {
					t.Fatalf("entry %d %s: streamed %+v", i, f.Name, e)
				}
			}
			// Every byte of the archive is kept where it can be read back.
			got := make([]byte, len(archive))
			if n, err := (virtual{r.segs}).ReadAt(got, 0); n != len(archive) || err != nil || !bytes.Equal(got, archive) {
				t.Fatalf("the kept archive differs from the one sent (%d bytes, %v)", n, err)
			}
		})
	}
}

package tufgen

import (
	"archive/zip"
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

func demoArchive(t *testing.T, consistent bool) []byte {
	t.Helper()
	l, err := NewLineage(rand.NewChaCha8([32]byte{9}), LineageOptions{Consistent: consistent})
	if err != nil {
		t.Fatal(err)
	}
	r := Demo("1.0.0")
	r.Defects.ExtraEntries = []Entry{{Name: "repo/targets/raw.bz2", Data: []byte("BZh9"), Method: 12}}
	b, _, err := l.BuildBytes(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Taking an archive apart and writing it back gives the same bytes, so a
// test that changes one field changes only that.
func TestZipLayoutRoundTrip(t *testing.T) {
	for _, consistent := range []bool{false, true} {
		orig := demoArchive(t, consistent)
		z, err := ReadZip(orig)
		if err != nil {
			t.Fatal(err)
		}
		if got := z.Bytes(); !bytes.Equal(got, orig) {
			t.Fatalf("consistent=%v: rewritten archive differs (%d bytes, was %d)", consistent, len(got), len(orig))
		}
	}
}

// Every descriptor form and forced zip64 headers still make an archive
// that archive/zip reads back entry for entry.
func TestZipLayoutForms(t *testing.T) {
	orig := demoArchive(t, true)
	want := readAll(t, orig)
	for _, form := range []DescriptorForm{NoDescriptor, Descriptor32, Descriptor32NoSig, Descriptor64, Descriptor64NoSig} {
		for _, z64 := range []bool{false, true} {
			z, err := ReadZip(orig)
			if err != nil {
				t.Fatal(err)
			}
			for i := range z.Entries {
				if z.Entries[i].Name[len(z.Entries[i].Name)-1] != '/' {
					z.Entries[i].Descriptor = form
				}
				z.Entries[i].Zip64 = z64
			}
			z.Zip64End = z64
			got := readAll(t, z.Bytes())
			if len(got) != len(want) {
				t.Fatalf("form %d zip64 %v: %d entries, want %d", form, z64, len(got), len(want))
			}
			for name, data := range want {
				if !bytes.Equal(got[name], data) {
					t.Fatalf("form %d zip64 %v: entry %s differs", form, z64, name)
				}
			}
		}
	}
}

func readAll(t *testing.T, archive []byte) map[string][]byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.OpenRaw()
		if err != nil {
			t.Fatal(err)
		}
		if f.Method == zip.Store || f.Method == zip.Deflate {
			if rc, err = f.Open(); err != nil {
				t.Fatal(err)
			}
		}
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		out[f.Name] = b
	}
	return out
}

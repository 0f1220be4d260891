package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
)

func readAll(t *testing.T, s Source) []byte {
	t.Helper()
	rc, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func part(path, data string) Part {
	return Part{Path: path, Size: int64(len(data)), Source: Bytes(data)}
}

func zonePart(t *testing.T, file, pkg string) Part {
	t.Helper()
	z, err := ZoneImage(pkg, "2.0.0", map[string][]byte{"root.img": []byte("zone " + pkg)})
	if err != nil {
		t.Fatal(err)
	}
	return Part{Path: file, Size: int64(len(z)), Source: Bytes(z)}
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// expand reads an archive, keeping what each part wrote.
func expand(t *testing.T, archive []byte, o ExpandOptions) (*Expanded, map[string][]byte, error) {
	t.Helper()
	out := map[string]*bytes.Buffer{}
	e, err := Expand(bytes.NewReader(archive), func(p string) (io.Writer, error) {
		out[p] = &bytes.Buffer{}
		return out[p], nil
	}, o)
	got := map[string][]byte{}
	for p, b := range out {
		got[p] = b.Bytes()
	}
	return e, got, err
}

// Every composite kind round-trips: built from parts, read back as the
// same parts, which become artifacts of the kinds Omicron gives them.
func TestCompositesRoundTrip(t *testing.T) {
	t.Parallel()
	cp, err := ControlPlaneArchive([]Part{zonePart(t, "nexus.tar.gz", "nexus"), zonePart(t, "oximeter.tar.gz", "oximeter")})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		kind  string
		src   *Composite
		parts map[string]string // path → kind
	}{
		{"host", HostArchive(part("", "rom"), part("", "zfs")), map[string]string{
			HostPhase1Path: "host_phase_1", HostPhase2Path: "host_phase_2"}},
		{"trampoline", HostArchive(part("", "rom"), part("", "zfs")), map[string]string{
			HostPhase1Path: "trampoline_phase_1", HostPhase2Path: "trampoline_phase_2"}},
		{"gimlet_rot", RoTArchive(part("", "a"), part("", "b")), map[string]string{
			RoTImageAPath: "gimlet_rot_image_a", RoTImageBPath: "gimlet_rot_image_b"}},
		{"psc_rot", RoTArchive(part("", "a"), part("", "b")), map[string]string{
			RoTImageAPath: "psc_rot_image_a", RoTImageBPath: "psc_rot_image_b"}},
		{"switch_rot", RoTArchive(part("", "a"), part("", "b")), map[string]string{
			RoTImageAPath: "switch_rot_image_a", RoTImageBPath: "switch_rot_image_b"}},
		{"control_plane", cp, map[string]string{"zones/nexus.tar.gz": "zone", "zones/oximeter.tar.gz": "zone"}},
	} {
		t.Run(c.kind, func(t *testing.T) {
			archive := readAll(t, c.src)
			if again := readAll(t, c.src); !bytes.Equal(archive, again) {
				t.Fatal("building the same composite twice gives different bytes")
			}
			for _, typeFirst := range []bool{false, true} {
				e, wrote, err := expand(t, archive, ExpandOptions{TypeFirst: typeFirst})
				if err != nil {
					t.Fatal(err)
				}
				arts, err := e.PartsFor(c.kind, "the-name", "1.2.3")
				if err != nil {
					t.Fatal(err)
				}
				if len(arts) != len(c.parts) {
					t.Fatalf("%d parts, want %d", len(arts), len(c.parts))
				}
				for _, a := range arts {
					if a.Kind != c.parts[a.Path] {
						t.Errorf("%s is kind %s, want %s", a.Path, a.Kind, c.parts[a.Path])
					}
					if a.SHA256 != sha(string(wrote[a.Path])) || a.Length != int64(len(wrote[a.Path])) {
						t.Errorf("%s: hash/length %s %d do not match the %d bytes written", a.Path, a.SHA256, a.Length,
							len(wrote[a.Path]))
					}
					switch {
					case a.Kind == KindZone:
						if a.Version != "2.0.0" || "zones/"+a.Name+".tar.gz" != a.Path {
							t.Errorf("zone %s is named %s version %s, not by its oxide.json", a.Path, a.Name, a.Version)
						}
					case a.Name != "the-name" || a.Version != "1.2.3":
						t.Errorf("%s is %s %s, not the composite's name and version", a.Path, a.Name, a.Version)
					}
				}
			}
		})
	}
}

// tarGz writes a tarball of entries (name, type, data), gzip-compressed,
// for archives the builder would never make.
type tarEntry struct {
	name string
	typ  byte
	data string
}

func tarGz(t *testing.T, entries []tarEntry, tail []byte) []byte {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o444, Size: int64(len(e.data)), Linkname: "x"}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := append(raw.Bytes(), tail...)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

const osJSON = `{"v":"1","t":"os"}`

// Each way a composite can be wrong is refused with its reason, and the
// one that builds fine from the same entries is accepted.
func TestMalformedComposites(t *testing.T) {
	t.Parallel()
	good := []tarEntry{{name: OxideJSON, data: osJSON}, {name: HostPhase1Path, data: "rom"}, {name: HostPhase2Path, data: "zfs"}}
	if _, _, err := expand(t, tarGz(t, good, nil), ExpandOptions{}); err != nil {
		t.Fatalf("the good archive the cases start from: %v", err)
	}
	with := func(extra ...tarEntry) []byte { return tarGz(t, append(append([]tarEntry{}, good...), extra...), nil) }
	// Size lie: the header says more bytes than the archive holds.
	truncated := func() []byte {
		var raw bytes.Buffer
		tw := tar.NewWriter(&raw)
		tw.WriteHeader(&tar.Header{Name: OxideJSON, Typeflag: tar.TypeReg, Size: int64(len(osJSON))})
		tw.Write([]byte(osJSON))
		tw.WriteHeader(&tar.Header{Name: HostPhase1Path, Typeflag: tar.TypeReg, Size: 1 << 20})
		tw.Write(make([]byte, 1000))
		tw.Flush()
		var out bytes.Buffer
		zw := gzip.NewWriter(&out)
		zw.Write(raw.Bytes()[:raw.Len()])
		zw.Close()
		return out.Bytes()
	}()
	cases := []struct {
		name    string
		archive []byte
		kind    string
		reason  CompositeReason
	}{
		{"not gzip", []byte("plain bytes, no gzip"), "host", ReasonBadArchive},
		{"gzip of no tar", func() []byte {
			var out bytes.Buffer
			zw := gzip.NewWriter(&out)
			zw.Write(bytes.Repeat([]byte("not a tar header "), 64))
			zw.Close()
			return out.Bytes()
		}(), "host", ReasonBadArchive},
		{"data after the tar", tarGz(t, good, []byte("trailing junk")), "host", ReasonBadArchive},
		{"bytes after the gzip stream", append(tarGz(t, good, nil), "more"...), "host", ReasonBadArchive},
		{"size lie", truncated, "host", ReasonSizeMismatch},
		{"missing phase 2", tarGz(t, good[:2], nil), "host", ReasonMissingPart},
		{"extra part", with(tarEntry{name: "image/extra.bin", data: "x"}), "host", ReasonExtraPart},
		{"part twice", with(tarEntry{name: HostPhase1Path, data: "again"}), "host", ReasonExtraPart},
		{"oxide.json twice", with(tarEntry{name: OxideJSON, data: osJSON}), "host", ReasonExtraPart},
		{"dot-dot path", with(tarEntry{name: "image/../../etc/passwd", data: "x"}), "host", ReasonUnsafePath},
		{"absolute path", with(tarEntry{name: "/image/rom", data: "x"}), "host", ReasonUnsafePath},
		{"symlink", with(tarEntry{name: "image/link", typ: tar.TypeSymlink}), "host", ReasonUnsafePath},
		{"hard link", with(tarEntry{name: "image/hard", typ: tar.TypeLink}), "host", ReasonUnsafePath},
		{"no oxide.json", tarGz(t, good[1:], nil), "host", ReasonWrongType},
		{"oxide.json of a zone", tarGz(t, []tarEntry{{name: OxideJSON, data: `{"v":"1","t":"layer","pkg":"p","version":"1"}`}}, nil),
			"host", ReasonWrongType},
		{"oxide.json not JSON", tarGz(t, []tarEntry{{name: OxideJSON, data: "{"}}, nil), "host", ReasonWrongType},
		{"oxide.json of version 2", tarGz(t, []tarEntry{{name: OxideJSON, data: `{"v":"2","t":"os"}`}}, nil), "host", ReasonWrongType},
		{"an os archive as an RoT", tarGz(t, good, nil), "gimlet_rot", ReasonWrongType},
		{"control plane without zones", tarGz(t, []tarEntry{{name: OxideJSON, data: `{"v":"1","t":"control_plane"}`}}, nil),
			"control_plane", ReasonMissingPart},
		{"zone in a subdirectory", tarGz(t, []tarEntry{{name: OxideJSON, data: `{"v":"1","t":"control_plane"}`},
			{name: "zones/a/b.tar.gz", data: "x"}}, nil), "control_plane", ReasonExtraPart},
		{"zone that is no zone image", tarGz(t, []tarEntry{{name: OxideJSON, data: `{"v":"1","t":"control_plane"}`},
			{name: "zones/nexus.tar.gz", data: "not a tarball"}}, nil), "control_plane", ReasonBadZone},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, _, err := expand(t, c.archive, ExpandOptions{})
			if err == nil {
				_, err = e.PartsFor(c.kind, "n", "1.0.0")
			}
			var ce *CompositeError
			if !errors.As(err, &ce) || ce.Reason != c.reason {
				t.Fatalf("got %v, want reason %s", err, c.reason)
			}
			if len(ce.Error()) < 20 {
				t.Fatalf("message too thin: %q", ce.Error())
			}
		})
	}
}

// With TypeFirst, a tarball that does not start by saying it is a
// composite is set aside at once, unread beyond its first entry.
func TestExpandTypeFirst(t *testing.T) {
	t.Parallel()
	zone, err := ZoneImage("nexus", "1.0.0", map[string][]byte{"big": bytes.Repeat([]byte("z"), 1<<20)})
	if err != nil {
		t.Fatal(err)
	}
	late := tarGz(t, []tarEntry{{name: HostPhase1Path, data: "rom"}, {name: OxideJSON, data: osJSON},
		{name: HostPhase2Path, data: "zfs"}}, nil)
	for name, archive := range map[string][]byte{"zone image": zone, "not gzip": []byte("PK\x03\x04 a zip"),
		"oxide.json late": late} {
		created := 0
		_, err := Expand(bytes.NewReader(archive), func(string) (io.Writer, error) {
			created++
			return io.Discard, nil
		}, ExpandOptions{TypeFirst: true})
		if !errors.Is(err, ErrNotComposite) || created != 0 {
			t.Errorf("%s: %v, %d parts written; want ErrNotComposite and none", name, err, created)
		}
	}
	// Without TypeFirst the late oxide.json is fine.
	e, _, err := expand(t, late, ExpandOptions{})
	if err != nil || e.Archive != ArchiveOS {
		t.Fatalf("oxide.json after a part: %v", err)
	}
}

// A composite whose parts expand beyond MaxBytes is refused before the
// part that crosses the bound is written.
func TestExpandBound(t *testing.T) {
	t.Parallel()
	archive := tarGz(t, []tarEntry{{name: OxideJSON, data: osJSON}, {name: HostPhase1Path, data: strings.Repeat("r", 100)},
		{name: HostPhase2Path, data: strings.Repeat("z", 100)}}, nil)
	_, wrote, err := expand(t, archive, ExpandOptions{MaxBytes: 150})
	var ce *CompositeError
	if !errors.As(err, &ce) || ce.Reason != ReasonTooLarge || len(wrote) != 1 {
		t.Fatalf("got %v with %d parts written", err, len(wrote))
	}
}

package tufrepo_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"sort"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus/tufrepo"
	"github.com/rackplane/rackplane/release"
)

func seeded(path string, size int64, seed uint64) release.Part {
	return tufgen.Seeded{Size: size, Seed: seed}.Part(path)
}

func zoneImage(t testing.TB, file, pkg, version string) release.Part {
	t.Helper()
	z, err := release.ZoneImage(pkg, version, map[string][]byte{"root.img": bytes.Repeat([]byte(pkg), 5000)})
	if err != nil {
		t.Fatal(err)
	}
	return release.Part{Path: file, Size: int64(len(z)), Source: release.Bytes(z)}
}

// compositeRepo is a release with one artifact of every composite kind,
// its parts seeded (the host's phase 2 large enough to span many reads).
func compositeRepo(t testing.TB, v string) tufgen.Repo {
	cp, err := release.ControlPlaneArchive([]release.Part{zoneImage(t, "nexus.tar.gz", "nexus", v),
		zoneImage(t, "oximeter.tar.gz", "oximeter", v)})
	if err != nil {
		t.Fatal(err)
	}
	art := func(name, kind string, src release.Source) tufgen.Artifact {
		return tufgen.Artifact{Name: name, Version: v, Kind: kind, Source: src}
	}
	return tufgen.Repo{SystemVersion: v, Artifacts: []tufgen.Artifact{
		art("host", "host", release.HostArchive(seeded("", 100<<10, 1), seeded("", 3<<20, 2))),
		art("trampoline", "trampoline", release.HostArchive(seeded("", 50<<10, 3), seeded("", 200<<10, 4))),
		art("gimlet-rot", "gimlet_rot", release.RoTArchive(seeded("", 30<<10, 5), seeded("", 30<<10, 6))),
		art("psc-rot", "psc_rot", release.RoTArchive(seeded("", 20<<10, 7), seeded("", 20<<10, 8))),
		art("switch-rot", "switch_rot", release.RoTArchive(seeded("", 10<<10, 9), seeded("", 10<<10, 10))),
		art("control-plane", "control_plane", cp),
		{Name: "gimlet-sp", Version: v, Kind: "gimlet_sp", Size: 40 << 10, Seed: 11},
		// A zone image as an artifact of its own is a tarball too, but no
		// composite: it is stored as it is.
		art("cockroach", "zone", zoneImage(t, "", "cockroach", v).Source),
	}}
}

// Every composite kind expands, on the streaming path, into the parts
// Omicron makes of it, each with the bytes it had before it was packed.
func TestCompositesExpandOnUpload(t *testing.T) {
	t.Parallel()
	for _, consistent := range []bool{false, true} {
		l := lineage(t, 70, tufgen.LineageOptions{Consistent: consistent})
		r := compositeRepo(t, "1.0.0")
		archive, _ := build(t, l, r)
		roots := []tufrepo.TrustRoot{{ID: uuid.New(), JSON: l.TrustRoot()}}
		v, _, err := receive(t, archive, roots, nil, tufrepo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range v.Parts {
			comp := v.Artifacts[p.Composite]
			got = append(got, fmt.Sprintf("%s/%s %s %s %s %s", comp.Kind, p.Path, p.Kind, p.Name, p.Version, p.SHA256[:8]))
		}
		sort.Strings(got)
		part := func(size int64, seed uint64) string {
			rc, _ := tufgen.Seeded{Size: size, Seed: seed}.Open()
			var b bytes.Buffer
			b.ReadFrom(rc)
			return fmt.Sprintf("%x", sha256.Sum256(b.Bytes()))[:8]
		}
		zone := func(pkg string) string {
			z := zoneImage(t, "", pkg, "1.0.0").Source.(release.Bytes)
			return fmt.Sprintf("%x", sha256.Sum256(z))[:8]
		}
		want := []string{
			"control_plane/zones/nexus.tar.gz zone nexus 1.0.0 " + zone("nexus"),
			"control_plane/zones/oximeter.tar.gz zone oximeter 1.0.0 " + zone("oximeter"),
			"gimlet_rot/archive-a.zip gimlet_rot_image_a gimlet-rot 1.0.0 " + part(30<<10, 5),
			"gimlet_rot/archive-b.zip gimlet_rot_image_b gimlet-rot 1.0.0 " + part(30<<10, 6),
			"host/image/rom host_phase_1 host 1.0.0 " + part(100<<10, 1),
			"host/image/zfs.img host_phase_2 host 1.0.0 " + part(3<<20, 2),
			"psc_rot/archive-a.zip psc_rot_image_a psc-rot 1.0.0 " + part(20<<10, 7),
			"psc_rot/archive-b.zip psc_rot_image_b psc-rot 1.0.0 " + part(20<<10, 8),
			"switch_rot/archive-a.zip switch_rot_image_a switch-rot 1.0.0 " + part(10<<10, 9),
			"switch_rot/archive-b.zip switch_rot_image_b switch-rot 1.0.0 " + part(10<<10, 10),
			"trampoline/image/rom trampoline_phase_1 trampoline 1.0.0 " + part(50<<10, 3),
			"trampoline/image/zfs.img trampoline_phase_2 trampoline 1.0.0 " + part(200<<10, 4),
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("consistent %v: parts\n%v\nwant\n%v", consistent, got, want)
		}
		// The reader on disk (what rackrelease inspect uses) verifies the
		// same release without reading composites.
		if v2, _, err := verify(archive, roots, nil, tufrepo.Options{}); err != nil || len(v2.Parts) != 0 {
			t.Fatalf("on disk: %v, %d parts", err, len(v2.Parts))
		}
	}
}

// rawTarGz is a composite the builder would never make.
func rawTarGz(t testing.TB, entries [][2]string) []byte {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range entries {
		tw.WriteHeader(&tar.Header{Name: e[0], Typeflag: tar.TypeReg, Mode: 0o444, Size: int64(len(e[1]))})
		tw.Write([]byte(e[1]))
	}
	tw.Close()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(raw.Bytes())
	zw.Close()
	return out.Bytes()
}

// A malformed composite is refused with its own code, and one whose
// oxide.json comes after its parts (not read while it arrived) is expanded
// from its stored bytes instead.
func TestMalformedCompositesRefused(t *testing.T) {
	t.Parallel()
	l := lineage(t, 71, tufgen.LineageOptions{})
	roots := []tufrepo.TrustRoot{{ID: uuid.New(), JSON: l.TrustRoot()}}
	os := `{"v":"1","t":"os"}`
	truncated := func() []byte {
		var raw bytes.Buffer
		tw := tar.NewWriter(&raw)
		tw.WriteHeader(&tar.Header{Name: "oxide.json", Typeflag: tar.TypeReg, Size: int64(len(os))})
		tw.Write([]byte(os))
		tw.WriteHeader(&tar.Header{Name: "image/rom", Typeflag: tar.TypeReg, Size: 1 << 20})
		tw.Write(make([]byte, 4096))
		tw.Flush()
		var out bytes.Buffer
		zw := gzip.NewWriter(&out)
		zw.Write(raw.Bytes())
		zw.Close()
		return out.Bytes()
	}()
	for _, c := range []struct {
		name, kind string
		data       []byte
		code       string
	}{
		{"missing part", "host", rawTarGz(t, [][2]string{{"oxide.json", os}, {"image/rom", "rom"}}), api.CodeCompositeMissingPart},
		{"extra part", "host", rawTarGz(t, [][2]string{{"oxide.json", os}, {"image/rom", "r"}, {"image/zfs.img", "z"},
			{"image/notes.txt", "n"}}), api.CodeCompositeExtraPart},
		{"bad tar", "host", []byte("\x1f\x8b\x08 but not gzip at all"), api.CodeCompositeBadArchive},
		{"not a tarball", "gimlet_rot", []byte("a plain file"), api.CodeCompositeBadArchive},
		{"path escape", "host", rawTarGz(t, [][2]string{{"oxide.json", os}, {"../../etc/cron.d/x", "x"}}), api.CodeCompositeUnsafePath},
		{"size lie", "host", truncated, api.CodeCompositeSizeMismatch},
		{"wrong type", "control_plane", rawTarGz(t, [][2]string{{"oxide.json", os}, {"image/rom", "r"}, {"image/zfs.img", "z"}}),
			api.CodeCompositeWrongType},
		{"zone not a zone image", "control_plane", rawTarGz(t, [][2]string{{"oxide.json", `{"v":"1","t":"control_plane"}`},
			{"zones/nexus.tar.gz", "not a zone"}}), api.CodeCompositeBadZone},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := tufgen.Demo("2.0.0")
			r.Artifacts = append(r.Artifacts, tufgen.Artifact{Name: "odd", Version: "2.0.0", Kind: c.kind, Data: c.data})
			archive, _ := build(t, l, r)
			_, _, err := receive(t, archive, roots, nil, tufrepo.Options{})
			if code(err) != c.code {
				t.Fatalf("got %v, want %s", err, c.code)
			}
			// The reader on disk does not expand, so it accepts it.
			if _, _, err := verify(archive, roots, nil, tufrepo.Options{}); err != nil {
				t.Fatalf("on disk: %v", err)
			}
		})
	}
	t.Run("oxide.json last", func(t *testing.T) {
		r := tufgen.Demo("3.0.0")
		r.Artifacts = append(r.Artifacts, tufgen.Artifact{Name: "late", Version: "3.0.0", Kind: "host",
			Data: rawTarGz(t, [][2]string{{"image/zfs.img", "zfs bytes"}, {"image/rom", "rom bytes"}, {"oxide.json", os}})})
		archive, _ := build(t, l, r)
		v, _, err := receive(t, archive, roots, nil, tufrepo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Parts) != 2 || v.Parts[0].Kind != "host_phase_1" ||
			v.Parts[0].SHA256 != fmt.Sprintf("%x", sha256.Sum256([]byte("rom bytes"))) {
			t.Fatalf("parts: %+v", v.Parts)
		}
	})
	t.Run("part named like another artifact", func(t *testing.T) {
		r := tufgen.Demo("4.0.0")
		r.Artifacts = append(r.Artifacts,
			tufgen.Artifact{Name: "h", Version: "4.0.0", Kind: "host", Source: release.HostArchive(seeded("", 10, 1), seeded("", 10, 2))},
			tufgen.Artifact{Name: "h", Version: "4.0.0", Kind: "host_phase_1", Data: []byte("a separate phase 1")})
		archive, _ := build(t, l, r)
		if _, _, err := receive(t, archive, roots, nil, tufrepo.Options{}); code(err) != api.CodeDuplicateArtifact {
			t.Fatalf("got %v, want %s", err, api.CodeDuplicateArtifact)
		}
	})
}

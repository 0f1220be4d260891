package tufrepo_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus/tufrepo"
	"github.com/rackplane/rackplane/release"
)

// tufaceousV1 is a release laid out as Omicron's tufaceous lays out its
// v1 fake repo (v1-fake.zip): consistent snapshots, an artifacts.json
// manifest, 14 artifacts of the v1 kinds named fake-*, every target named
// <kind>-<name>-<version>.tar.gz, and the composites (host, trampoline,
// the three RoT archives, the control plane with zone-1 and zone-2) as
// gzip-compressed tars whose first file is oxide.json. The real
// v1-fake.zip is not in this repository; this is the same layout made
// with package release, then packed by Info-ZIP (see realTools), so the
// reader meets it as a real tool writes it.
func tufaceousV1(t testing.TB) tufgen.Repo {
	const v = "1.0.0"
	seed := uint64(500)
	part := func(size int64) release.Part {
		seed++
		return tufgen.Seeded{Size: size, Seed: seed}.Part("")
	}
	zone := func(file, name string) release.Part {
		img, err := release.ZoneImage(name, v, map[string][]byte{"root.img": []byte("tufaceousfaketxt " + name)})
		if err != nil {
			t.Fatal(err)
		}
		return release.Part{Path: file, Size: int64(len(img)), Source: release.Bytes(img)}
	}
	cp, err := release.ControlPlaneArchive([]release.Part{zone("zone1.tar.gz", "zone-1"), zone("zone2.tar.gz", "zone-2")})
	if err != nil {
		t.Fatal(err)
	}
	r := tufgen.Repo{SystemVersion: v}
	add := func(kind, name string, src release.Source) {
		r.Artifacts = append(r.Artifacts, tufgen.Artifact{Name: name, Version: v, Kind: kind,
			Target: fmt.Sprintf("%s-%s-%s.tar.gz", kind, name, v), Source: src})
	}
	plain := func(kind, name string, size int64) { seed++; add(kind, name, tufgen.Seeded{Size: size, Seed: seed}) }
	plain("gimlet_sp", "fake-gimlet-sp", 4<<10)
	add("gimlet_rot", "fake-gimlet-rot", release.RoTArchive(part(2<<10), part(2<<10)))
	plain("gimlet_rot_bootloader", "fake-gimlet-rot-bootloader", 2<<10)
	add("host", "fake-host", release.HostArchive(part(2<<10), part(8<<10)))
	add("trampoline", "fake-trampoline", release.HostArchive(part(2<<10), part(8<<10)))
	add("control_plane", "fake-control-plane", cp)
	plain("psc_sp", "fake-psc-sp", 4<<10)
	add("psc_rot", "fake-psc-rot", release.RoTArchive(part(2<<10), part(2<<10)))
	plain("psc_rot_bootloader", "fake-psc-rot-bootloader", 2<<10)
	plain("switch_sp", "fake-switch-sp", 4<<10)
	add("switch_rot", "fake-switch-rot", release.RoTArchive(part(2<<10), part(2<<10)))
	plain("switch_rot_bootloader", "fake-switch-rot-bootloader", 2<<10)
	plain("measurement_corpus", "fake-corpus", 2<<10)
	plain("installinator_document", "fake-installinator-document", 1<<10)
	return r
}

const tufaceousFixture = "tufaceous-v1-layout"

// The tufaceous-style release, packed by Info-ZIP, is accepted on both
// paths, and the upload path expands it as Omicron does: 14 artifacts and
// the 12 parts of its 6 composites. Remade with
//
//	TUFREPO_WRITE_FIXTURES=1 go test ./nexus/tufrepo -run TestTufaceousV1Layout
func TestTufaceousV1Layout(t *testing.T) {
	l := fuzzLineage(t, true)
	good, built := build(t, l, tufaceousV1(t))
	path := filepath.Join("testdata", "realzip", tufaceousFixture+".zip")
	if os.Getenv("TUFREPO_WRITE_FIXTURES") == "1" {
		writeToolFixture(t, good, path)
	}
	archive, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("fixture: %v (remake with TUFREPO_WRITE_FIXTURES=1)", err)
	}
	roots := []tufrepo.TrustRoot{{ID: uuid.New(), JSON: l.TrustRoot()}}
	checkVerifies(t, archive, roots, built)
	v, _, err := receive(t, archive, roots, nil, tufrepo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, p := range v.Parts {
		parts = append(parts, fmt.Sprintf("%s %s %s", v.Artifacts[p.Composite].Kind, p.Kind, p.Name))
	}
	sort.Strings(parts)
	want := []string{
		"control_plane zone zone-1", "control_plane zone zone-2",
		"gimlet_rot gimlet_rot_image_a fake-gimlet-rot", "gimlet_rot gimlet_rot_image_b fake-gimlet-rot",
		"host host_phase_1 fake-host", "host host_phase_2 fake-host",
		"psc_rot psc_rot_image_a fake-psc-rot", "psc_rot psc_rot_image_b fake-psc-rot",
		"switch_rot switch_rot_image_a fake-switch-rot", "switch_rot switch_rot_image_b fake-switch-rot",
		"trampoline trampoline_phase_1 fake-trampoline", "trampoline trampoline_phase_2 fake-trampoline",
	}
	if len(v.Artifacts) != 14 || fmt.Sprint(parts) != fmt.Sprint(want) {
		t.Fatalf("%d artifacts, parts:\n%v\nwant 14 and\n%v", len(v.Artifacts), parts, want)
	}
}

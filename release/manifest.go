package release

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Manifest is what a release is assembled from: a TOML or JSON file naming
// the system version and every artifact with the file (or, for a
// composite, the part files) its bytes come from. Relative paths are
// relative to the manifest's directory.
//
//	system_version = "1.0.0"
//
//	[[artifact]]
//	name = "gimlet-sp"
//	version = "1.0.0"
//	kind = "gimlet_sp"
//	file = "gimlet-sp.zip"
//
//	[[artifact]]
//	name = "host"
//	version = "1.0.0"
//	kind = "host"
//	parts = { phase_1 = "rom.bin", phase_2 = "zfs.img" }
//
//	[[artifact]]
//	name = "control-plane"
//	version = "1.0.0"
//	kind = "control_plane"
//	zones = ["nexus.tar.gz", "sled-agent.tar.gz"]
type Manifest struct {
	SystemVersion string `json:"system_version" toml:"system_version"`
	// Format is the artifacts manifest written into the release: 1
	// (artifacts.json, the default) or 2 (artifacts-v2.json).
	Format int `json:"manifest_format,omitempty" toml:"manifest_format"`
	// Metadata is the v2 manifest's metadata.
	Metadata map[string]string `json:"metadata,omitempty" toml:"metadata"`
	// Deflate compresses the target files (rarely worth it: composites
	// are compressed already).
	Deflate   bool               `json:"deflate,omitempty" toml:"deflate"`
	Artifacts []ManifestArtifact `json:"artifact" toml:"artifact"`

	dir string
}

// ManifestArtifact is one artifact of a Manifest.
type ManifestArtifact struct {
	Name    string `json:"name" toml:"name"`
	Version string `json:"version" toml:"version"`
	Kind    string `json:"kind" toml:"kind"`
	// File holds the artifact's bytes (for a composite kind: an archive
	// made already, which is checked like one assembled here).
	File string `json:"file,omitempty" toml:"file"`
	// Parts are a host or trampoline archive's phase_1 and phase_2
	// images, or an RoT archive's image_a and image_b.
	Parts map[string]string `json:"parts,omitempty" toml:"parts"`
	// Zones are the control-plane archive's zone images (file names are
	// kept as the zones' names in the archive).
	Zones []string `json:"zones,omitempty" toml:"zones"`
	// Target overrides the TUF target name.
	Target string            `json:"target,omitempty" toml:"target"`
	Tags   map[string]string `json:"tags,omitempty" toml:"tags"`
}

// partKeys are the manifest keys of each composite archive type's parts.
var partKeys = map[string][][2]string{
	ArchiveOS:  {{"phase_1", HostPhase1Path}, {"phase_2", HostPhase2Path}},
	ArchiveRoT: {{"image_a", RoTImageAPath}, {"image_b", RoTImageBPath}},
}

// LoadManifest reads a manifest; a name ending in .json is JSON, anything
// else TOML. Unknown fields are refused, so a misspelt key is not
// silently ignored.
func LoadManifest(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	var m Manifest
	if strings.HasSuffix(path, ".json") {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("release: %s: %w", path, err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("release: %s: data after the manifest", path)
		}
	} else {
		md, err := toml.Decode(string(b), &m)
		if err != nil {
			return nil, fmt.Errorf("release: %s: %w", path, err)
		}
		if und := md.Undecoded(); len(und) > 0 {
			keys := make([]string, len(und))
			for i, k := range und {
				keys[i] = k.String()
			}
			return nil, fmt.Errorf("release: %s: unknown keys %s", path, strings.Join(keys, ", "))
		}
	}
	m.dir = filepath.Dir(path)
	return &m, m.check()
}

func (m *Manifest) check() error {
	if m.SystemVersion == "" {
		return errors.New("release: the manifest has no system_version")
	}
	if m.Format != 0 && m.Format != 1 && m.Format != 2 {
		return fmt.Errorf("release: manifest_format %d: want 1 or 2", m.Format)
	}
	if len(m.Artifacts) == 0 {
		return errors.New("release: the manifest lists no artifacts ([[artifact]] tables)")
	}
	seen := map[string]int{}
	for i, a := range m.Artifacts {
		where := fmt.Sprintf("release: artifact %d (%s)", i+1, a.Name)
		if a.Name == "" || a.Version == "" || a.Kind == "" {
			return fmt.Errorf("%s: name, version and kind are required", where)
		}
		key := a.Name + " " + a.Version + " " + a.Kind
		if j, dup := seen[key]; dup {
			return fmt.Errorf("%s: the same name, version and kind as artifact %d", where, j+1)
		}
		seen[key] = i
		rule, composite := CompositeRuleFor(a.Kind)
		sources := 0
		for _, set := range []bool{a.File != "", len(a.Parts) > 0, len(a.Zones) > 0} {
			if set {
				sources++
			}
		}
		if sources != 1 {
			return fmt.Errorf("%s: give exactly one of file, parts and zones", where)
		}
		switch {
		case a.File != "":
		case !composite:
			return fmt.Errorf("%s: kind %s is not a composite (those are %s); give its file", where, a.Kind,
				strings.Join(CompositeKinds(), ", "))
		case len(a.Zones) > 0 && rule.Archive != ArchiveControlPlane:
			return fmt.Errorf("%s: zones are for the control_plane kind; a %s archive has parts", where, a.Kind)
		case len(a.Parts) > 0:
			if rule.Archive == ArchiveControlPlane {
				return fmt.Errorf("%s: a control_plane archive is made of zones, not parts", where)
			}
			var want []string
			for _, pk := range partKeys[rule.Archive] {
				want = append(want, pk[0])
				if a.Parts[pk[0]] == "" {
					return fmt.Errorf("%s: parts.%s is missing (a %s archive has %s)", where, pk[0], a.Kind,
						strings.Join(partKeyNames(rule.Archive), " and "))
				}
			}
			for k := range a.Parts {
				if !slices.Contains(want, k) {
					return fmt.Errorf("%s: a %s archive has no part %q (it has %s)", where, a.Kind, k,
						strings.Join(want, " and "))
				}
			}
		}
	}
	return nil
}

func partKeyNames(archive string) []string {
	var out []string
	for _, pk := range partKeys[archive] {
		out = append(out, pk[0])
	}
	return out
}

func (m *Manifest) path(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(m.dir, p)
}

// Repo is the release the manifest describes, with composite archives
// built from their parts. Every composite (built here or given as a file)
// is read through Expand, as Nexus will read it, so that a part Nexus
// would refuse is found now.
func (m *Manifest) Repo() (Repo, error) {
	r := Repo{SystemVersion: m.SystemVersion, ManifestV2: m.Format == 2, Metadata: m.Metadata, DeflateTargets: m.Deflate}
	for _, a := range m.Artifacts {
		art := Artifact{Name: a.Name, Version: a.Version, Kind: a.Kind, Target: a.Target, Tags: a.Tags}
		var err error
		if art.Source, err = m.source(a); err != nil {
			return r, fmt.Errorf("release: artifact %s: %w", a.Name, err)
		}
		if _, ok := CompositeRuleFor(a.Kind); ok {
			if _, err := CheckComposite(art); err != nil {
				return r, fmt.Errorf("release: artifact %s (%s): %w", a.Name, a.Kind, err)
			}
		} else if _, err := os.Stat(m.path(a.File)); err != nil {
			return r, fmt.Errorf("release: artifact %s: %w", a.Name, err)
		}
		r.Artifacts = append(r.Artifacts, art)
	}
	return r, nil
}

func (m *Manifest) source(a ManifestArtifact) (Source, error) {
	if a.File != "" {
		return File(m.path(a.File)), nil
	}
	rule, _ := CompositeRuleFor(a.Kind)
	if rule.Archive == ArchiveControlPlane {
		var zones []Part
		names := map[string]bool{}
		for _, z := range a.Zones {
			name := filepath.Base(z)
			if names[name] {
				return nil, fmt.Errorf("two zone images named %s", name)
			}
			names[name] = true
			p, err := FilePart(name, m.path(z))
			if err != nil {
				return nil, err
			}
			zones = append(zones, p)
		}
		return ControlPlaneArchive(zones)
	}
	var parts []Part
	for _, pk := range partKeys[rule.Archive] {
		p, err := FilePart(pk[1], m.path(a.Parts[pk[0]]))
		if err != nil {
			return nil, err
		}
		parts = append(parts, p)
	}
	if rule.Archive == ArchiveOS {
		return HostArchive(parts[0], parts[1]), nil
	}
	return RoTArchive(parts[0], parts[1]), nil
}

// CheckComposite reads a composite artifact's archive as Nexus does on
// upload and returns the parts it expands to.
func CheckComposite(a Artifact) ([]PartArtifact, error) {
	rc, err := a.Source.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	e, err := Expand(rc, func(string) (io.Writer, error) { return io.Discard, nil }, ExpandOptions{})
	if err != nil {
		return nil, err
	}
	parts, err := e.PartsFor(a.Kind, a.Name, a.Version)
	if err != nil {
		return nil, err
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].Path < parts[j].Path })
	return parts, nil
}

package tufrepo

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
)

// Manifest target names.
const (
	ManifestV1 = "artifacts.json"
	ManifestV2 = "artifacts-v2.json"
)

type manifestV1 struct {
	SystemVersion *string `json:"system_version"`
	Artifacts     *[]struct {
		Name    *string `json:"name"`
		Version *string `json:"version"`
		Kind    *string `json:"kind"`
		Target  *string `json:"target"`
	} `json:"artifacts"`
}

type manifestV2 struct {
	SystemVersion *string `json:"system_version"`
	Artifacts     *[]struct {
		TargetName *string           `json:"target_name"`
		Version    *string           `json:"version"`
		Tags       map[string]string `json:"tags"`
	} `json:"artifacts"`
	Metadata map[string]string `json:"metadata"`
}

// systemVersionRE keeps system versions usable in URL paths and file names.
var systemVersionRE = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$`)

// readManifest finds the signed artifacts manifest, checks its bytes, and
// fills v's system version and artifacts.
func (a *Archive) readManifest(v *Verified) *fault.Error {
	_, has1 := v.targets[ManifestV1]
	_, has2 := v.targets[ManifestV2]
	var name string
	switch {
	case has1 && has2:
		return errf(api.CodeAmbiguousManifest, "targets.json signs both %s and %s; a release carries exactly one manifest",
			ManifestV1, ManifestV2)
	case has1:
		name, v.ManifestFormat = ManifestV1, 1
	case has2:
		name, v.ManifestFormat = ManifestV2, 2
	default:
		return errf(api.CodeMissingManifest, "targets.json signs neither %s nor %s; this is not a release repository",
			ManifestV1, ManifestV2)
	}
	st := v.targets[name]
	if st.length > a.opts.MaxMetadata {
		return errf(api.CodeMetadataTooLarge, "the manifest %s is signed as %d bytes; more than %d is refused",
			name, st.length, a.opts.MaxMetadata)
	}
	var buf bytes.Buffer
	if err := a.CopyTarget(v, name, &buf, make([]byte, 32<<10)); err != nil {
		return asError(err)
	}
	raw := buf.Bytes()
	bad := func(format string, args ...any) *fault.Error {
		return errf(api.CodeInvalidManifest, "%s: %s", name, fmt.Sprintf(format, args...))
	}
	missing := func(format string, args ...any) *fault.Error {
		return errf(api.CodeManifestMissingField, "%s: %s", name, fmt.Sprintf(format, args...))
	}
	var arts []Artifact
	var sysVersion *string
	if v.ManifestFormat == 1 {
		var m manifestV1
		if err := json.Unmarshal(raw, &m); err != nil {
			return bad("not valid JSON: %v", err)
		}
		if m.Artifacts == nil {
			return missing(`missing field "artifacts"`)
		}
		sysVersion = m.SystemVersion
		for i, e := range *m.Artifacts {
			for field, p := range map[string]*string{"name": e.Name, "version": e.Version, "kind": e.Kind, "target": e.Target} {
				if p == nil || *p == "" {
					return missing("artifact %d: missing or empty field %q", i, field)
				}
			}
			arts = append(arts, Artifact{Name: *e.Name, Version: *e.Version, Kind: *e.Kind, TargetName: *e.Target})
		}
	} else {
		var m manifestV2
		if err := json.Unmarshal(raw, &m); err != nil {
			return bad("not valid JSON: %v", err)
		}
		if m.Artifacts == nil {
			return missing(`missing field "artifacts"`)
		}
		sysVersion = m.SystemVersion
		v.Metadata = m.Metadata
		for i, e := range *m.Artifacts {
			if e.TargetName == nil || *e.TargetName == "" {
				return missing("artifact %d: missing or empty field %q", i, "target_name")
			}
			if e.Version == nil || *e.Version == "" {
				return missing("artifact %d: missing or empty field %q", i, "version")
			}
			kind := e.Tags["kind"]
			if kind == "" {
				return missing("artifact %d: missing or empty tag %q", i, "kind")
			}
			// v2 names an artifact by its "name" tag when it has one, and
			// by its target otherwise.
			name := e.Tags["name"]
			if name == "" {
				name = *e.TargetName
			}
			arts = append(arts, Artifact{Name: name, Version: *e.Version, Kind: kind, TargetName: *e.TargetName, Tags: e.Tags})
		}
	}
	if sysVersion == nil {
		return missing(`missing field "system_version"`)
	}
	if !systemVersionRE.MatchString(*sysVersion) {
		return errf(api.CodeInvalidSystemVersion, "%s: system_version %q must be 1-64 letters, digits, '.', '+', '_' or '-'",
			name, *sysVersion)
	}
	if len(arts) == 0 {
		return bad("lists no artifacts")
	}
	v.SystemVersion = *sysVersion
	seen := map[string]int{}
	byTarget := map[string]int{}
	for i := range arts {
		art := &arts[i]
		key := art.Name + "\x00" + art.Version + "\x00" + art.Kind
		if j, dup := seen[key]; dup {
			return errf(api.CodeDuplicateArtifact, "%s lists artifact %s version %s kind %s twice (entries %d and %d)",
				name, art.Name, art.Version, art.Kind, j, i)
		}
		seen[key] = i
		st, ok := v.targets[art.TargetName]
		if !ok || art.TargetName == ManifestV1 || art.TargetName == ManifestV2 {
			return errf(api.CodeManifestTargetUnsigned, "%s names target %q for artifact %s, but targets.json does not sign it",
				name, art.TargetName, art.Name)
		}
		// One target, one artifact: a target listed twice would give one
		// set of bytes two identities (and two rows to keep in step).
		if j, dup := byTarget[art.TargetName]; dup {
			return errf(api.CodeManifestRepeatsTarget, "%s lists target %q for two artifacts (entries %d and %d); "+
				"every signed target is exactly one artifact", name, art.TargetName, j, i)
		}
		byTarget[art.TargetName] = i
		art.SHA256 = fmt.Sprintf("%x", st.sha256)
		art.Length = st.length
		f := a.entries[strings.TrimSuffix(v.TargetPath(art.TargetName), "/")]
		if f == nil {
			return errf(api.CodeMissingEntry, "the archive has no %s for target %q", v.TargetPath(art.TargetName), art.TargetName)
		}
		// Refusing an entry that declares more bytes than signed, before
		// reading it, keeps a zip bomb from being inflated at all.
		if f.UncompressedSize64 > uint64(st.length) {
			return errf(api.CodeEntryExceedsSigned, "target %q is %d bytes in the archive but signed as only %d bytes",
				art.TargetName, f.UncompressedSize64, st.length)
		}
	}
	// A signed target the manifest leaves out would be signed bytes no
	// one verifies, stores or replicates: refuse rather than ignore it.
	signed := make([]string, 0, len(v.targets))
	for t := range v.targets {
		signed = append(signed, t)
	}
	sort.Strings(signed)
	for _, t := range signed {
		if _, listed := byTarget[t]; !listed && t != name {
			return errf(api.CodeManifestOmitsTarget, "targets.json signs %q, but %s does not list it; every signed target "+
				"must be an artifact of the release, listed once", t, name)
		}
	}
	v.Artifacts = arts
	return nil
}

// Targets returns the distinct target names of v's artifacts, sorted.
func (v *Verified) Targets() []string {
	set := map[string]bool{}
	for _, a := range v.Artifacts {
		set[a.TargetName] = true
	}
	out := make([]string, 0, len(set))
	for t := range set {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// TargetLength returns a target's signed length.
func (v *Verified) TargetLength(name string) int64 { return v.targets[name].length }

// TargetSHA256 returns a target's signed SHA-256 (hex).
func (v *Verified) TargetSHA256(name string) string { return fmt.Sprintf("%x", v.targets[name].sha256) }

// CopyTarget copies a target's bytes from the archive to w, checking them
// against the signed length and SHA-256 on the way. buf is the copy
// buffer. A mismatch is an *fault.Error; w may have received bytes by then, so
// the caller must discard what it wrote unless CopyTarget returns nil.
func (a *Archive) CopyTarget(v *Verified, name string, w io.Writer, buf []byte) error {
	st, ok := v.targets[name]
	if !ok {
		return errf(api.CodeManifestTargetUnsigned, "target %q is not signed by targets.json", name)
	}
	entry := v.TargetPath(name)
	f := a.entries[entry]
	if f == nil {
		return errf(api.CodeMissingEntry, "the archive has no %s for target %q", entry, name)
	}
	rc, err := f.Open()
	if err != nil {
		return corrupt(entry, err)
	}
	defer rc.Close()
	h := sha256.New()
	// Reading one byte past the signed length catches an entry that is
	// longer than signed without reading all of an oversized one.
	n, err := io.CopyBuffer(io.MultiWriter(h, errWriter{w}), io.LimitReader(rc, st.length+1), buf)
	if err != nil {
		if we, ok := err.(writeError); ok {
			return we.err
		}
		return corrupt(entry, err)
	}
	if n != st.length {
		return errf(api.CodeArtifactLengthMismatch, "target %q is signed as %d bytes but the archive holds %s",
			name, st.length, lengthDesc(n, st.length))
	}
	if got := h.Sum(nil); !bytes.Equal(got, st.sha256) {
		return errf(api.CodeArtifactHashMismatch, "target %q does not match its signed SHA-256 (signed %x, archive %x); "+
			"the archive was altered after signing", name, st.sha256, got)
	}
	return nil
}

func lengthDesc(n, signed int64) string {
	if n > signed {
		return "more"
	}
	return fmt.Sprintf("only %d", n)
}

// writeError marks errors from the destination writer so they are not
// mistaken for a corrupt archive (the depot's disk may be full).
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }

type errWriter struct{ w io.Writer }

func (e errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		err = writeError{err}
	}
	return n, err
}

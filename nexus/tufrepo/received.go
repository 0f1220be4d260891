package tufrepo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/release"
)

// Part is an artifact read out of a composite artifact of the repo: a host
// image's phase-1 ROM, an RoT's A image, one zone of the control plane.
type Part struct {
	Artifact
	// Composite indexes Verified.Artifacts: the artifact it came from.
	Composite int
	// Path is where it was in the composite's tarball.
	Path string
}

// Blob is the verified bytes of an artifact or part, ready to be stored:
// in a temp file of the spool (fsynced, to be renamed into place) or, when
// small, in memory.
type Blob struct {
	SHA256 string
	Length int64
	Path   string
	Data   []byte
}

// Verify checks the received archive as Open and Archive.Verify check one
// on disk (they run over the archive as kept), then every artifact's
// streamed bytes against the directory and its signed length and SHA-256,
// and expands every composite artifact into its parts (Verified.Parts).
// On success Blobs lists the bytes to store.
func (r *Received) Verify(roots []TrustRoot, floors map[uuid.UUID]Floor) (*Verified, error) {
	a, err := Open(virtual{r.segs}, r.size, r.opts.Options)
	if err != nil {
		return nil, err
	}
	v, err := a.Verify(roots, floors)
	if err != nil {
		return nil, err
	}
	byData := map[int64]*streamEntry{}
	for _, e := range r.entries {
		byData[e.dataOff] = e
	}
	blobs := map[string]*sink{}
	entryOf := map[string]*streamEntry{}
	for _, t := range v.Targets() {
		e, s, err := r.target(a, v, t, byData)
		if err != nil {
			return nil, err
		}
		entryOf[t] = e
		blobs[v.TargetSHA256(t)] = s
	}
	for i, art := range v.Artifacts {
		if _, ok := release.CompositeRuleFor(art.Kind); !ok {
			continue
		}
		parts, err := r.expand(art, entryOf[art.TargetName], blobs[art.SHA256])
		if err != nil {
			return nil, err
		}
		for _, p := range parts {
			v.Parts = append(v.Parts, Part{Artifact: Artifact{Name: p.art.Name, Version: p.art.Version, Kind: p.art.Kind,
				TargetName: art.TargetName, SHA256: p.art.SHA256, Length: p.art.Length}, Composite: i, Path: p.art.Path})
			if blobs[p.art.SHA256] == nil {
				blobs[p.art.SHA256] = p.sink
			}
		}
	}
	if err := v.checkUnique(); err != nil {
		return nil, err
	}
	if err := r.st.sync.flush(); err != nil {
		return nil, err
	}
	r.blobs = make([]Blob, 0, len(blobs))
	for sha, s := range blobs {
		b := Blob{SHA256: sha, Length: s.n, Path: s.name}
		if s.name == "" {
			b.Data = s.mem
		}
		r.blobs = append(r.blobs, b)
	}
	sort.Slice(r.blobs, func(i, j int) bool { return r.blobs[i].SHA256 < r.blobs[j].SHA256 })
	return v, nil
}

// Blobs are the verified artifacts' and parts' bytes, one per hash, after
// a successful Verify. A Blob's temp file belongs to the caller once it is
// renamed away; Close removes the ones left.
func (r *Received) Blobs() []Blob { return r.blobs }

// target checks a signed target's streamed bytes: the entry the directory
// places there, whole, agreeing with the directory on method, sizes and
// CRC-32 (what any zip reader checks), and with its signed length and
// hash. An entry the stream could not place (an archive the parser found
// odd but Open accepts) is read out of the kept archive instead.
func (r *Received) target(a *Archive, v *Verified, name string, byData map[int64]*streamEntry) (*streamEntry, *sink, error) {
	path := strings.TrimSuffix(v.TargetPath(name), "/")
	f := a.entries[path]
	if f == nil {
		return nil, nil, errf(api.CodeMissingEntry, "the archive has no %s for target %q", path, name)
	}
	st := v.targets[name]
	off, err := f.DataOffset()
	if err != nil {
		return nil, nil, corrupt(path, err)
	}
	e := byData[off]
	if e == nil || e.data == nil || !e.complete {
		s := r.st.newSink("upload-entry")
		if err := a.CopyTarget(v, name, s, make([]byte, 256<<10)); err != nil {
			return nil, nil, err
		}
		s.finish()
		return nil, s, nil
	}
	if e.method != f.Method || e.rawLen != int64(f.CompressedSize64) || e.size != int64(f.UncompressedSize64) ||
		e.crc != f.CRC32 {
		return nil, nil, errf(api.CodeCorruptEntry, "entry %s is corrupt: its data (%d bytes, %d decompressed, CRC-32 %08x) "+
			"is not what the central directory records (%d, %d, %08x); upload the archive again", path, e.rawLen, e.size,
			e.crc, f.CompressedSize64, f.UncompressedSize64, f.CRC32)
	}
	if e.tail {
		return nil, nil, corrupt(path, errDeflateTail)
	}
	if e.size != st.length {
		return nil, nil, errf(api.CodeArtifactLengthMismatch, "target %q is signed as %d bytes but the archive holds %s",
			name, st.length, lengthDesc(e.size, st.length))
	}
	if !bytes.Equal(e.sha, st.sha256) {
		return nil, nil, errf(api.CodeArtifactHashMismatch, "target %q does not match its signed SHA-256 (signed %x, archive %x); "+
			"the archive was altered after signing", name, st.sha256, e.sha)
	}
	return e, e.data, nil
}

type expandedPart struct {
	art  release.PartArtifact
	sink *sink
}

// expand reads a composite artifact's parts: from what was read out of it
// while it arrived, or, when that did not happen (its oxide.json is not
// its first file, say), from its verified bytes now.
func (r *Received) expand(art Artifact, e *streamEntry, blob *sink) ([]expandedPart, error) {
	var res *release.Expanded
	var sinks map[string]*sink
	var err error
	if e != nil && e.exp != nil {
		res, sinks, err = e.exp.result()
	}
	if res == nil && (err == nil || errors.Is(err, release.ErrNotComposite)) {
		sinks = map[string]*sink{}
		var cur *sink
		res, err = release.Expand(blob.open(), func(path string) (io.Writer, error) {
			if cur != nil {
				cur.finish()
			}
			cur = r.st.newSink("upload-part")
			sinks[path] = cur
			return cur, nil
		}, release.ExpandOptions{MaxBytes: max(r.opts.MaxExpansion-r.partBytes, 1)})
		if cur != nil {
			cur.finish()
		}
	}
	var parts []release.PartArtifact
	if err == nil {
		parts, err = res.PartsFor(art.Kind, art.Name, art.Version)
	}
	if err != nil {
		return nil, compositeFault(art, err)
	}
	out := make([]expandedPart, len(parts))
	for i, p := range parts {
		r.partBytes += p.Length
		out[i] = expandedPart{art: p, sink: sinks[p.Path]}
	}
	return out, nil
}

// compositeFault is the refusal of a composite that does not expand.
func compositeFault(art Artifact, err error) error {
	var ce *release.CompositeError
	if !errors.As(err, &ce) {
		var we *WriteError
		if errors.As(err, &we) {
			return we
		}
		return fmt.Errorf("expand %s: %w", art.TargetName, err)
	}
	code := map[release.CompositeReason]string{
		release.ReasonBadArchive:   api.CodeCompositeBadArchive,
		release.ReasonSizeMismatch: api.CodeCompositeSizeMismatch,
		release.ReasonUnsafePath:   api.CodeCompositeUnsafePath,
		release.ReasonExtraPart:    api.CodeCompositeExtraPart,
		release.ReasonMissingPart:  api.CodeCompositeMissingPart,
		release.ReasonWrongType:    api.CodeCompositeWrongType,
		release.ReasonBadZone:      api.CodeCompositeBadZone,
		release.ReasonTooLarge:     api.CodeExpansionLimit,
	}[ce.Reason]
	if code == "" {
		code = api.CodeCompositeBadArchive
	}
	return wrapf(err, code, "artifact %s version %s is a %s archive that Nexus expands into its parts, and it cannot be "+
		"expanded: %s; rebuild it (rackrelease assemble checks composites as Nexus does)", art.Name, art.Version,
		art.Kind, ce.Error())
}

// checkUnique refuses two artifacts (parts included) with the same name,
// version and kind: each is one row, one identity.
func (v *Verified) checkUnique() error {
	seen := map[string]string{}
	check := func(a Artifact, where string) error {
		key := a.Name + "\x00" + a.Version + "\x00" + a.Kind
		if prev, dup := seen[key]; dup {
			return errf(api.CodeDuplicateArtifact, "the release has two artifacts named %s version %s of kind %s (%s and %s)",
				a.Name, a.Version, a.Kind, prev, where)
		}
		seen[key] = where
		return nil
	}
	for _, a := range v.Artifacts {
		if err := check(a, "target "+a.TargetName); err != nil {
			return err
		}
	}
	for _, p := range v.Parts {
		if err := check(p.Artifact, p.Path+" in "+p.TargetName); err != nil {
			return err
		}
	}
	return nil
}

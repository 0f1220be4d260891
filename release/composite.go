package release

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A composite artifact is a gzip-compressed tar holding several images
// that go to different places: a host (or trampoline) OS archive holds a
// phase-1 image for the SP's flash and a phase-2 image for the M.2s, an RoT
// archive the images for its A and B slots, and the control-plane archive
// one image per zone. Its first entry is oxide.json, which says what kind
// of archive it is ({"v":"1","t":"os"} and so on); a zone image is itself a
// tarball whose oxide.json names the zone ({"t":"layer","pkg":...,
// "version":...}). This is the layout Omicron's tufaceous writes, and the
// rules Nexus expands composites by on upload are Omicron's: each part
// becomes an artifact of its own kind, named and versioned as the
// composite (zones by their own oxide.json).

// Archive types, as oxide.json's "t" spells them.
const (
	ArchiveOS           = "os"
	ArchiveRoT          = "rot"
	ArchiveControlPlane = "control_plane"
	ArchiveLayer        = "layer"
)

// Paths inside composite archives.
const (
	OxideJSON        = "oxide.json"
	HostPhase1Path   = "image/rom"
	HostPhase2Path   = "image/zfs.img"
	RoTImageAPath    = "archive-a.zip"
	RoTImageBPath    = "archive-b.zip"
	ControlPlaneDir  = "zones/"
	KindZone         = "zone"
	KindControlPlane = "control_plane"
)

// PartRule is one fixed part of a composite: where it is in the tarball
// and the kind of artifact it becomes.
type PartRule struct {
	Path string
	Kind string
}

// CompositeRule says how a composite kind is laid out.
type CompositeRule struct {
	Kind    string
	Archive string
	// Parts are the fixed parts; the control plane has none but one zone
	// image per file under ControlPlaneDir (at least one).
	Parts []PartRule
}

var compositeRules = func() map[string]CompositeRule {
	rules := map[string]CompositeRule{
		"host": {Kind: "host", Archive: ArchiveOS, Parts: []PartRule{
			{HostPhase1Path, "host_phase_1"}, {HostPhase2Path, "host_phase_2"}}},
		"trampoline": {Kind: "trampoline", Archive: ArchiveOS, Parts: []PartRule{
			{HostPhase1Path, "trampoline_phase_1"}, {HostPhase2Path, "trampoline_phase_2"}}},
		KindControlPlane: {Kind: KindControlPlane, Archive: ArchiveControlPlane},
	}
	for _, board := range []string{"gimlet", "psc", "switch"} {
		kind := board + "_rot"
		rules[kind] = CompositeRule{Kind: kind, Archive: ArchiveRoT, Parts: []PartRule{
			{RoTImageAPath, kind + "_image_a"}, {RoTImageBPath, kind + "_image_b"}}}
	}
	return rules
}()

// CompositeKinds lists the artifact kinds that are composites, sorted.
func CompositeKinds() []string {
	out := make([]string, 0, len(compositeRules))
	for k := range compositeRules {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// CompositeRuleFor returns the layout of a composite kind.
func CompositeRuleFor(kind string) (CompositeRule, bool) {
	r, ok := compositeRules[kind]
	return r, ok
}

// oxideMeta is oxide.json.
type oxideMeta struct {
	V       string `json:"v"`
	T       string `json:"t"`
	Pkg     string `json:"pkg,omitempty"`
	Version string `json:"version,omitempty"`
}

// Part is one file of a composite archive.
type Part struct {
	// Path inside the archive (see the *Path constants).
	Path   string
	Size   int64
	Source Source
}

// FilePart is a part read from a file on disk.
func FilePart(archivePath, file string) (Part, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return Part{}, err
	}
	if !fi.Mode().IsRegular() {
		return Part{}, fmt.Errorf("release: %s is not a regular file", file)
	}
	return Part{Path: archivePath, Size: fi.Size(), Source: File(file)}, nil
}

// Composite is a Source that builds a composite archive: oxide.json naming
// the archive type, then the parts in order, as a gzip-compressed tar with
// fixed ownership, modes and times so that the same parts always give the
// same bytes.
type Composite struct {
	Archive string
	Parts   []Part
}

// HostArchive is a host or trampoline OS archive.
func HostArchive(phase1, phase2 Part) *Composite {
	phase1.Path, phase2.Path = HostPhase1Path, HostPhase2Path
	return &Composite{Archive: ArchiveOS, Parts: []Part{phase1, phase2}}
}

// RoTArchive is an RoT archive of its A and B images.
func RoTArchive(a, b Part) *Composite {
	a.Path, b.Path = RoTImageAPath, RoTImageBPath
	return &Composite{Archive: ArchiveRoT, Parts: []Part{a, b}}
}

// ControlPlaneArchive is the control-plane archive of zone images; each
// part's Path is the zone file's name (it is put under zones/).
func ControlPlaneArchive(zones []Part) (*Composite, error) {
	c := &Composite{Archive: ArchiveControlPlane}
	for _, z := range zones {
		if z.Path == "" || strings.Contains(z.Path, "/") || z.Path == "." || z.Path == ".." {
			return nil, fmt.Errorf("release: zone file name %q must be a plain file name", z.Path)
		}
		z.Path = ControlPlaneDir + z.Path
		c.Parts = append(c.Parts, z)
	}
	if len(c.Parts) == 0 {
		return nil, errors.New("release: a control-plane archive holds at least one zone image")
	}
	return c, nil
}

// ZoneImage is a minimal zone image: a gzip-compressed tar holding the
// oxide.json that names the zone, and then files (name → bytes, in name
// order). Real zone images come from the build; this makes ones for
// examples and tests.
func ZoneImage(pkg, version string, files map[string][]byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := writeTarGz(&buf, oxideMeta{V: "1", T: ArchiveLayer, Pkg: pkg, Version: version}, func(tw *tar.Writer) error {
		names := make([]string, 0, len(files))
		for n := range files {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if err := tw.WriteHeader(tarHeader(n, int64(len(files[n])))); err != nil {
				return err
			}
			if _, err := tw.Write(files[n]); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Open streams the archive, building it as it is read.
func (c *Composite) Open() (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(c.write(pw))
	}()
	return pr, nil
}

func (c *Composite) write(w io.Writer) error {
	return writeTarGz(w, oxideMeta{V: "1", T: c.Archive}, func(tw *tar.Writer) error {
		for _, p := range c.Parts {
			if err := tw.WriteHeader(tarHeader(p.Path, p.Size)); err != nil {
				return err
			}
			rc, err := p.Source.Open()
			if err != nil {
				return err
			}
			n, err := io.Copy(tw, rc)
			rc.Close()
			if err != nil {
				return fmt.Errorf("part %s: %w", p.Path, err)
			}
			if n != p.Size {
				return fmt.Errorf("part %s: %d bytes, expected %d (did it change while the archive was built?)", p.Path, n, p.Size)
			}
		}
		return nil
	})
}

func tarHeader(name string, size int64) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o444, Uname: "root", Gname: "root",
		Format: tar.FormatUSTAR}
}

func writeTarGz(w io.Writer, meta oxideMeta, body func(tw *tar.Writer) error) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	mj, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	mj = append(mj, '\n')
	if err := tw.WriteHeader(tarHeader(OxideJSON, int64(len(mj)))); err != nil {
		return err
	}
	if _, err := tw.Write(mj); err != nil {
		return err
	}
	if err := body(tw); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// Reading composites ---------------------------------------------------

// CompositeReason says what is wrong with a composite archive.
type CompositeReason string

// Reasons a composite archive is refused.
const (
	// Not gzip, not tar, damaged, or data after the tar's end.
	ReasonBadArchive CompositeReason = "bad_archive"
	// A part's bytes end before the size its header declares.
	ReasonSizeMismatch CompositeReason = "size_mismatch"
	// An entry's path is absolute, climbs out with "..", or is a link
	// or device.
	ReasonUnsafePath CompositeReason = "unsafe_path"
	// An entry the layout has no place for, or a part twice.
	ReasonExtraPart CompositeReason = "extra_part"
	// A part the layout needs is not there.
	ReasonMissingPart CompositeReason = "missing_part"
	// oxide.json is missing, malformed, or names another archive type
	// than the artifact's kind.
	ReasonWrongType CompositeReason = "wrong_type"
	// A zone image's own oxide.json does not name the zone.
	ReasonBadZone CompositeReason = "bad_zone"
	// The parts expand to more than allowed.
	ReasonTooLarge CompositeReason = "too_large"
)

// CompositeError is a refusal of a composite archive.
type CompositeError struct {
	Reason CompositeReason
	// Path is the entry at fault, when there is one.
	Path   string
	Detail string
	Err    error
}

func (e *CompositeError) Error() string {
	if e.Path != "" {
		return fmt.Sprintf("%s: %s", e.Path, e.Detail)
	}
	return e.Detail
}

func (e *CompositeError) Unwrap() error { return e.Err }

func compositeErr(reason CompositeReason, p string, err error, format string, args ...any) *CompositeError {
	return &CompositeError{Reason: reason, Path: p, Detail: fmt.Sprintf(format, args...), Err: err}
}

// ErrNotComposite is Expand's answer, with TypeFirst, for a tarball whose
// first entry does not say it is a composite archive (a zone image, say).
var ErrNotComposite = errors.New("release: not a composite archive")

// ExpandOptions shape Expand.
type ExpandOptions struct {
	// TypeFirst requires oxide.json to be the tarball's first file and
	// returns ErrNotComposite, having read only that far, when it is not
	// or names no composite type: how a reader that does not yet know the
	// artifact's kind tells a composite from any other tarball cheaply.
	// Without it, oxide.json may be anywhere.
	TypeFirst bool
	// MaxParts bounds the parts (default 1024); MaxBytes their total size
	// (default: unbounded).
	MaxParts int
	MaxBytes int64
}

// Expanded is what a composite archive holds.
type Expanded struct {
	Archive string
	Parts   []ExpandedPart
}

// ExpandedPart is one part read out of a composite.
type ExpandedPart struct {
	Path   string
	Length int64
	SHA256 string
	// Zone is a zone image's own oxide.json (control-plane parts only).
	Zone *Layer
}

// Layer is what a zone image's oxide.json says about it.
type Layer struct {
	Pkg, Version string
}

// zoneHead is how much of a zone image is kept to read its oxide.json,
// which tools write first.
const zoneHead = 64 << 10

// Expand reads a composite archive from r, writing each part's bytes to the
// writer create returns for its path, and checks the archive against the
// layout its oxide.json names: every part there, nothing else, no path that
// could escape a directory, every size honest, nothing after the tar's end.
// Parts are hashed as they are written. Which artifact kind the archive is
// for is checked later, by PartsFor.
func Expand(r io.Reader, create func(path string) (io.Writer, error), o ExpandOptions) (*Expanded, error) {
	if o.MaxParts <= 0 {
		o.MaxParts = 1024
	}
	br := bufio.NewReaderSize(r, 32<<10)
	zr, err := gzip.NewReader(br)
	if err != nil {
		if o.TypeFirst {
			return nil, ErrNotComposite
		}
		return nil, compositeErr(ReasonBadArchive, "", err, "not a gzip-compressed tar (%v)", err)
	}
	tr := tar.NewReader(zr)
	e := &Expanded{}
	seen := map[string]bool{}
	var total int64
	first := true
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if o.TypeFirst && first {
				return nil, ErrNotComposite
			}
			return nil, tarErr("", err)
		}
		name, ok := cleanTarPath(h.Name)
		if !ok {
			return nil, compositeErr(ReasonUnsafePath, h.Name, nil,
				"the entry's path is absolute, climbs out with '..' or holds control characters; a composite's parts "+
					"are plain relative paths")
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if name != "" && e.Archive != "" && !dirAllowed(e.Archive, name) {
				return nil, compositeErr(ReasonExtraPart, h.Name, nil, "a %s archive has no directory %q", e.Archive, name)
			}
			continue
		case tar.TypeReg:
		default:
			return nil, compositeErr(ReasonUnsafePath, h.Name, nil,
				"the entry is a link or special file (type %q); a composite holds only regular files", h.Typeflag)
		}
		if name == OxideJSON {
			if e.Archive != "" {
				return nil, compositeErr(ReasonExtraPart, h.Name, nil, "the archive holds oxide.json twice")
			}
			m, err := readOxideJSON(tr, h)
			if err != nil {
				if o.TypeFirst && first {
					return nil, ErrNotComposite
				}
				return nil, err
			}
			switch m.T {
			case ArchiveOS, ArchiveRoT, ArchiveControlPlane:
			default:
				if o.TypeFirst && first {
					return nil, ErrNotComposite
				}
				return nil, compositeErr(ReasonWrongType, OxideJSON, nil,
					"says the archive is of type %q, which is no composite (os, rot or control_plane)", m.T)
			}
			e.Archive = m.T
			first = false
			// Parts seen before oxide.json are judged now.
			for _, p := range e.Parts {
				if !partAllowed(e.Archive, p.Path) {
					return nil, compositeErr(ReasonExtraPart, p.Path, nil, "a %s archive has no part %q", e.Archive, p.Path)
				}
			}
			continue
		}
		if o.TypeFirst && first {
			return nil, ErrNotComposite
		}
		first = false
		if e.Archive != "" && !partAllowed(e.Archive, name) {
			return nil, compositeErr(ReasonExtraPart, h.Name, nil, "a %s archive has no part %q", e.Archive, name)
		}
		if seen[name] {
			return nil, compositeErr(ReasonExtraPart, h.Name, nil, "the archive holds this part twice")
		}
		seen[name] = true
		if len(e.Parts) >= o.MaxParts {
			return nil, compositeErr(ReasonTooLarge, "", nil, "the archive holds more than %d parts", o.MaxParts)
		}
		total += h.Size
		if o.MaxBytes > 0 && total > o.MaxBytes {
			return nil, compositeErr(ReasonTooLarge, h.Name, nil, "the parts expand to more than %d bytes", o.MaxBytes)
		}
		p, err := copyPart(tr, h, name, create)
		if err != nil {
			return nil, err
		}
		e.Parts = append(e.Parts, p)
	}
	if e.Archive == "" {
		if o.TypeFirst {
			return nil, ErrNotComposite
		}
		return nil, compositeErr(ReasonWrongType, OxideJSON, nil, "the archive has no oxide.json saying what it is")
	}
	// What follows the tar's end is only padding, and the gzip stream
	// must end cleanly (its checksum and length are checked at its end).
	n, err := io.Copy(zeroOnly{}, zr)
	if err != nil {
		if errors.Is(err, errNonZero) {
			return nil, compositeErr(ReasonBadArchive, "", err, "bytes follow the tar's end (after %d bytes of padding); "+
				"a composite is one tar", n)
		}
		return nil, compositeErr(ReasonBadArchive, "", err, "the gzip stream is damaged after the tar's end (%v)", err)
	}
	if _, err := br.Peek(1); err == nil {
		return nil, compositeErr(ReasonBadArchive, "", nil, "bytes follow the gzip stream; a composite is one gzip-compressed tar")
	}
	sort.Slice(e.Parts, func(i, j int) bool { return e.Parts[i].Path < e.Parts[j].Path })
	return e, nil
}

var errNonZero = errors.New("non-zero bytes")

type zeroOnly struct{}

func (zeroOnly) Write(p []byte) (int, error) {
	for i, b := range p {
		if b != 0 {
			return i, errNonZero
		}
	}
	return len(p), nil
}

func tarErr(p string, err error) *CompositeError {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return compositeErr(ReasonSizeMismatch, p, err, "the archive ends inside this entry: its header declares more "+
			"bytes than follow (%v)", err)
	}
	if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) {
		return compositeErr(ReasonBadArchive, p, err, "the gzip stream is damaged (%v)", err)
	}
	return compositeErr(ReasonBadArchive, p, err, "not a readable tar (%v)", err)
}

func readOxideJSON(tr *tar.Reader, h *tar.Header) (oxideMeta, error) {
	var m oxideMeta
	if h.Size > 64<<10 {
		return m, compositeErr(ReasonWrongType, OxideJSON, nil, "is %d bytes; oxide.json is a few dozen", h.Size)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		return m, tarErr(OxideJSON, err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, compositeErr(ReasonWrongType, OxideJSON, err, "is not valid JSON (%v)", err)
	}
	if m.V != "1" {
		return m, compositeErr(ReasonWrongType, OxideJSON, nil, "has format version %q; only \"1\" is known", m.V)
	}
	return m, nil
}

func copyPart(tr *tar.Reader, h *tar.Header, name string, create func(string) (io.Writer, error)) (ExpandedPart, error) {
	p := ExpandedPart{Path: name}
	w, err := create(name)
	if err != nil {
		return p, err
	}
	sha := sha256.New()
	var head *headBuffer
	ws := []io.Writer{w, sha}
	if strings.HasPrefix(name, ControlPlaneDir) {
		head = &headBuffer{max: zoneHead}
		ws = append(ws, head)
	}
	n, err := io.Copy(errorsOf{io.MultiWriter(ws...)}, tr)
	if err != nil {
		var we writeErr
		if errors.As(err, &we) {
			return p, we.err
		}
		return p, tarErr(h.Name, err)
	}
	p.Length, p.SHA256 = n, hex.EncodeToString(sha.Sum(nil))
	if head != nil {
		l, err := readLayer(head.b)
		if err != nil {
			return p, compositeErr(ReasonBadZone, h.Name, err, "%v; a zone image is a gzip-compressed tar whose first "+
				"file is an oxide.json naming the zone ({\"v\":\"1\",\"t\":\"layer\",\"pkg\":...,\"version\":...})", err)
		}
		p.Zone = l
	}
	return p, nil
}

// errorsOf marks the destination's errors, so that a full disk is not
// mistaken for a damaged archive.
type errorsOf struct{ w io.Writer }

type writeErr struct{ err error }

func (e writeErr) Error() string { return e.err.Error() }

func (e errorsOf) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		return n, writeErr{err}
	}
	return n, nil
}

type headBuffer struct {
	b   []byte
	max int
}

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := h.max - len(h.b); room > 0 {
		h.b = append(h.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// readLayer reads a zone image's oxide.json from its first bytes.
func readLayer(head []byte) (*Layer, error) {
	zr, err := gzip.NewReader(bytes.NewReader(head))
	if err != nil {
		return nil, fmt.Errorf("not gzip-compressed (%v)", err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("no oxide.json in its first %d KiB (%v)", zoneHead>>10, err)
		}
		if n, _ := cleanTarPath(h.Name); n != OxideJSON || h.Typeflag != tar.TypeReg {
			continue
		}
		m, err := readOxideJSON(tr, h)
		if err != nil {
			return nil, err
		}
		if m.T != ArchiveLayer || m.Pkg == "" || m.Version == "" {
			return nil, fmt.Errorf("its oxide.json is of type %q with pkg %q and version %q, not a layer naming a zone",
				m.T, m.Pkg, m.Version)
		}
		return &Layer{Pkg: m.Pkg, Version: m.Version}, nil
	}
}

// cleanTarPath checks a tar entry's path and returns it without a leading
// "./" and a trailing "/"; ok is false for a path that could escape.
func cleanTarPath(p string) (string, bool) {
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRuneInString(p[i:])
		if p[i] < 0x20 || p[i] == 0x7f || (r != utf8.RuneError && unicode.IsControl(r)) {
			return "", false
		}
		i += n
	}
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") {
		return "", false
	}
	for strings.HasPrefix(p, "./") {
		p = p[2:]
	}
	p = strings.TrimSuffix(p, "/")
	if p == "." {
		return "", true
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", false
		}
	}
	return p, true
}

func dirAllowed(archive, dir string) bool {
	switch archive {
	case ArchiveOS:
		return dir == path.Dir(HostPhase1Path)
	case ArchiveControlPlane:
		return dir+"/" == ControlPlaneDir
	}
	return false
}

func partAllowed(archive, p string) bool {
	switch archive {
	case ArchiveOS:
		return p == HostPhase1Path || p == HostPhase2Path
	case ArchiveRoT:
		return p == RoTImageAPath || p == RoTImageBPath
	case ArchiveControlPlane:
		rest, ok := strings.CutPrefix(p, ControlPlaneDir)
		return ok && rest != "" && !strings.Contains(rest, "/")
	}
	return false
}

// PartArtifact is a part as the artifact it becomes.
type PartArtifact struct {
	Path                string
	Kind, Name, Version string
	SHA256              string
	Length              int64
}

// PartsFor checks that e is a composite of the given kind and returns its
// parts as artifacts: kinds from the layout, named and versioned as the
// composite (name, version), zones by their own oxide.json. The result is
// in path order.
func (e *Expanded) PartsFor(kind, name, version string) ([]PartArtifact, error) {
	rule, ok := compositeRules[kind]
	if !ok {
		return nil, fmt.Errorf("release: %q is not a composite kind", kind)
	}
	if e.Archive != rule.Archive {
		return nil, compositeErr(ReasonWrongType, OxideJSON, nil, "says the archive is of type %q, but a %s artifact "+
			"is an archive of type %q", e.Archive, kind, rule.Archive)
	}
	byPath := map[string]ExpandedPart{}
	for _, p := range e.Parts {
		byPath[p.Path] = p
	}
	var out []PartArtifact
	if rule.Archive == ArchiveControlPlane {
		if len(e.Parts) == 0 {
			return nil, compositeErr(ReasonMissingPart, ControlPlaneDir, nil, "the control-plane archive holds no zone "+
				"image; it holds one file under %s per zone", ControlPlaneDir)
		}
		for _, p := range e.Parts {
			out = append(out, PartArtifact{Path: p.Path, Kind: KindZone, Name: p.Zone.Pkg, Version: p.Zone.Version,
				SHA256: p.SHA256, Length: p.Length})
		}
		return out, nil
	}
	var missing []string
	for _, pr := range rule.Parts {
		p, ok := byPath[pr.Path]
		if !ok {
			missing = append(missing, pr.Path)
			continue
		}
		out = append(out, PartArtifact{Path: p.Path, Kind: pr.Kind, Name: name, Version: version, SHA256: p.SHA256,
			Length: p.Length})
	}
	if len(missing) > 0 {
		return nil, compositeErr(ReasonMissingPart, missing[0], nil, "a %s archive must hold %s; this one lacks %s",
			kind, rulePaths(rule), strings.Join(missing, " and "))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func rulePaths(r CompositeRule) string {
	var ps []string
	for _, p := range r.Parts {
		ps = append(ps, p.Path)
	}
	return strings.Join(ps, " and ")
}

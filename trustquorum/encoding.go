package trustquorum

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// Both encodings are JSON objects with a "version" field. JSON keeps the
// ledger readable by operators in an emergency and the frames easy to
// debug; the version is checked before anything else so that a future
// format is refused cleanly rather than half-understood.
const (
	// MsgVersion is the only peer-message version this code speaks.
	MsgVersion = 1
	// StateVersion is the persistent-state version this code writes. It
	// also reads stateVersion1.
	StateVersion = 2
	// stateVersion1 is the ledger written before pruning: it keeps every
	// configuration and share ever committed, each commit with both. A
	// node loads it and prunes it (NewNode); the next persist writes the
	// current version. Version 2 may hold commits of epochs whose
	// configuration and share were pruned, which a version-1 reader would
	// take for a damaged ledger; the new number makes older code refuse it
	// cleanly instead.
	stateVersion1 = 1
	// MaxFrameSize bounds a peer frame, matching the bootstrap network.
	MaxFrameSize = 1 << 20
	// maxStateSize bounds a ledger. A pruned one stays small, but a
	// version-1 ledger grew by about 2 KiB per epoch.
	maxStateSize = 64 << 20
)

// MarshalJSON encodes salt and ciphertext as base64 strings.
func (e EncryptedRackSecrets) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Salt       []byte `json:"salt"`
		Ciphertext []byte `json:"ciphertext"`
	}{e.Salt[:], e.Ciphertext})
}

// UnmarshalJSON decodes and checks the salt length.
func (e *EncryptedRackSecrets) UnmarshalJSON(b []byte) error {
	var w struct {
		Salt       []byte `json:"salt"`
		Ciphertext []byte `json:"ciphertext"`
	}
	if err := strictUnmarshal(b, &w); err != nil {
		return err
	}
	if len(w.Salt) != tqcrypto.SaltSize {
		return fmt.Errorf("%w: salt length %d", ErrMalformed, len(w.Salt))
	}
	copy(e.Salt[:], w.Salt)
	e.Ciphertext = w.Ciphertext
	return nil
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: trailing data", ErrMalformed)
	}
	return nil
}

type wireMsg struct {
	Version int            `json:"version"`
	RackID  RackID         `json:"rack_id"`
	Type    string         `json:"type"`
	Epoch   *Epoch         `json:"epoch,omitempty"`
	Config  *Configuration `json:"config,omitempty"`
	Share   []byte         `json:"share,omitempty"`
	Pkg     *wireLrtqPkg   `json:"pkg,omitempty"`
}

type wireLrtqPkg struct {
	RackID       RackID                `json:"rack_id"`
	Threshold    uint8                 `json:"threshold"`
	Share        []byte                `json:"share"`
	ShareDigests []tqcrypto.Digest     `json:"share_digests"`
	Spares       *EncryptedRackSecrets `json:"spares,omitempty"`
	Handouts     []wireHandout         `json:"handouts,omitempty"`
}

type wireHandout struct {
	Learner BaseboardID `json:"learner"`
	X       uint8       `json:"x"`
}

func pkgToWire(p *LrtqSharePkg) *wireLrtqPkg {
	w := &wireLrtqPkg{
		RackID:       p.RackID,
		Threshold:    p.Threshold,
		Share:        slices.Clone(p.Share.Expose()),
		ShareDigests: p.ShareDigests,
		Spares:       p.Spares,
	}
	for _, l := range sortedKeys(p.Handouts) {
		w.Handouts = append(w.Handouts, wireHandout{Learner: l, X: p.Handouts[l]})
	}
	return w
}

func pkgFromWire(w *wireLrtqPkg) (*LrtqSharePkg, error) {
	share, err := tqcrypto.ShareFromBytes(w.Share)
	clear(w.Share)
	if err != nil {
		return nil, fmt.Errorf("%w: lrtq share: %v", ErrMalformed, err)
	}
	if len(w.ShareDigests) != LrtqShares {
		return nil, fmt.Errorf("%w: lrtq package has %d digests", ErrMalformed, len(w.ShareDigests))
	}
	if w.Threshold < MinThreshold {
		return nil, fmt.Errorf("%w: lrtq threshold %d", ErrMalformed, w.Threshold)
	}
	p := &LrtqSharePkg{
		RackID:       w.RackID,
		Threshold:    w.Threshold,
		Share:        share,
		ShareDigests: w.ShareDigests,
		Spares:       w.Spares,
		Handouts:     map[BaseboardID]uint8{},
	}
	if err := p.VerifyShare(share); err != nil {
		return nil, fmt.Errorf("%w: lrtq share does not match its digest", ErrMalformed)
	}
	for _, h := range w.Handouts {
		if !h.Learner.valid() || h.X == 0 {
			return nil, fmt.Errorf("%w: lrtq handout", ErrMalformed)
		}
		if _, dup := p.Handouts[h.Learner]; dup {
			return nil, fmt.Errorf("%w: repeated lrtq handout", ErrMalformed)
		}
		p.Handouts[h.Learner] = h.X
	}
	return p, nil
}

// EncodeMsg encodes a peer message as a version-1 frame.
func EncodeMsg(m PeerMsg) ([]byte, error) {
	w := wireMsg{Version: MsgVersion, RackID: m.RackID}
	if m.Body == nil {
		return nil, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	w.Type = m.Body.Kind()
	ep := func(e Epoch) *Epoch { return &e }
	switch b := m.Body.(type) {
	case PrepareMsg:
		w.Config, w.Share = b.Config, slices.Clone(b.Share.Expose())
	case PrepareAckMsg:
		w.Epoch = ep(b.Epoch)
	case GetShareMsg:
		w.Epoch = ep(b.Epoch)
	case ShareMsg:
		w.Epoch, w.Share = ep(b.Epoch), slices.Clone(b.Share.Expose())
	case GetLrtqShareMsg, LrtqInitAckMsg, LrtqLearnMsg:
	case LrtqShareMsg:
		w.Share = slices.Clone(b.Share.Expose())
	case CommitAdvanceMsg:
		w.Config = b.Config
	case ExpungedMsg:
		w.Epoch, w.Config = ep(b.Epoch), b.Config
	case LrtqInitMsg:
		w.Pkg = pkgToWire(b.Pkg)
	case LrtqLearnPkgMsg:
		w.Pkg = pkgToWire(b.Pkg)
	default:
		return nil, fmt.Errorf("%w: unknown message %T", ErrMalformed, b)
	}
	defer clear(w.Share)
	out, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	if len(out) > MaxFrameSize {
		return nil, ErrFrameTooLarge
	}
	return out, nil
}

// DecodeMsg decodes and validates an untrusted frame. Errors wrap
// ErrFrameTooLarge, ErrUnsupportedVersion or ErrMalformed.
func DecodeMsg(b []byte) (PeerMsg, error) {
	if len(b) > MaxFrameSize {
		return PeerMsg{}, ErrFrameTooLarge
	}
	var w wireMsg
	err := strictUnmarshal(b, &w)
	defer clear(w.Share)
	if err != nil || w.Version != MsgVersion {
		return PeerMsg{}, versionOr(b, err, MsgVersion)
	}
	m := PeerMsg{RackID: w.RackID}
	// need lists the fields a type must carry; every other field must be
	// absent, so a frame has exactly one meaning.
	type fields struct{ epoch, config, share, pkg bool }
	var need fields
	switch w.Type {
	case "prepare":
		need = fields{config: true, share: true}
	case "prepare_ack", "get_share":
		need = fields{epoch: true}
	case "expunged":
		// The configuration is optional on the wire (nodes ignore an
		// Expunged without one) so that every frame decodes to what was
		// encoded.
		need = fields{epoch: true, config: w.Config != nil}
	case "share":
		need = fields{epoch: true, share: true}
	case "lrtq_share":
		need = fields{share: true}
	case "commit_advance":
		need = fields{config: true}
	case "lrtq_init", "lrtq_learn_pkg":
		need = fields{pkg: true}
	case "get_lrtq_share", "lrtq_init_ack", "lrtq_learn":
	default:
		return PeerMsg{}, fmt.Errorf("%w: unknown message type %q", ErrMalformed, w.Type)
	}
	have := fields{w.Epoch != nil, w.Config != nil, w.Share != nil, w.Pkg != nil}
	if have != need {
		return PeerMsg{}, fmt.Errorf("%w: wrong fields for %q", ErrMalformed, w.Type)
	}
	var share tqcrypto.Share
	if need.share {
		s, err := tqcrypto.ShareFromBytes(w.Share)
		if err != nil {
			return PeerMsg{}, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		share = s
	}
	if need.epoch && *w.Epoch == 0 {
		return PeerMsg{}, fmt.Errorf("%w: epoch 0", ErrMalformed)
	}
	if need.config {
		if err := w.Config.Validate(); err != nil {
			return PeerMsg{}, err
		}
		if w.Config.RackID != w.RackID {
			return PeerMsg{}, fmt.Errorf("%w: configuration for another rack", ErrMalformed)
		}
		if w.Type == "expunged" && w.Config.Epoch != *w.Epoch {
			return PeerMsg{}, fmt.Errorf("%w: expunged epoch differs from its configuration's", ErrMalformed)
		}
	}
	var pkg *LrtqSharePkg
	if need.pkg {
		p, err := pkgFromWire(w.Pkg)
		if err != nil {
			return PeerMsg{}, err
		}
		pkg = p
	}
	switch w.Type {
	case "prepare":
		m.Body = PrepareMsg{Config: w.Config, Share: share}
	case "prepare_ack":
		m.Body = PrepareAckMsg{Epoch: *w.Epoch}
	case "get_share":
		m.Body = GetShareMsg{Epoch: *w.Epoch}
	case "share":
		m.Body = ShareMsg{Epoch: *w.Epoch, Share: share}
	case "get_lrtq_share":
		m.Body = GetLrtqShareMsg{}
	case "lrtq_share":
		m.Body = LrtqShareMsg{Share: share}
	case "commit_advance":
		m.Body = CommitAdvanceMsg{Config: w.Config}
	case "expunged":
		m.Body = ExpungedMsg{Epoch: *w.Epoch, Config: w.Config}
	case "lrtq_init":
		m.Body = LrtqInitMsg{Pkg: pkg}
	case "lrtq_init_ack":
		m.Body = LrtqInitAckMsg{}
	case "lrtq_learn":
		m.Body = LrtqLearnMsg{}
	case "lrtq_learn_pkg":
		m.Body = LrtqLearnPkgMsg{Pkg: pkg}
	}
	return m, nil
}

// versionOr explains why a frame or ledger did not decode as one of the
// accepted versions (err, or nil when it decoded but named another
// version): ErrUnsupportedVersion when it names a version this code does
// not read, so that a newer format is refused as such and never reported as
// damage; otherwise err. Only failures pay for this second, lenient parse:
// a good frame is parsed once.
func versionOr(b []byte, err error, accepted ...int) error {
	var v struct {
		Version *int `json:"version"`
	}
	if jerr := json.Unmarshal(b, &v); jerr != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, jerr)
	}
	if v.Version == nil {
		return fmt.Errorf("%w: no version", ErrMalformed)
	}
	if !slices.Contains(accepted, *v.Version) {
		return fmt.Errorf("%w: version %d", ErrUnsupportedVersion, *v.Version)
	}
	if err == nil {
		// It decoded, with an accepted version after all.
		return fmt.Errorf("%w: inconsistent version", ErrMalformed)
	}
	return err
}

type wireState struct {
	Version int          `json:"version"`
	Lrtq    *wireLrtqPkg `json:"lrtq,omitempty"`
	// LrtqRetired is new in version 2.
	LrtqRetired bool             `json:"lrtq_retired,omitempty"`
	LrtqSetup   *wireLrtqSetup   `json:"lrtq_setup,omitempty"`
	Configs     []*Configuration `json:"configs"`
	Shares      []wireShare      `json:"shares"`
	Commits     []Epoch          `json:"commits"`
	Expunged    *wireExpunged    `json:"expunged,omitempty"`
}

// wireLrtqSetup is optional in version 1: only the sled that performed LRTQ
// rack setup has one, and a ledger without it reads as before.
type wireLrtqSetup struct {
	RackID  RackID           `json:"rack_id"`
	Members []BaseboardID    `json:"members"`
	Pending []wirePendingPkg `json:"pending"`
}

type wirePendingPkg struct {
	Member BaseboardID  `json:"member"`
	Pkg    *wireLrtqPkg `json:"pkg"`
}

type wireShare struct {
	Epoch Epoch  `json:"epoch"`
	Share []byte `json:"share"`
}

type wireExpunged struct {
	Epoch Epoch       `json:"epoch"`
	From  BaseboardID `json:"from"`
}

// EncodeState encodes the persistent state for the ledger. The output is
// deterministic (sorted by epoch) so that equal states give equal bytes.
func EncodeState(s *PersistentState) ([]byte, error) {
	w := wireState{Version: StateVersion, LrtqRetired: s.LrtqRetired, Configs: []*Configuration{}, Shares: []wireShare{},
		Commits: s.CommittedEpochs()}
	if s.Lrtq != nil {
		w.Lrtq = pkgToWire(s.Lrtq)
		defer clear(w.Lrtq.Share)
	}
	if ls := s.LrtqSetup; ls != nil {
		w.LrtqSetup = &wireLrtqSetup{RackID: ls.RackID, Members: ls.Members, Pending: []wirePendingPkg{}}
		for _, m := range sortedKeys(ls.Pending) {
			p := pkgToWire(ls.Pending[m])
			defer clear(p.Share)
			w.LrtqSetup.Pending = append(w.LrtqSetup.Pending, wirePendingPkg{Member: m, Pkg: p})
		}
	}
	for _, e := range sortedKeys(s.Configs) {
		w.Configs = append(w.Configs, s.Configs[e])
	}
	for _, e := range sortedKeys(s.Shares) {
		w.Shares = append(w.Shares, wireShare{Epoch: e, Share: slices.Clone(s.Shares[e].Expose())})
	}
	defer func() {
		for _, ws := range w.Shares {
			clear(ws.Share)
		}
	}()
	if s.Expunged != nil {
		w.Expunged = &wireExpunged{Epoch: s.Expunged.Epoch, From: s.Expunged.From}
	}
	return json.Marshal(w)
}

// DecodeState decodes a ledger written by EncodeState, now or before
// pruning (version 1), checking it as carefully as a peer frame: a corrupt
// ledger must not become a node that believes wrong things.
func DecodeState(b []byte) (PersistentState, error) {
	if len(b) > maxStateSize {
		return PersistentState{}, ErrFrameTooLarge
	}
	var w wireState
	err := strictUnmarshal(b, &w)
	defer func() {
		for _, ws := range w.Shares {
			clear(ws.Share)
		}
	}()
	if err != nil || (w.Version != StateVersion && w.Version != stateVersion1) {
		return PersistentState{}, versionOr(b, err, StateVersion, stateVersion1)
	}
	if w.Version == stateVersion1 && w.LrtqRetired {
		return PersistentState{}, fmt.Errorf("%w: lrtq_retired in a version-1 ledger", ErrMalformed)
	}
	s := NewPersistentState()
	s.LrtqRetired = w.LrtqRetired
	if w.Lrtq != nil {
		p, err := pkgFromWire(w.Lrtq)
		if err != nil {
			return PersistentState{}, err
		}
		s.Lrtq = p
	}
	if w.LrtqSetup != nil {
		ls, err := lrtqSetupFromWire(w.LrtqSetup, s.Lrtq, s.LrtqRetired)
		if err != nil {
			return PersistentState{}, err
		}
		s.LrtqSetup = ls
	}
	for _, c := range w.Configs {
		if c == nil {
			return PersistentState{}, fmt.Errorf("%w: null configuration", ErrMalformed)
		}
		if err := c.Validate(); err != nil {
			return PersistentState{}, err
		}
		if s.Configs[c.Epoch] != nil {
			return PersistentState{}, fmt.Errorf("%w: repeated configuration %d", ErrMalformed, c.Epoch)
		}
		s.Configs[c.Epoch] = c
	}
	for _, ws := range w.Shares {
		sh, err := tqcrypto.ShareFromBytes(ws.Share)
		if err != nil {
			return PersistentState{}, fmt.Errorf("%w: share of epoch %d", ErrMalformed, ws.Epoch)
		}
		if s.Configs[ws.Epoch] == nil {
			return PersistentState{}, fmt.Errorf("%w: share without configuration %d", ErrMalformed, ws.Epoch)
		}
		s.Shares[ws.Epoch] = sh
	}
	for _, e := range w.Commits {
		if e == 0 {
			return PersistentState{}, fmt.Errorf("%w: commit of epoch 0", ErrMalformed)
		}
		s.Commits[e] = true
	}
	if err := checkCommits(&s, w.Version); err != nil {
		return PersistentState{}, err
	}
	if w.Expunged != nil {
		s.Expunged = &ExpungedMarker{Epoch: w.Expunged.Epoch, From: w.Expunged.From}
	}
	return s, nil
}

// checkCommits checks the commits against what a ledger of that version
// keeps. Version 1 kept every committed epoch prepared. Version 2 keeps the
// latest commit prepared and, being pruned (see PersistentState), nothing
// below it: no configuration or share of an older epoch, and no LRTQ share
// once an epoch is committed.
func checkCommits(s *PersistentState, version int) error {
	lc := s.LatestCommittedEpoch()
	if version == stateVersion1 {
		for e := range s.Commits {
			if !s.Prepared(e) {
				return fmt.Errorf("%w: commit of unprepared epoch %d", ErrMalformed, e)
			}
		}
		return nil
	}
	if lc == 0 {
		if s.LrtqRetired {
			return fmt.Errorf("%w: lrtq retired without a commit", ErrMalformed)
		}
		return nil
	}
	if !s.Prepared(lc) {
		return fmt.Errorf("%w: commit of unprepared epoch %d", ErrMalformed, lc)
	}
	for e := range s.Configs {
		if e < lc {
			return fmt.Errorf("%w: configuration %d below the latest commit %d", ErrMalformed, e, lc)
		}
	}
	if s.Lrtq != nil || (s.LrtqSetup != nil && len(s.LrtqSetup.Pending) > 0) {
		return fmt.Errorf("%w: lrtq shares kept after commit %d", ErrMalformed, lc)
	}
	return nil
}

// lrtqSetupFromWire checks a setup record against the node's own package:
// every pending package must be a share of the same LRTQ secret (the same
// 255 digests) for a member of the recorded membership.
func lrtqSetupFromWire(w *wireLrtqSetup, own *LrtqSharePkg, retired bool) (*LrtqSetup, error) {
	// Once the rack moved to the trust quorum the initiator keeps only
	// the membership, without its own package or any pending one.
	if own == nil && retired {
		if len(w.Pending) > 0 {
			return nil, fmt.Errorf("%w: lrtq setup packages kept after the lrtq package was dropped", ErrMalformed)
		}
	} else if own == nil || own.Spares == nil || own.RackID != w.RackID {
		return nil, fmt.Errorf("%w: lrtq setup without the matching own package", ErrMalformed)
	}
	if len(w.Members) < MinMembers || len(w.Members) > MaxMembers {
		return nil, fmt.Errorf("%w: lrtq setup with %d members", ErrMalformed, len(w.Members))
	}
	for i, m := range w.Members {
		if !m.valid() || (i > 0 && w.Members[i-1].Compare(m) >= 0) {
			return nil, fmt.Errorf("%w: lrtq setup members not sorted or repeated", ErrMalformed)
		}
	}
	ls := &LrtqSetup{RackID: w.RackID, Members: w.Members, Pending: map[BaseboardID]*LrtqSharePkg{}}
	for _, pp := range w.Pending {
		if pp.Pkg == nil {
			return nil, fmt.Errorf("%w: null lrtq setup package", ErrMalformed)
		}
		p, err := pkgFromWire(pp.Pkg)
		if err != nil {
			return nil, err
		}
		if _, ok := slices.BinarySearchFunc(w.Members, pp.Member, BaseboardID.Compare); !ok || ls.Pending[pp.Member] != nil {
			return nil, fmt.Errorf("%w: lrtq setup package for a non-member or repeated", ErrMalformed)
		}
		if p.RackID != own.RackID || p.Threshold != own.Threshold || p.Spares == nil || len(p.Handouts) != 0 ||
			!slices.Equal(p.ShareDigests, own.ShareDigests) || p.Share.Equal(own.Share) {
			return nil, fmt.Errorf("%w: lrtq setup package does not belong to this setup", ErrMalformed)
		}
		ls.Pending[pp.Member] = p
	}
	return ls, nil
}

// IsDecodeError reports whether err came from decoding untrusted bytes.
func IsDecodeError(err error) bool {
	return errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnsupportedVersion) || errors.Is(err, ErrFrameTooLarge)
}

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
	// StateVersion is the only persistent-state version this code reads.
	StateVersion = 1
	// MaxFrameSize bounds a peer frame, matching the bootstrap network.
	MaxFrameSize = 1 << 20
	// maxStateSize bounds a ledger; generous, since it grows by about 2 KiB
	// per epoch and holds the 255 LRTQ digests.
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
	if err := checkVersion(b, MsgVersion); err != nil {
		return PeerMsg{}, err
	}
	var w wireMsg
	if err := strictUnmarshal(b, &w); err != nil {
		return PeerMsg{}, err
	}
	defer clear(w.Share)
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

func checkVersion(b []byte, want int) error {
	var v struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if v.Version == nil {
		return fmt.Errorf("%w: no version", ErrMalformed)
	}
	if *v.Version != want {
		return fmt.Errorf("%w: version %d", ErrUnsupportedVersion, *v.Version)
	}
	return nil
}

type wireState struct {
	Version   int              `json:"version"`
	Lrtq      *wireLrtqPkg     `json:"lrtq,omitempty"`
	LrtqSetup *wireLrtqSetup   `json:"lrtq_setup,omitempty"`
	Configs   []*Configuration `json:"configs"`
	Shares    []wireShare      `json:"shares"`
	Commits   []Epoch          `json:"commits"`
	Expunged  *wireExpunged    `json:"expunged,omitempty"`
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
	w := wireState{Version: StateVersion, Configs: []*Configuration{}, Shares: []wireShare{}, Commits: s.CommittedEpochs()}
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

// DecodeState decodes a ledger written by EncodeState, checking it as
// carefully as a peer frame: a corrupt ledger must not become a node that
// believes wrong things.
func DecodeState(b []byte) (PersistentState, error) {
	if len(b) > maxStateSize {
		return PersistentState{}, ErrFrameTooLarge
	}
	if err := checkVersion(b, StateVersion); err != nil {
		return PersistentState{}, err
	}
	var w wireState
	if err := strictUnmarshal(b, &w); err != nil {
		return PersistentState{}, err
	}
	s := NewPersistentState()
	if w.Lrtq != nil {
		p, err := pkgFromWire(w.Lrtq)
		if err != nil {
			return PersistentState{}, err
		}
		s.Lrtq = p
	}
	if w.LrtqSetup != nil {
		ls, err := lrtqSetupFromWire(w.LrtqSetup, s.Lrtq)
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
		clear(ws.Share)
		if err != nil {
			return PersistentState{}, fmt.Errorf("%w: share of epoch %d", ErrMalformed, ws.Epoch)
		}
		if s.Configs[ws.Epoch] == nil {
			return PersistentState{}, fmt.Errorf("%w: share without configuration %d", ErrMalformed, ws.Epoch)
		}
		s.Shares[ws.Epoch] = sh
	}
	for _, e := range w.Commits {
		if !s.Prepared(e) {
			return PersistentState{}, fmt.Errorf("%w: commit of unprepared epoch %d", ErrMalformed, e)
		}
		s.Commits[e] = true
	}
	if w.Expunged != nil {
		s.Expunged = &ExpungedMarker{Epoch: w.Expunged.Epoch, From: w.Expunged.From}
	}
	return s, nil
}

// lrtqSetupFromWire checks a setup record against the node's own package:
// every pending package must be a share of the same LRTQ secret (the same
// 255 digests) for a member of the recorded membership.
func lrtqSetupFromWire(w *wireLrtqSetup, own *LrtqSharePkg) (*LrtqSetup, error) {
	if own == nil || own.Spares == nil || own.RackID != w.RackID {
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

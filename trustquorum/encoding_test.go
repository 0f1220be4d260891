package trustquorum_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	tq "github.com/rackplane/rackplane/trustquorum"
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// sampleMessages returns one valid message of every kind.
func sampleMessages(t testing.TB) []tq.PeerMsg {
	var rack tq.RackID
	copy(rack[:], "encoding-rack-01")
	ids := []tq.BaseboardID{{Part: "p", Serial: "a"}, {Part: "p", Serial: "b"}, {Part: "p", Serial: "c"}}
	secret, err := tqcrypto.NewSecret(rand.NewChaCha8([32]byte{1}))
	if err != nil {
		t.Fatal(err)
	}
	shares, err := tqcrypto.Split(secret, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := tqcrypto.EncryptRackSecrets(rand.NewChaCha8([32]byte{2}), secret, rack, 2,
		[]tqcrypto.EpochSecret{{Epoch: 1, Secret: secret}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tq.Configuration{RackID: rack, Epoch: 2, Coordinator: ids[0], Threshold: 2,
		EncryptedRackSecrets: &tq.EncryptedRackSecrets{Salt: enc.Salt, Ciphertext: enc.Ciphertext}}
	for i, id := range ids {
		cfg.Members = append(cfg.Members, tq.Member{ID: id, ShareDigest: shares[i].Digest(), X: shares[i].X()})
	}
	pkgs, err := tq.NewLrtqPackages(rand.NewChaCha8([32]byte{3}), rack, ids)
	if err != nil {
		t.Fatal(err)
	}
	init := pkgs[ids[0]]
	init.Handouts[tq.BaseboardID{Part: "p", Serial: "l"}] = 77
	learner := *pkgs[ids[1]]
	learner.Spares = nil
	learner.Handouts = map[tq.BaseboardID]uint8{}
	bodies := []tq.MsgBody{
		tq.PrepareMsg{Config: cfg, Share: shares[1]},
		tq.PrepareAckMsg{Epoch: 2},
		tq.GetShareMsg{Epoch: 2},
		tq.ShareMsg{Epoch: 2, Share: shares[2]},
		tq.GetLrtqShareMsg{},
		tq.LrtqShareMsg{Share: init.Share},
		tq.CommitAdvanceMsg{Config: cfg},
		tq.ExpungedMsg{Epoch: 2, Config: cfg},
		tq.LrtqInitMsg{Pkg: init},
		tq.LrtqInitAckMsg{},
		tq.LrtqLearnMsg{},
		tq.LrtqLearnPkgMsg{Pkg: &learner},
	}
	var out []tq.PeerMsg
	for _, b := range bodies {
		out = append(out, tq.PeerMsg{RackID: rack, Body: b})
	}
	return out
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range sampleMessages(t) {
		b, err := tq.EncodeMsg(m)
		if err != nil {
			t.Fatalf("%s: %v", m.Body.Kind(), err)
		}
		got, err := tq.DecodeMsg(b)
		if err != nil {
			t.Fatalf("%s: %v", m.Body.Kind(), err)
		}
		again, err := tq.EncodeMsg(got)
		if err != nil || !bytes.Equal(b, again) {
			t.Fatalf("%s: re-encoding differs: %v", m.Body.Kind(), err)
		}
		if got.RackID != m.RackID || got.Body.Kind() != m.Body.Kind() {
			t.Fatalf("%s: decoded %v", m.Body.Kind(), got)
		}
		switch w := m.Body.(type) {
		case tq.PrepareMsg:
			g := got.Body.(tq.PrepareMsg)
			if !g.Config.Equal(w.Config) || !g.Share.Equal(w.Share) {
				t.Fatal("prepare differs")
			}
		case tq.ShareMsg:
			if g := got.Body.(tq.ShareMsg); g.Epoch != w.Epoch || !g.Share.Equal(w.Share) {
				t.Fatal("share differs")
			}
		case tq.LrtqInitMsg:
			g := got.Body.(tq.LrtqInitMsg)
			if !g.Pkg.Share.Equal(w.Pkg.Share) || len(g.Pkg.Handouts) != 1 || g.Pkg.Spares == nil {
				t.Fatal("lrtq init differs")
			}
		}
	}
}

func TestDecodeMsgRejects(t *testing.T) {
	good, err := tq.EncodeMsg(sampleMessages(t)[0])
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, tq.ErrMalformed},
		{"garbage", []byte("\x00\x01garbage"), tq.ErrMalformed},
		{"array", []byte("[1,2]"), tq.ErrMalformed},
		{"no version", mutate(func(m map[string]any) { delete(m, "version") }), tq.ErrMalformed},
		{"version 2", mutate(func(m map[string]any) { m["version"] = 2 }), tq.ErrUnsupportedVersion},
		{"version 0", mutate(func(m map[string]any) { m["version"] = 0 }), tq.ErrUnsupportedVersion},
		{"unknown type", mutate(func(m map[string]any) { m["type"] = "launch" }), tq.ErrMalformed},
		{"unknown field", mutate(func(m map[string]any) { m["extra"] = 1 }), tq.ErrMalformed},
		{"extra epoch", mutate(func(m map[string]any) { m["epoch"] = 3 }), tq.ErrMalformed},
		{"missing share", mutate(func(m map[string]any) { delete(m, "share") }), tq.ErrMalformed},
		{"short share", mutate(func(m map[string]any) { m["share"] = "AAEC" }), tq.ErrMalformed},
		{"bad rack", mutate(func(m map[string]any) { m["rack_id"] = "nope" }), tq.ErrMalformed},
		{"config rack differs", mutate(func(m map[string]any) {
			m["rack_id"] = "00000000-0000-0000-0000-000000000001"
		}), tq.ErrMalformed},
		{"bad threshold", mutate(func(m map[string]any) { m["config"].(map[string]any)["threshold"] = 3 }), tq.ErrInvalidThreshold},
		{"unsorted members", mutate(func(m map[string]any) {
			ms := m["config"].(map[string]any)["members"].([]any)
			ms[0], ms[1] = ms[1], ms[0]
		}), tq.ErrMalformed},
		{"trailing data", append(append([]byte{}, good...), []byte(" {}")...), tq.ErrMalformed},
		{"oversize", append(append([]byte{}, good...), bytes.Repeat([]byte(" "), tq.MaxFrameSize)...), tq.ErrFrameTooLarge},
	}
	for _, tc := range cases {
		_, err := tq.DecodeMsg(tc.in)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
		if !tq.IsDecodeError(err) && !errors.Is(err, tq.ErrInvalidThreshold) {
			t.Errorf("%s: not a decode error: %v", tc.name, err)
		}
	}
	// An Expunged whose configuration is of another epoch has two
	// meanings; it is refused.
	for _, m := range sampleMessages(t) {
		x, ok := m.Body.(tq.ExpungedMsg)
		if !ok {
			continue
		}
		x.Epoch++
		b, err := tq.EncodeMsg(tq.PeerMsg{RackID: m.RackID, Body: x})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tq.DecodeMsg(b); !errors.Is(err, tq.ErrMalformed) {
			t.Errorf("expunged with a mismatched configuration: %v", err)
		}
	}
	// Epoch zero is never valid on the wire.
	b, _ := tq.EncodeMsg(tq.PeerMsg{Body: tq.GetShareMsg{Epoch: 0}})
	if _, err := tq.DecodeMsg(b); !errors.Is(err, tq.ErrMalformed) {
		t.Errorf("epoch 0: %v", err)
	}
}

func TestDecodedErrorsNeverContainShareBytes(t *testing.T) {
	m := sampleMessages(t)[3] // share
	good, _ := tq.EncodeMsg(m)
	var w map[string]any
	_ = json.Unmarshal(good, &w)
	w["share"] = w["share"].(string)[:40] // truncated, still base64-ish
	b, _ := json.Marshal(w)
	_, err := tq.DecodeMsg(b)
	if err == nil || strings.Contains(err.Error(), w["share"].(string)) {
		t.Fatalf("error leaks share bytes: %v", err)
	}
}

func TestStateRoundTripAndRejects(t *testing.T) {
	c, _ := preparedCluster(t)
	st := c.state(uid("a"))
	b, err := tq.EncodeState(st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tq.DecodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := tq.EncodeState(&got)
	if !bytes.Equal(b, b2) {
		t.Fatal("state does not round-trip")
	}
	if !got.Shares[1].Equal(st.Shares[1]) || !got.Configs[1].Equal(st.Configs[1]) || !got.Commits[1] {
		t.Fatal("decoded state differs")
	}
	bad := []struct {
		name string
		in   string
		want error
	}{
		{"version", strings.Replace(string(b), `"version":2`, `"version":9`, 1), tq.ErrUnsupportedVersion},
		{"version and an unknown field", strings.Replace(string(b), `"version":2`, `"version":3,"later":true`, 1), tq.ErrUnsupportedVersion},
		{"no version", strings.Replace(string(b), `"version":2,`, ``, 1), tq.ErrMalformed},
		{"commit without prepare", strings.Replace(string(b), `"commits":[1]`, `"commits":[1,4]`, 1), tq.ErrMalformed},
		{"commit of epoch 0", strings.Replace(string(b), `"commits":[1]`, `"commits":[0,1]`, 1), tq.ErrMalformed},
		{"retired lrtq in version 1", strings.Replace(strings.Replace(string(b), `"version":2`, `"version":1`, 1),
			`"configs"`, `"lrtq_retired":true,"configs"`, 1), tq.ErrMalformed},
		{"retired lrtq without a commit", strings.Replace(strings.Replace(string(b), `"commits":[1]`, `"commits":[]`, 1),
			`"configs"`, `"lrtq_retired":true,"configs"`, 1), tq.ErrMalformed},
		{"truncated", string(b[:len(b)/2]), tq.ErrMalformed},
	}
	for _, tc := range bad {
		if _, err := tq.DecodeState([]byte(tc.in)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// The ledger holds shares, so it is secret; but nothing else that
	// prints state (status, errors) may.
	raw := st.Shares[1].Expose()
	status := jsonString(t, c.nodes[uid("a")].Status(c.ctxs[uid("a")]))
	for _, form := range []string{base64.StdEncoding.EncodeToString(raw), hex.EncodeToString(raw)} {
		if !strings.Contains(string(b), form[:8]) && form == base64.StdEncoding.EncodeToString(raw) {
			t.Fatal("test is broken: the ledger should hold the share in base64")
		}
		if strings.Contains(status, form[:16]) {
			t.Fatal("status carries share material")
		}
	}
}

func jsonString(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var writeCorpus = flag.Bool("tq.writecorpus", false, "rewrite the checked-in FuzzDecodeMsg seed corpus")

// TestFuzzCorpusIsCurrent keeps the checked-in seed corpus in step with the
// encoder: every sample message must be present as a seed.
func TestFuzzCorpusIsCurrent(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeMsg")
	if *writeCorpus {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		seeds := map[string][]byte{
			"garbage":   []byte("\x00\xff{\"version\""),
			"version-2": []byte(`{"version":2,"rack_id":"00000000-0000-0000-0000-000000000000","type":"lrtq_learn"}`),
			// The shape before Expunged carried its configuration; it
			// still decodes (and is ignored by nodes).
			"expunged-without-config": []byte(`{"version":1,"rack_id":"656e636f-6469-6e67-2d72-61636b2d3031","type":"expunged","epoch":3}`),
		}
		for _, m := range sampleMessages(t) {
			b, err := tq.EncodeMsg(m)
			if err != nil {
				t.Fatal(err)
			}
			seeds[m.Body.Kind()] = b
		}
		for name, b := range seeds {
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, kind := range kindsIn(string(b)) {
			have[kind] = true
		}
	}
	for _, m := range sampleMessages(t) {
		if !have[m.Body.Kind()] {
			t.Errorf("no seed for %s under %s", m.Body.Kind(), dir)
		}
	}
}

func kindsIn(s string) []string {
	var out []string
	for _, part := range strings.Split(s, `\"type\":\"`)[1:] {
		if i := strings.Index(part, `\"`); i > 0 {
			out = append(out, part[:i])
		}
	}
	return out
}

// FuzzDecodeMsg feeds arbitrary bytes to the frame decoder: it must never
// panic, must answer with a typed error or a message, and whatever it
// accepts must re-encode and decode to the same bytes.
func FuzzDecodeMsg(f *testing.F) {
	for _, m := range sampleMessages(f) {
		b, err := tq.EncodeMsg(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := tq.DecodeMsg(b)
		if err != nil {
			if !tq.IsDecodeError(err) && !errors.Is(err, tq.ErrInvalidMembership) && !errors.Is(err, tq.ErrInvalidThreshold) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		again, err := tq.EncodeMsg(m)
		if err != nil {
			t.Fatalf("accepted message does not re-encode: %v", err)
		}
		m2, err := tq.DecodeMsg(again)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		third, _ := tq.EncodeMsg(m2)
		if !bytes.Equal(again, third) {
			t.Fatal("encoding is not stable")
		}
	})
}

// TestLrtqSetupLedger checks that the initiator's record of an LRTQ setup in
// progress survives the ledger, and that a record which does not belong to
// the node's own LRTQ secret is refused.
func TestLrtqSetupLedger(t *testing.T) {
	c := newCluster(t, "a", "b", "c", "d")
	a := uid("a")
	if err := c.nodes[a].InitLrtq(c.ctxs[a], c.rack, c.ids); err != nil {
		t.Fatal(err)
	}
	st := c.state(a)
	if ls := st.LrtqSetup; ls == nil || len(ls.Pending) != 3 || !c.ctxs[a].PersistentStateChanged() {
		t.Fatalf("setup not recorded before sending: %+v", ls)
	}
	b, err := tq.EncodeState(st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tq.DecodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if b2, _ := tq.EncodeState(&got); !bytes.Equal(b, b2) {
		t.Fatal("setup record does not round-trip")
	}
	for id, p := range st.LrtqSetup.Pending {
		if !got.LrtqSetup.Pending[id].Share.Equal(p.Share) {
			t.Fatalf("pending package of %s differs", id)
		}
	}
	// A pending package from another LRTQ secret, or for someone outside
	// the membership, is refused.
	other, err := tq.NewLrtqPackages(rand.NewChaCha8([32]byte{77}), c.rack, c.ids)
	if err != nil {
		t.Fatal(err)
	}
	mixed := got
	mixed.LrtqSetup = &tq.LrtqSetup{RackID: c.rack, Members: got.LrtqSetup.Members,
		Pending: map[tq.BaseboardID]*tq.LrtqSharePkg{uid("b"): other[uid("b")]}}
	stray := got
	stray.LrtqSetup = &tq.LrtqSetup{RackID: c.rack, Members: got.LrtqSetup.Members,
		Pending: map[tq.BaseboardID]*tq.LrtqSharePkg{uid("z"): got.LrtqSetup.Pending[uid("b")]}}
	orphan := tq.NewPersistentState()
	orphan.LrtqSetup = got.LrtqSetup
	// A restarted initiator takes a repeated InitLrtq as a no-op, unless
	// it has been expunged since.
	ctx := tq.NewNodeCtx(a, got)
	n := tq.NewNode(ctx, tq.Config{Rand: rand.NewChaCha8([32]byte{5})})
	if err := n.InitLrtq(ctx, c.rack, c.ids); err != nil || ctx.PersistentStateChanged() {
		t.Fatalf("repeated InitLrtq: %v", err)
	}
	gone := got
	gone.Expunged = &tq.ExpungedMarker{Epoch: 2, From: uid("b")}
	ctx = tq.NewNodeCtx(a, gone)
	n = tq.NewNode(ctx, tq.Config{Rand: rand.NewChaCha8([32]byte{5})})
	if err := n.InitLrtq(ctx, c.rack, c.ids); !errors.Is(err, tq.ErrExpunged) {
		t.Fatalf("InitLrtq on an expunged initiator: %v", err)
	}
	for name, s := range map[string]*tq.PersistentState{"other secret": &mixed, "non-member": &stray, "no own package": &orphan} {
		b, err := tq.EncodeState(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tq.DecodeState(b); !errors.Is(err, tq.ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

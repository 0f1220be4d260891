package tufrepo_test

import (
	"encoding/json"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus/tufrepo"
)

// The registration test starts a Nexus on a real database.
func prefixOf(b []byte) []byte { return b[:min(len(b), tufrepo.PrefixLen)] }

// CheckPrefix passes every archive the reader accepts, and refuses from
// its first bytes only bodies the reader refuses too.
func TestCheckPrefix(t *testing.T) {
	t.Parallel()
	goods := map[string][]byte{"plain": plainArchive(t, nil)}
	goods["consistent"], _ = build(t, fuzzLineage(t, true), tinyRepo(true))
	for _, tool := range realTools {
		goods[tool.name] = realFixture(t, tool.name)
	}
	for name, b := range goods {
		if err := tufrepo.CheckPrefix(prefixOf(b)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	firstEntry := func(mod func(e *tufgen.ZipEntry)) []byte {
		return relayout(func(z *tufgen.ZipLayout) { mod(&z.Entries[0]) })(t)
	}
	empty := (&tufgen.ZipLayout{}).Bytes()
	for _, c := range []struct {
		name string
		body []byte
		code string
	}{
		{"empty body", nil, api.CodeNotAZip},
		{"three bytes", []byte("PK\x03"), api.CodeNotAZip},
		{"text", []byte("this is a release, honest"), api.CodeNotAZip},
		{"zeros", make([]byte, 1<<20), api.CodeNotAZip},
		{"empty zip", empty, api.CodeNotAZip},
		{"leading data", append([]byte("MZ-stub-"), goods["plain"]...), api.CodeLeadingData},
		{"first entry encrypted", firstEntry(func(e *tufgen.ZipEntry) { e.Flags |= 1 }), api.CodeUnsupportedCompress},
		{"first entry bzip2", firstEntry(func(e *tufgen.ZipEntry) { e.Method = 12 }), api.CodeUnsupportedCompress},
		{"first entry outside repo/", firstEntry(func(e *tufgen.ZipEntry) { e.Name = "other/a.zone" }), api.CodeEntryOutsideRepo},
		{"first entry absolute", firstEntry(func(e *tufgen.ZipEntry) { e.Name = "/repo/a.zone" }), api.CodeUnsafePath},
		{"first entry control character", firstEntry(func(e *tufgen.ZipEntry) { e.Name = "repo/targets/\x1b]0;x" }), api.CodeControlCharacter},
	} {
		err := tufrepo.CheckPrefix(prefixOf(c.body))
		if code(err) != c.code || len(err.Error()) < 40 {
			t.Errorf("%s: got %v, want %s", c.name, err, c.code)
		}
		if _, _, err := verify(c.body, nil, nil, tufrepo.Options{}); err == nil {
			t.Errorf("%s: CheckPrefix refuses it but the reader does not", c.name)
		}
	}
}

// mutateRoot edits the signed part of a root.json (leaving signatures
// stale: CheckTrustRoot judges structure, trustedmetadata.New signatures).
func mutateRoot(t *testing.T, root []byte, mod func(signed map[string]any)) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(root, &doc); err != nil {
		t.Fatal(err)
	}
	mod(doc["signed"].(map[string]any))
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func roles(signed map[string]any) map[string]any { return signed["roles"].(map[string]any) }

type rootCase struct {
	name string
	root func(t *testing.T) []byte
	code string
	// signed marks roots that are validly self-signed, so go-tuf's own
	// loading accepts them: only CheckTrustRoot stands in their way.
	signed bool
}

func trustRootCases() []rootCase {
	fromLineage := func(o tufgen.LineageOptions) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { return lineage(t, 60, o).TrustRoot() }
	}
	mutated := func(mod func(signed map[string]any)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			return mutateRoot(t, lineage(t, 61, tufgen.LineageOptions{}).TrustRoot(), mod)
		}
	}
	raw := func(role string, th int) tufgen.LineageOptions {
		return tufgen.LineageOptions{RawThresholds: map[string]int{role: th}}
	}
	return []rootCase{
		{"timestamp threshold 0", fromLineage(raw(tufgen.RoleTimestamp, 0)), api.CodeTrustRootThreshold, true},
		{"targets threshold 0", fromLineage(raw(tufgen.RoleTargets, 0)), api.CodeTrustRootThreshold, true},
		{"root threshold 0", fromLineage(raw(tufgen.RoleRoot, 0)), api.CodeTrustRootThreshold, false},
		{"snapshot threshold above its keys", fromLineage(raw(tufgen.RoleSnapshot, 2)), api.CodeTrustRootThreshold, true},
		{"threshold met only by a repeated key id", mutated(func(s map[string]any) {
			r := roles(s)["timestamp"].(map[string]any)
			ids := r["keyids"].([]any)
			r["keyids"], r["threshold"] = append(ids, ids[0]), 2
		}), api.CodeTrustRootThreshold, false},
		{"one key under two ids (targets)", fromLineage(tufgen.LineageOptions{DuplicateKey: []string{tufgen.RoleTargets}}),
			api.CodeTrustRootDuplicateKey, true},
		{"one key under two ids (root, threshold 2)", fromLineage(tufgen.LineageOptions{DuplicateKey: []string{tufgen.RoleRoot},
			RawThresholds: map[string]int{tufgen.RoleRoot: 2}}), api.CodeTrustRootDuplicateKey, false},
		{"role without a definition", mutated(func(s map[string]any) { delete(roles(s), "snapshot") }), api.CodeInvalidTrustRoot, false},
		{"role naming an undefined key", mutated(func(s map[string]any) {
			r := roles(s)["snapshot"].(map[string]any)
			r["keyids"] = []any{"00ff00ff"}
		}), api.CodeInvalidTrustRoot, false},
		{"not a root", func(*testing.T) []byte { return []byte(`{"signed": {"_type": "timestamp"}, "signatures": []}`) },
			api.CodeInvalidTrustRoot, false},
		{"not JSON", func(*testing.T) []byte { return []byte("root, trust me") }, api.CodeInvalidTrustRoot, false},
	}
}

func TestCheckTrustRoot(t *testing.T) {
	t.Parallel()
	for _, o := range []tufgen.LineageOptions{
		{},
		{Consistent: true, Thresholds: map[string]int{tufgen.RoleRoot: 2, tufgen.RoleTimestamp: 3}},
		{Thresholds: map[string]int{tufgen.RoleTargets: 2}, Keys: map[string]int{tufgen.RoleTargets: 5}},
	} {
		if err := tufrepo.CheckTrustRoot(lineage(t, 62, o).TrustRoot()); err != nil {
			t.Errorf("good root %+v refused: %v", o, err)
		}
	}
	for _, c := range trustRootCases() {
		root := c.root(t)
		err := tufrepo.CheckTrustRoot(root)
		if code(err) != c.code || len(err.Error()) < 40 {
			t.Errorf("%s: got %v, want %s", c.name, err, c.code)
		}
		if _, err := trustedmetadata.New(root); c.signed && err != nil {
			t.Errorf("%s: go-tuf refuses it already (%v); the case does not show what CheckTrustRoot adds", c.name, err)
		}
	}
}

package tufrepo_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus/tufrepo"
)

func lineage(t testing.TB, seed uint64, o tufgen.LineageOptions) *tufgen.Lineage {
	t.Helper()
	l, err := tufgen.NewLineage(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}), o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func build(t testing.TB, l *tufgen.Lineage, r tufgen.Repo) ([]byte, *tufgen.Built) {
	t.Helper()
	b, built, err := l.BuildBytes(r)
	if err != nil {
		t.Fatal(err)
	}
	return b, built
}

// verify opens and verifies an archive and copies every target out,
// returning the verified repo and the copied bytes by target.
func verify(archive []byte, roots []tufrepo.TrustRoot, floors map[uuid.UUID]tufrepo.Floor, opts tufrepo.Options) (*tufrepo.Verified, map[string][]byte, error) {
	a, err := tufrepo.Open(bytes.NewReader(archive), int64(len(archive)), opts)
	if err != nil {
		return nil, nil, err
	}
	v, err := a.Verify(roots, floors)
	if err != nil {
		return nil, nil, err
	}
	out := map[string][]byte{}
	for _, name := range v.Targets() {
		var buf bytes.Buffer
		if err := a.CopyTarget(v, name, &buf, make([]byte, 4096)); err != nil {
			return nil, nil, err
		}
		out[name] = buf.Bytes()
	}
	return v, out, nil
}

func code(err error) string {
	var e *fault.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Both manifest formats and both naming styles verify, and what comes out
// is exactly what was signed.
func TestVerifyGoodRepos(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		consistent bool
		v2         bool
		rotations  int
		threshold  int
	}{
		{"plain-v1", false, false, 0, 1},
		{"plain-v2", false, true, 0, 1},
		{"consistent-v1", true, false, 0, 1},
		{"consistent-v2-rotated-twice", true, true, 2, 2},
		{"plain-threshold-3", false, false, 1, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			th := map[string]int{tufgen.RoleRoot: tc.threshold, tufgen.RoleTimestamp: tc.threshold,
				tufgen.RoleSnapshot: tc.threshold, tufgen.RoleTargets: tc.threshold}
			l := lineage(t, 1, tufgen.LineageOptions{Consistent: tc.consistent, Thresholds: th})
			trust := l.TrustRoot()
			for range tc.rotations {
				if err := l.Rotate(tufgen.RotateOptions{Roles: []string{tufgen.RoleRoot, tufgen.RoleTimestamp}}); err != nil {
					t.Fatal(err)
				}
			}
			r := tufgen.Demo("2.0.0")
			r.ManifestV2 = tc.v2
			r.Artifacts = append(r.Artifacts, tufgen.Artifact{Name: "nested", Version: "2.0.0", Kind: "zone",
				Target: "zones/nested.tar.gz", Data: []byte("nested bytes")})
			archive, built := build(t, l, r)
			id := uuid.New()
			v, copied, err := verify(archive, []tufrepo.TrustRoot{{ID: uuid.New(), JSON: otherRoot(t)}, {ID: id, JSON: trust}}, nil, tufrepo.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if v.TrustRootID != id || v.SystemVersion != "2.0.0" || len(v.Artifacts) != len(r.Artifacts) {
				t.Fatalf("verified %+v", v)
			}
			if v.Versions.Root != int64(1+tc.rotations) || v.Versions.Targets != 1 {
				t.Fatalf("versions %+v", v.Versions)
			}
			want := 1
			if tc.v2 {
				want = 2
			}
			if v.ManifestFormat != want {
				t.Fatalf("format %d", v.ManifestFormat)
			}
			for i, a := range v.Artifacts {
				b := built.Artifacts[i]
				if a.Name != b.Name || a.Kind != b.Kind || a.Version != b.Version || a.SHA256 != b.SHA256 || a.Length != b.Length {
					t.Fatalf("artifact %d: got %+v want %+v", i, a, b)
				}
				sum := sha256.Sum256(copied[a.TargetName])
				if hex.EncodeToString(sum[:]) != a.SHA256 {
					t.Fatalf("copied bytes of %s do not hash to %s", a.TargetName, a.SHA256)
				}
			}
		})
	}
}

func otherRoot(t testing.TB) []byte {
	return lineage(t, 99, tufgen.LineageOptions{}).TrustRoot()
}

// Expiry is recorded always and enforced only when asked.
func TestExpiry(t *testing.T) {
	t.Parallel()
	past := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	l := lineage(t, 2, tufgen.LineageOptions{})
	r := tufgen.Demo("1.0.0")
	r.Expires = map[string]time.Time{tufgen.RoleSnapshot: past}
	archive, _ := build(t, l, r)
	roots := []tufrepo.TrustRoot{{ID: uuid.New(), JSON: l.TrustRoot()}}
	v, _, err := verify(archive, roots, nil, tufrepo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !v.ValidUntil.Equal(past) {
		t.Fatalf("valid_until %v, want %v", v.ValidUntil, past)
	}
	_, _, err = verify(archive, roots, nil, tufrepo.Options{EnforceExpiry: true, Now: past.Add(time.Hour)})
	if code(err) != api.CodeMetadataExpired {
		t.Fatalf("enforced expiry: %v", err)
	}
	// An expired trust root is still a valid start.
	old := lineage(t, 3, tufgen.LineageOptions{Expires: past})
	if err := old.Rotate(tufgen.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	archive, _ = build(t, old, tufgen.Demo("1.0.0"))
	if _, _, err := verify(archive, []tufrepo.TrustRoot{{ID: uuid.New(), JSON: old.TrustRoot()}}, nil, tufrepo.Options{}); err != nil {
		t.Fatal(err)
	}
}

// Memory stays bounded: a copy reads through the caller's buffer, never
// the whole entry.
func TestCopyTargetStreams(t *testing.T) {
	t.Parallel()
	l := lineage(t, 4, tufgen.LineageOptions{})
	r := tufgen.Sized("1.0.0", 8<<20, 2, 7)
	archive, _ := build(t, l, r)
	a, err := tufrepo.Open(bytes.NewReader(archive), int64(len(archive)), tufrepo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.Verify([]tufrepo.TrustRoot{{ID: uuid.New(), JSON: l.TrustRoot()}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &maxWrite{}
	if err := a.CopyTarget(v, v.Artifacts[0].TargetName, w, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	if w.n != 4<<20 || w.max > 64<<10 {
		t.Fatalf("copied %d bytes in writes of up to %d", w.n, w.max)
	}
}

type maxWrite struct{ n, max int }

func (m *maxWrite) Write(p []byte) (int, error) {
	m.n += len(p)
	m.max = max(m.max, len(p))
	return len(p), nil
}

var _ io.Writer = (*maxWrite)(nil)

// A huge root version in a file name is a gap, found without counting up
// to it (the fuzzer found that the first version of this loop would try).
func TestHugeRootVersionIsAGap(t *testing.T) {
	t.Parallel()
	l := lineage(t, 5, tufgen.LineageOptions{})
	r := tufgen.Demo("1.0.0")
	r.Defects.ExtraEntries = []tufgen.Entry{{Name: "repo/metadata/999999999999.root.json", Data: []byte("{}")}}
	archive, _ := build(t, l, r)
	start := time.Now()
	_, _, err := verify(archive, []tufrepo.TrustRoot{{ID: uuid.New(), JSON: l.TrustRoot()}}, nil, tufrepo.Options{})
	if code(err) != api.CodeRootVersionGap || time.Since(start) > 5*time.Second {
		t.Fatalf("got %v after %s", err, time.Since(start))
	}
}

// dirSpool is a spool in a test's temp dir.
type dirSpool string

func (d dirSpool) CreateTemp(purpose string) (*os.File, error) {
	return os.CreateTemp(string(d), ".tmp-"+purpose+"-*")
}

// receive streams an archive through Receive and verifies it, returning
// the verified repo and the stored bytes by target, as verify does for an
// archive on disk; the spool is checked to be empty once it is closed.
func receive(t testing.TB, archive []byte, roots []tufrepo.TrustRoot, floors map[uuid.UUID]tufrepo.Floor,
	opts tufrepo.Options) (*tufrepo.Verified, map[string][]byte, error) {
	t.Helper()
	dir := t.TempDir()
	defer func() {
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("the spool holds %d files after Close", len(left))
		}
	}()
	// Small archives arrive a byte at a time, the worst a network can do
	// to the parser's buffering.
	var body io.Reader = bytes.NewReader(archive)
	if len(archive) < 256<<10 {
		body = iotest.OneByteReader(body)
	}
	rc, err := tufrepo.Receive(body, dirSpool(dir), tufrepo.ReceiveOptions{Options: opts})
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	if rc.Size() != int64(len(archive)) || rc.SHA256() != fmt.Sprintf("%x", sha256.Sum256(archive)) {
		t.Errorf("received %d bytes hashing to %s, sent %d", rc.Size(), rc.SHA256(), len(archive))
	}
	v, err := rc.Verify(roots, floors)
	if err != nil {
		return nil, nil, err
	}
	blobs := map[string][]byte{}
	for _, b := range rc.Blobs() {
		data := b.Data
		if b.Path != "" {
			if data, err = os.ReadFile(b.Path); err != nil {
				t.Fatal(err)
			}
		}
		if int64(len(data)) != b.Length || fmt.Sprintf("%x", sha256.Sum256(data)) != b.SHA256 {
			t.Fatalf("blob %s holds %d bytes hashing otherwise", b.SHA256, len(data))
		}
		blobs[b.SHA256] = data
	}
	out := map[string][]byte{}
	for _, name := range v.Targets() {
		data, ok := blobs[v.TargetSHA256(name)]
		if !ok {
			t.Fatalf("no blob for target %s", name)
		}
		out[name] = data
	}
	for _, p := range v.Parts {
		if _, ok := blobs[p.SHA256]; !ok {
			t.Fatalf("no blob for part %s of %s", p.Path, p.TargetName)
		}
	}
	return v, out, nil
}

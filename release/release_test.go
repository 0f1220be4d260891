package release

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var expires = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)

func keyring(t *testing.T, seed byte, o KeyringOptions) Keyring {
	t.Helper()
	k, err := GenerateKeyring(rand.NewChaCha8([32]byte{seed}), o)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Keys saved to a directory load back as the same keys, and a tampered
// file or an overwrite is refused.
func TestKeyringSaveLoad(t *testing.T) {
	t.Parallel()
	k := keyring(t, 1, KeyringOptions{Thresholds: map[string]int{RoleRoot: 2}, Keys: map[string]int{RoleRoot: 3}})
	dir := filepath.Join(t.TempDir(), "keys")
	if err := k.Save(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFileName(RoleRoot)))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("root key file: %v mode %v", err, fi.Mode())
	}
	back, err := LoadKeyring(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range Roles {
		if back[role].Threshold != k[role].Threshold || len(back[role].Keys) != len(k[role].Keys) {
			t.Fatalf("%s: %d of %d keys back, saved %d of %d", role, back[role].Threshold, len(back[role].Keys),
				k[role].Threshold, len(k[role].Keys))
		}
		for i := range k[role].Keys {
			if back[role].Keys[i].ID != k[role].Keys[i].ID {
				t.Fatalf("%s key %d changed", role, i)
			}
		}
	}
	if err := k.Save(dir); err == nil {
		t.Fatal("saving over existing key files succeeded")
	}
	path := filepath.Join(dir, KeyFileName(RoleTargets))
	b, _ := os.ReadFile(path)
	other := keyring(t, 2, KeyringOptions{})[RoleTargets].Keys[0]
	b = bytes.Replace(b, []byte(k[RoleTargets].Keys[0].ID), []byte(other.ID), 1)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyring(dir); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("a key file whose id does not match its key loaded: %v", err)
	}
}

// A rotation is signed by the old and the new root keys; one the old keys
// did not sign is caught.
func TestRotateRoot(t *testing.T) {
	t.Parallel()
	old := keyring(t, 3, KeyringOptions{Thresholds: map[string]int{RoleRoot: 2}, Keys: map[string]int{RoleRoot: 3}})
	v1, err := NewRoot(old, expires, true)
	if err != nil {
		t.Fatal(err)
	}
	next := keyring(t, 4, KeyringOptions{})
	v2, err := RotateRoot(v1, old[RoleRoot].Keys[:2], next, expires)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckRotation(v1, v2); err != nil {
		t.Fatalf("a rotation signed by 2 of 3 old keys: %v", err)
	}
	under, err := RotateRoot(v1, old[RoleRoot].Keys[:1], next, expires)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckRotation(v1, under); err == nil {
		t.Fatal("a rotation signed by 1 of the 2 old keys needed passed the check")
	}
	if err := CheckKeysMatchRoot(old, v2, RoleTargets); err == nil {
		t.Fatal("the old targets key matches a root that names a new one")
	}
	if err := CheckKeysMatchRoot(next, v2, RoleRoot, RoleTimestamp, RoleSnapshot, RoleTargets); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A manifest builds the release it names, composites from their parts;
// mistakes in it are refused with what is wrong.
func TestManifest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, dir, "sp.bin", "sp image")
	writeFile(t, dir, "rom", "phase one")
	writeFile(t, dir, "zfs", "phase two")
	z, err := ZoneImage("nexus", "3.0.0", map[string][]byte{"root": []byte("r")})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "nexus.tar.gz", string(z))
	good := `system_version = "1.0.0"
[[artifact]]
name = "sp"
version = "1.0.0"
kind = "gimlet_sp"
file = "sp.bin"
[[artifact]]
name = "host"
version = "1.0.0"
kind = "host"
parts = { phase_1 = "rom", phase_2 = "zfs" }
[[artifact]]
name = "cp"
version = "1.0.0"
kind = "control_plane"
zones = ["nexus.tar.gz"]
`
	m, err := LoadManifest(writeFile(t, dir, "good.toml", good))
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.Repo()
	if err != nil {
		t.Fatal(err)
	}
	k := keyring(t, 5, KeyringOptions{})
	root, err := NewRoot(k, expires, false)
	if err != nil {
		t.Fatal(err)
	}
	l := &Lineage{Keys: k, Roots: [][]byte{root}, Expires: expires}
	archive, built, err := l.BuildBytes(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(built.Artifacts) != 3 {
		t.Fatalf("%d artifacts built", len(built.Artifacts))
	}
	parts, err := CheckComposite(Artifact{Name: "host", Version: "1.0.0", Kind: "host", Source: r.Artifacts[1].Source})
	if err != nil || len(parts) != 2 || parts[0].SHA256 != sha("phase one") {
		t.Fatalf("the host archive's parts: %+v %v", parts, err)
	}
	// The JSON form of the same manifest builds the same bytes.
	js := `{"system_version": "1.0.0", "artifact": [
		{"name": "sp", "version": "1.0.0", "kind": "gimlet_sp", "file": "sp.bin"},
		{"name": "host", "version": "1.0.0", "kind": "host", "parts": {"phase_1": "rom", "phase_2": "zfs"}},
		{"name": "cp", "version": "1.0.0", "kind": "control_plane", "zones": ["nexus.tar.gz"]}]}`
	mj, err := LoadManifest(writeFile(t, dir, "good.json", js))
	if err != nil {
		t.Fatal(err)
	}
	rj, err := mj.Repo()
	if err != nil {
		t.Fatal(err)
	}
	if again, _, err := l.BuildBytes(rj); err != nil || !bytes.Equal(again, archive) {
		t.Fatalf("the JSON manifest builds another archive (%v)", err)
	}

	for name, c := range map[string]struct{ text, want string }{
		"unknown key":       {strings.Replace(good, `file = "sp.bin"`, `file = "sp.bin"`+"\nfiel = 1", 1), "unknown keys"},
		"missing part":      {strings.Replace(good, `phase_1 = "rom", `, "", 1), "parts.phase_1 is missing"},
		"part of another":   {strings.Replace(good, `phase_2 = "zfs"`, `phase_2 = "zfs", image_a = "rom"`, 1), `no part "image_a"`},
		"parts for a file":  {strings.Replace(good, `file = "sp.bin"`, `parts = { phase_1 = "rom" }`, 1), "not a composite"},
		"file and parts":    {strings.Replace(good, `kind = "host"`, `kind = "host"`+"\nfile = \"rom\"", 1), "exactly one of"},
		"no system version": {strings.Replace(good, `system_version = "1.0.0"`, "", 1), "system_version"},
		"zone not an image": {strings.Replace(good, `"nexus.tar.gz"`, `"rom"`, 1), "zone image"},
		"missing file":      {strings.Replace(good, `"sp.bin"`, `"nope.bin"`, 1), "nope.bin"},
		"same artifact twice": {good + "[[artifact]]\nname = \"sp\"\nversion = \"1.0.0\"\nkind = \"gimlet_sp\"\nfile = \"sp.bin\"\n",
			"the same name, version and kind"},
	} {
		m, err := LoadManifest(writeFile(t, dir, strings.ReplaceAll(name, " ", "-")+".toml", c.text))
		if err == nil {
			_, err = m.Repo()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, c.want)
		}
	}
}

// Re-signing keeps every target byte for byte, moves every version on,
// and carries the whole root chain.
func TestResign(t *testing.T) {
	t.Parallel()
	k := keyring(t, 6, KeyringOptions{})
	v1, err := NewRoot(k, expires, true)
	if err != nil {
		t.Fatal(err)
	}
	l := &Lineage{Keys: k, Roots: [][]byte{v1}, Expires: expires}
	r := Repo{SystemVersion: "1.0.0", Artifacts: []Artifact{{Name: "a", Version: "1.0.0", Kind: "zone", Source: Bytes("alpha")},
		{Name: "h", Version: "1.0.0", Kind: "host", Source: HostArchive(part("", "rom"), part("", "zfs"))}}}
	archive, _, err := l.BuildBytes(r)
	if err != nil {
		t.Fatal(err)
	}
	next := keyring(t, 7, KeyringOptions{})
	v2, err := RotateRoot(v1, k[RoleRoot].Keys, next, expires)
	if err != nil {
		t.Fatal(err)
	}
	l2 := &Lineage{Keys: next, Roots: [][]byte{v1, v2}, Expires: expires.Add(time.Hour)}
	var out bytes.Buffer
	built, err := l2.Resign(&out, bytes.NewReader(archive), int64(len(archive)), ResignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if built.TimestampVersion != 2 || built.SnapshotVersion != 2 || built.TargetsVersion != 2 || built.RootVersion != 2 {
		t.Fatalf("versions after re-signing: %+v", built)
	}
	before, err := Describe(bytes.NewReader(archive), int64(len(archive)))
	if err != nil {
		t.Fatal(err)
	}
	after, err := Describe(bytes.NewReader(out.Bytes()), int64(out.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Roots) != 2 || after.Targets.Signers[0] != next[RoleTargets].Keys[0].ID ||
		!after.Targets.Expires.Equal(expires.Add(time.Hour)) {
		t.Fatalf("re-signed metadata: %+v", after)
	}
	if len(before.TargetList) != len(after.TargetList) {
		t.Fatalf("%d targets before, %d after", len(before.TargetList), len(after.TargetList))
	}
	for i, tb := range before.TargetList {
		ta := after.TargetList[i]
		if tb != ta {
			t.Fatalf("target %s changed: %+v → %+v", tb.Name, tb, ta)
		}
		var got [][]byte
		for _, b := range [][]byte{archive, out.Bytes()} {
			rc, err := OpenTarget(bytes.NewReader(b), int64(len(b)), tb.Path)
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, data)
		}
		if !bytes.Equal(got[0], got[1]) || sha(string(got[1])) != ta.SHA256 {
			t.Fatalf("target %s's bytes changed in re-signing", tb.Name)
		}
	}
}

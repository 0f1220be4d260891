package ledger_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/sledagent/ledger"
)

type config struct {
	Name  string   `json:"name"`
	Items []string `json:"items"`
}

func devices(t *testing.T, n int) []string {
	t.Helper()
	root := t.TempDir()
	var out []string
	for i := range n {
		d := filepath.Join(root, "m2-"+string(rune('a'+i)))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

func onDisk(t *testing.T, l *ledger.Ledger[config], dir string) (uint64, bool) {
	t.Helper()
	b, err := os.ReadFile(l.Path(dir))
	if errors.Is(err, os.ErrNotExist) {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var env struct {
		Generation uint64 `json:"generation"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	return env.Generation, true
}

func TestWriteThenReadRoundTrips(t *testing.T) {
	t.Parallel()
	dirs := devices(t, 2)
	l := ledger.New[config]("test-ledger.json")
	w, err := l.Write(dirs, ledger.Record[config]{Generation: 3, Value: config{Name: "x", Items: []string{"a"}}})
	if err != nil || len(w.Written) != 2 || len(w.Failed) != 0 {
		t.Fatalf("write: %+v %v", w, err)
	}
	r, err := l.Read(dirs)
	if err != nil || !r.Found || r.Generation != 3 || r.Value.Name != "x" || len(r.Rewritten) != 0 || len(r.Problems) != 0 {
		t.Fatalf("read: %+v %v", r, err)
	}
	// No temp files are left behind.
	for _, d := range dirs {
		entries, _ := os.ReadDir(d)
		if len(entries) != 1 {
			t.Fatalf("%s holds %d entries, want only the ledger", d, len(entries))
		}
	}
}

func TestReadOfNothingIsNotFound(t *testing.T) {
	t.Parallel()
	dirs := devices(t, 2)
	l := ledger.New[config]("test-ledger.json")
	r, err := l.Read(dirs)
	if err != nil || r.Found || len(r.Rewritten) != 0 {
		t.Fatalf("read of empty devices: %+v %v", r, err)
	}
	if _, err := l.Write(nil, ledger.Record[config]{Generation: 1}); !errors.Is(err, ledger.ErrNoDevices) {
		t.Fatalf("write to no device: %v, want ErrNoDevices", err)
	}
}

// A device that is missing takes no write; the write still succeeds on the
// other and says which one failed. When the device comes back, a read
// brings it up to date.
func TestWriteWithOneDeviceMissing(t *testing.T) {
	t.Parallel()
	dirs := devices(t, 2)
	if err := os.Remove(dirs[1]); err != nil {
		t.Fatal(err)
	}
	l := ledger.New[config]("test-ledger.json")
	w, err := l.Write(dirs, ledger.Record[config]{Generation: 5, Value: config{Name: "five"}})
	if err != nil {
		t.Fatalf("write with one device missing must succeed: %v", err)
	}
	if !slices.Equal(w.Written, dirs[:1]) || len(w.Failed) != 1 || w.Failed[0].Dir != dirs[1] {
		t.Fatalf("write result %+v", w)
	}
	if _, err := os.Stat(dirs[1]); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the ledger must not create a missing device directory")
	}

	if err := os.Mkdir(dirs[1], 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := l.Read(dirs)
	if err != nil || r.Generation != 5 || r.Source != dirs[0] || !slices.Equal(r.Rewritten, dirs[1:]) {
		t.Fatalf("read after the device returned: %+v %v", r, err)
	}
	if g, ok := onDisk(t, l, dirs[1]); !ok || g != 5 {
		t.Fatalf("returned device holds %d (%v), want 5", g, ok)
	}

	// Every device missing: the write fails and names each.
	for _, d := range dirs {
		os.RemoveAll(d)
	}
	w, err = l.Write(dirs, ledger.Record[config]{Generation: 6})
	if err == nil || len(w.Written) != 0 || len(w.Failed) != 2 {
		t.Fatalf("write to no present device: %+v %v", w, err)
	}
	for _, d := range dirs {
		if !strings.Contains(err.Error(), d) {
			t.Errorf("error %q does not name %s", err, d)
		}
	}
}

// The highest generation wins and the device holding an older one is
// rewritten, whichever device is listed first.
func TestReadTakesHighestGenerationAndRewritesOlder(t *testing.T) {
	t.Parallel()
	dirs := devices(t, 2)
	l := ledger.New[config]("test-ledger.json")
	if _, err := l.Write(dirs[:1], ledger.Record[config]{Generation: 2, Value: config{Name: "old"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Write(dirs[1:], ledger.Record[config]{Generation: 7, Value: config{Name: "new"}}); err != nil {
		t.Fatal(err)
	}
	r, err := l.Read(dirs)
	if err != nil || r.Generation != 7 || r.Value.Name != "new" || r.Source != dirs[1] || !slices.Equal(r.Rewritten, dirs[:1]) {
		t.Fatalf("read: %+v %v", r, err)
	}
	for _, d := range dirs {
		if g, _ := onDisk(t, l, d); g != 7 {
			t.Fatalf("%s holds generation %d after read, want 7", d, g)
		}
	}
}

// An unreadable device (here the ledger path is a directory, which fails
// for root too) or a damaged file is reported; the other device's record
// is used, and the damaged file is replaced.
func TestReadWithUnreadableOrDamagedDevice(t *testing.T) {
	t.Parallel()
	l := ledger.New[config]("test-ledger.json")

	t.Run("unreadable", func(t *testing.T) {
		dirs := devices(t, 2)
		if _, err := l.Write(dirs[1:], ledger.Record[config]{Generation: 4, Value: config{Name: "four"}}); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(l.Path(dirs[0]), 0o755); err != nil {
			t.Fatal(err)
		}
		r, err := l.Read(dirs)
		if err != nil || r.Generation != 4 || r.Value.Name != "four" {
			t.Fatalf("read: %+v %v", r, err)
		}
		if len(r.Problems) == 0 || r.Problems[0].Dir != dirs[0] {
			t.Fatalf("the unreadable device is not reported: %+v", r.Problems)
		}
		// Only unreadable devices: an error, not "nothing found".
		if _, err := l.Read(dirs[:1]); err == nil {
			t.Fatal("read of only an unreadable device must fail")
		}
	})

	t.Run("damaged", func(t *testing.T) {
		dirs := devices(t, 2)
		if _, err := l.Write(dirs, ledger.Record[config]{Generation: 9, Value: config{Name: "nine"}}); err != nil {
			t.Fatal(err)
		}
		// A flipped digit in the generation still parses as JSON; the
		// checksum catches it.
		b, _ := os.ReadFile(l.Path(dirs[0]))
		b = []byte(strings.Replace(string(b), `"generation":9`, `"generation":8`, 1))
		if err := os.WriteFile(l.Path(dirs[0]), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(l.Path(dirs[1]), []byte(`{"generation":99,"val`), 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := l.Read(dirs)
		if err == nil || r.Found {
			t.Fatalf("two damaged records: %+v %v", r, err)
		}
		// Repair one by hand; the read then rewrites the other.
		if _, err := l.Write(dirs[1:], ledger.Record[config]{Generation: 9, Value: config{Name: "nine"}}); err != nil {
			t.Fatal(err)
		}
		r, err = l.Read(dirs)
		if err != nil || r.Generation != 9 || !slices.Equal(r.Rewritten, dirs[:1]) || len(r.Problems) != 1 {
			t.Fatalf("read: %+v %v", r, err)
		}
		if g, _ := onDisk(t, l, dirs[0]); g != 9 {
			t.Fatalf("damaged device holds %d after read, want 9", g)
		}
	})
}

// A torn temp file (a crash between create and rename) is never read as the
// ledger, and RemoveTemps clears it without touching the ledger or the
// temps of other ledgers.
func TestTornTempFileIsIgnoredAndCleaned(t *testing.T) {
	t.Parallel()
	dirs := devices(t, 2)
	l := ledger.New[config]("test-ledger.json")
	if _, err := l.Write(dirs, ledger.Record[config]{Generation: 3, Value: config{Name: "three"}}); err != nil {
		t.Fatal(err)
	}
	torn := filepath.Join(dirs[0], ".tmp-test-ledger.json-12345")
	if err := os.WriteFile(torn, []byte(`{"generation":4,"value":{"na`), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dirs[0], ".tmp-other.json-1")
	if err := os.WriteFile(other, []byte(`x`), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := l.Read(dirs)
	if err != nil || r.Generation != 3 || len(r.Rewritten) != 0 || len(r.Problems) != 0 {
		t.Fatalf("read with a torn temp: %+v %v", r, err)
	}
	n, err := l.RemoveTemps(dirs[0])
	if err != nil || n != 1 {
		t.Fatalf("RemoveTemps: %d %v", n, err)
	}
	if _, err := os.Stat(torn); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("torn temp still there")
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatal("another ledger's temp was removed")
	}
	if g, ok := onDisk(t, l, dirs[0]); !ok || g != 3 {
		t.Fatal("RemoveTemps touched the ledger")
	}
}

// The file format is fixed (ledgers written by older code must still read):
// the envelope as encoding/json lays it out, and a newline. WriteEncoded,
// given the value's JSON, writes the same file as Write.
func TestFileFormatAndWriteEncoded(t *testing.T) {
	t.Parallel()
	dirs := devices(t, 2)
	l := ledger.New[config]("test-ledger.json")
	v := config{Name: "<x> & \"y\"", Items: []string{"a", "ü"}}
	if _, err := l.Write(dirs[:1], ledger.Record[config]{Generation: 18446744073709551615, Value: v}); err != nil {
		t.Fatal(err)
	}
	value, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append([]byte("18446744073709551615\n"), value...))
	want, err := json.Marshal(struct {
		Generation uint64          `json:"generation"`
		Value      json.RawMessage `json:"value"`
		Checksum   string          `json:"checksum"`
	}{18446744073709551615, value, hex.EncodeToString(sum[:])})
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	got, err := os.ReadFile(l.Path(dirs[0]))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Write's file:\n%s\nwant\n%s (%v)", got, want, err)
	}
	if _, err := l.WriteEncoded(dirs[1:], 18446744073709551615, value); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(l.Path(dirs[1])); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("WriteEncoded's file:\n%s\nwant\n%s (%v)", got, want, err)
	}
	if string(value) != `{"name":"\u003cx\u003e \u0026 \"y\"","items":["a","ü"]}` {
		t.Fatalf("WriteEncoded changed the caller's value: %s", value)
	}
	r, err := l.Read(dirs)
	if err != nil || !r.Found || r.Value.Name != v.Name || !slices.Equal(r.Value.Items, v.Items) || len(r.Rewritten) != 0 {
		t.Fatalf("read: %+v %v", r, err)
	}
	if _, err := l.WriteEncoded(nil, 1, value); !errors.Is(err, ledger.ErrNoDevices) {
		t.Fatalf("WriteEncoded to no device: %v", err)
	}
}

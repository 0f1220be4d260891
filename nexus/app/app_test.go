package app_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/bgtasks/taskdb"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/depot"
	"github.com/rackplane/rackplane/nexus/model"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type fixture struct {
	app   *app.App
	db    *testdb.DB
	depot *depot.Depot

	mu     sync.Mutex
	events map[app.Event][]string
}

// newApp is an application layer over a real database and depot, with no
// HTTP server and no tasks running: what an upload or a prune needs is all
// here.
func newApp(t *testing.T, maxBytes int64) *fixture {
	t.Helper()
	db := testdb.New(t)
	ds := datastore.New(db.Pool, zerolog.Nop(), datastore.Options{})
	d, _, err := depot.Open(filepath.Join(t.TempDir(), "depot"))
	if err != nil {
		t.Fatal(err)
	}
	driver := bgtasks.NewDriver(bgtasks.Options{Log: zerolog.Nop()})
	f := &fixture{db: db, depot: d, events: map[app.Event][]string{}}
	f.app, err = app.New(app.Config{NexusID: uuid.New(), UploadMaxBytes: maxBytes, TufMaxExpansion: 1 << 30},
		app.Deps{DS: ds, Depot: d, Tasks: driver, TaskDB: taskdb.New(ds), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []app.Event{app.ReposChanged, app.SledsChanged} {
		f.app.Subscribe(ev, func(requester string) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.events[ev] = append(f.events[ev], requester)
		})
	}
	return f
}

func (f *fixture) count(ev app.Event) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.events[ev])
}

func lineage(t *testing.T) *tufgen.Lineage {
	t.Helper()
	l, err := tufgen.NewLineage(rand.NewChaCha8([32]byte{7}), tufgen.LineageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Upload and prune are reachable without HTTP: the application layer
// verifies, stores and records, and says so to whoever listens.
func TestUploadAndPruneWithoutHTTP(t *testing.T) {
	ctx := app.WithActor(context.Background(), app.ConsoleActor())
	f := newApp(t, 1<<30)
	l := lineage(t)
	archive, built, err := l.BuildBytes(tufgen.Demo("1.0.0"))
	if err != nil {
		t.Fatal(err)
	}

	up := app.Upload{FileName: "demo.zip", Body: bytes.NewReader(archive), ContentLength: int64(len(archive))}
	if _, err := f.app.UploadRepo(ctx, up); fault.CodeOf(err) != api.CodeNoTrustRoots || fault.KindOf(err) != fault.Invalid {
		t.Fatalf("upload before any trust root: %v", err)
	}
	if _, _, err := f.app.CreateTrustRoot(ctx, l.TrustRoot()); err != nil {
		t.Fatal(err)
	}
	up.Body = bytes.NewReader(archive)
	res, err := f.app.UploadRepo(ctx, up)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != model.UploadInserted || res.Repo.SystemVersion != "1.0.0" || res.Repo.ArtifactCount != len(built.Artifacts) {
		t.Fatalf("upload: %+v", res)
	}
	for _, a := range built.Artifacts {
		if ok, err := f.depot.Has(a.SHA256, a.Length); err != nil || !ok {
			t.Fatalf("depot lacks %s: %v", a.Name, err)
		}
	}
	if n := f.db.Count(t, `SELECT count(*) FROM tuf_repo`); n != 1 {
		t.Fatalf("%d repo rows", n)
	}
	if f.count(app.ReposChanged) != 1 {
		t.Fatalf("events after the upload: %v", f.events)
	}

	pr, err := f.app.PruneRepo(ctx, "1.0.0", "operator", nil)
	if err != nil || pr.AlreadyPruned || pr.Repo.TimePruned == nil || pr.Generation != res.Generation+1 {
		t.Fatalf("prune: %+v, %v", pr, err)
	}
	if f.count(app.ReposChanged) != 2 {
		t.Fatalf("events after the prune: %v", f.events)
	}
	// Pruning again changes nothing and tells nobody.
	if pr, err := f.app.PruneRepo(ctx, "1.0.0", "operator", nil); err != nil || !pr.AlreadyPruned || f.count(app.ReposChanged) != 2 {
		t.Fatalf("second prune: %+v, %v, %d events", pr, err, f.count(app.ReposChanged))
	}
	if _, err := f.app.PruneRepo(ctx, "9.9.9", "operator", nil); fault.KindOf(err) != fault.NotFound ||
		!errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("prune of an unknown repo: %v", err)
	}
}

// A body over the limit is refused as too large and leaves nothing: no
// row, no depot file, no temp file.
func TestUploadTooLargeLeavesNothing(t *testing.T) {
	ctx := app.WithActor(context.Background(), app.ConsoleActor())
	f := newApp(t, 1024)
	l := lineage(t)
	if _, _, err := f.app.CreateTrustRoot(ctx, l.TrustRoot()); err != nil {
		t.Fatal(err)
	}
	archive, _, err := l.BuildBytes(tufgen.Demo("1.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	for _, length := range []int64{int64(len(archive)), -1} { // declared, and not declared
		_, err := f.app.UploadRepo(ctx, app.Upload{FileName: "big.zip", Body: bytes.NewReader(archive), ContentLength: length})
		if fault.KindOf(err) != fault.TooLarge || fault.CodeOf(err) != api.CodeBodyTooLarge {
			t.Fatalf("length %d: %v", length, err)
		}
	}
	entries, err := os.ReadDir(f.depot.Dir())
	if err != nil || len(entries) != 0 {
		t.Fatalf("depot holds %v (%v)", entries, err)
	}
	if n := f.db.Count(t, `SELECT count(*) FROM tuf_repo`); n != 0 {
		t.Fatalf("%d repo rows", n)
	}
	if f.count(app.ReposChanged) != 0 {
		t.Fatal("a refused upload announced a change")
	}
}

type zeros struct{ read int64 }

func (z *zeros) Read(p []byte) (int, error) {
	clear(p)
	z.read += int64(len(p))
	return len(p), nil
}

// A body that is not a repository archive is refused after its first few
// KiB: a 1 GiB stream of zeros is not read, let alone stored.
func TestUploadNotAZipRefusedAfterItsFirstBytes(t *testing.T) {
	ctx := app.WithActor(context.Background(), app.ConsoleActor())
	f := newApp(t, 8<<30)
	if _, _, err := f.app.CreateTrustRoot(ctx, lineage(t).TrustRoot()); err != nil {
		t.Fatal(err)
	}
	body := &zeros{}
	_, err := f.app.UploadRepo(ctx, app.Upload{FileName: "big.bin", Body: io.LimitReader(body, 1<<30), ContentLength: 1 << 30})
	if fault.CodeOf(err) != api.CodeNotAZip {
		t.Fatalf("got %v, want not_a_zip", err)
	}
	if body.read > 64<<10 {
		t.Fatalf("read %d bytes of a body refused by its first bytes", body.read)
	}
	entries, err := os.ReadDir(f.depot.Dir())
	if err != nil || len(entries) != 0 {
		t.Fatalf("depot holds %v (%v)", entries, err)
	}
}

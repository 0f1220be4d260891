package tufpruner_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/bgtasks/tufpruner"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/datastore"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// seed records n repos, 1.0.0 oldest, each with one artifact of its own.
func seed(t *testing.T, ds *datastore.Datastore, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		v := fmt.Sprintf("%d.0.0", i)
		_, err := ds.TufRepoInsert(context.Background(), datastore.TufRepoInsert{
			NexusID: uuid.New(), SystemVersion: v, FileName: v + ".zip", SHA256: fmt.Sprintf("%064x", i),
			TrustRootID: uuid.New(), Versions: datastore.TufVersions{Root: 1, Timestamp: int64(i), Snapshot: 1, Targets: 1},
			TargetsSHA256: "t", ManifestFormat: 1, LineageKey: "lineage",
			Artifacts: []datastore.TufArtifactInsert{{Name: "os", Version: v, Kind: "host", TargetName: "os.bin",
				SHA256: fmt.Sprintf("%064x", 1000+i), Length: 10}},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func activate(t *testing.T, task *tufpruner.Task) tufpruner.Status {
	t.Helper()
	st, err := task.Activate(context.Background(), bgtasks.Activation{Iteration: 1, Reason: bgtasks.ReasonExplicit, RunID: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return st.(tufpruner.Status)
}

func live(t *testing.T, ds *datastore.Datastore) []string {
	t.Helper()
	repos, err := ds.TufReposLive(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range repos {
		out = append(out, r.SystemVersion)
	}
	return out
}

func TestPrunesOldestOnePerActivation(t *testing.T) {
	t.Parallel()
	ds := datastore.New(testdb.New(t).Pool, zerolog.Nop(), datastore.Options{})
	seed(t, ds, 5)
	task := tufpruner.New(newApp(t, ds), 3, zerolog.Nop())

	st := activate(t, task)
	if st.Pruned == nil || st.Pruned.SystemVersion != "1.0.0" || st.GenerationAfter != st.Generation+1 {
		t.Fatalf("first run: %+v", st)
	}
	if len(st.Kept) != 3 || st.Kept[0].SystemVersion != "5.0.0" || st.Kept[2].Reason != tufpruner.ReasonNewest ||
		len(st.Waiting) != 1 || st.Waiting[0].SystemVersion != "2.0.0" {
		t.Fatalf("first run kept %+v waiting %+v", st.Kept, st.Waiting)
	}
	if got := fmt.Sprint(live(t, ds)); got != "[5.0.0 4.0.0 3.0.0 2.0.0]" {
		t.Fatalf("live after one run: %s", got)
	}
	st = activate(t, task)
	if st.Pruned == nil || st.Pruned.SystemVersion != "2.0.0" {
		t.Fatalf("second run: %+v", st)
	}
	st = activate(t, task)
	if st.Pruned != nil || st.GenerationAfter != st.Generation || len(st.Kept) != 3 {
		t.Fatalf("third run pruned something: %+v", st)
	}
	if got := fmt.Sprint(live(t, ds)); got != "[5.0.0 4.0.0 3.0.0]" {
		t.Fatalf("live at the end: %s", got)
	}
}

func TestKeepsOperatorKept(t *testing.T) {
	t.Parallel()
	ds := datastore.New(testdb.New(t).Pool, zerolog.Nop(), datastore.Options{})
	seed(t, ds, 4)
	if _, err := ds.TufRepoSetKept(context.Background(), "1.0.0", true); err != nil {
		t.Fatal(err)
	}
	task := tufpruner.New(newApp(t, ds), 2, zerolog.Nop())
	st := activate(t, task)
	if st.Pruned == nil || st.Pruned.SystemVersion != "2.0.0" {
		t.Fatalf("run: %+v", st)
	}
	var keptByOperator bool
	for _, k := range st.Kept {
		if k.SystemVersion == "1.0.0" && k.Reason == tufpruner.ReasonKept {
			keptByOperator = true
		}
	}
	if !keptByOperator {
		t.Fatalf("1.0.0 not reported kept by operator: %+v", st.Kept)
	}
	if got := fmt.Sprint(live(t, ds)); got != "[4.0.0 3.0.0 1.0.0]" {
		t.Fatalf("live: %s", got)
	}
}

// The prune is fenced: planned against a generation that has since moved,
// it changes nothing.
func TestPruneIsFencedByGeneration(t *testing.T) {
	t.Parallel()
	ds := datastore.New(testdb.New(t).Pool, zerolog.Nop(), datastore.Options{})
	seed(t, ds, 2)
	gen, err := ds.TufGeneration(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stale := gen - 1
	if _, err := ds.TufRepoPrune(context.Background(), "1.0.0", "pruner", &stale); !errors.Is(err, datastore.ErrGenerationMoved) {
		t.Fatalf("stale prune: %v", err)
	}
	if len(live(t, ds)) != 2 {
		t.Fatal("a fenced prune pruned")
	}
	if res, err := ds.TufRepoPrune(context.Background(), "1.0.0", "pruner", &gen); err != nil || res.Generation != gen+1 {
		t.Fatalf("current prune: %+v %v", res, err)
	}
}

func newApp(t *testing.T, ds *datastore.Datastore) *app.App {
	t.Helper()
	a, err := app.New(app.Config{}, app.Deps{DS: ds, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

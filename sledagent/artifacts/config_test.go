package artifacts_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/api"
)

func TestConfigGenerationRules(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{noRun: true})
	ctx := context.Background()
	a, b, c := newArtifact(t, 10), newArtifact(t, 10), newArtifact(t, 10)

	got, err := r.api.ArtifactConfigGet(ctx)
	if err != nil || got.Generation != 0 || len(got.Artifacts) != 0 {
		t.Fatalf("initial config: %+v %v", got, err)
	}

	// A higher generation is accepted and ledgered on both M.2s before the
	// reply.
	got, err = r.api.ArtifactConfigPut(ctx, api.ArtifactConfig{Generation: 2, Artifacts: []string{b.sha, a.sha}})
	if err != nil || got.Generation != 2 || !slices.IsSorted(got.Artifacts) || len(got.Artifacts) != 2 {
		t.Fatalf("put generation 2: %+v %v", got, err)
	}
	for i := range r.dirs {
		if g, ok := r.ledgerGeneration(i); !ok || g != 2 {
			t.Fatalf("M.2 %d ledger holds generation %d (%v) right after the reply, want 2", i, g, ok)
		}
	}

	// The same generation with the same contents (in any order) is a no-op.
	got, err = r.api.ArtifactConfigPut(ctx, api.ArtifactConfig{Generation: 2, Artifacts: []string{a.sha, b.sha}})
	if err != nil || got.Generation != 2 {
		t.Fatalf("identical re-put: %+v %v", got, err)
	}

	// The same generation with different contents is refused and the body
	// says what the sled holds.
	conflict := putConfigRaw(t, r, api.ArtifactConfig{Generation: 2, Artifacts: []string{a.sha, c.sha}})
	if conflict.ErrorCode != api.CodeConfigGeneration || conflict.HeldGeneration != 2 ||
		!strings.Contains(conflict.Message, "different artifacts") {
		t.Fatalf("equal generation, different contents: %+v", conflict)
	}
	// A lower generation is refused too.
	conflict = putConfigRaw(t, r, api.ArtifactConfig{Generation: 1, Artifacts: []string{a.sha}})
	if conflict.ErrorCode != api.CodeConfigGeneration || conflict.HeldGeneration != 2 ||
		!strings.Contains(conflict.Message, "generation 2") {
		t.Fatalf("lower generation: %+v", conflict)
	}
	got, _ = r.api.ArtifactConfigGet(ctx)
	if got.Generation != 2 || !slices.Equal(got.Artifacts, sorted(a.sha, b.sha)) {
		t.Fatalf("a refused put changed the config: %+v", got)
	}

	// A jump forward is fine.
	if _, err := r.api.ArtifactConfigPut(ctx, api.ArtifactConfig{Generation: 9, Artifacts: []string{c.sha}}); err != nil {
		t.Fatal(err)
	}
	if g, _ := r.ledgerGeneration(0); g != 9 {
		t.Fatalf("ledger holds %d, want 9", g)
	}
	if r.counter("rackplane_sled_artifact_config_generation") != 9 {
		t.Fatal("generation gauge not updated")
	}
}

// putConfigRaw puts a config expected to conflict and decodes the 409 body.
func putConfigRaw(t *testing.T, r *rig, cfg api.ArtifactConfig) api.GenerationConflict {
	t.Helper()
	body, _ := json.Marshal(cfg)
	req, _ := http.NewRequest(http.MethodPut, r.api.URL("/artifacts-config", nil), bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("want 409, got %d: %s", resp.StatusCode, b)
	}
	var out api.GenerationConflict
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("409 body %s: %v", b, err)
	}
	return out
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

func TestConfigBadInput(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{noRun: true})
	ctx := context.Background()
	a := newArtifact(t, 10)
	for name, cfg := range map[string]api.ArtifactConfig{
		"uppercase":  {Generation: 1, Artifacts: []string{strings.ToUpper(a.sha)}},
		"short":      {Generation: 1, Artifacts: []string{a.sha[:63]}},
		"not hex":    {Generation: 1, Artifacts: []string{"g" + a.sha[1:]}},
		"duplicate":  {Generation: 1, Artifacts: []string{a.sha, a.sha}},
		"no list":    {Generation: 1},
		"empty hash": {Generation: 1, Artifacts: []string{""}},
	} {
		_, err := r.api.ArtifactConfigPut(ctx, cfg)
		if err == nil {
			t.Fatalf("%s: accepted", name)
		}
		apiErr(t, err, http.StatusBadRequest, api.CodeInvalidField)
	}
	if g, ok := r.ledgerGeneration(0); ok {
		t.Fatalf("bad input left a ledger (generation %d)", g)
	}
}

// With no M.2 present a config cannot be ledgered: 503, and the sled keeps
// what it had.
func TestConfigWithoutM2(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{absent: []int{0, 1}, noRun: true})
	a := newArtifact(t, 10)
	_, err := r.api.ArtifactConfigPut(context.Background(), api.ArtifactConfig{Generation: 1, Artifacts: []string{a.sha}})
	apiErr(t, err, http.StatusServiceUnavailable, api.CodeNoM2)
	if g := r.store.Generation(); g != 0 {
		t.Fatalf("generation %d after a failed put", g)
	}
}

package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/tufgen"
)

var (
	matrixRowRE  = regexp.MustCompile(`(?s)<tr data-sha256="([0-9a-f]{64})">(.*?)</tr>`)
	matrixCellRE = regexp.MustCompile(`<td class="cell ([a-z ]+)" data-sled="([0-9a-f-]{36})" title="[^"]*">([^<]*)</td>`)
)

// matrixCell is one rendered cell: its classes and text.
type renderedCell struct{ class, text string }

// matrixCells reads the artifact × sled matrix out of the replication
// page: cells[sha256][sled id].
func matrixCells(t *testing.T, page string) map[string]map[string]renderedCell {
	t.Helper()
	out := map[string]map[string]renderedCell{}
	for _, row := range matrixRowRE.FindAllStringSubmatch(page, -1) {
		cells := map[string]renderedCell{}
		for _, c := range matrixCellRE.FindAllStringSubmatch(row[2], -1) {
			cells[c[2]] = renderedCell{class: c[1], text: c[3]}
		}
		out[row[1]] = cells
	}
	return out
}

// evilName is an artifact name that would run script if a page did not
// escape it; the degraded repo's reason carries it too.
const evilName = `<img src=x onerror=alert(1)>`

func TestReplicationAndRepoPagesOverHTTP(t *testing.T) {
	t.Parallel()
	r := newUIRack(t, 3)
	op := signIn(t, r.Nexus, r.Nexus.AdminToken)
	ctx := context.Background()

	// Nothing uploaded: both pages render and say so.
	r.runTask()
	code, body, _ := op.get("/ui/replication")
	if code != 200 || !strings.Contains(body, "No artifacts are wanted on sleds") ||
		!strings.Contains(body, `<a href="/ui/replication" aria-current="page">`) || !strings.Contains(body, `href="/ui/repos"`) ||
		!strings.Contains(body, `data-refresh="/ui/replication?fragment=1"`) {
		t.Fatalf("replication page with nothing uploaded: %d\n%s", code, body)
	}
	if code, body, _ = op.get("/ui/repos"); code != 200 || !strings.Contains(body, "No repos are uploaded") {
		t.Fatalf("repo list with nothing uploaded: %d\n%s", code, body)
	}
	if code, body, _ = op.get("/ui/background-tasks/" + tufreplication.Name); code != 200 ||
		!strings.Contains(body, `<a href="/ui/replication" id="task-page">`) {
		t.Fatalf("the task's page does not link to the replication page: %d\n%s", code, body)
	}

	// One release, converged: every cell is the sled's real holdings.
	first := r.upload(tufgen.Demo("1.0.0"), "release-1.0.0.zip")
	st := r.waitConverged(len(first.Artifacts))
	code, body, _ = op.get("/ui/replication")
	if code != 200 || !strings.Contains(body, `data-state="converged"`) || !strings.Contains(body, "host-os") {
		t.Fatalf("replication page after convergence: %d\n%s", code, body)
	}
	cells := matrixCells(t, body)
	if len(cells) != len(first.Artifacts) {
		t.Fatalf("matrix has %d rows, want %d:\n%s", len(cells), len(first.Artifacts), body)
	}
	for _, a := range first.Artifacts {
		for _, s := range r.Sleds {
			c := cells[a.SHA256][s.ID().String()]
			if want := fmt.Sprintf("%d/2", racktest.CopiesOn(s, a.SHA256)); c.text != want || c.class != "full" {
				t.Errorf("cell %s × sled %s = %+v; the sled's M.2s hold %s", a.Name, s.ID(), c, want)
			}
		}
	}
	if code, frag, _ := op.get("/ui/replication?fragment=1"); code != 200 || strings.Contains(frag, "<html") ||
		!strings.Contains(frag, `id="matrix"`) {
		t.Fatalf("replication fragment: %d\n%s", code, frag)
	}

	// The API reports the same, per artifact.
	d, err := r.Nexus.Client.RepoGet(ctx, "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range d.Artifacts {
		rep := a.Replication
		if rep == nil || rep.SledsInService != 3 || rep.SledsObserved != 3 || rep.SledsHolding != 3 ||
			rep.SledsHoldingAllM2s != 3 || rep.SledsCopying != 0 || rep.Generation != st.Generation || rep.TimeObserved.IsZero() {
			t.Errorf("replication of %s: %+v (generation %d)", a.Name, rep, st.Generation)
		}
	}
	if code, body, _ = op.get("/ui/repos/1.0.0"); code != 200 || strings.Count(body, `<span class="chip full"`) != len(first.Artifacts) ||
		!strings.Contains(body, `href="/ui/replication"`) {
		t.Fatalf("repo page after convergence: %d\n%s", code, body)
	}

	// A second release the task has not seen: null replication. Then one
	// of its artifacts loses its only copy: the repo is degraded, and the
	// pages say why, escaped.
	setReplication(t, r, false)
	repo := tufgen.Demo("2.0.0")
	repo.Artifacts = append(repo.Artifacts, tufgen.Artifact{Name: evilName, Version: "2.0.0", Kind: "zone",
		Target: "evil.bin", Size: 4 << 10, Seed: 99})
	evilFile := `<script>alert("file")</script>.zip`
	second := r.upload(repo, evilFile)
	code, raw := apiGet(t, r.Nexus, "/v1/system/update/repositories/2.0.0")
	var rawDetail struct {
		Artifacts []map[string]json.RawMessage `json:"artifacts"`
	}
	if code != 200 || json.Unmarshal([]byte(raw), &rawDetail) != nil || len(rawDetail.Artifacts) != len(second.Artifacts) {
		t.Fatalf("repo 2.0.0 over the API: %d\n%s", code, raw)
	}
	for _, a := range rawDetail.Artifacts {
		if rep, ok := a["replication"]; !ok || string(rep) != "null" {
			t.Fatalf("an artifact no run has observed has replication %s, want null:\n%s", rep, raw)
		}
	}
	lost := second.Artifacts[len(second.Artifacts)-1].SHA256
	if err := os.Remove(filepath.Join(r.Nexus.Depot().Dir(), lost)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.DB.Pool.Exec(ctx, `DELETE FROM nexus_artifact_copy WHERE sha256 = $1`, lost); err != nil {
		t.Fatal(err)
	}
	setReplication(t, r, true)
	racktest.WaitFor(t, 20*time.Second, "repo 2.0.0 to be degraded", func() error {
		got, err := r.Nexus.Client.RepoGet(ctx, "2.0.0")
		if err != nil {
			return err
		}
		if got.Repo.State != api.RepoStateDegraded {
			return fmt.Errorf("state %s", got.Repo.State)
		}
		return nil
	})
	escaped := "&lt;img src=x onerror=alert(1)&gt;"
	code, body, _ = op.get("/ui/repos")
	if code != 200 || !strings.Contains(body, `<tr class="degraded" data-repo="2.0.0">`) ||
		!strings.Contains(body, `<span class="badge degraded">1 degraded</span>`) ||
		!strings.Contains(body, `<div class="reason">no sled or Nexus holds `+escaped+` 2.0.0 (`+lost[:12]+`)`) ||
		!strings.Contains(body, "&lt;script&gt;alert(&#34;file&#34;)&lt;/script&gt;.zip") {
		t.Fatalf("repo list with a degraded repo: %d\n%s", code, body)
	}
	code, detail, _ := op.get("/ui/repos/2.0.0")
	if code != 200 || !strings.Contains(detail, `id="state-reason"`) || !strings.Contains(detail, "upload the repo again") ||
		!strings.Contains(detail, `id="repo-state">degraded`) {
		t.Fatalf("degraded repo page: %d\n%s", code, detail)
	}
	code, repl, _ := op.get("/ui/replication")
	if code != 200 || !strings.Contains(repl, `data-state="converging"`) || !strings.Contains(repl, "no holder at all") ||
		!strings.Contains(repl, `<code title="`+lost+`">`+lost[:12]+`</code> `+escaped) {
		t.Fatalf("replication page with an unheld artifact: %d\n%s", code, repl)
	}
	for name, page := range map[string]string{"repo list": body, "repo page": detail, "replication page": repl} {
		if strings.Contains(page, evilName) || strings.Contains(page, "<script>alert") {
			t.Errorf("the %s does not escape what an upload named:\n%s", name, page)
		}
	}

	// A sled that stops answering: its column is unknown, not empty.
	gone := r.Sleds[2]
	gone.Stop()
	racktest.WaitFor(t, 20*time.Second, "the stopped sled's column to be unknown", func() error {
		r.runTask()
		_, page, _ := op.get("/ui/replication")
		for sha, row := range matrixCells(t, page) {
			if c := row[gone.ID().String()]; c.class != "unknown" || c.text != "?" {
				return fmt.Errorf("cell %s × stopped sled = %+v", sha[:12], c)
			}
		}
		if !strings.Contains(page, "1 sled did not answer") {
			return fmt.Errorf("the page does not say a sled did not answer")
		}
		return nil
	})
	d, err = r.Nexus.Client.RepoGet(ctx, "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range d.Artifacts {
		if rep := a.Replication; rep == nil || rep.SledsInService != 3 || rep.SledsObserved != 2 || rep.SledsHolding != 2 {
			t.Errorf("replication of %s with a sled stopped: %+v", a.Name, rep)
		}
	}

	// A pruned repo leaves the list unless asked for.
	if _, err := r.Nexus.Client.RepoDelete(ctx, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if code, body, _ = op.get("/ui/repos"); code != 200 || strings.Contains(body, `data-repo="1.0.0"`) {
		t.Fatalf("repo list after pruning 1.0.0: %d\n%s", code, body)
	}
	if code, body, _ = op.get("/ui/repos?pruned=1"); code != 200 ||
		!regexp.MustCompile(`<tr class="disabled" data-repo="1.0.0">\s*<td[^>]*><a href="/ui/repos/1.0.0">1.0.0</a></td>\s*`+
			`<td data-label="State"><span class="badge disabled">pruned</span> <small>pruned [^<]* by operator</small>`).MatchString(body) ||
		!strings.Contains(body, `data-refresh="/ui/repos?fragment=1&amp;pruned=1"`) {
		t.Fatalf("repo list with pruned repos: %d\n%s", code, body)
	}

	// Unknown repos are a 404 page, escaped.
	code, body, _ = op.get("/ui/repos/%3Cb%3Enope")
	if code != 404 || !strings.Contains(body, "no repo with system version &#34;&lt;b&gt;nope&#34;") {
		t.Fatalf("unknown repo page: %d\n%s", code, body)
	}
}

// setReplication switches the replication task and waits for a run that
// started after the switch, so no earlier run is still acting.
func setReplication(t *testing.T, r *uiRack, on bool) {
	t.Helper()
	if _, err := r.Nexus.Client.BackgroundTaskSetEnabled(context.Background(), tufreplication.Name, on); err != nil {
		t.Fatal(err)
	}
	r.runTask()
}

// apiGet fetches path from nx's external API with its admin token.
func apiGet(t *testing.T, nx *racktest.Nexus, path string) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(nx.Request(t, http.MethodGet, path, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

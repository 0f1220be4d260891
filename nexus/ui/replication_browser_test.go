package ui_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/tufgen"
)

// The replication page in a real browser on a real three-sled rack: after
// an upload converged, every matrix cell is full; a second upload appears
// in the same document (refreshed in place, not reloaded) and fills up
// too. The repo pages are looked at as well, at desktop and phone widths.
func TestReplicationPageInChromium(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	r := newUIRack(t, 3)
	first := r.upload(tufgen.Demo("1.0.0"), "release-1.0.0.zip")
	r.waitConverged(len(first.Artifacts))
	base := r.Nexus.ExternalURL()
	signInChromium(t, ctx, base, r.Nexus.AdminToken, "/ui/replication")

	const cells = `document.querySelectorAll('#matrix td.cell')`
	const fullCells = `document.querySelectorAll('#matrix td.cell.full')`
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/ui/replication"),
		chromedp.WaitVisible(chromedp.CSS(`#matrix`)),
	); err != nil {
		t.Fatal(err)
	}
	want := len(first.Artifacts) * len(r.Sleds)
	pollJS(t, ctx, 10*time.Second, "every cell of the matrix to be full",
		fmt.Sprintf(`%s.length === %d && %s.length === %d && [...%s].every(c => c.textContent.trim() === "2/2")`,
			cells, want, fullCells, want, cells))
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`main`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"converged", "host-os", "1.0.0", "Recent requests", "Seeds copied from a Nexus",
		fmt.Sprintf("%d of %d artifacts are on every M.2 of all 3 sleds", len(first.Artifacts), len(first.Artifacts))} {
		if !strings.Contains(text, w) {
			t.Errorf("replication page lacks %q:\n%s", w, text)
		}
	}
	screenshot(t, ctx, "replication.png")

	// A second release: the page shows it without being reloaded.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__sameDocument = true`)); err != nil {
		t.Fatal(err)
	}
	second := r.upload(tufgen.Demo("2.0.0"), "release-2.0.0.zip")
	want = (len(first.Artifacts) + len(second.Artifacts)) * len(r.Sleds)
	pollJS(t, ctx, 30*time.Second, "the matrix to grow and fill in place",
		fmt.Sprintf(`%s.length === %d && %s.length === %d`, cells, want, fullCells, want))
	if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__sameDocument === true`)); err != nil || !same {
		t.Fatalf("the page was reloaded instead of refreshed in place (%v)", err)
	}
	// The cells the page shows are the files on the sleds' M.2s.
	for _, s := range r.Sleds {
		for _, a := range second.Artifacts {
			if n := racktest.CopiesOn(s, a.SHA256); n != 2 {
				t.Errorf("sled %s holds %d verified copies of %s, the page says 2/2", s.ID(), n, a.SHA256[:12])
			}
		}
	}
	screenshot(t, ctx, "replication-two-repos.png")

	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/ui/repos"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-repo="2.0.0"]`)),
	); err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, "repos.png")
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`tr[data-repo="1.0.0"] a`))); err != nil {
		t.Fatal(err)
	}
	pollJS(t, ctx, 10*time.Second, "the repo page to show every artifact on every sled",
		fmt.Sprintf(`document.querySelectorAll('#artifacts td.allm2 .chip.full').length === %d`, len(first.Artifacts)))
	screenshot(t, ctx, "repo.png")

	// Trouble: a release whose artifact lost its only copy (degraded) and
	// a sled that stopped answering. The pages say so.
	setReplication(t, r, false)
	third := r.upload(tufgen.Demo("3.0.0"), "release-3.0.0.zip")
	lost := third.Artifacts[0].SHA256
	if err := os.Remove(filepath.Join(r.Nexus.Depot().Dir(), lost)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.DB.Pool.Exec(context.Background(), `DELETE FROM nexus_artifact_copy WHERE sha256 = $1`, lost); err != nil {
		t.Fatal(err)
	}
	r.Sleds[1].Stop()
	setReplication(t, r, true)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/ui/repos"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-repo="3.0.0"]`)),
	); err != nil {
		t.Fatal(err)
	}
	pollJS(t, ctx, 20*time.Second, "the list to mark 3.0.0 degraded with its reason",
		`(function(){ var tr = document.querySelector('tr[data-repo="3.0.0"]');
			return tr.className === "degraded" && tr.querySelector('.reason').textContent.includes("upload the repo again"); })()`)
	screenshot(t, ctx, "repos-degraded.png")
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/ui/replication"), chromedp.WaitVisible(chromedp.CSS(`#why`))); err != nil {
		t.Fatal(err)
	}
	pollJS(t, ctx, 20*time.Second, "the stopped sled's cells to be unknown",
		fmt.Sprintf(`document.querySelectorAll('#matrix td.cell.unknown[data-sled="%s"]').length === %d`,
			r.Sleds[1].ID(), 3*len(third.Artifacts)))
	screenshot(t, ctx, "replication-trouble.png")
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/ui/repos/3.0.0"), chromedp.WaitVisible(chromedp.CSS(`#state-reason`))); err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, "repo-degraded.png")
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/ui/replication"), chromedp.WaitVisible(chromedp.CSS(`#recent`))); err != nil {
		t.Fatal(err)
	}

	// A folded section the reader opened stays open across refreshes.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(function(){
			var d = document.getElementById('older-requests'); d.open = true;
			document.getElementById('recent').__old = true; return d.open; })()`)); err != nil {
		t.Fatal(err)
	}
	pollJS(t, ctx, 10*time.Second, "a refresh to replace the requests",
		`!document.getElementById('recent').__old`)
	if open, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById('older-requests').open`)); err != nil || !open {
		t.Errorf("the older requests folded again on refresh (%v)", err)
	}

	// Phone width: the page itself never scrolls sideways (the matrix
	// scrolls inside its card).
	for _, path := range []string{"/ui/replication", "/ui/repos", "/ui/repos/3.0.0"} {
		if err := chromedp.Do(ctx,
			chromedp.EmulateViewport(390, 800),
			chromedp.Navigate(base+path),
			chromedp.WaitVisible(chromedp.CSS(`main`)),
		); err != nil {
			t.Fatal(err)
		}
		fits, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth <= window.innerWidth`))
		if err != nil || !fits {
			t.Errorf("%s overflows a 390 px screen (%v)", path, err)
		}
		name := strings.NewReplacer("/ui/", "", "/", "-").Replace(path)
		screenshot(t, ctx, name+"-narrow.png")
	}
}

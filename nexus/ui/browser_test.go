package ui_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rackplane/rackplane/bgtasks/sledliveness"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
)

// chromium finds a Chromium binary: $RACKPLANE_CHROMIUM, or the usual
// names on PATH.
func chromium() string {
	if p := os.Getenv("RACKPLANE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser starts a headless Chromium for the test. The flags keep it off
// the network: without them it stalls on lookups on a machine with no
// internet.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := chromium()
	if path == "" {
		t.Skip("SKIP: no Chromium found ($RACKPLANE_CHROMIUM, or chromium/chromium-browser/google-chrome on PATH); " +
			"install it with `apt-get install chromium` to run the status-page browser test (CI does)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "chromium-profile")),
		chromedp.WindowSize(1200, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium at %s: %v", path, err)
	}
	return ctx
}

// signInChromium signs the browser in on the login page with token, as a
// person would, and checks that it lands on the page it asked for.
func signInChromium(t *testing.T, ctx context.Context, base, token, next string) {
	t.Helper()
	err := chromedp.Do(ctx,
		chromedp.Navigate(base+next),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		chromedp.SendKeys(chromedp.CSS(`#token`), token),
		chromedp.Click(chromedp.CSS(`#signin`)),
		chromedp.WaitVisible(chromedp.CSS(`#who`)),
	)
	if err != nil {
		t.Fatalf("sign in: %v", err)
	}
	url, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(url, next) {
		t.Fatalf("signed in at %s, want %s", url, next)
	}
}

// pollJS evaluates expr until it returns true.
func pollJS(t *testing.T, ctx context.Context, timeout time.Duration, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (%s; last error %v)", timeout, what, expr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) || len(png) < 5000 {
		t.Fatalf("screenshot %s is not a plausible PNG (%d bytes)", name, len(png))
	}
	dirs := []string{t.TempDir()}
	if d := os.Getenv("RACKPLANE_SCREENSHOT_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", p)
	}
}

func TestStatusPagesInChromium(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, racktest.FastHeartbeat())
	racktest.WaitTask(t, nx, sledliveness.Name, 1)
	base := nx.ExternalURL()
	signInChromium(t, ctx, base, nx.AdminToken, "/ui/background-tasks")

	// The list shows every task and refreshes itself in place.
	row := `document.querySelector('tr[data-task="sled_liveness"]')`
	err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/ui/background-tasks"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-task="nexus_heartbeat"]`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	listText, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#tasks`)))
	if err != nil || !strings.Contains(listText, "sled_liveness") || !strings.Contains(listText, "this Nexus") {
		t.Fatalf("task list text (%v):\n%s", err, listText)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__sameDocument = true`)); err != nil {
		t.Fatal(err)
	}
	if err := nx.ActivateTask(sledliveness.Name, "browser-test"); err != nil {
		t.Fatal(err)
	}
	racktest.WaitTask(t, nx, sledliveness.Name, 2)
	pollJS(t, ctx, 15*time.Second, "the list to show iteration 2 without a reload",
		row+`.querySelector('td.iteration').textContent.trim() === "2"`)
	if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__sameDocument === true`)); err != nil || !same {
		t.Fatalf("the page was reloaded instead of refreshed in place (%v)", err)
	}
	screenshot(t, ctx, "background-tasks.png")

	// The task page: click "Activate now" and watch the iteration advance.
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`tr[data-task="sled_liveness"] a`))); err != nil {
		t.Fatal(err)
	}
	before, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID("iteration"), "data-iteration"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(before.Value)
	if err != nil || n < 2 {
		t.Fatalf("iteration on the task page: %+v", before)
	}
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("activate"))); err != nil {
		t.Fatal(err)
	}
	pollJS(t, ctx, 15*time.Second, "the iteration to advance after clicking activate",
		fmt.Sprintf(`(function(){ var e = document.querySelector('#iteration');
			return !!e && Number(e.dataset.iteration) > %d; })()`, n))
	page, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`main`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Activation requested", "Last activation", "Threshold", "1m30s", "Marked unreachable",
		"History", "explicit", "ui:"} {
		if !strings.Contains(page, want) {
			t.Errorf("task page lacks %q:\n%s", want, page)
		}
	}
	task, err := nx.Tasks().Task(sledliveness.Name, true)
	if err != nil || task.History[0].Iteration <= uint64(n) || !strings.HasPrefix(task.History[0].Requester, "ui:") {
		t.Fatalf("the click did not activate the task: %+v (%v)", task.History, err)
	}
	screenshot(t, ctx, "sled_liveness.png")

	// Narrow screens: nothing wider than the viewport.
	for _, path := range []string{"/ui/background-tasks", "/ui/background-tasks/sled_liveness"} {
		err := chromedp.Do(ctx,
			chromedp.EmulateViewport(390, 800),
			chromedp.Navigate(base+path),
			chromedp.WaitVisible(chromedp.CSS(`main`)),
		)
		if err != nil {
			t.Fatal(err)
		}
		fits, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth <= window.innerWidth`))
		if err != nil || !fits {
			t.Errorf("%s overflows a 390 px screen (%v)", path, err)
		}
	}
	screenshot(t, ctx, "sled_liveness-narrow.png")
}

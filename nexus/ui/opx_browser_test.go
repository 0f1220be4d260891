package ui_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rackplane/rackplane/internal/tufgen"
)

// The sleds and trust-roots pages and the HTML 404 in a real browser, on
// a real two-sled rack: a sled whose M.2 is moved away turns degraded on
// the open sleds page without a reload, its own page says which device is
// missing, the trust-roots page names the repo the root signed, and an
// unknown page offers the navigation. Every one fits a phone's width.
func TestSledAndTrustRootPagesInChromium(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	r := newUIRack(t, 2)
	built := r.upload(tufgen.Demo("1.0.0"), "release-1.0.0.zip")
	r.waitConverged(len(built.Artifacts))
	base := r.Nexus.ExternalURL()
	signInChromium(t, ctx, base, r.Nexus.AdminToken, "/ui/sleds")

	victim := r.Sleds[1]
	row := fmt.Sprintf(`document.querySelector('tr[data-sled="%s"]')`, victim.ID())
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/ui/sleds"),
		chromedp.WaitVisible(chromedp.CSS(`#sled-table`)),
	); err != nil {
		t.Fatal(err)
	}
	pollJS(t, ctx, 10*time.Second, "both sleds healthy",
		`document.querySelectorAll('#sled-table [data-health="ok"]').length === 2`)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__sameDocument = true`)); err != nil {
		t.Fatal(err)
	}
	m2 := victim.Config.M2Dirs[0]
	if err := os.Rename(m2, m2+".away"); err != nil {
		t.Fatal(err)
	}
	pollJS(t, ctx, 20*time.Second, "the sled to turn degraded in place",
		row+`.querySelector('[data-health]').dataset.health === "degraded" && `+row+`.querySelector('td.m2').textContent.trim() === "1/2"`)
	if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__sameDocument === true`)); err != nil || !same {
		t.Fatalf("the page was reloaded instead of refreshed in place (%v)", err)
	}
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`main`)))
	if err != nil || !strings.Contains(text, "1 degraded") || !strings.Contains(text, m2+" is missing") {
		t.Fatalf("sleds page (%v):\n%s", err, text)
	}
	screenshot(t, ctx, "sleds-degraded.png")

	// Its own page, reached by its link.
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-sled="%s"] td a`, victim.ID())))); err != nil {
		t.Fatal(err)
	}
	text, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`main`)))
	if err != nil || !strings.Contains(text, "What is wrong") || !strings.Contains(text, "1 of 2 in use") ||
		!strings.Contains(text, victim.Baseboard().Serial) || !strings.Contains(text, "missing") {
		t.Fatalf("sled page (%v):\n%s", err, text)
	}
	screenshot(t, ctx, "sled.png")

	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/ui/trust-roots"),
		chromedp.WaitVisible(chromedp.CSS(`#trust-roots section.card`)),
	); err != nil {
		t.Fatal(err)
	}
	signed, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#trust-roots dd.signed`)))
	if err != nil || strings.TrimSpace(signed) != "1.0.0" {
		t.Fatalf("trust root signs %q (%v)", signed, err)
	}
	screenshot(t, ctx, "trust-roots.png")

	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/ui/nothing-here"),
		chromedp.WaitVisible(chromedp.CSS(`#notfound`)),
	); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`main a[href="/ui/sleds"]`))); err != nil {
		t.Fatal(err)
	}
	if url, err := chromedp.Run(ctx, chromedp.Location()); err != nil || !strings.HasSuffix(url, "/ui/sleds") {
		t.Fatalf("the 404's link went to %s (%v)", url, err)
	}

	for _, path := range []string{"/ui/sleds", "/ui/sleds/" + victim.ID().String(), "/ui/trust-roots", "/ui/nothing-here"} {
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
	screenshot(t, ctx, "sleds-narrow.png")
}

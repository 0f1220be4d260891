package ui_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks/trustquorum"
	"github.com/rackplane/rackplane/internal/racktest"
)

// The trust-quorum page in a real browser on a real rack set up over the
// bootstrap network: epoch 1 with every member committed; an alarm raised
// on a node appears highlighted in the same document (refreshed in place);
// an operator's change appears as a new epoch and fills in as it commits.
func TestTrustQuorumPageInChromium(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	r := tqRack(t, 4)
	base := r.Nexus.ExternalURL()
	signInChromium(t, ctx, base, r.Nexus.AdminToken, "/ui/trust-quorum")
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`section[data-epoch="1"]`))); err != nil {
		t.Fatal(err)
	}
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`main`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"Trust quorum", "latest committed epoch 1", "4/4 acked", "LRTQ", "Members"} {
		if w == "LRTQ" {
			if strings.Contains(text, w) {
				t.Errorf("a trust-quorum rack's page says %q", w)
			}
			continue
		}
		if !strings.Contains(text, w) {
			t.Errorf("page lacks %q:\n%s", w, text)
		}
	}
	pollJS(t, ctx, 15*time.Second, "every member of epoch 1 shown committed",
		`document.querySelectorAll('section[data-epoch="1"] tr[data-member] .badge.ok').length === 4`)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__sameDocument = true`)); err != nil {
		t.Fatal(err)
	}

	target := racktest.Baseboard(r.Processes[2])
	raiseAlarm(t, r, 2)
	racktest.RunTask(t, r.Nexus, trustquorum.Name)
	pollJS(t, ctx, 15*time.Second, "the alarm to be highlighted without a reload",
		fmt.Sprintf(`(function(){ var tr = document.querySelector('tr.failing[data-node="%s"]');
			return !!tr && tr.textContent.includes("mismatched_configurations") &&
				getComputedStyle(tr).backgroundColor !== getComputedStyle(document.body).backgroundColor; })()`, target.Serial))
	screenshot(t, ctx, "trust-quorum-alarm.png")

	gone := racktest.Baseboard(r.Processes[3])
	if _, err := r.Nexus.Client.TrustQuorumMembership(context.Background(),
		api.TrustQuorumMembership{Remove: []api.Baseboard{gone}}); err != nil {
		t.Fatal(err)
	}
	pollJS(t, ctx, 30*time.Second, "epoch 2 to appear and commit in place",
		`(function(){ var s = document.querySelector('section[data-epoch="2"]');
			return !!s && s.querySelector('h2 .badge').textContent === "committed" &&
				s.querySelector('[data-acked]').textContent.trim() === "3/3 acked"; })()`)
	if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__sameDocument === true`)); err != nil || !same {
		t.Fatalf("the page was reloaded instead of refreshed in place (%v)", err)
	}
	screenshot(t, ctx, "trust-quorum.png")

	if err := chromedp.Do(ctx,
		chromedp.EmulateViewport(390, 800),
		chromedp.Navigate(base+"/ui/trust-quorum"),
		chromedp.WaitVisible(chromedp.CSS(`section[data-epoch="2"]`)),
	); err != nil {
		t.Fatal(err)
	}
	fits, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth <= window.innerWidth`))
	if err != nil || !fits {
		t.Errorf("the trust-quorum page overflows a 390 px screen (%v)", err)
	}
	screenshot(t, ctx, "trust-quorum-narrow.png")
}

package ui_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/bgtasks/sledliveness"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/nexus/model"
)

// operator is a browser signed in to a Nexus's status pages: its session
// cookie in a jar, and the CSRF token its pages' forms carry. It does not
// follow redirects, so tests see them.
type operator struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

var csrfRE = regexp.MustCompile(`name="csrf_token" value="([0-9a-f]+)"`)

// signIn signs in on /ui/login with token, as a person would.
func signIn(t *testing.T, nx *racktest.Nexus, token string) *operator {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	o := &operator{t: t, base: nx.ExternalURL(), c: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	code, body, h := o.send("POST", "/ui/login", url.Values{"token": {token}, "next": {"/ui/background-tasks"}}, o.base)
	if code != 303 || h.Get("Location") != "/ui/background-tasks" {
		t.Fatalf("sign in: %d to %q\n%s", code, h.Get("Location"), body)
	}
	_, body, _ = o.get("/ui/background-tasks")
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token on the signed-in page:\n%s", body)
	}
	o.csrf = m[1]
	return o
}

func (o *operator) send(method, path string, form url.Values, origin string) (int, string, http.Header) {
	o.t.Helper()
	u := path
	if strings.HasPrefix(path, "/") {
		u = o.base + path
	}
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		o.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := o.c.Do(req)
	if err != nil {
		o.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// get fetches a page (a path, or a full URL).
func (o *operator) get(path string) (int, string, http.Header) {
	o.t.Helper()
	return o.send("GET", path, nil, "")
}

// post submits a form from one of this Nexus's pages: same origin, with
// the session's CSRF token.
func (o *operator) post(path string, form url.Values) (int, string, http.Header) {
	o.t.Helper()
	f := url.Values{}
	for k, v := range form {
		f[k] = v
	}
	f.Set("csrf_token", o.csrf)
	return o.send("POST", path, f, o.base)
}

// The status pages are locked: without a session a browser is sent to the
// login page, a viewer may look but not use the forms, and no form can be
// posted from another site — each refusal changes nothing.
func TestStatusPagesAreLocked(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	racktest.WaitTask(t, nx, sledliveness.Name, 1)
	anon := &operator{t: t, base: nx.ExternalURL(), c: &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}

	// No session: to the login page, and back after.
	code, _, h := anon.get("/ui/background-tasks/sled_liveness?fragment=1")
	if code != 303 || !strings.HasPrefix(h.Get("Location"), "/ui/login?next=%2Fui%2Fbackground-tasks%2Fsled_liveness") {
		t.Fatalf("anonymous page: %d to %q", code, h.Get("Location"))
	}
	if code, body, _ := anon.get("/ui/login"); code != 200 || !strings.Contains(body, `id="token"`) {
		t.Fatalf("login page: %d\n%s", code, body)
	}
	if code, _, _ := anon.send("POST", "/ui/background-tasks/sled_liveness/activate", url.Values{}, anon.base); code != 401 {
		t.Fatalf("anonymous form: %d", code)
	}
	// A wrong token is refused with a reason, and sets no cookie.
	code, body, h := anon.send("POST", "/ui/login", url.Values{"token": {"rp_nope"}}, anon.base)
	if code != 401 || !strings.Contains(body, "not a token this rack issued") || h.Get("Set-Cookie") != "" {
		t.Fatalf("wrong token: %d %q\n%s", code, h.Get("Set-Cookie"), body)
	}
	// The session cookie cannot be read by scripts or sent cross-site.
	code, _, h = anon.send("POST", "/ui/login", url.Values{"token": {nx.AdminToken}, "next": {"https://evil.example/"}}, anon.base)
	cookie := h.Get("Set-Cookie")
	if code != 303 || h.Get("Location") != "/ui/background-tasks" || !strings.Contains(cookie, "HttpOnly") ||
		!strings.Contains(cookie, "SameSite=Strict") || !strings.Contains(cookie, "Path=/ui") {
		t.Fatalf("login: %d to %q, cookie %q", code, h.Get("Location"), cookie)
	}

	admin := signIn(t, nx, nx.AdminToken)
	before := db.Count(t, `SELECT count(*) FROM bgtask_setting`)
	activations := func() uint64 {
		task, err := nx.Client.BackgroundTaskGet(context.Background(), sledliveness.Name)
		if err != nil {
			t.Fatal(err)
		}
		return task.Activations
	}
	runs := activations()
	forms := []struct {
		path string
		form url.Values
	}{
		{"/ui/background-tasks/sled_liveness/activate", url.Values{}},
		{"/ui/background-tasks/sled_liveness/enabled", url.Values{"enabled": {"false"}}},
		{"/ui/logout", url.Values{}},
		{"/ui/login", url.Values{"token": {nx.AdminToken}}},
	}
	for _, f := range forms {
		withToken := url.Values{"csrf_token": {admin.csrf}}
		for k, v := range f.form {
			withToken[k] = v
		}
		// Another site's page posting the form, with the operator's
		// cookie and even the right CSRF token: refused by its origin.
		for _, origin := range []string{"http://evil.example", "null"} {
			if code, body, _ := admin.send("POST", f.path, withToken, origin); code != 403 {
				t.Errorf("%s from %s: %d\n%s", f.path, origin, code, body)
			}
		}
		// No Origin and no Referer: not provably ours.
		if code, _, _ := admin.send("POST", f.path, withToken, ""); code != 403 {
			t.Errorf("%s without an origin: %d", f.path, code)
		}
	}
	// Same origin but no (or a wrong) CSRF token: refused too.
	for _, tok := range []string{"", "00112233445566778899aabbccddeeff"} {
		if code, _, _ := admin.send("POST", "/ui/background-tasks/sled_liveness/enabled",
			url.Values{"enabled": {"false"}, "csrf_token": {tok}}, admin.base); code != 403 {
			t.Errorf("CSRF token %q: %d", tok, code)
		}
	}
	if got := db.Count(t, `SELECT count(*) FROM bgtask_setting`); got != before {
		t.Fatalf("a refused form changed a switch: %d rows, %d before", got, before)
	}
	if got := activations(); got > runs+1 { // one periodic run may land meanwhile
		t.Fatalf("refused forms activated the task: %d activations, %d before", got, runs)
	}
	// The session still works: the logout above was refused.
	if code, _, _ := admin.get("/ui/background-tasks"); code != 200 {
		t.Fatalf("admin session after refused forms: %d", code)
	}

	// A viewer sees the pages without the forms, and cannot post them.
	viewer := signIn(t, nx, nx.Token(t, "looker", model.RoleViewer, 0))
	code, body, _ = viewer.get("/ui/background-tasks/sled_liveness")
	if code != 200 || strings.Contains(body, `id="activate"`) || !strings.Contains(body, "(viewer)") {
		t.Fatalf("viewer page: %d\n%s", code, body)
	}
	if code, body, _ := viewer.post("/ui/background-tasks/sled_liveness/activate", nil); code != 403 || !strings.Contains(body, "viewer token") {
		t.Fatalf("viewer activation: %d\n%s", code, body)
	}

	// Revoking the token ends the session at its next request.
	victim := nx.Token(t, "short-lived", model.RoleViewer, 0)
	s := signIn(t, nx, victim)
	toks, err := nx.Client.TokenList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.Name == "short-lived" {
			if _, err := nx.Client.TokenRevoke(context.Background(), tk.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	code, _, h = s.get("/ui/background-tasks")
	if code != 303 || !strings.Contains(h.Get("Location"), "why=token_revoked") {
		t.Fatalf("revoked session: %d to %q", code, h.Get("Location"))
	}

	// Signing out ends the session.
	if code, _, _ := admin.post("/ui/logout", nil); code != 303 {
		t.Fatalf("logout: %d", code)
	}
	if code, _, _ := admin.get("/ui/background-tasks"); code != 303 {
		t.Fatalf("after logout: %d", code)
	}
}

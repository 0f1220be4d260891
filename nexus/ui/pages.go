// Package ui is Nexus's status pages for operators: server-rendered
// html/template pages under /ui on the external listener, with no external
// assets. Each page is built in two steps: a handler gathers what it shows
// from the application layer (nexus/app), a pure build function turns that
// into a view model (tested without a server), and a template renders it.
package ui

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog/hlog"

	"github.com/rackplane/rackplane/internal/buildinfo"
	"github.com/rackplane/rackplane/internal/humanize"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/model"
)

// Each page is parsed together with the shared layout (navigation, inline CSS and a
// small script) and defines two templates: "content", the page body, and
// "fragment", the part that refreshes itself. An element with
// data-refresh="URL" is replaced every few seconds by the HTML that URL
// returns, so pages stay current without a full reload; handlers answer
// ?fragment=1 with just the fragment.

//go:embed templates/*.html
var uiFiles embed.FS

// uiNavItem is one entry of the navigation bar.
type uiNavItem struct {
	Label, Path string
	Active      bool
}

// uiNav lists the status pages in the navigation bar; a new page adds its
// line here and mounts its routes from its own file (see mountUI).
var uiNav = []uiNavItem{
	{Label: "Background tasks", Path: "/ui/background-tasks"},
	{Label: "Sleds", Path: "/ui/sleds"},
	{Label: "Replication", Path: "/ui/replication"},
	{Label: "Repos", Path: "/ui/repos"},
	{Label: "Trust roots", Path: "/ui/trust-roots"},
	{Label: "Trust quorum", Path: "/ui/trust-quorum"},
	{Label: "Audit log", Path: "/ui/audit-log"},
}

// uiPage is what the layout renders.
type uiPage struct {
	Title   string
	Nav     []uiNavItem
	NexusID string
	// Flash is a one-line confirmation after a form post.
	Flash string
	// Refresh is how often data-refresh elements reload, in milliseconds.
	Refresh int
	Body    any
	// Who is the signed-in operator ("" on the login page) and Admin
	// whether they may use the forms; CSRF is the token every form
	// carries.
	Who   string
	Admin bool
	CSRF  string
	// Version is the build serving the page (the footer says it).
	Version string
}

// uiTemplates holds one parsed template set per page file.
type uiTemplates map[string]*template.Template

func parseUI() (uiTemplates, error) {
	base, err := template.New("").Funcs(uiFuncs).ParseFS(uiFiles, "templates/layout.html", "templates/json.html")
	if err != nil {
		return nil, err
	}
	pages, err := fs.Glob(uiFiles, "templates/page_*.html")
	if err != nil {
		return nil, err
	}
	out := uiTemplates{}
	for _, p := range pages {
		clone, err := base.Clone()
		if err != nil {
			return nil, err
		}
		t, err := clone.ParseFS(uiFiles, p)
		if err != nil {
			return nil, err
		}
		out[strings.TrimSuffix(strings.TrimPrefix(p, "templates/page_"), ".html")] = t
	}
	return out, nil
}

// uiPages is parsed once at start: the templates are part of the binary,
// so a parse error is a build bug that every test of the package catches.
var uiPages = func() uiTemplates {
	t, err := parseUI()
	if err != nil {
		panic(fmt.Sprintf("nexus: status page templates: %v", err))
	}
	return t
}()

// Pages serves the status pages of one Nexus.
type Pages struct {
	app *app.App
}

// New returns the status pages over a.
func New(a *app.App) *Pages { return &Pages{app: a} }

// Mount mounts every page on r.
func (s *Pages) Mount(r chi.Router) {
	r.Get("/ui/login", s.uiLogin)
	r.Post("/ui/login", s.uiLoginPost)
	r.Post("/ui/logout", s.uiLogout)
	r.Group(func(r chi.Router) {
		r.Use(s.authenticate)
		r.Get("/ui", redirectTo("/ui/background-tasks"))
		r.Get("/ui/", redirectTo("/ui/background-tasks"))
		s.mountBackgroundTaskPages(r)
		s.mountReplicationPages(r)
		s.mountSledPages(r)
		s.mountTrustRootPages(r)
		s.mountTrustQuorumPages(r)
		r.Get("/ui/audit-log", s.uiAuditLog)
	})
}

func redirectTo(path string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, path, http.StatusSeeOther) }
}

// renderPage writes page's layout, or only its fragment when the request
// asks for ?fragment=1 (the refresh script does).
func (s *Pages) renderPage(w http.ResponseWriter, r *http.Request, status int, page string, p uiPage) {
	t := uiPages[page]
	name := "layout"
	if r.URL.Query().Get("fragment") == "1" {
		name = "fragment"
	}
	p.NexusID = s.app.NexusID().String()
	p.Version = pageVersion()
	if sess, ok := sessionFrom(r.Context()); ok {
		p.Who, p.Admin, p.CSRF = sess.actor.Name, sess.actor.Role.Allows(model.RoleAdmin), sess.csrf
	}
	if p.Refresh == 0 {
		p.Refresh = 2000
	}
	for _, n := range uiNav {
		n.Active = strings.HasPrefix(r.URL.Path, n.Path)
		p.Nav = append(p.Nav, n)
	}
	// Rendered to a buffer first, so a failure is a clean 500 and not half
	// a page.
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, name, p); err != nil {
		hlog.FromRequest(r).Error().Err(err).Str("page", page).Msg("rendering status page")
		http.Error(w, "internal error rendering the page; the server log has the details", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// pageVersion is the footer's build line.
var pageVersion = sync.OnceValue(func() string { return buildinfo.Read().String() })

// uiError renders an error inside the layout.
func (s *Pages) uiError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.renderPage(w, r, status, "error", uiPage{Title: http.StatusText(status), Body: msg})
}

var uiFuncs = template.FuncMap{
	"shortID": func(id string) string {
		if len(id) > 8 {
			return id[:8]
		}
		return id
	},
	"exact": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000 UTC") },
}

// formatMS renders a duration given in milliseconds with sensible
// precision: "0.12 ms", "37 ms", "2.4 s", "3m05s".
func formatMS(ms float64) string {
	switch {
	case ms < 10:
		return fmt.Sprintf("%.2f ms", ms)
	case ms < 1000:
		return fmt.Sprintf("%.0f ms", ms)
	case ms < 60_000:
		return fmt.Sprintf("%.1f s", ms/1000)
	}
	return humanize.Duration(time.Duration(ms * float64(time.Millisecond)))
}

// formatSeconds renders a period such as 15 or 0.2 seconds as "15s" or
// "200ms".
func formatSeconds(sec float64) string {
	d := time.Duration(math.Round(sec * float64(time.Second)))
	return d.String()
}

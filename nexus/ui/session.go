package ui

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/model"
)

// Who may see and use the status pages. An operator signs in on
// /ui/login with a token; the page sets a session cookie holding it
// (HttpOnly, SameSite=Strict, Secure under TLS), so every request is
// authenticated exactly as the API authenticates a bearer token, and
// revoking the token ends the session. Scripts may send the bearer header
// instead. Reading takes a viewer, every form an admin.
//
// Forms are protected against cross-site requests twice: a browser that
// sends the cookie must also send Origin (or Referer) naming this very
// Nexus, and the form must carry the CSRF token derived from the session,
// which a page on another site cannot read.

const (
	sessionCookie = "rackplane_session"
	// sessionLife bounds a session however long its token lives.
	sessionLife = 12 * time.Hour
	csrfField   = "csrf_token"
)

// session is who is looking at a page.
type session struct {
	actor app.Actor
	// csrf is the token forms carry; empty for bearer-header callers,
	// who are not browsers riding on a cookie.
	csrf string
}

type sessionKey struct{}

func sessionFrom(ctx context.Context) (session, bool) {
	s, ok := ctx.Value(sessionKey{}).(session)
	return s, ok
}

// csrfFor derives the forms' token from the session's secret: a page on
// another site can neither read it nor compute it.
func csrfFor(secret string) string {
	sum := sha256.Sum256([]byte("rackplane-csrf-v1\x00" + secret))
	return hex.EncodeToString(sum[:16])
}

// sameOrigin reports whether a browser says the request comes from a page
// of this server: Origin when the browser sends it, else Referer.
func sameOrigin(r *http.Request) bool {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	self := scheme + "://" + r.Host
	if o := r.Header.Get("Origin"); o != "" {
		return o == self
	}
	ref, err := url.Parse(r.Header.Get("Referer"))
	if err != nil || ref.Host == "" {
		return false
	}
	return ref.Scheme+"://"+ref.Host == self
}

// needRole is what a page request needs: reading takes a viewer, posting
// a form an admin.
func needRole(r *http.Request) model.Role {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return model.RoleViewer
	}
	return model.RoleAdmin
}

// authenticate is the middleware in front of every page but the login.
func (s *Pages) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret, viaCookie := httpx.BearerToken(r), false
		if secret == "" {
			if c, err := r.Cookie(sessionCookie); err == nil {
				secret, viaCookie = c.Value, true
			}
		}
		if secret == "" {
			s.toLogin(w, r, "")
			return
		}
		actor, err := s.app.Authenticate(r.Context(), secret)
		if err != nil {
			if fault.KindOf(err) != fault.Unauthenticated {
				s.uiUnavailable(w, r, "the session", err)
				return
			}
			if viaCookie {
				clearSession(w, r)
			}
			s.toLogin(w, r, fault.CodeOf(err))
			return
		}
		sess := session{actor: actor}
		if viaCookie {
			sess.csrf = csrfFor(secret)
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				if !sameOrigin(r) || subtle.ConstantTimeCompare([]byte(r.PostFormValue(csrfField)), []byte(sess.csrf)) != 1 {
					s.uiError(w, r, http.StatusForbidden, "This form did not come from this Nexus's own pages "+
						"(cross-site request), so nothing was changed. Reload the page and try again.")
					return
				}
			}
		}
		ctx := app.WithActor(context.WithValue(r.Context(), sessionKey{}, sess), actor)
		if _, err := app.Authorize(ctx, needRole(r)); err != nil {
			s.uiError(w, r.WithContext(ctx), http.StatusForbidden, "Your token ("+actor.Name+") is a "+string(actor.Role)+
				" token: it may look but not change anything. Sign in with an admin token to do this.")
			return
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// toLogin sends a browser to the login page (and back here after), and
// answers anything else with a 401.
func (s *Pages) toLogin(w http.ResponseWriter, r *http.Request, why string) {
	if r.Method != http.MethodGet {
		s.uiError(w, r, http.StatusUnauthorized, "Sign in first: this page needs an operator token.")
		return
	}
	q := url.Values{"next": {r.URL.RequestURI()}}
	if why != "" {
		q.Set("why", why)
	}
	http.Redirect(w, r, "/ui/login?"+q.Encode(), http.StatusSeeOther)
}

func clearSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/ui", MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// safeNext is where to go after signing in: a status page of this server,
// never another site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui") || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") ||
		strings.HasPrefix(next, "/ui/login") {
		return "/ui/background-tasks"
	}
	return next
}

// loginPage is the body of /ui/login.
type loginPage struct {
	Next    string
	Problem string
}

var loginProblems = map[string]string{
	api.CodeInvalidToken:    "That is not a token this rack issued.",
	api.CodeTokenExpired:    "Your token has expired; ask an admin for a new one.",
	api.CodeTokenRevoked:    "Your token was revoked; ask an admin for a new one.",
	api.CodeUnauthenticated: "Paste an operator token (rp_...).",
}

func (s *Pages) uiLogin(w http.ResponseWriter, r *http.Request) {
	p := loginPage{Next: safeNext(r.URL.Query().Get("next")), Problem: loginProblems[r.URL.Query().Get("why")]}
	s.renderPage(w, r, http.StatusOK, "login", uiPage{Title: "Sign in", Body: p})
}

func (s *Pages) uiLoginPost(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	next := safeNext(r.PostFormValue("next"))
	// A login form posted from another site would sign the operator's
	// browser in as the attacker.
	if !sameOrigin(r) {
		s.uiError(w, r, http.StatusForbidden, "This sign-in did not come from this Nexus's own login page.")
		return
	}
	secret := strings.TrimSpace(r.PostFormValue("token"))
	actor, err := s.app.Authenticate(r.Context(), secret)
	if err != nil {
		if fault.KindOf(err) != fault.Unauthenticated {
			s.uiUnavailable(w, r, "the token", err)
			return
		}
		msg := loginProblems[fault.CodeOf(err)]
		if msg == "" {
			msg = loginProblems[api.CodeUnauthenticated]
		}
		s.renderPage(w, r, http.StatusUnauthorized, "login", uiPage{Title: "Sign in", Body: loginPage{Next: next, Problem: msg}})
		return
	}
	life := sessionLife
	if t := actor.Token; t != nil && t.TimeExpires != nil {
		life = min(life, time.Until(*t.TimeExpires))
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: secret, Path: "/ui", MaxAge: int(life.Seconds()),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// uiLogout ends the browser's session; any role may, but only from this
// Nexus's own pages (another site must not sign the operator out).
func (s *Pages) uiLogout(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		s.uiError(w, r, http.StatusForbidden, "This sign-out did not come from this Nexus's own pages.")
		return
	}
	clearSession(w, r)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

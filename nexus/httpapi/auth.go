package httpapi

import (
	"net/http"

	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/model"
)

// RoleFor is the role a request needs: reading takes a viewer, anything
// else an admin. It is the whole authorisation rule of the external API.
func RoleFor(r *http.Request) model.Role {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return model.RoleViewer
	}
	return model.RoleAdmin
}

// publicPaths answer without a token: whether Nexus is up and ready
// (saying only ok or failing per check) and the API's own description.
var publicPaths = map[string]bool{"/healthz": true, "/readyz": true, "/openapi.json": true}

// Operators authenticates the caller by its bearer token and checks the
// role the request needs (RoleFor): 401 without a valid token, 403 with
// too weak a role, each saying what to do. The actor rides in the
// request's context to the application layer, which records who changed
// what.
func (s *API) Operators(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if publicPaths[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		actor, err := s.app.Authenticate(r.Context(), httpx.BearerToken(r))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rackplane"`)
			httpx.WriteError(w, r, err)
			return
		}
		ctx := app.WithActor(r.Context(), actor)
		if _, err := app.Authorize(ctx, RoleFor(r)); err != nil {
			if RoleFor(r) == model.RoleAdmin {
				s.app.AuditRefusal(ctx, r.Method+" "+r.URL.Path, r.URL.Path, err)
			}
			httpx.WriteError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

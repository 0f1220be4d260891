package httpx

import (
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
)

// PathUUID parses the URL path parameter name as a UUID (400 if it is not).
func PathUUID(r *http.Request, name string) (uuid.UUID, error) {
	raw := chi.URLParam(r, name)
	id, err := uuid.Parse(raw)
	if err != nil {
		return uuid.Nil, BadRequest(api.CodeInvalidParameter, "path parameter %s: %q is not a UUID", name, raw)
	}
	return id, nil
}

// QueryInt parses the optional query parameter name as an integer in
// [min, max], returning def when it is absent.
func QueryInt(r *http.Request, name string, def, min, max int) (int, error) {
	raw := r.URL.Query().Get(name)
	if raw == "" {
		return def, nil
	}
	v, err := strconv.Atoi(raw)
	if err != nil || v < min || v > max {
		return 0, BadRequest(api.CodeInvalidParameter, "query parameter %s must be an integer from %d to %d, not %q",
			name, min, max, raw)
	}
	return v, nil
}

// Pagination is a parsed limit and page token.
type Pagination struct {
	Limit int
	Token string
}

// MaxPageLimit bounds page sizes.
const MaxPageLimit = 1000

// PageParams parses ?limit= (default 100) and ?page_token=.
func PageParams(r *http.Request) (Pagination, error) {
	limit, err := QueryInt(r, "limit", 100, 1, MaxPageLimit)
	if err != nil {
		return Pagination{}, err
	}
	return Pagination{Limit: limit, Token: r.URL.Query().Get("page_token")}, nil
}

// UUIDToken parses a page token that is a UUID (uuid.Nil when absent).
func (p Pagination) UUIDToken() (uuid.UUID, error) {
	if p.Token == "" {
		return uuid.Nil, nil
	}
	id, err := uuid.Parse(p.Token)
	if err != nil {
		return uuid.Nil, BadRequest(api.CodeInvalidParameter, "page_token %q is not one this server issued", p.Token)
	}
	return id, nil
}

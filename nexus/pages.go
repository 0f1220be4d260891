package nexus

import (
	"context"
	"net/http"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/httpx"
)

// listByID serves a listing ordered by UUID: ?limit= and ?page_token=,
// where the token is the last id of the previous page. list returns up to
// limit items with ids after `after`.
func listByID[T any](w http.ResponseWriter, r *http.Request,
	list func(ctx context.Context, after uuid.UUID, limit int) ([]T, error), id func(T) uuid.UUID) error {
	page, err := httpx.PageParams(r)
	if err != nil {
		return err
	}
	after, err := page.UUIDToken()
	if err != nil {
		return err
	}
	// One more than asked tells whether a next page exists.
	items, err := list(r.Context(), after, page.Limit+1)
	if err != nil {
		return err
	}
	writePage(w, items, page.Limit, func(t T) string { return id(t).String() })
	return nil
}

// writePage writes up to limit of items (which may hold one more, to tell
// whether a next page exists) with the next page's token.
func writePage[T any](w http.ResponseWriter, items []T, limit int, token func(T) string) {
	out := api.Page[T]{Items: items}
	if len(items) > limit {
		out.Items = items[:limit]
		out.NextPage = token(out.Items[limit-1])
	}
	if out.Items == nil {
		out.Items = []T{}
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

package ui

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/humanize"
	"github.com/rackplane/rackplane/nexus/model"
)

// The trust-roots page: the roots uploads are verified against, and the
// live repos each one signed (a root that signs live repos is not deleted
// without force, and the page says so).

// trustRootLimit bounds the roots listed; racks register a handful.
const trustRootLimit = 1000

func (s *Pages) mountTrustRootPages(r chi.Router) {
	r.Get("/ui/trust-roots", s.uiTrustRoots)
}

type trustRootsPage struct {
	Rows []trustRootRow
	// None is set when no root is registered: every upload is refused.
	None bool
}

type trustRootRow struct {
	ID, Short, SHA256     string
	Version               int64
	Expires, ExpiresTitle string
	Expired               bool
	Added, AddedTitle     string
	LiveRepos             []string
	JSON                  string
}

// buildTrustRootsPage renders roots (oldest first: the order uploads try
// them in) with the live repos verified against each.
func buildTrustRootsPage(roots []model.TrustRoot, live []model.TufRepo, now time.Time) trustRootsPage {
	p := trustRootsPage{None: len(roots) == 0}
	signed := map[uuid.UUID][]string{}
	for _, r := range live {
		signed[r.TrustRootID] = append(signed[r.TrustRootID], r.SystemVersion)
	}
	slices.SortStableFunc(roots, func(a, b model.TrustRoot) int { return a.TimeCreated.Compare(b.TimeCreated) })
	for _, t := range roots {
		row := trustRootRow{ID: t.ID.String(), Short: t.ID.String()[:8], SHA256: t.SHA256, Version: t.Version,
			Expires: t.Expires.UTC().Format("2006-01-02"), ExpiresTitle: t.Expires.UTC().Format(time.RFC3339),
			Expired: t.Expires.Before(now), Added: humanize.Ago(now, t.TimeCreated),
			AddedTitle: t.TimeCreated.UTC().Format(time.RFC3339), LiveRepos: signed[t.ID]}
		slices.Sort(row.LiveRepos)
		var pretty bytes.Buffer
		if json.Indent(&pretty, t.JSON, "", "  ") == nil {
			row.JSON = pretty.String()
		} else {
			row.JSON = string(t.JSON)
		}
		p.Rows = append(p.Rows, row)
	}
	return p
}

func (s *Pages) uiTrustRoots(w http.ResponseWriter, r *http.Request) {
	roots, err := s.app.ListTrustRoots(r.Context(), uuid.Nil, trustRootLimit)
	if err != nil {
		s.uiUnavailable(w, r, "the trust roots", err)
		return
	}
	live, err := s.app.LiveRepos(r.Context())
	if err != nil {
		s.uiUnavailable(w, r, "the repos", err)
		return
	}
	s.renderPage(w, r, http.StatusOK, "trustroots", uiPage{Title: "Trust roots",
		Body: buildTrustRootsPage(roots, live, time.Now())})
}

package ui

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/humanize"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/model"
)

// The sled pages: every registered sled with its health (M.2s present of
// those it should have, and later its storage lock), and per sled its
// inventory and what the replication task last saw of it.

func (s *Pages) mountSledPages(r chi.Router) {
	r.Get("/ui/sleds", s.uiSledList)
	r.Get("/ui/sleds/{sled_id}", s.uiSled)
}

type sledsPage struct {
	Rows            []sledRow
	Total, Degraded int
	Unreachable     int
	Observed        string
}

type sledRow struct {
	ID, Short, Serial, Part, Link string
	Address                       string
	State, StateClass             string
	Health, HealthClass           string
	Problems                      []string
	M2, M2Title                   string
	Generation                    string
	Replication, ReplicationClass string
	ReplicationTitle              string
	LastSeen, LastSeenTitle       string
	Class                         string
}

// sledHealthView gives a health state its badge class.
func sledHealthView(h model.SledHealth) (text, class string) {
	switch h.State {
	case model.SledHealthOK:
		return "ok", "ok"
	case model.SledHealthDegraded:
		return "degraded", "degraded"
	}
	return h.State, ""
}

func sledStateView(s model.Sled) (text, class string) {
	switch {
	case s.Policy == model.SledPolicyExpunged:
		return "expunged", "disabled"
	case s.State == model.SledStateActive:
		return "active", "ok"
	case s.State == model.SledStateUnreachable:
		return "unreachable", "error"
	}
	return s.State, ""
}

// sledReplication says how much of the wanted set the replication task
// last saw on the sled.
func sledReplication(m model.ReplicationMatrix, id uuid.UUID) (text, class, title string) {
	if m.Time.IsZero() {
		return "not observed yet", "unknown", "the replication task has not listed the sleds' holdings on this Nexus yet"
	}
	for i, st := range m.Sleds {
		if st.ID != id {
			continue
		}
		if st.Error != "" {
			return "did not answer", "bad", st.Error
		}
		full := 0
		for _, c := range m.Copies[i] {
			if c >= 0 && int(c) >= app.FullCopies(st) {
				full++
			}
		}
		class = "full"
		if full < len(m.Artifacts) {
			class = "part"
		}
		return fmt.Sprintf("%d/%d on every M.2", full, len(m.Artifacts)), class,
			fmt.Sprintf("%d of the %d wanted artifacts are on every M.2 the sled should have, as observed at generation %d",
				full, len(m.Artifacts), m.Generation)
	}
	return "not replicated to", "unknown", "the last replication run did not include this sled (it is not active and in service)"
}

func sledListRow(s model.Sled, m model.ReplicationMatrix, now time.Time) sledRow {
	h := app.SledHealth(s)
	row := sledRow{ID: s.ID.String(), Short: s.ID.String()[:8], Serial: s.Baseboard.Serial, Part: s.Baseboard.Part,
		Link: "/ui/sleds/" + s.ID.String(), Address: s.SledAgentAddress, Problems: h.Problems,
		LastSeen: humanize.Ago(now, s.TimeLastSeen), LastSeenTitle: s.TimeLastSeen.UTC().Format(time.RFC3339), Generation: "—"}
	row.State, row.StateClass = sledStateView(s)
	row.Health, row.HealthClass = sledHealthView(h)
	if h.State == model.SledHealthUnknown {
		row.M2 = "—"
	} else {
		row.M2 = fmt.Sprintf("%d/%d", h.M2Present, h.M2Expected)
		var missing []string
		for _, d := range h.M2Missing {
			missing = append(missing, d.Path)
		}
		row.M2Title = fmt.Sprintf("%d of the %d M.2s it should have are in use", h.M2Present, h.M2Expected)
		if len(missing) > 0 {
			row.M2Title += "; missing: " + strings.Join(missing, ", ")
		}
	}
	if s.ArtifactGeneration != nil {
		row.Generation = fmt.Sprint(*s.ArtifactGeneration)
	}
	row.Replication, row.ReplicationClass, row.ReplicationTitle = sledReplication(m, s.ID)
	switch {
	case row.StateClass == "error":
		row.Class = "failing"
	case h.State == model.SledHealthDegraded:
		row.Class = "degraded"
	}
	return row
}

// buildSledsPage renders the sled list: problems first (unreachable, then
// degraded), then by serial.
func buildSledsPage(sleds []model.Sled, m model.ReplicationMatrix, now time.Time) sledsPage {
	p := sledsPage{Total: len(sleds)}
	if !m.Time.IsZero() {
		p.Observed = humanize.Ago(now, m.Time)
	}
	for _, s := range sleds {
		row := sledListRow(s, m, now)
		switch {
		case row.Class == "failing":
			p.Unreachable++
		case row.Class == "degraded":
			p.Degraded++
		}
		p.Rows = append(p.Rows, row)
	}
	rank := func(r sledRow) int {
		switch r.Class {
		case "failing":
			return 0
		case "degraded":
			return 1
		}
		return 2
	}
	slices.SortStableFunc(p.Rows, func(a, b sledRow) int {
		if d := rank(a) - rank(b); d != 0 {
			return d
		}
		return strings.Compare(a.Serial+a.ID, b.Serial+b.ID)
	})
	return p
}

func (s *Pages) uiSledList(w http.ResponseWriter, r *http.Request) {
	sleds, err := s.app.ListSleds(r.Context(), uuid.Nil, sledListLimit)
	if err != nil {
		s.uiUnavailable(w, r, "the sleds", err)
		return
	}
	p := buildSledsPage(sleds, s.app.ReplicationMatrix(), time.Now())
	s.renderPage(w, r, http.StatusOK, "sleds", uiPage{Title: "Sleds", Body: p})
}

type sledPage struct {
	Row      sledRow
	Sled     model.Sled
	Health   model.SledHealth
	M2s      []m2Row
	Created  string
	Complete string
	// StorageLock is the health's storage lock, in words.
	StorageLock string
}

type m2Row struct {
	Path, State, Class, Free, Total, Used, Error string
}

// buildSledPage renders one sled.
func buildSledPage(s model.Sled, m model.ReplicationMatrix, now time.Time) sledPage {
	h := app.SledHealth(s)
	p := sledPage{Row: sledListRow(s, m, now), Sled: s, Health: h, Created: humanize.Ago(now, s.TimeCreated),
		Complete: "—", StorageLock: "unknown: its trust-quorum node has not reported it"}
	if h.StorageLock != model.StorageLockUnknown {
		p.StorageLock = h.StorageLock
	}
	if s.ArtifactsComplete != nil {
		p.Complete = fmt.Sprint(*s.ArtifactsComplete)
	}
	for _, d := range s.M2s {
		row := m2Row{Path: d.Path, State: "present", Class: "ok", Error: d.Error, Free: "—", Total: "—", Used: "—"}
		if !d.Present {
			row.State, row.Class = "missing", "error"
		}
		if d.TotalBytes > 0 {
			row.Free, row.Total = humanize.Bytes(int64(d.FreeBytes)), humanize.Bytes(int64(d.TotalBytes))
			row.Used = fmt.Sprintf("%.0f%%", 100*float64(d.TotalBytes-d.FreeBytes)/float64(d.TotalBytes))
		}
		p.M2s = append(p.M2s, row)
	}
	return p
}

func (s *Pages) uiSled(w http.ResponseWriter, r *http.Request) {
	raw := chi.URLParam(r, "sled_id")
	id, err := uuid.Parse(raw)
	if err != nil {
		s.uiError(w, r, http.StatusNotFound, fmt.Sprintf("%q is not a sled id; the sled list links to every sled.", raw))
		return
	}
	sl, err := s.app.Sled(r.Context(), id)
	if fault.KindOf(err) == fault.NotFound {
		s.uiError(w, r, http.StatusNotFound, fmt.Sprintf("No sled with id %s has registered.", id))
		return
	}
	if err != nil {
		s.uiUnavailable(w, r, "the sled", err)
		return
	}
	p := buildSledPage(sl, s.app.ReplicationMatrix(), time.Now())
	title := sl.Baseboard.Serial
	if title == "" {
		title = id.String()
	}
	s.renderPage(w, r, http.StatusOK, "sled", uiPage{Title: title + " · Sleds", Body: p})
}

package ui

import (
	"net/http"
	"time"

	"github.com/rackplane/rackplane/internal/humanize"
	"github.com/rackplane/rackplane/nexus/model"
)

// auditShown bounds the entries the page shows; rackctl audit list pages
// through the rest.
const auditShown = 200

type auditPage struct {
	Warnings        []string
	Rows            []auditRow
	More            bool
	Refused, Failed int
}

type auditRow struct {
	model.AuditEntry
	Time, TimeTitle     string
	Class, OutcomeClass string
}

// buildAuditPage renders entries (newest first, possibly one more than
// shown, to tell whether there are more).
func buildAuditPage(entries []model.AuditEntry, now time.Time) auditPage {
	var p auditPage
	if len(entries) > auditShown {
		entries, p.More = entries[:auditShown], true
	}
	for _, e := range entries {
		row := auditRow{AuditEntry: e, Time: humanize.Ago(now, e.Time), TimeTitle: e.Time.UTC().Format(time.RFC3339Nano),
			OutcomeClass: "ok"}
		switch e.Outcome {
		case model.AuditRefused:
			row.OutcomeClass, row.Class = "degraded", "warnrow"
			p.Refused++
		case model.AuditFailed:
			row.OutcomeClass, row.Class = "error", "badrow"
			p.Failed++
		}
		p.Rows = append(p.Rows, row)
	}
	return p
}

func (s *Pages) uiAuditLog(w http.ResponseWriter, r *http.Request) {
	entries, err := s.app.AuditLog(r.Context(), nil, auditShown+1)
	if err != nil {
		s.uiUnavailable(w, r, "the audit log", err)
		return
	}
	s.renderPage(w, r, http.StatusOK, "audit", uiPage{Title: "Audit log", Body: buildAuditPage(entries, time.Now())})
}

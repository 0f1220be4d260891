package ui

import (
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/rs/zerolog/hlog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/humanize"
	"github.com/rackplane/rackplane/internal/reqid"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/model"
)

// The repo pages: uploaded TUF repos with their state (a degraded repo
// says why), and per repo its artifacts with how far each has spread to
// sleds, from the replication task's last matrix on this Nexus.

// repoListLimit bounds the repos listed; the pruner keeps a handful live,
// so only a rack with a long pruned history reaches it.
const repoListLimit = 200

type repoListPage struct {
	Warnings   []string
	Rows       []repoRow
	Total      int
	Degraded   int
	Failed     int
	ShowPruned bool
	// More is set when the list was cut at repoListLimit.
	More     bool
	Observed string
	// Uploads are the uploads this Nexus is receiving or verifying.
	Uploads []uploadRow
}

// uploadRow is one upload in progress.
type uploadRow struct {
	ID, File, Actor, RequestID string
	Phase, PhaseFor            string
	Progress, ProgressTitle    string
	// Percent is how much of the body is in (0 when its length is not
	// known), for the progress bar.
	Percent          int
	Started, Version string
}

// buildUploadRows renders the uploads in progress.
func buildUploadRows(ups []model.UploadProgress, now time.Time) []uploadRow {
	var out []uploadRow
	for _, u := range ups {
		row := uploadRow{ID: u.ID.String(), File: u.FileName, Actor: u.Actor, RequestID: u.RequestID, Phase: u.Phase,
			PhaseFor: humanize.Duration(now.Sub(u.PhaseStarted)), Started: humanize.Ago(now, u.Started),
			Version: u.SystemVersion, ProgressTitle: fmt.Sprint(u.BytesReceived, " bytes received")}
		row.Progress = humanize.Bytes(u.BytesReceived) + " received"
		if u.ContentLength > 0 {
			row.Percent = int(min(100, 100*u.BytesReceived/u.ContentLength))
			row.Progress = fmt.Sprintf("%s of %s (%d%%)", humanize.Bytes(u.BytesReceived), humanize.Bytes(u.ContentLength),
				row.Percent)
		}
		if secs := now.Sub(u.Started).Seconds(); secs > 0.5 && u.BytesReceived > 0 {
			row.Progress += fmt.Sprintf(", %s/s", humanize.Bytes(int64(float64(u.BytesReceived)/secs)))
		}
		out = append(out, row)
	}
	return out
}

type repoRow struct {
	Version, Link                 string
	State, StateClass, Reason     string
	Class                         string
	Artifacts                     int
	Size, SizeTitle               string
	Uploaded, UploadedTitle       string
	ValidUntil, ValidTitle        string
	Expired, Kept                 bool
	File                          string
	Pruned                        string
	Replication, ReplicationClass string
	ReplicationTitle              string
}

// repoState gives a repo's state its badge class and row class.
func repoState(r model.TufRepo) (state, badge, row string) {
	switch {
	case r.TimePruned != nil:
		return "pruned", "disabled", "disabled"
	case r.State == api.RepoStateDegraded:
		return r.State, "degraded", "degraded"
	case r.State == api.RepoStateFailed:
		return r.State, "error", "failing"
	case r.State == api.RepoStateActive:
		return r.State, "ok", ""
	}
	return r.State, "", ""
}

func (s *Pages) uiRepoList(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := time.Now()
	p := repoListPage{ShowPruned: r.URL.Query().Get("pruned") == "1", Uploads: buildUploadRows(s.app.Uploads(), now)}
	repos, err := s.app.ListRepos(ctx, p.ShowPruned, nil, repoListLimit+1)
	if err != nil {
		s.uiUnavailable(w, r, "the repos", err)
		return
	}
	if len(repos) > repoListLimit {
		repos, p.More = repos[:repoListLimit], true
	}
	ids := make([]uuid.UUID, len(repos))
	for i, rp := range repos {
		ids[i] = rp.ID
	}
	hashes, err := s.app.RepoHashes(ctx, ids)
	if err != nil {
		hlog.FromRequest(r).Warn().Err(err).Msg("repo list page: reading artifact hashes")
		p.Warnings = append(p.Warnings, "Replication is not shown: "+err.Error())
	}
	m := s.app.ReplicationMatrix()
	if !m.Time.IsZero() {
		p.Observed = humanize.Ago(now, m.Time)
	}
	index := app.MatrixIndex(m)
	for _, rp := range repos {
		row := repoListRow(rp, now)
		if rp.TimePruned == nil && err == nil {
			row.Replication, row.ReplicationClass, row.ReplicationTitle = repoReplication(m, index, hashes[rp.ID])
		}
		p.Rows = append(p.Rows, row)
		p.Total++
		switch {
		case rp.TimePruned != nil:
		case rp.State == api.RepoStateDegraded:
			p.Degraded++
		case rp.State == api.RepoStateFailed:
			p.Failed++
		}
	}
	s.renderPage(w, r, http.StatusOK, "repos", uiPage{Title: "Repos", Body: p})
}

func repoListRow(rp model.TufRepo, now time.Time) repoRow {
	row := repoRow{Version: rp.SystemVersion, Link: "/ui/repos/" + url.PathEscape(rp.SystemVersion),
		Reason: rp.StateReason, Artifacts: rp.ArtifactCount, Size: humanize.Bytes(rp.TotalBytes),
		SizeTitle: fmt.Sprint(rp.TotalBytes, " bytes"), Uploaded: humanize.Ago(now, rp.TimeCreated),
		UploadedTitle: rp.TimeCreated.UTC().Format(time.RFC3339), ValidUntil: rp.ValidUntil.UTC().Format("2006-01-02"),
		ValidTitle: rp.ValidUntil.UTC().Format(time.RFC3339), Expired: !rp.ValidUntil.IsZero() && rp.ValidUntil.Before(now),
		Kept: rp.Kept, File: rp.FileName}
	row.State, row.StateClass, row.Class = repoState(rp)
	if rp.TimePruned != nil {
		row.Pruned = "pruned " + humanize.Ago(now, *rp.TimePruned)
		if rp.PrunedBy != "" {
			row.Pruned += " by " + rp.PrunedBy
		}
	}
	return row
}

// repoReplication sums up how far a repo's artifacts have spread: how
// many are on every M.2 of every sled, or, while some sled does not
// answer, of every sled that did.
func repoReplication(m model.ReplicationMatrix, index map[string]int, hashes []string) (text, class, title string) {
	if len(hashes) == 0 {
		return "—", "none", ""
	}
	if index == nil {
		return "not observed yet", "unknown", "the replication task has not listed the sleds' holdings on this Nexus yet"
	}
	complete, unseen, answered := 0, 0, len(m.Sleds)
	for _, h := range hashes {
		a, ok := index[h]
		if !ok {
			unseen++
			continue
		}
		rep := app.ArtifactReplication(m, a)
		answered = rep.SledsObserved
		if rep.SledsObserved > 0 && rep.SledsHoldingAllM2s == rep.SledsObserved {
			complete++
		}
	}
	class = "part"
	if complete == len(hashes) && answered == len(m.Sleds) {
		class = "full"
	}
	if answered == len(m.Sleds) {
		text = fmt.Sprintf("%d/%d on every sled", complete, len(hashes))
		title = fmt.Sprintf("%d of its %d artifacts are on every M.2 of all %d in-service sleds", complete, len(hashes), answered)
	} else {
		text = fmt.Sprintf("%d/%d on the %d answering sleds", complete, len(hashes), answered)
		title = fmt.Sprintf("%d of its %d artifacts are on every M.2 of the %d sleds that answered; %d in-service sleds "+
			"did not answer, so what they hold is unknown", complete, len(hashes), answered, len(m.Sleds)-answered)
	}
	if unseen > 0 {
		text += fmt.Sprintf(" (%d not observed yet)", unseen)
		title += fmt.Sprintf("; %d were uploaded after the last replication run", unseen)
	}
	return text, class, title
}

type repoPage struct {
	Repo                    model.TufRepo
	State, StateClass       string
	Uploaded, UploadedTitle string
	ValidUntil, ValidTitle  string
	Expired                 bool
	Pruned                  string
	Size                    string
	Artifacts               []repoArtifactRow
	// Observed says when the replication matrix was collected ("" before
	// the first run); Unobserved counts artifacts it does not cover.
	Observed, ObservedTitle string
	Generation              int64
	Unobserved              int
	Complete                int
	// Unanswered counts in-service sleds whose holdings are unknown, of
	// InService.
	Unanswered, InService int
	// Parts counts the artifacts read out of composites on upload.
	Parts int
}

type repoArtifactRow struct {
	model.TufRepoArtifact
	Size, Short    string
	Holding, AllM2 string
	Class, Title   string
	Copying        int
	Observed       bool
}

func (s *Pages) uiRepo(w http.ResponseWriter, r *http.Request) {
	v := chi.URLParam(r, "system_version")
	d, err := s.app.Repo(r.Context(), v)
	if fault.KindOf(err) == fault.NotFound {
		s.uiError(w, r, http.StatusNotFound, fmt.Sprintf("There is no repo with system version %q. "+
			"The repo list shows every uploaded one (pruned ones too, when asked).", v))
		return
	}
	if err != nil {
		s.uiUnavailable(w, r, "the repo", err)
		return
	}
	now := time.Now()
	m := s.app.ReplicationMatrix()
	p := buildRepoPage(d, m, now)
	s.renderPage(w, r, http.StatusOK, "repo", uiPage{Title: v + " · Repos", Body: p})
}

// buildRepoPage renders a repo detail; m only dates the observation.
func buildRepoPage(d model.TufRepoDetail, m model.ReplicationMatrix, now time.Time) repoPage {
	rp := d.Repo
	p := repoPage{Repo: rp, Uploaded: humanize.Ago(now, rp.TimeCreated), UploadedTitle: rp.TimeCreated.UTC().Format(time.RFC3339),
		ValidUntil: rp.ValidUntil.UTC().Format("2006-01-02 15:04 UTC"), ValidTitle: rp.ValidUntil.UTC().Format(time.RFC3339),
		Expired: !rp.ValidUntil.IsZero() && rp.ValidUntil.Before(now), Size: humanize.Bytes(rp.TotalBytes)}
	p.State, p.StateClass, _ = repoState(rp)
	if rp.TimePruned != nil {
		p.Pruned = humanize.Ago(now, *rp.TimePruned)
		if rp.PrunedBy != "" {
			p.Pruned += " by " + rp.PrunedBy
		}
	}
	if !m.Time.IsZero() {
		p.Observed, p.ObservedTitle, p.Generation = humanize.Ago(now, m.Time), m.Time.UTC().Format(time.RFC3339Nano), m.Generation
	}
	for _, a := range partsAfterComposites(d.Artifacts) {
		if a.PartOf != nil {
			p.Parts++
		}
		row := repoArtifactRow{TufRepoArtifact: a, Size: humanize.Bytes(a.Length), Short: shortHash(a.SHA256),
			Holding: "—", AllM2: "—", Class: "unknown", Title: "not observed by this Nexus's replication task yet"}
		if rep := a.Replication; rep != nil {
			row.Observed = true
			row.Holding = fmt.Sprintf("%d/%d", rep.SledsHolding, rep.SledsInService)
			row.AllM2 = fmt.Sprintf("%d/%d", rep.SledsHoldingAllM2s, rep.SledsInService)
			row.Copying = rep.SledsCopying
			p.InService, p.Unanswered = rep.SledsInService, rep.SledsInService-rep.SledsObserved
			row.Title = fmt.Sprintf("%d of %d in-service sleds hold it, %d on every M.2; %d answered",
				rep.SledsHolding, rep.SledsInService, rep.SledsHoldingAllM2s, rep.SledsObserved)
			switch {
			case rep.SledsInService > 0 && rep.SledsHoldingAllM2s == rep.SledsInService:
				row.Class = "full"
				p.Complete++
			case rep.SledsHolding == 0 && rep.SledsInService > 0:
				row.Class = "none"
			default:
				row.Class = "part"
			}
		} else {
			p.Unobserved++
		}
		p.Artifacts = append(p.Artifacts, row)
	}
	return p
}

// partsAfterComposites lists the parts of each composite under it.
func partsAfterComposites(arts []model.TufRepoArtifact) []model.TufRepoArtifact {
	return api.PartsAfterComposites(arts, func(a model.TufRepoArtifact) (uuid.UUID, uuid.UUID, string, bool) {
		if a.PartOf == nil {
			return a.ID, uuid.Nil, "", false
		}
		return a.ID, a.PartOf.ID, a.PartOf.Path, true
	})
}

// uiUnavailable renders a database failure as a 503 with the request id.
func (s *Pages) uiUnavailable(w http.ResponseWriter, r *http.Request, what string, err error) {
	hlog.FromRequest(r).Error().Err(err).Msg("status page: reading " + what)
	s.uiError(w, r, http.StatusServiceUnavailable, fmt.Sprintf("Could not read %s from the database; try again "+
		"shortly (the server log has details under request %s).", what, reqid.From(r.Context())))
}

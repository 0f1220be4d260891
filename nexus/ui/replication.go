package ui

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/rs/zerolog/hlog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/humanize"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/model"
)

// The replication page: what tuf_artifact_replication saw and did on this
// Nexus, and the artifact × sled matrix of its last collect phase. The
// matrix lives only in memory (Task.Matrix), so the page shows this
// Nexus's view; another Nexus shows its own.

// Caps on the rendered matrix: a rack of a thousand sleds and ten thousand
// artifacts must not make a page of ten million cells. The artifacts with
// the fewest holders and the sleds with the fewest complete artifacts are
// shown first, so whatever is wrong is always on screen.
const (
	matrixMaxArtifacts = 100
	matrixMaxSleds     = 48
	// sledListLimit bounds the sled rows read for serial numbers.
	sledListLimit = 5000
	// recentShown is how many of the recent requests are shown unfolded.
	recentShown = 12
)

// taskPages are the status pages made for one task; its generic task page
// links to them.
func (s *Pages) taskPages() map[string]uiNavItem {
	return map[string]uiNavItem{
		s.app.ReplicationTask(): {Label: "artifact × sled matrix and requests", Path: "/ui/replication"},
	}
}

func (s *Pages) mountReplicationPages(r chi.Router) {
	r.Get("/ui/replication", s.uiReplication)
	r.Get("/ui/repos", s.uiRepoList)
	r.Get("/ui/repos/{system_version}", s.uiRepo)
}

// replicationPage is the body of /ui/replication.
type replicationPage struct {
	Warnings []string
	TaskLink string
	Enabled  bool
	// Ran is false until the task has reported a status on this Nexus.
	Ran bool
	// Task is the last activation, summarised as on the task list.
	Task      taskRow
	LastError string
	Summary   []kv
	Converged bool
	// Stopped is why the last run stopped before acting.
	Stopped string
	// Why lists what keeps the rack from converging.
	Why         []string
	Unheld      []artifactRef
	RepoChanges []string
	Dropped     int
	Counters    []counterRow
	// Recent holds the newest requests, Older the rest of the ring
	// buffer (shown folded), OlderFailed how many of those failed.
	Recent      []requestRow
	Older       []requestRow
	OlderFailed int
	Matrix      matrixView
}

type kv struct {
	Key, Value, Title, Class string
}

// artifactRef names an artifact with a link to a repo that carries it.
type artifactRef struct {
	SHA, Short, Label, Link string
}

type counterRow struct {
	Name, Last, Lifetime string
	// LastTitle and LifeTitle give the exact figure behind a rounded one.
	LastTitle, LifeTitle string
	LastBad, LifetimeBad bool
}

type requestRow struct {
	Time, TimeTitle string
	Sled, SledTitle string
	Operation       string
	Short, SHA      string
	Label           string
	Source          string
	Error           string
	Failing         bool
}

// matrixView is the rendered artifact × sled matrix.
type matrixView struct {
	// Observed is false before the task's first collect phase here.
	Observed   bool
	Time       string
	TimeTitle  string
	Generation int64
	Sleds      []matrixSled
	Rows       []matrixRow
	// Totals over the whole matrix, not only the rendered part.
	Artifacts, SledCount int
	Full, Partial        int
	Missing, Unknown     int
	InFlight             int
	// Complete counts artifacts every sled holds on all its M.2s, and
	// CompleteAnswered those every sled that answered does.
	Complete, CompleteAnswered int
	// HiddenArtifacts and HiddenSleds say how much the caps left out.
	HiddenArtifacts, HiddenSleds int
	// AllSleds lists every sled (the columns are capped, this is not).
	AllSleds []matrixSled
}

type matrixSled struct {
	ID, Short, Serial, Address string
	Generation                 uint64
	GenerationClass            string
	M2                         int
	// Expected is how many M.2s it should have; M2Missing is set when
	// fewer are present (the sled is degraded).
	Expected  int
	M2Missing bool
	// GenText and M2Text are "—" when the sled never answered.
	GenText, M2Text string
	InFlight        int
	Error           string
	// Full counts the artifacts it holds on every M.2; Of the artifacts.
	Full, Of int
	Unknown  bool
	Class    string
	Title    string
}

type matrixRow struct {
	SHA, Short, Size string
	Name, Version    string
	Kind             string
	Repos            []string
	// Holders counts sleds with a copy, FullHolders those with a copy on
	// every M.2, Observed the sleds whose holdings are known.
	Holders, FullHolders, Observed int
	// Of counts the in-service sleds.
	Of    int
	Class string
	Cells []matrixCell
}

type matrixCell struct {
	Sled, Text, Class, Title string
}

func (s *Pages) uiReplication(w http.ResponseWriter, r *http.Request) {
	p := s.replicationPage(r.Context(), r)
	s.renderPage(w, r, http.StatusOK, "replication", uiPage{Title: "Replication", Body: p})
}

func (s *Pages) replicationPage(ctx context.Context, r *http.Request) replicationPage {
	now := time.Now()
	name := s.app.ReplicationTask()
	p := replicationPage{TaskLink: "/ui/background-tasks/" + url.PathEscape(name)}
	t, warning, err := s.app.Task(ctx, name)
	if err != nil {
		p.Warnings = append(p.Warnings, "This Nexus does not run the replication task: "+err.Error())
		return p
	}
	if warning != "" {
		p.Warnings = append(p.Warnings, warning)
	}
	p.Enabled = t.Enabled
	p.Task = summaryRow(t.Summary(), now, false)
	if t.LastActivation != nil {
		p.LastError = t.LastActivation.Error
	}
	var st *api.ReplicationStatus
	if len(t.Status) > 0 {
		st = new(api.ReplicationStatus)
		if err := json.Unmarshal(t.Status, st); err != nil {
			p.Warnings = append(p.Warnings, "The task's status could not be read: "+err.Error())
			st = nil
		}
	}
	m := s.app.ReplicationMatrix()
	sleds, labels := s.matrixNames(ctx, r, m, &p.Warnings)
	buildReplicationPage(&p, st, m, runOf(t), sleds, labels, now)
	return p
}

// lastRun is what the page needs of the task's last activation.
type lastRun struct {
	// Outcome and Error are the last activation's; Iteration is its, and
	// StatusIteration that of the run the status comes from.
	Outcome, Error             string
	Iteration, StatusIteration uint64
	Enabled                    bool
}

func runOf(t api.BackgroundTask) lastRun {
	r := lastRun{Enabled: t.Enabled, StatusIteration: t.StatusIteration}
	if a := t.LastActivation; a != nil {
		r.Outcome, r.Error, r.Iteration = a.Outcome, a.Error, a.Iteration
	}
	return r
}

// matrixNames reads what the matrix alone cannot say: sled serials and
// artifact names, for the rows that will be shown. A failure only costs
// the names, so it becomes a warning.
func (s *Pages) matrixNames(ctx context.Context, r *http.Request, m model.ReplicationMatrix,
	warnings *[]string) (map[uuid.UUID]model.Sled, map[string]model.ArtifactLabel) {
	sleds := map[uuid.UUID]model.Sled{}
	list, err := s.app.ListSleds(ctx, uuid.Nil, sledListLimit)
	if err != nil {
		hlog.FromRequest(r).Warn().Err(err).Msg("replication page: reading sleds")
		*warnings = append(*warnings, "Sled serial numbers are not shown: "+err.Error())
	}
	for _, sl := range list {
		sleds[sl.ID] = sl
	}
	hashes := make([]string, 0, min(len(m.Artifacts), matrixMaxArtifacts))
	for _, a := range leastHeld(m, columnCounts(m), matrixMaxArtifacts) {
		hashes = append(hashes, string(m.Artifacts[a].SHA256))
	}
	labels, err := s.app.ArtifactLabels(ctx, hashes)
	if err != nil {
		hlog.FromRequest(r).Warn().Err(err).Msg("replication page: reading artifact names")
		*warnings = append(*warnings, "Artifact names are not shown: "+err.Error())
	}
	return sleds, labels
}

// artifactCounts is one artifact's column of the matrix.
type artifactCounts struct {
	holders, full, observed, inFlight int
}

// columnCounts counts every artifact's holders (as artifactReplication
// does for one) in a single pass over the matrix, sled by sled: a large
// rack's matrix has millions of cells and each sled's row is contiguous.
func columnCounts(m model.ReplicationMatrix) []artifactCounts {
	counts := make([]artifactCounts, len(m.Artifacts))
	for s, st := range m.Sleds {
		for a, c := range m.Copies[s] {
			if c < 0 {
				continue
			}
			counts[a].observed++
			if c > 0 {
				counts[a].holders++
				if int(c) >= app.FullCopies(st) {
					counts[a].full++
				}
			}
		}
		for a := range m.InFlight[s] {
			counts[a].inFlight++
		}
	}
	return counts
}

// leastHeld returns the indexes of up to n artifacts of m, those with the
// fewest sleds holding them on every M.2 first (then the fewest holders,
// then by hash, so the order is stable between refreshes).
func leastHeld(m model.ReplicationMatrix, counts []artifactCounts, n int) []int {
	idx := make([]int, len(m.Artifacts))
	for a := range idx {
		idx[a] = a
	}
	slices.SortFunc(idx, func(x, y int) int {
		return cmp.Or(cmp.Compare(counts[x].full, counts[y].full), cmp.Compare(counts[x].holders, counts[y].holders),
			cmp.Compare(m.Artifacts[x].SHA256, m.Artifacts[y].SHA256))
	})
	return idx[:min(n, len(idx))]
}

// buildReplicationPage fills p from the task's status (nil before its
// first run) and matrix; it reads nothing else, so tests feed it made-up
// inputs.
func buildReplicationPage(p *replicationPage, st *api.ReplicationStatus, m model.ReplicationMatrix, last lastRun,
	sleds map[uuid.UUID]model.Sled, labels map[string]model.ArtifactLabel, now time.Time) {
	p.Matrix = buildMatrix(m, sleds, labels, now)
	if st == nil {
		return
	}
	p.Ran = true
	p.Converged = st.Converged
	p.Stopped = st.Stopped
	p.Summary = []kv{
		{Key: "Generation", Value: fmt.Sprint(st.Generation), Class: "num"},
		{Key: "Artifacts wanted on sleds", Value: fmt.Sprint(st.Artifacts), Class: "num"},
		{Key: "Fully replicated", Value: fmt.Sprintf("%d of %d artifacts on every M.2 of every sled", st.FullyReplicated, st.Artifacts)},
		{Key: "In-service sleds", Value: fmt.Sprint(st.Sleds), Class: "num"},
		{Key: "Local copies on this Nexus", Value: fmt.Sprint(st.LocalCopies), Class: "num",
			Title: "artifacts this Nexus keeps in its depot until enough sleds hold them"},
		{Key: "Requests last run", Value: fmt.Sprintf("%d sent, %d deferred", st.Requests, st.Deferred)},
		{Key: "Copies in flight", Value: fmt.Sprint(st.InFlight), Class: "num"},
		{Key: "Database round trips", Value: fmt.Sprint(st.RoundTrips), Class: "num"},
	}
	p.Why = notConverged(st, last, m, sleds, now)
	for _, h := range st.Unheld {
		p.Unheld = append(p.Unheld, refFor(h, labels))
	}
	p.RepoChanges = st.RepoChanges
	p.Dropped = len(st.Dropped)
	p.Counters = counterRows(st.LastRun, st.Lifetime)
	for i, rq := range st.Recent {
		row := requestView(rq, sleds, labels, now)
		if i < recentShown {
			p.Recent = append(p.Recent, row)
			continue
		}
		p.Older = append(p.Older, row)
		if row.Failing {
			p.OlderFailed++
		}
	}
	p.Summary = append(p.Summary, faultRows(st, now)...)
}

// faultRows are the summary rows about faults the task is riding out:
// sleds backing off, requests held back, and a generation it had to move
// past its sleds' because the database was behind them.
func faultRows(st *api.ReplicationStatus, now time.Time) []kv {
	var rows []kv
	if n := st.BackingOff; n > 0 {
		rows = append(rows, kv{Key: "Sleds backing off", Value: fmt.Sprint(n), Class: "num",
			Title: "sleds whose recent requests failed are not asked again until their back-off has passed"})
	}
	if n := st.HeldBack; n > 0 {
		rows = append(rows, kv{Key: "Requests held back", Value: fmt.Sprint(n), Class: "num",
			Title: "requests that failed recently wait for their back-off before they are sent again"})
	}
	if ff := st.FastForward; ff != nil {
		rows = append(rows, kv{Key: "Generation fast-forwarded",
			Value: fmt.Sprintf("%s: from %d to %d, past sled %s's %d", humanize.Ago(now, ff.Time), ff.From, ff.To,
				ff.Sled, ff.SledGeneration),
			Title: "the database was behind what its sleds hold (restored from a backup?); " +
				"sleds were brought to the database's wanted set at the new generation"})
	}
	return rows
}

// notConverged says, in operator terms, what keeps the rack from
// converging, naming the real cause: a failed run (a database error), a
// switched-off task, sleds that did not answer or miss an M.2, before the
// copies still to make. It is empty when the last run converged.
func notConverged(st *api.ReplicationStatus, last lastRun, m model.ReplicationMatrix, sleds map[uuid.UUID]model.Sled,
	now time.Time) []string {
	if st.Converged && last.Outcome != api.TaskOutcomeError {
		return nil
	}
	var why []string
	if last.Outcome == api.TaskOutcomeError && last.Error != "" {
		w := "The last run failed, so nothing it reports below is current: " + last.Error + "."
		if !m.Time.IsZero() {
			w += " The artifact × sled matrix is from the last run that reached the sleds, " + humanize.Ago(now, m.Time) + "."
		}
		why = append(why, w)
	}
	if !last.Enabled {
		why = append(why, "The task is switched off on every Nexus, so nothing is copied or deleted; enable it on its task page.")
	}
	if st.Converged {
		return why
	}
	if st.Stopped != "" {
		why = append(why, "The last run stopped before acting: "+st.Stopped+".")
	}
	var failing, degraded []string
	for _, sl := range st.SledStates {
		name, _ := sledName(sl.ID, sleds)
		switch {
		case sl.Error != "":
			failing = append(failing, "sled "+name+": "+sl.Error)
		case sl.Generation != uint64(st.Generation) && st.Stopped == "":
			failing = append(failing, fmt.Sprintf("sled %s holds generation %d, not %d", name, sl.Generation, st.Generation))
		case sl.M2Present < sl.M2Expected:
			degraded = append(degraded, fmt.Sprintf("sled %s has %d of its %d M.2s", name, sl.M2Present, sl.M2Expected))
		}
	}
	if len(failing) > 0 {
		why = append(why, plural(len(failing), "sled did", "sleds did")+" not answer at generation "+
			fmt.Sprint(st.Generation)+": "+listSome(failing, 4)+".")
	}
	if len(degraded) > 0 {
		why = append(why, plural(len(degraded), "sled is", "sleds are")+" missing an M.2, so the artifacts on "+
			them(len(degraded))+" have a copy too few until the device is back: "+listSome(degraded, 4)+".")
	}
	if st.Requests > 0 {
		why = append(why, plural(st.Requests, "copy was", "copies were")+" requested in the last run.")
	}
	if st.Deferred > 0 {
		why = append(why, plural(st.Deferred, "request waits", "requests wait")+
			" for a later run (per-run and per-source limits).")
	}
	if st.InFlight > 0 {
		why = append(why, plural(st.InFlight, "copy is", "copies are")+" in flight on sleds.")
	}
	if n := len(st.Unheld); n > 0 {
		why = append(why, plural(n, "artifact has", "artifacts have")+
			" no holder at all (no sled, no Nexus): their repos are degraded until uploaded again.")
	}
	if len(why) == 0 {
		// Every cause the status can name was checked: say what is known
		// rather than guess.
		why = append(why, fmt.Sprintf("The last run made no request and every sled answered, yet %d of %d artifacts are "+
			"not on every M.2 of every sled; the matrix below shows which.", st.Artifacts-st.FullyReplicated, st.Artifacts))
	}
	return why
}

// listSome joins up to n items, saying how many more there are.
func listSome(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, "; ")
	}
	return strings.Join(items[:n], "; ") + fmt.Sprintf("; and %d more", len(items)-n)
}

func them(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func refFor(h string, labels map[string]model.ArtifactLabel) artifactRef {
	ref := artifactRef{SHA: h, Short: shortHash(h)}
	if l, ok := labels[h]; ok {
		ref.Label = l.Name + " " + l.Version
		if len(l.SystemVersions) > 0 {
			ref.Link = "/ui/repos/" + url.PathEscape(l.SystemVersions[0])
		}
	}
	return ref
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func counterRows(last, life api.ReplicationCounters) []counterRow {
	pair := func(name string, lok, lerr, fok, ferr int) counterRow {
		return counterRow{Name: name, Last: okErr(lok, lerr), Lifetime: okErr(fok, ferr), LastBad: lerr > 0, LifetimeBad: ferr > 0}
	}
	return []counterRow{
		pair("Config puts", last.ConfigPutOK, last.ConfigPutErr, life.ConfigPutOK, life.ConfigPutErr),
		pair("Holdings listed", last.ListOK, last.ListErr, life.ListOK, life.ListErr),
		pair("Seeds copied from a Nexus", last.SeedOK, last.SeedErr, life.SeedOK, life.SeedErr),
		pair("Sled-to-sled copies", last.CopyOK, last.CopyErr, life.CopyOK, life.CopyErr),
		{Name: "Local copies dropped", Last: fmt.Sprint(last.LocalDropped), Lifetime: fmt.Sprint(life.LocalDropped)},
		{Name: "Bytes seeded from a Nexus", Last: humanize.Bytes(last.BytesSeeded), Lifetime: humanize.Bytes(life.BytesSeeded),
			LastTitle: fmt.Sprint(last.BytesSeeded, " bytes"), LifeTitle: fmt.Sprint(life.BytesSeeded, " bytes")},
		{Name: "Bytes copied sled to sled", Last: humanize.Bytes(last.BytesCopied), Lifetime: humanize.Bytes(life.BytesCopied),
			LastTitle: fmt.Sprint(last.BytesCopied, " bytes"), LifeTitle: fmt.Sprint(life.BytesCopied, " bytes")},
		{Name: "Bytes moved in all", Last: humanize.Bytes(last.BytesSeeded + last.BytesCopied),
			Lifetime: humanize.Bytes(life.BytesSeeded + life.BytesCopied)},
	}
}

func okErr(ok, bad int) string {
	if bad == 0 {
		return fmt.Sprintf("%d ok", ok)
	}
	return fmt.Sprintf("%d ok · %d failed", ok, bad)
}

func sledName(id uuid.UUID, sleds map[uuid.UUID]model.Sled) (short, title string) {
	title = id.String()
	if sl, ok := sleds[id]; ok && sl.Baseboard.Serial != "" {
		title = sl.Baseboard.Serial + " · " + title
		return sl.Baseboard.Serial, title
	}
	return id.String()[:8], title
}

func requestView(rq api.ReplicationRequest, sleds map[uuid.UUID]model.Sled,
	labels map[string]model.ArtifactLabel, now time.Time) requestRow {
	row := requestRow{Time: humanize.Ago(now, rq.Time), TimeTitle: rq.Time.UTC().Format(time.RFC3339Nano),
		Operation: strings.ReplaceAll(rq.Operation, "_", " "), SHA: rq.SHA256, Short: shortHash(rq.SHA256),
		Source: rq.Source, Error: rq.Error, Failing: rq.Error != ""}
	row.Sled, row.SledTitle = sledName(rq.Sled, sleds)
	if l, ok := labels[rq.SHA256]; ok {
		row.Label = l.Name
	}
	if u, err := url.Parse(rq.Source); err == nil && u.Host != "" {
		row.Source = u.Host
	}
	return row
}

// buildMatrix renders m, capped; the totals cover all of it.
func buildMatrix(m model.ReplicationMatrix, sleds map[uuid.UUID]model.Sled,
	labels map[string]model.ArtifactLabel, now time.Time) matrixView {
	v := matrixView{Observed: !m.Time.IsZero(), Artifacts: len(m.Artifacts), SledCount: len(m.Sleds)}
	if !v.Observed {
		return v
	}
	v.Time, v.TimeTitle, v.Generation = humanize.Ago(now, m.Time), m.Time.UTC().Format(time.RFC3339Nano), m.Generation

	// Per sled: how many artifacts it holds on every M.2.
	all := make([]matrixSled, len(m.Sleds))
	for s, st := range m.Sleds {
		ms := matrixSled{ID: st.ID.String(), Address: st.Address, Generation: st.Generation, M2: st.M2Present,
			InFlight: st.InFlight, Error: st.Error, Of: len(m.Artifacts)}
		ms.Short, ms.Title = sledName(st.ID, sleds)
		if sl, ok := sleds[st.ID]; ok {
			ms.Serial = sl.Baseboard.Serial
		}
		for a := range m.Artifacts {
			switch c := m.Copies[s][a]; {
			case c < 0:
				ms.Unknown = true
				v.Unknown++
			case c == 0:
				v.Missing++
			case int(c) >= app.FullCopies(st):
				ms.Full++
				v.Full++
			default:
				v.Partial++
			}
			if m.InFlight[s][a] {
				v.InFlight++
			}
		}
		ms.M2Missing = st.Error == "" && st.M2Present < st.M2Expected
		switch {
		case st.Error != "" || ms.Unknown && len(m.Artifacts) > 0:
			ms.Class = "bad"
		case ms.Full < ms.Of || ms.M2Missing:
			ms.Class = "part"
		default:
			ms.Class = "full"
		}
		ms.Expected = max(st.M2Expected, st.M2Present)
		ms.GenText, ms.M2Text = fmt.Sprint(st.Generation), fmt.Sprintf("%d/%d", st.M2Present, ms.Expected)
		switch {
		case st.Error != "" && st.Generation == 0:
			ms.GenText, ms.M2Text = "—", "—"
		case st.Generation != uint64(m.Generation):
			ms.GenerationClass = "off"
		}
		ms.Title += fmt.Sprintf("\n%s · generation %d · %d of %d M.2s present\n%d of %d artifacts on every M.2",
			st.Address, st.Generation, st.M2Present, ms.Expected, ms.Full, ms.Of)
		if ms.M2Missing {
			ms.Title += fmt.Sprintf("\ndegraded: %d M.2 missing, so nothing on it is fully replicated", ms.Expected-st.M2Present)
		}
		if st.Error != "" {
			ms.Title += "\nerror: " + st.Error
		}
		all[s] = ms
	}
	v.AllSleds = all

	// Columns: the sleds with the fewest complete artifacts first, then by
	// serial, capped.
	cols := make([]int, len(m.Sleds))
	for i := range cols {
		cols[i] = i
	}
	slices.SortFunc(cols, func(x, y int) int {
		return cmp.Or(cmp.Compare(sledRank(all[x]), sledRank(all[y])), cmp.Compare(all[x].Full, all[y].Full),
			cmp.Compare(all[x].Short, all[y].Short), cmp.Compare(all[x].ID, all[y].ID))
	})
	if len(cols) > matrixMaxSleds {
		v.HiddenSleds = len(cols) - matrixMaxSleds
		cols = cols[:matrixMaxSleds]
	}
	for _, s := range cols {
		v.Sleds = append(v.Sleds, all[s])
	}
	slices.SortFunc(v.AllSleds, func(x, y matrixSled) int {
		return cmp.Or(cmp.Compare(sledRank(x), sledRank(y)), cmp.Compare(x.Short, y.Short), cmp.Compare(x.ID, y.ID))
	})

	counts := columnCounts(m)
	for _, c := range counts {
		if c.full == len(m.Sleds) && c.full > 0 {
			v.Complete++
		}
		if c.full == c.observed && c.full > 0 {
			v.CompleteAnswered++
		}
	}
	rows := leastHeld(m, counts, matrixMaxArtifacts)
	v.HiddenArtifacts = len(m.Artifacts) - len(rows)
	for _, a := range rows {
		v.Rows = append(v.Rows, matrixRowFor(m, a, counts[a], cols, labels))
	}
	// Problems first; otherwise by name and version, so that rows do not
	// move between refreshes and a release's versions sit together.
	slices.SortStableFunc(v.Rows, func(x, y matrixRow) int {
		return cmp.Or(cmp.Compare(x.FullHolders, y.FullHolders), cmp.Compare(x.Holders, y.Holders),
			cmp.Compare(x.Name, y.Name), cmp.Compare(x.Version, y.Version), cmp.Compare(x.SHA, y.SHA))
	})
	return v
}

// sledRank puts sleds that failed first, then those missing something.
func sledRank(s matrixSled) int {
	switch s.Class {
	case "bad":
		return 0
	case "part":
		return 1
	}
	return 2
}

func matrixRowFor(m model.ReplicationMatrix, a int, c artifactCounts, cols []int,
	labels map[string]model.ArtifactLabel) matrixRow {
	art := m.Artifacts[a]
	h := string(art.SHA256)
	row := matrixRow{SHA: h, Short: shortHash(h), Size: humanize.Bytes(art.Length), Holders: c.holders,
		FullHolders: c.full, Observed: c.observed, Of: len(m.Sleds)}
	if l, ok := labels[h]; ok {
		row.Name, row.Version, row.Kind, row.Repos = l.Name, l.Version, l.Kind, l.SystemVersions
	}
	switch {
	case c.holders == 0 && len(m.Sleds) > 0:
		row.Class = "none"
	case c.full < len(m.Sleds):
		row.Class = "part"
	default:
		row.Class = "full"
	}
	for _, s := range cols {
		row.Cells = append(row.Cells, matrixCellFor(m, s, a))
	}
	return row
}

func matrixCellFor(m model.ReplicationMatrix, s, a int) matrixCell {
	st := m.Sleds[s]
	copies := m.Copies[s][a]
	flying := m.InFlight[s][a]
	var cell matrixCell
	switch {
	case copies < 0:
		cell = matrixCell{Text: "?", Class: "unknown",
			Title: "unknown: the sled did not answer at generation " + fmt.Sprint(m.Generation)}
		if st.Error != "" {
			cell.Title += " (" + st.Error + ")"
		}
	case copies == 0:
		cell = matrixCell{Class: "none", Title: "no M.2 holds a verified copy"}
	case int(copies) >= app.FullCopies(st):
		cell = matrixCell{Class: "full", Title: "every M.2 holds a verified copy"}
	case int(copies) >= st.M2Present:
		cell = matrixCell{Class: "part", Title: fmt.Sprintf("every present M.2 holds a verified copy, but only %d of the "+
			"sled's %d M.2s are present", st.M2Present, app.FullCopies(st))}
	default:
		cell = matrixCell{Class: "part", Title: fmt.Sprintf("%d of %d present M.2s hold a verified copy", copies, st.M2Present)}
	}
	if copies >= 0 {
		cell.Text = fmt.Sprintf("%d/%d", copies, app.FullCopies(st))
	}
	if flying {
		cell.Class += " flight"
		cell.Title += "; a copy is in flight"
	}
	cell.Sled = st.ID.String()
	return cell
}

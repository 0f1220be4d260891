package ui

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/model"
)

// hashN makes a distinct, sortable 64-hex-digit hash.
func hashN(i int) string { return fmt.Sprintf("%064x", i+1) }

// testMatrix is a matrix of nArt artifacts × nSled sleds, each sled with
// two M.2s holding everything; edit it to taste.
func testMatrix(nArt, nSled int, now time.Time) model.ReplicationMatrix {
	m := model.ReplicationMatrix{Time: now.Add(-3 * time.Second), Generation: 7}
	for a := range nArt {
		m.Artifacts = append(m.Artifacts, model.MatrixArtifact{SHA256: hashN(a), Length: 1 << 20})
	}
	for s := range nSled {
		id := uuid.MustParse(fmt.Sprintf("00000000-0000-0000-0000-%012d", s+1))
		m.Sleds = append(m.Sleds, model.MatrixSled{ID: id, Address: fmt.Sprintf("10.0.0.%d:12345", s+1),
			Generation: 7, M2Present: 2})
		row := make([]int8, nArt)
		for a := range row {
			row[a] = 2
		}
		m.Copies = append(m.Copies, row)
		m.InFlight = append(m.InFlight, map[int]bool{})
	}
	return m
}

func TestMatrixCellsSayWhatSledsHold(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	m := testMatrix(3, 3, now)
	// Sled 0 did not answer; sled 1 holds artifact 1 on one M.2 and is
	// copying it, and lacks artifact 2 entirely.
	m.Sleds[0].Error, m.Sleds[0].Generation, m.Sleds[0].M2Present = "list: connection refused", 0, 0
	for a := range m.Copies[0] {
		m.Copies[0][a] = -1
	}
	m.Copies[1][1], m.Copies[1][2] = 1, 0
	m.InFlight[1][1] = true
	sleds := map[uuid.UUID]model.Sled{m.Sleds[1].ID: {ID: m.Sleds[1].ID, Baseboard: model.Baseboard{Serial: "BRM42"}}}
	labels := map[string]model.ArtifactLabel{hashN(2): {Name: "host-os", Version: "2.0", Kind: "host_phase_2",
		SystemVersions: []string{"2.0"}}}

	v := buildMatrix(m, sleds, labels, now)
	if !v.Observed || v.Time != "3s ago" || v.Generation != 7 || v.Artifacts != 3 || v.SledCount != 3 {
		t.Fatalf("matrix header %+v", v)
	}
	if v.Full != 4 || v.Partial != 1 || v.Missing != 1 || v.Unknown != 3 || v.InFlight != 1 ||
		v.Complete != 0 || v.CompleteAnswered != 1 || v.HiddenArtifacts != 0 || v.HiddenSleds != 0 {
		t.Fatalf("totals %+v", v)
	}
	// The failed sled comes first, then the one missing something.
	if len(v.Sleds) != 3 || v.Sleds[0].ID != m.Sleds[0].ID.String() || v.Sleds[0].Class != "bad" || v.Sleds[0].GenText != "—" ||
		v.Sleds[1].Short != "BRM42" || v.Sleds[1].Class != "part" || v.Sleds[1].Full != 1 || v.Sleds[2].Class != "full" {
		t.Fatalf("sled columns %+v", v.Sleds)
	}
	// Rows: the artifact nobody but one sled holds fully comes first.
	if len(v.Rows) != 3 || v.Rows[0].SHA != hashN(2) || v.Rows[0].Name != "host-os" || v.Rows[0].FullHolders != 1 ||
		v.Rows[0].Holders != 1 || v.Rows[0].Class != "part" || v.Rows[1].SHA != hashN(1) || v.Rows[2].SHA != hashN(0) {
		t.Fatalf("rows %+v", v.Rows)
	}
	cells := func(r matrixRow) string {
		var out []string
		for _, c := range r.Cells {
			out = append(out, c.Text+"="+c.Class)
		}
		return strings.Join(out, " ")
	}
	for i, want := range []string{"?=unknown 0/2=none 2/2=full", "?=unknown 1/2=part flight 2/2=full", "?=unknown 2/2=full 2/2=full"} {
		if got := cells(v.Rows[i]); got != want {
			t.Errorf("row %d cells %q, want %q", i, got, want)
		}
	}
	if c := v.Rows[1].Cells[1]; !strings.Contains(c.Title, "1 of 2 present M.2s") || !strings.Contains(c.Title, "in flight") {
		t.Errorf("partial cell title %q", c.Title)
	}
	if c := v.Rows[0].Cells[0]; !strings.Contains(c.Title, "connection refused") {
		t.Errorf("unknown cell title %q", c.Title)
	}

	if v := buildMatrix(model.ReplicationMatrix{}, nil, nil, now); v.Observed || len(v.Rows) != 0 {
		t.Fatalf("matrix before the first run %+v", v)
	}
}

// A large rack renders a bounded matrix, the problems first, and counts
// everything.
func TestMatrixIsCappedOnLargeRacks(t *testing.T) {
	now := time.Now()
	m := testMatrix(400, 70, now)
	// Artifact 321 is missing on sled 65, artifact 17 partial on sled 3.
	m.Copies[65][321] = 0
	m.Copies[3][17] = 1
	v := buildMatrix(m, nil, nil, now)
	if len(v.Rows) != matrixMaxArtifacts || len(v.Sleds) != matrixMaxSleds || v.HiddenArtifacts != 400-matrixMaxArtifacts ||
		v.HiddenSleds != 70-matrixMaxSleds || len(v.AllSleds) != 70 {
		t.Fatalf("caps: %d rows, %d sleds, hidden %d/%d, all %d", len(v.Rows), len(v.Sleds), v.HiddenArtifacts,
			v.HiddenSleds, len(v.AllSleds))
	}
	if v.Full != 400*70-2 || v.Partial != 1 || v.Missing != 1 || v.Complete != 398 {
		t.Fatalf("totals %+v", v)
	}
	if v.Rows[0].SHA != hashN(17) && v.Rows[0].SHA != hashN(321) || v.Rows[1].SHA != hashN(17) && v.Rows[1].SHA != hashN(321) {
		t.Fatalf("the incomplete artifacts are not first: %s, %s", v.Rows[0].Short, v.Rows[1].Short)
	}
	shown := map[string]bool{}
	for _, s := range v.Sleds {
		shown[s.ID] = true
	}
	if !shown[m.Sleds[65].ID.String()] || !shown[m.Sleds[3].ID.String()] {
		t.Fatal("a sled missing something is not among the columns shown")
	}
	for _, r := range v.Rows {
		if len(r.Cells) != matrixMaxSleds {
			t.Fatalf("row %s has %d cells", r.Short, len(r.Cells))
		}
	}
	var buf bytes.Buffer
	p := replicationPage{Ran: true, Matrix: v}
	if err := uiPages["replication"].ExecuteTemplate(&buf, "fragment", uiPage{Body: p}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(buf.String(), `<td class="cell `); got != matrixMaxArtifacts*matrixMaxSleds {
		t.Fatalf("rendered %d cells", got)
	}
	if !strings.Contains(buf.String(), `id="matrix-capped"`) || !strings.Contains(buf.String(), "300 more artifacts and 22 more sleds") {
		t.Fatalf("no note about the cap:\n%s", buf.String())
	}
}

func TestNotConvergedSaysWhy(t *testing.T) {
	st := &api.ReplicationStatus{Generation: 4, Requests: 3, Deferred: 1, InFlight: 2, Unheld: []string{hashN(1)},
		SledStates: []api.ReplicationSled{{Generation: 4}, {Error: "list: refused"}, {Generation: 3}}}
	on := lastRun{Enabled: true, Outcome: api.TaskOutcomeOK}
	why := strings.Join(notConverged(st, on, model.ReplicationMatrix{}, nil, time.Now()), "\n")
	for _, want := range []string{"3 copies were requested", "1 request waits", "2 copies are in flight",
		"1 artifact has no holder at all", "2 sleds did not answer at generation 4"} {
		if !strings.Contains(why, want) {
			t.Errorf("reasons lack %q:\n%s", want, why)
		}
	}
	if notConverged(&api.ReplicationStatus{Converged: true}, on, model.ReplicationMatrix{}, nil, time.Now()) != nil {
		t.Error("a converged status has reasons")
	}
	if why := notConverged(&api.ReplicationStatus{Stopped: "sled x is newer"}, on, model.ReplicationMatrix{}, nil,
		time.Now()); len(why) != 1 || !strings.Contains(why[0], "sled x is newer") {
		t.Errorf("stopped run: %q", why)
	}
}

// The reasons name the real cause: the database error that failed the
// run (while the matrix from the run before is all green), the failing
// sled by its serial, the missing M.2; never the generic sentence when a
// cause is known.
func TestNotConvergedNamesTheRealCause(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	m := testMatrix(3, 2, now)
	dbDown := lastRun{Enabled: true, Outcome: api.TaskOutcomeError,
		Error: "read the wanted set: the database is unavailable: dial unix /tmp/pg/.s.PGSQL.5432: connect: no such file"}
	why := notConverged(&api.ReplicationStatus{Generation: 0}, dbDown, m, nil, now)
	if len(why) != 1 || !strings.Contains(why[0], "The last run failed") || !strings.Contains(why[0], "the database is unavailable") ||
		!strings.Contains(why[0], "from the last run that reached the sleds, 3s ago") {
		t.Fatalf("a run failed by the database: %q", why)
	}
	// Failed, though the status it left says converged: still named.
	if why := notConverged(&api.ReplicationStatus{Converged: true}, dbDown, m, nil, now); len(why) != 1 {
		t.Fatalf("converged status from a failed run: %q", why)
	}

	id1, id2 := m.Sleds[0].ID, m.Sleds[1].ID
	sleds := map[uuid.UUID]model.Sled{id1: {ID: id1, Baseboard: model.Baseboard{Serial: "SIM-0001"}},
		id2: {ID: id2, Baseboard: model.Baseboard{Serial: "SIM-0002"}}}
	st := &api.ReplicationStatus{Generation: 5, Artifacts: 3, FullyReplicated: 0, DegradedSleds: 1,
		SledStates: []api.ReplicationSled{{ID: id1, Generation: 5, M2Present: 1, M2Expected: 2},
			{ID: id2, Error: "list: Get \"https://10.0.0.2:12345/artifacts\": connection refused"}}}
	got := strings.Join(notConverged(st, lastRun{Enabled: false, Outcome: api.TaskOutcomeOK}, m, sleds, now), "\n")
	for _, want := range []string{"switched off", "1 sled did not answer at generation 5: sled SIM-0002: list:",
		"connection refused", "1 sled is missing an M.2", "sled SIM-0001 has 1 of its 2 M.2s"} {
		if !strings.Contains(got, want) {
			t.Errorf("reasons lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "yet") {
		t.Errorf("the generic reason beside real ones:\n%s", got)
	}
}

// A sled with an M.2 missing holds nothing fully: its cells are not
// green, the sled is marked degraded, and the artifacts do not count as
// on every M.2 of every sled.
func TestMissingM2IsNotGreen(t *testing.T) {
	now := time.Now()
	m := testMatrix(2, 2, now)
	m.Sleds[1].M2Present, m.Sleds[1].M2Expected = 1, 2
	m.Sleds[0].M2Expected = 2
	for a := range m.Copies[1] {
		m.Copies[1][a] = 1
	}
	v := buildMatrix(m, nil, nil, now)
	if v.Complete != 0 || v.Full != 2 || v.Partial != 2 {
		t.Fatalf("totals %+v", v)
	}
	for _, r := range v.Rows {
		for _, c := range r.Cells {
			if c.Sled == m.Sleds[1].ID.String() && (c.Class != "part" || c.Text != "1/2" || !strings.Contains(c.Title, "only 1 of the sled's 2 M.2s")) {
				t.Errorf("cell of the degraded sled: %+v", c)
			}
		}
		if r.FullHolders != 1 || r.Class != "part" {
			t.Errorf("row %+v", r)
		}
	}
	var degraded matrixSled
	for _, s := range v.AllSleds {
		if s.ID == m.Sleds[1].ID.String() {
			degraded = s
		}
	}
	if !degraded.M2Missing || degraded.Class != "part" || degraded.M2Text != "1/2" {
		t.Fatalf("the degraded sled %+v", degraded)
	}
	rep := app.ArtifactReplication(m, 0)
	if rep.SledsHolding != 2 || rep.SledsHoldingAllM2s != 1 {
		t.Fatalf("API replication %+v", rep)
	}
}

func TestRepoReplicationSummary(t *testing.T) {
	now := time.Now()
	m := testMatrix(3, 3, now)
	index := app.MatrixIndex(m)
	all := []string{hashN(0), hashN(1), hashN(2)}
	if text, class, _ := repoReplication(m, index, all); text != "3/3 on every sled" || class != "full" {
		t.Errorf("complete: %q %q", text, class)
	}
	m.Copies[2][1] = 1
	if text, class, _ := repoReplication(m, index, all); text != "2/3 on every sled" || class != "part" {
		t.Errorf("partial: %q %q", text, class)
	}
	for a := range m.Copies[0] {
		m.Copies[0][a] = -1
	}
	if text, class, title := repoReplication(m, index, append(all, hashN(9))); text != "2/4 on the 2 answering sleds (1 not observed yet)" ||
		class != "part" || !strings.Contains(title, "1 in-service sleds did not answer") {
		t.Errorf("a sled down and an artifact unseen: %q %q %q", text, class, title)
	}
	if text, _, _ := repoReplication(model.ReplicationMatrix{}, nil, all); text != "not observed yet" {
		t.Errorf("before the first run: %q", text)
	}
}

// Whatever an upload names (file, artifacts, hence the degraded reason)
// is escaped on the repo pages.
func TestRepoPagesEscape(t *testing.T) {
	now := time.Now()
	evil := `<script>alert(1)</script>`
	repo := model.TufRepo{SystemVersion: "1.0.0", FileName: evil + ".zip", State: model.RepoStateDegraded,
		StateReason: "no sled or Nexus holds " + evil, TimeCreated: now, ValidUntil: now.Add(time.Hour), ArtifactCount: 1}
	d := model.TufRepoDetail{Repo: repo, Artifacts: []model.TufRepoArtifact{{TufArtifact: model.TufArtifact{Name: evil,
		Version: evil, Kind: evil, SHA256: hashN(0)}}}}
	pages := map[string]any{
		"repo":  buildRepoPage(d, model.ReplicationMatrix{}, now),
		"repos": repoListPage{Total: 1, Degraded: 1, Rows: []repoRow{repoListRow(repo, now)}},
	}
	for name, body := range pages {
		var buf bytes.Buffer
		if err := uiPages[name].ExecuteTemplate(&buf, "layout", uiPage{Title: evil, NexusID: uuid.NewString(), Body: body}); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		if strings.Contains(out, evil) || strings.Count(out, "&lt;script&gt;alert(1)&lt;/script&gt;") < 3 {
			t.Errorf("%s page: unescaped or missing:\n%s", name, out)
		}
		if !strings.Contains(out, "degraded") {
			t.Errorf("%s page does not mark the repo degraded", name)
		}
	}
}

// The page's cost on the largest rack the planner targets (1,000 sleds ×
// 10,000 artifacts): go test -run XXX -bench BuildMatrix ./nexus/
func BenchmarkBuildMatrix(b *testing.B) {
	now := time.Now()
	m := testMatrix(10_000, 1_000, now)
	b.ResetTimer()
	for b.Loop() {
		v := buildMatrix(m, nil, nil, now)
		if len(v.Rows) != matrixMaxArtifacts {
			b.Fatal(len(v.Rows))
		}
	}
}

// columnCounts agrees with artifactReplication, which the API uses.
func TestColumnCountsAgreeWithTheAPI(t *testing.T) {
	m := testMatrix(5, 4, time.Now())
	m.Copies[0][1], m.Copies[1][1], m.Copies[2][3] = 1, 0, 0
	for a := range m.Copies[3] {
		m.Copies[3][a] = -1
	}
	m.InFlight[1][1] = true
	for a, c := range columnCounts(m) {
		rep := app.ArtifactReplication(m, a)
		if c != (artifactCounts{holders: rep.SledsHolding, full: rep.SledsHoldingAllM2s, observed: rep.SledsObserved,
			inFlight: rep.SledsCopying}) {
			t.Errorf("artifact %d: counts %+v, API %+v", a, c, rep)
		}
	}
}

// A fast-forward of the generation, sleds backing off and requests held
// back are on the page's summary; without them the rows are absent.
func TestReplicationPageShowsFastForwardAndBackoff(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	sled := uuid.MustParse("00000000-0000-0000-0000-000000000007")
	st := &api.ReplicationStatus{Generation: 12, BackingOff: 1, HeldBack: 2,
		FastForward: &api.ReplicationFastForward{Time: now.Add(-time.Minute), From: 3, To: 12, SledGeneration: 11, Sled: sled}}
	got := map[string]string{}
	for _, row := range faultRows(st, now) {
		got[row.Key] = row.Value
	}
	if v := got["Generation fast-forwarded"]; v != "1m00s ago: from 3 to 12, past sled "+sled.String()+"'s 11" {
		t.Errorf("fast-forward row %q", v)
	}
	if got["Sleds backing off"] != "1" || got["Requests held back"] != "2" || len(got) != 3 {
		t.Errorf("rows: %v", got)
	}
	if rows := faultRows(&api.ReplicationStatus{Generation: 12}, now); len(rows) != 0 {
		t.Errorf("rows without cause: %+v", rows)
	}
}

// A composite's parts follow it on the repo page, in path order, each
// saying what it was read out of.
func TestRepoPagePartsFollowTheirComposite(t *testing.T) {
	now := time.Now()
	host := model.TufRepoArtifact{TufArtifact: model.TufArtifact{ID: uuid.New(), Name: "host", Version: "1.0.0",
		Kind: "host", SHA256: hashN(1)}, TargetName: "host.tar.gz"}
	part := func(kind, path string, n int) model.TufRepoArtifact {
		return model.TufRepoArtifact{TufArtifact: model.TufArtifact{ID: uuid.New(), Name: "host", Version: "1.0.0",
			Kind: kind, SHA256: hashN(n)}, TargetName: "host.tar.gz", PartOf: &model.ArtifactPartOf{ID: host.ID,
			Kind: "host", Name: "host", Version: "1.0.0", SHA256: host.SHA256, Path: path}}
	}
	sp := model.TufRepoArtifact{TufArtifact: model.TufArtifact{ID: uuid.New(), Name: "sp", Version: "1.0.0",
		Kind: "gimlet_sp", SHA256: hashN(4)}}
	repo := model.TufRepo{SystemVersion: "1.0.0", TimeCreated: now, ValidUntil: now.Add(time.Hour), ArtifactCount: 4}
	d := model.TufRepoDetail{Repo: repo, Artifacts: []model.TufRepoArtifact{
		part("host_phase_2", "image/zfs.img", 3), sp, host, part("host_phase_1", "image/rom", 2)}}
	p := buildRepoPage(d, model.ReplicationMatrix{}, now)
	var order []string
	for _, r := range p.Artifacts {
		order = append(order, r.Kind)
	}
	if strings.Join(order, " ") != "gimlet_sp host host_phase_1 host_phase_2" || p.Parts != 2 {
		t.Fatalf("rows in order %v, %d parts", order, p.Parts)
	}
	var buf bytes.Buffer
	if err := uiPages["repo"].ExecuteTemplate(&buf, "layout", uiPage{Title: "1.0.0", NexusID: uuid.NewString(), Body: p}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"part of host host, <code>image/rom</code>", `data-part-of="` + host.SHA256 + `"`,
		"2 of them parts read out of composite artifacts"} {
		if !strings.Contains(out, want) {
			t.Errorf("the repo page lacks %q", want)
		}
	}
}

package ui

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/nexus/app"
)

func TestRenderStatusIsReadable(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	raw := json.RawMessage(`{"threshold_seconds": 90, "database_time": "2030-01-01T11:59:56Z", "active": 3,
		"ratio": 0.3333333333, "ok": true, "note": null,
		"marked_unreachable": [{"id": "a", "serial": "S1", "silent_seconds": 200.5},
			{"id": "b", "serial": "S2", "extra": {"k": "v"}}],
		"marked_active": [], "kept": ["x", "y"], "nested": {"inner_ms": 1500}}`)
	secs := renderStatus(raw, now, statusFormat{})
	titles := []string{}
	for _, s := range secs {
		titles = append(titles, s.Title)
	}
	if strings.Join(titles, "|") != "Summary|Marked unreachable|Marked active|Kept|Nested" {
		t.Fatalf("sections %v", titles)
	}
	sum := secs[0].Value
	want := map[string]string{"Threshold": "1m30s", "Database time": "4s ago", "Active": "3", "Ratio": "0.333333",
		"Ok": "yes", "Note": "—"}
	for _, f := range sum.Fields {
		if want[f.Key] != f.Value.Text {
			t.Errorf("summary %s = %q, want %q", f.Key, f.Value.Text, want[f.Key])
		}
		delete(want, f.Key)
	}
	if len(want) != 0 {
		t.Errorf("summary lacks %v", want)
	}
	tbl := secs[1].Value
	if tbl.Kind != "table" || strings.Join(tbl.Columns, ",") != "Id,Serial,Silent,Extra" || len(tbl.Rows) != 2 ||
		tbl.Rows[0][2].Text != "3m20s" || tbl.Rows[1][2].Text != "—" || tbl.Rows[1][3].Kind != "object" {
		t.Fatalf("table %+v", tbl)
	}
	if secs[2].Value.Kind != "empty" || secs[3].Value.Kind != "list" || len(secs[3].Value.Items) != 2 ||
		secs[4].Value.Fields[0].Key != "Inner" || secs[4].Value.Fields[0].Value.Text != "1.5 s" {
		t.Fatalf("other sections %+v", secs[2:])
	}
	if got := renderStatus(json.RawMessage(`"just text"`), now, statusFormat{}); len(got) != 1 || got[0].Value.Text != "just text" {
		t.Fatalf("scalar status %+v", got)
	}
	if got := renderStatus(nil, now, statusFormat{}); got != nil {
		t.Fatalf("no status %+v", got)
	}
}

func TestSummaryRowMarksFailingAndDisabled(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	start := now.Add(-90 * time.Second)
	row := summaryRow(api.TaskSummary{Name: "t", Enabled: true, PeriodSeconds: 0.25, State: "idle", Iteration: 7,
		LastStart: &start, LastDurationMS: 1234, LastOutcome: "error", LastError: strings.Repeat("e", 300),
		ConsecutiveErrors: 3}, now, true)
	if row.Class != "failing" || row.Failing != "failing ×3" || row.LastRun != "1m30s ago" || row.Duration != "1.2 s" ||
		row.Period != "250ms" || len(row.ErrorShort) > 130 || row.Link != "/ui/background-tasks/t" {
		t.Fatalf("failing row %+v", row)
	}
	row = summaryRow(api.TaskSummary{Name: "t", Enabled: false, State: "idle"}, now, false)
	if row.Class != "disabled" || !row.Disabled || row.LastRun != "never" || row.Outcome != "not run yet" || row.Link != "" {
		t.Fatalf("disabled row %+v", row)
	}
	since := now.Add(-3 * time.Second)
	row = summaryRow(api.TaskSummary{Name: "t", Enabled: true, State: "running", RunningSince: &since}, now, false)
	if row.Class != "running" || row.State != "running 3s" {
		t.Fatalf("running row %+v", row)
	}
}

// Whatever a task puts in its status or error is escaped.
func TestTaskPageEscapes(t *testing.T) {
	now := time.Now()
	evil := `<script>alert(1)</script>`
	a := api.TaskActivation{Iteration: 1, Reason: "explicit", Requester: evil, Start: now, Outcome: "error", Error: evil,
		Status: json.RawMessage(`{"note": "` + strings.ReplaceAll(evil, "/", `\/`) + `"}`)}
	task := api.BackgroundTask{Name: "t", Description: evil, Enabled: true, LastActivation: &a, Status: a.Status,
		History: []api.TaskActivation{a}, Current: api.TaskCurrent{State: "idle"}}
	p := taskPage{Task: task, Row: summaryRow(task.Summary(), now, false), Status: renderStatus(a.Status, now, statusFormat{}),
		StatusRaw: string(a.Status)}
	last := activationView(a, now)
	p.Last = &last
	p.History = []activationRow{last}
	var buf bytes.Buffer
	page := uiPage{Title: evil, NexusID: uuid.NewString(), Refresh: 2000, Body: p}
	if err := uiPages["bgtask"].ExecuteTemplate(&buf, "layout", page); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, evil) || !strings.Contains(out, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Fatalf("unescaped or missing:\n%s", out)
	}
	// The error page too.
	bare, err := app.New(app.Config{}, app.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	s := New(bare)
	rec := httptest.NewRecorder()
	s.renderPage(rec, httptest.NewRequest("GET", "/ui/x", nil), 404, "error", uiPage{Title: "Not Found", Body: evil})
	if rec.Code != 404 || strings.Contains(rec.Body.String(), evil) {
		t.Fatalf("error page %d:\n%s", rec.Code, rec.Body.String())
	}
}

// A task's status renders with units and names: the replication task's
// phase times as durations, bytes humanized, an artifact's length as bytes
// (its own unit), and sled ids as serials.
func TestRenderStatusWithUnitsAndSerials(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	sled := uuid.New()
	raw := json.RawMessage(`{"generation": 3, "phase_ms": {"collect": 1.98593, "plan": 0.2, "execute": 2400},
		"last_run": {"bytes_put": 360448, "put_ok": 2}, "sled_states": [{"id": "` + sled.String() + `", "m2_present": 2}],
		"least_replicated": [{"sha256": "ab", "length": 1048576}]}`)
	f := statusFormat{Units: map[string]string{"length": unitBytes}, Sleds: map[string]string{sled.String(): "SIM-0007"}}
	secs := renderStatus(raw, now, f)
	text := map[string]string{}
	var walk func(prefix string, v jsonView)
	walk = func(prefix string, v jsonView) {
		for _, fl := range v.Fields {
			walk(prefix+fl.Key+".", fl.Value)
		}
		for _, row := range v.Rows {
			for i, c := range row {
				text[prefix+v.Columns[i]] = c.Text
			}
		}
		if v.Kind == "scalar" {
			text[strings.TrimSuffix(prefix, ".")] = v.Text
		}
	}
	for _, s := range secs {
		walk(s.Title+".", s.Value)
	}
	for k, want := range map[string]string{"Phase.Collect": "1.99 ms", "Phase.Plan": "0.20 ms", "Phase.Execute": "2.4 s",
		"Last run.Bytes put": "352.0 KiB", "Last run.Put ok": "2", "Sled states.Id": "SIM-0007",
		"Least replicated.Length": "1.0 MiB", "Summary.Generation": "3"} {
		if text[k] != want {
			t.Errorf("%s = %q, want %q (all: %v)", k, text[k], want, text)
		}
	}
}

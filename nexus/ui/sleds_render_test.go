package ui

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/nexus/model"
)

func testSled(serial string, present ...bool) model.Sled {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	s := model.Sled{ID: uuid.New(), Baseboard: model.Baseboard{Part: "913-0000019", Serial: serial},
		SledAgentAddress: "10.0.0.1:12345", Policy: model.SledPolicyInService, State: model.SledStateActive,
		TimeCreated: now.Add(-time.Hour), TimeLastSeen: now.Add(-2 * time.Second)}
	for i, p := range present {
		d := model.M2Device{Path: "/m2-" + string(rune('a'+i)), Present: p}
		if p {
			d.FreeBytes, d.TotalBytes = 1<<30, 4<<30
		} else {
			d.Error = "directory does not exist"
		}
		s.M2s = append(s.M2s, d)
	}
	return s
}

// The sled list puts the unreachable and degraded sleds first and says
// what is wrong with each, serials rather than ids.
func TestSledsPageSaysWhatIsWrong(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	ok := testSled("SIM-0001", true, true)
	missing := testSled("SIM-0002", true, false)
	gone := testSled("SIM-0003", true, true)
	gone.State = model.SledStateUnreachable
	silent := testSled("SIM-0004")
	silent.M2s = nil
	m := model.ReplicationMatrix{Time: now.Add(-5 * time.Second), Generation: 3,
		Artifacts: []model.MatrixArtifact{{SHA256: hashN(0)}, {SHA256: hashN(1)}},
		Sleds:     []model.MatrixSled{{ID: ok.ID, M2Present: 2, M2Expected: 2}, {ID: missing.ID, M2Present: 1, M2Expected: 2}},
		Copies:    [][]int8{{2, 2}, {1, 1}}, InFlight: []map[int]bool{{}, {}}}
	p := buildSledsPage([]model.Sled{ok, missing, gone, silent}, m, now)
	if p.Total != 4 || p.Unreachable != 1 || p.Degraded != 1 || p.Observed != "5s ago" {
		t.Fatalf("totals %+v", p)
	}
	if p.Rows[0].Serial != "SIM-0003" || p.Rows[1].Serial != "SIM-0002" {
		t.Fatalf("order %s, %s", p.Rows[0].Serial, p.Rows[1].Serial)
	}
	deg := p.Rows[1]
	if deg.Health != "degraded" || deg.M2 != "1/2" || !strings.Contains(deg.M2Title, "missing: /m2-b") ||
		len(deg.Problems) != 1 || deg.Problems[0] != "M.2 /m2-b is missing: directory does not exist" ||
		deg.Replication != "0/2 on every M.2" || deg.ReplicationClass != "part" {
		t.Fatalf("degraded row %+v", deg)
	}
	byserial := map[string]sledRow{}
	for _, r := range p.Rows {
		byserial[r.Serial] = r
	}
	if r := byserial["SIM-0001"]; r.Health != "ok" || r.M2 != "2/2" || r.Replication != "2/2 on every M.2" || r.Class != "" {
		t.Fatalf("healthy row %+v", r)
	}
	if r := byserial["SIM-0004"]; r.Health != "unknown" || r.M2 != "—" || r.Replication != "not replicated to" {
		t.Fatalf("a sled without inventory %+v", r)
	}
	if r := byserial["SIM-0003"]; r.State != "unreachable" || r.Class != "failing" {
		t.Fatalf("unreachable row %+v", r)
	}

	var buf bytes.Buffer
	if err := uiPages["sleds"].ExecuteTemplate(&buf, "layout", uiPage{Title: "Sleds", NexusID: uuid.NewString(), Body: p}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{`data-health="degraded"`, "M.2 /m2-b is missing: directory does not exist", "SIM-0002",
		`href="/ui/sleds/` + missing.ID.String() + `"`, "1 unreachable", "1 degraded"} {
		if !strings.Contains(out, want) {
			t.Errorf("page lacks %q", want)
		}
	}

	sp := buildSledPage(missing, m, now)
	if len(sp.M2s) != 2 || sp.M2s[1].State != "missing" || sp.M2s[0].Used != "75%" || sp.M2s[0].Free != "1.0 GiB" ||
		!strings.HasPrefix(sp.StorageLock, "unknown") {
		t.Fatalf("sled page %+v", sp)
	}
	buf.Reset()
	if err := uiPages["sled"].ExecuteTemplate(&buf, "layout", uiPage{Title: "SIM-0002", NexusID: uuid.NewString(), Body: sp}); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "What is wrong") || !strings.Contains(out, "1 of 2 in use") {
		t.Fatalf("sled page:\n%s", out)
	}
}

func TestTrustRootsPageNamesWhatEachSigns(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	a := model.TrustRoot{ID: uuid.New(), SHA256: hashN(1), Version: 2, Expires: now.Add(-time.Hour),
		TimeCreated: now.Add(-48 * time.Hour), JSON: []byte(`{"signed":{"_type":"root"}}`)}
	b := model.TrustRoot{ID: uuid.New(), SHA256: hashN(2), Version: 1, Expires: now.Add(time.Hour),
		TimeCreated: now.Add(-time.Hour), JSON: []byte(`{"signed":{}}`)}
	live := []model.TufRepo{{SystemVersion: "2.0.0", TrustRootID: a.ID}, {SystemVersion: "1.0.0", TrustRootID: a.ID}}
	p := buildTrustRootsPage([]model.TrustRoot{b, a}, live, now)
	if p.None || len(p.Rows) != 2 || p.Rows[0].ID != a.ID.String() || !p.Rows[0].Expired || p.Rows[1].Expired ||
		strings.Join(p.Rows[0].LiveRepos, ",") != "1.0.0,2.0.0" || len(p.Rows[1].LiveRepos) != 0 ||
		!strings.Contains(p.Rows[0].JSON, "\n  \"signed\"") {
		t.Fatalf("%+v", p)
	}
	if p := buildTrustRootsPage(nil, nil, now); !p.None {
		t.Fatal("no roots is not said")
	}
	var buf bytes.Buffer
	if err := uiPages["trustroots"].ExecuteTemplate(&buf, "layout", uiPage{Title: "Trust roots", NexusID: uuid.NewString(),
		Body: buildTrustRootsPage(nil, nil, now)}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "every upload is refused") {
		t.Fatal(buf.String())
	}
}

func TestUploadRowsSayHowFar(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	rows := buildUploadRows([]model.UploadProgress{
		{ID: uuid.New(), FileName: "a.zip", Started: now.Add(-10 * time.Second), Phase: model.UploadReceiving,
			PhaseStarted: now.Add(-10 * time.Second), BytesReceived: 300 << 20, ContentLength: 1200 << 20},
		{ID: uuid.New(), FileName: "b.zip", Started: now.Add(-time.Minute), Phase: model.UploadVerifying,
			PhaseStarted: now.Add(-3 * time.Second), BytesReceived: 5 << 20, ContentLength: -1, SystemVersion: "2.0.0"},
	}, now)
	if len(rows) != 2 || rows[0].Percent != 25 || rows[0].Progress != "300.0 MiB of 1.2 GiB (25%), 30.0 MiB/s" ||
		rows[0].PhaseFor != "10s" {
		t.Fatalf("receiving row %+v", rows[0])
	}
	if rows[1].Percent != 0 || !strings.HasPrefix(rows[1].Progress, "5.0 MiB received") || rows[1].Version != "2.0.0" ||
		rows[1].PhaseFor != "3s" {
		t.Fatalf("verifying row %+v", rows[1])
	}
}

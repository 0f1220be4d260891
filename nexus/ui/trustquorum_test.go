package ui

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/model"
)

func tqBoard(serial string) model.Baseboard {
	return model.Baseboard{Part: "rackplane-sim", Serial: serial}
}

func tqConfig(epoch uint64, state model.TQState, states ...model.TQMemberState) model.TQConfiguration {
	t0 := time.Date(2030, 1, 1, 11, 0, 0, 0, time.UTC)
	c := model.TQConfiguration{Epoch: epoch, LastCommittedEpoch: epoch - 1, State: state, Threshold: 3,
		CommitCrashTolerance: 1, Coordinator: tqBoard("SIM-0001"), ChangeID: uuid.New(), Attempt: 1, TimeCreated: t0,
		TimeLastProgress: t0}
	for i, s := range states {
		m := model.TQMember{Baseboard: tqBoard("SIM-000" + string(rune('1'+i))), State: s}
		if s != model.TQMemberUnacked {
			m.TimePrepared = &t0
		}
		if s == model.TQMemberCommitted {
			m.TimeCommitted = &t0
		}
		c.Members = append(c.Members, m)
	}
	return c
}

func TestBuildTrustQuorumPage(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	c := model.TQMemberCommitted
	p, u := model.TQMemberPrepared, model.TQMemberUnacked
	committed := tqConfig(1, model.TQCommitted, c, c, c, c, c)
	aborted := tqConfig(2, model.TQAborted, p, p, u, u, u)
	aborted.AbortReason = "coordinator SIM-0001 is unreachable; retried as epoch 3"
	ab := now.Add(-time.Minute)
	aborted.TimeAborted = &ab
	preparing := tqConfig(3, model.TQPreparing, p, p, p, u, u)
	peer := tqBoard("ROGUE")
	seen := now.Add(-2 * time.Second)
	st := app.TrustQuorumState{Rack: &model.Rack{ID: uuid.New()}, Latest: &preparing, LatestCommitted: &committed,
		Nodes: []model.TQNodeStatus{
			{Baseboard: tqBoard("SIM-0001"), Via: model.TQViaDirect, TimeObserved: now, TimeSeen: &seen,
				Seen: &model.TQNodeView{LatestCommittedEpoch: 1, StorageLock: model.StorageLockLocked,
					StorageLockReason: "gathering the rack secret's shares from the members", Alarms: []model.TQAlarm{{Kind: "mismatched_configurations",
						Epoch: 1, Peer: &peer, Detail: "committed configuration differs", Time: now}}}},
			{Baseboard: tqBoard("SIM-0002"), Via: model.TQViaDirect, TimeObserved: now, Error: "connection refused"},
			{Baseboard: tqBoard("SIM-0009"), Via: model.TQViaDirect, TimeObserved: now, TimeSeen: &seen,
				Seen: &model.TQNodeView{LatestCommittedEpoch: 1, Expunged: &model.TQExpunged{Epoch: 1, From: tqBoard("SIM-0003")}}},
		}}
	uninit := []model.TQUninitializedSled{{Baseboard: tqBoard("SIM-0006"), SeenBy: tqBoard("SIM-0002"), TimeSeen: seen}}
	page := buildTrustQuorumPage(st, []model.TQConfiguration{preparing, aborted, committed}, uninit, now)

	if page.NotSetUp || page.Alarms != 1 || page.Unreachable != 1 || len(page.Epochs) != 3 || len(page.Uninitialized) != 1 {
		t.Fatalf("page: %+v", page)
	}
	if l := page.Latest; l == nil || l.Epoch != 3 || l.Acked != 3 || l.Required != 4 || l.AckClass != "part" || !page.Epochs[0].Open {
		t.Fatalf("latest: %+v", page.Latest)
	}
	if e := page.Epochs[1]; e.State != "aborted" || e.Open || e.AbortReason == "" || e.Aborted != "1m00s ago" {
		t.Fatalf("aborted epoch: %+v", e)
	}
	if e := page.Epochs[2]; !e.Open || e.Acked != 5 || e.Required != 5 || e.AckClass != "full" || e.StateClass != "ok" {
		t.Fatalf("committed epoch: %+v", e)
	}
	rows := map[string]tqNodeRow{}
	for _, n := range page.Nodes {
		rows[n.Serial] = n
	}
	if n := rows["SIM-0001"]; n.Class != "failing" || len(n.Alarms) != 1 || n.Alarms[0].Peer != "rackplane-sim/ROGUE" {
		t.Fatalf("the node with an alarm: %+v", n)
	}
	if n := rows["SIM-0001"]; n.Storage != "locked" || n.StorageClass != "stale" || !strings.Contains(n.StorageReason, "shares") {
		t.Fatalf("the locked node's storage: %+v", n)
	}
	if n := rows["SIM-0002"]; n.Class != "degraded" || n.Error == "" || n.Committed != "—" || n.Storage != "—" {
		t.Fatalf("the unreachable node: %+v", n)
	}
	if n := rows["SIM-0009"]; n.Class != "disabled" || !strings.Contains(n.Expunged, "expunged at epoch 1") {
		t.Fatalf("the expunged node: %+v", n)
	}

	// And rendered: the alarm row is highlighted, every epoch has its
	// card, the aborted one its reason.
	var buf bytes.Buffer
	if err := uiPages["trustquorum"].ExecuteTemplate(&buf, "fragment", uiPage{Body: page}); err != nil {
		t.Fatal(err)
	}
	html := buf.String()
	for _, want := range []string{`<tr class="failing" data-node="SIM-0001">`, `<span class="badge error">mismatched_configurations</span>`,
		`data-epoch="3"`, `data-epoch="2"`, `data-epoch="1"`, "3/4 acked", "5/5 acked", "retried as epoch 3",
		`data-uninitialized="SIM-0006"`, `id="alarm-count">1 alarm</span>`, `<span class="badge stale">locked</span>`} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if notSet := buildTrustQuorumPage(app.TrustQuorumState{}, nil, nil, now); !notSet.NotSetUp || len(notSet.Epochs) != 0 {
		t.Fatalf("before rack setup: %+v", notSet)
	}
}

package trustquorum

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/nexus/model"
)

var update = flag.Bool("update", false, "rewrite golden files")

// Fixtures: sleds are rackplane-sim:SIM-000N at sled-N:12345, the rack
// id fixed, the database's clock at t0.
var (
	rackID = uuid.MustParse("5ac0c0de-0000-4000-8000-000000000001")
	t0     = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
)

func board(i int) model.Baseboard {
	return model.Baseboard{Part: "rackplane-sim", Serial: fmt.Sprintf("SIM-%04d", i)}
}

func wireBoard(i int) api.Baseboard {
	b := board(i)
	return api.Baseboard{Part: b.Part, Serial: b.Serial}
}

func digest(i int) []byte { return []byte(strings.Repeat(string(rune('a'+i)), 32)) }

// config is epoch over sleds 1..n with the given member states
// ("u"nacked, "p"repared, "c"ommitted), coordinated by sled coord.
func config(epoch uint64, state model.TQState, coord int, states string) *model.TQConfiguration {
	n := len(states)
	k := model.TQThreshold(n)
	c := &model.TQConfiguration{RackID: rackID, Epoch: epoch, LastCommittedEpoch: epoch - 1, State: state, Threshold: k,
		CommitCrashTolerance: model.CommitCrashTolerance(n, k), Coordinator: board(coord), Recorded: true,
		ChangeID: uuid.MustParse("c0000000-0000-4000-8000-000000000001"), Attempt: 1,
		TimeCreated: t0.Add(-time.Minute), TimeLastProgress: t0.Add(-5 * time.Second)}
	for i, s := range states {
		m := model.TQMember{Baseboard: board(i + 1), ShareDigest: digest(i), X: i + 1}
		switch s {
		case 'u':
			m.State = model.TQMemberUnacked
		case 'p':
			m.State = model.TQMemberPrepared
		case 'c':
			m.State = model.TQMemberCommitted
		}
		c.Members = append(c.Members, m)
	}
	return c
}

// input is a rack of n registered sleds, all answering directly with
// latest committed epoch last, and nothing in progress.
func input(n int, last uint64) Input {
	in := Input{Now: t0, NoProgress: 30 * time.Second, MaxAttempts: 3, RackID: rackID,
		Sleds: map[model.Baseboard]SledInfo{}, Nodes: map[model.Baseboard]NodeObs{}}
	for i := 1; i <= n; i++ {
		in.Sleds[board(i)] = SledInfo{Address: fmt.Sprintf("sled-%d:12345", i), InService: true}
		in.Nodes[board(i)] = NodeObs{Via: model.TQViaDirect, Status: &api.TQStatus{Baseboard: wireBoard(i),
			LatestCommittedEpoch: last, Coordination: api.TQCoordinatorStatus{State: "not_coordinating", Acked: []api.Baseboard{}}}}
	}
	return in
}

func (in *Input) coordinating(i int, epoch uint64, state string, acked ...int) {
	st := in.Nodes[board(i)].Status
	st.Coordination = api.TQCoordinatorStatus{State: state, Epoch: epoch, Acked: []api.Baseboard{}}
	for _, a := range acked {
		st.Coordination.Acked = append(st.Coordination.Acked, wireBoard(a))
	}
	if state == "preparing" {
		st.Coordination.Configuration = WireConfiguration(rackID, in.Active)
	}
}

func (in *Input) unreachable(i int, err string) {
	in.Nodes[board(i)] = NodeObs{Via: model.TQViaDirect, Error: err}
}

var goldenCases = map[string]func() Input{
	"idle": func() Input {
		in := input(4, 1)
		in.LatestCommitted = config(1, model.TQCommitted, 1, "cccc")
		return in
	},
	// A change just started: the coordinator has not heard of it.
	"preparing_send_reconfigure": func() Input {
		in := input(5, 1)
		in.LatestCommitted = config(1, model.TQCommitted, 1, "cccc")
		in.Active = config(2, model.TQPreparing, 3, "uuuuu")
		in.Active.Recorded = false
		in.Nodes[board(5)] = NodeObs{Via: model.TQViaDirect, Status: &api.TQStatus{Baseboard: wireBoard(5),
			Coordination: api.TQCoordinatorStatus{State: "not_coordinating", Acked: []api.Baseboard{}}}}
		return in
	},
	"lrtq_upgrade_send": func() Input {
		in := input(4, 0)
		lrtq := config(1, model.TQCommitted, 1, "cccc")
		lrtq.Lrtq = true
		in.LatestCommitted = lrtq
		in.Active = config(2, model.TQPreparingLrtqUpgrade, 2, "uuuu")
		in.Active.LrtqUpgrade, in.Active.Recorded, in.Active.LastCommittedEpoch = true, false, 1
		return in
	},
	// The coordinator collects shares of the last epoch: waiting.
	"preparing_collecting": func() Input {
		in := input(5, 1)
		in.Active = config(2, model.TQPreparing, 3, "uuuuu")
		in.Active.Recorded = false
		in.coordinating(3, 2, "collecting_shares")
		return in
	},
	// Two of four needed acks (N=5: K=3, Z=1): record, keep preparing.
	"preparing_some_acks": func() Input {
		in := input(5, 1)
		in.Active = config(2, model.TQPreparing, 3, "uuuuu")
		in.Active.Recorded = false
		in.coordinating(3, 2, "preparing", 3, 4)
		return in
	},
	// K+Z acks: record, and commit at once (unacked members get
	// prepare-and-commit).
	"preparing_reaches_k_plus_z": func() Input {
		in := input(5, 1)
		in.Active = config(2, model.TQPreparing, 3, "uppuu")
		in.coordinating(3, 2, "preparing", 1, 2, 3, 4)
		return in
	},
	"coordinator_unreachable_waits": func() Input {
		in := input(5, 1)
		in.Active = config(2, model.TQPreparing, 3, "uuuuu")
		in.unreachable(3, "dial tcp sled-3:12345: connection refused")
		return in
	},
	"coordinator_unreachable_aborts": func() Input {
		in := input(5, 1)
		in.Active = config(2, model.TQPreparing, 3, "uupuu")
		in.Active.TimeLastProgress = t0.Add(-45 * time.Second)
		in.unreachable(3, "dial tcp sled-3:12345: connection refused")
		return in
	},
	// The configuration was recorded; the coordinator now coordinates
	// nothing: it restarted.
	"coordinator_lost": func() Input {
		in := input(5, 1)
		in.Active = config(2, model.TQPreparing, 3, "uupuu")
		return in
	},
	"no_progress_aborts": func() Input {
		in := input(5, 1)
		in.Active = config(2, model.TQPreparing, 3, "uppuu")
		in.Active.TimeLastProgress = t0.Add(-2 * time.Minute)
		in.coordinating(3, 2, "preparing", 2, 3)
		return in
	},
	// Committing: sled 1 committed (recorded), sled 2's status shows it
	// committed (recorded without asking), sled 3 prepared, sled 4 never
	// acked, sled 5 runs only its bootstrap agent (proxied through a
	// committed member).
	"committing_mixed": func() Input {
		in := input(5, 1)
		in.LatestCommitted = config(1, model.TQCommitted, 1, "ccccc")
		in.Active = config(2, model.TQCommitting, 3, "cppup")
		in.Nodes[board(2)].Status.LatestCommittedEpoch = 2
		delete(in.Sleds, board(5))
		in.Nodes[board(5)] = NodeObs{Via: "proxy rackplane-sim:SIM-0001", Status: &api.TQStatus{Baseboard: wireBoard(5),
			LatestCommittedEpoch: 1}}
		return in
	},
	// A member's own sled agent did not answer this run: its commit goes
	// through a committed member.
	"committing_direct_failed": func() Input {
		in := input(4, 1)
		in.LatestCommitted = config(1, model.TQCommitted, 1, "cccc")
		in.Active = config(2, model.TQCommitting, 1, "ccpp")
		in.Nodes[board(4)] = NodeObs{Via: "proxy rackplane-sim:SIM-0001", Error: "dial: connection refused; proxy: busy"}
		return in
	},
	// Every member committed: finish.
	"committing_all_acked": func() Input {
		in := input(4, 2)
		in.Active = config(2, model.TQCommitting, 1, "cccc")
		return in
	},
	// Epoch 2 left sled 5 out and committed everywhere; sled 5 does not
	// know yet (sled 6, removed before, does).
	"removed_sled_told": func() Input {
		in := input(6, 2)
		in.LatestCommitted = config(2, model.TQCommitted, 1, "cccc")
		in.Nodes[board(6)].Status.Expunged = &api.TQExpunged{Epoch: 1, From: wireBoard(1)}
		// Sled 7 never held anything (a spare of an aborted attempt): it
		// is not a removed member.
		in.Sleds[board(7)] = SledInfo{Address: "sled-7:12345", InService: true}
		in.Nodes[board(7)] = NodeObs{Via: model.TQViaDirect, Status: &api.TQStatus{Baseboard: wireBoard(7)}}
		return in
	},
	// Epoch 2 added sled 5, which committed it through a proxy and runs
	// only its bootstrap agent: it is asked to start its sled agent
	// through sled 1. Sled 4, registered, is not.
	"committed_member_started": func() Input {
		in := input(5, 2)
		in.LatestCommitted = config(2, model.TQCommitted, 1, "ccccc")
		delete(in.Sleds, board(5))
		in.Nodes[board(5)] = NodeObs{Via: "proxy rackplane-sim:SIM-0001", Status: &api.TQStatus{Baseboard: wireBoard(5),
			LatestCommittedEpoch: 2, StorageLock: "locked"}}
		return in
	},
	// Nobody to reach sled 4 through: it waits.
	"committing_unroutable": func() Input {
		in := input(4, 1)
		in.Active = config(2, model.TQCommitting, 1, "pppu")
		delete(in.Sleds, board(4))
		for i := 1; i <= 3; i++ {
			in.unreachable(i, "connection refused")
		}
		in.unreachable(4, "no sled agent of its own, and no member to proxy through")
		return in
	},
}

func TestDecideGolden(t *testing.T) {
	for name, mk := range goldenCases {
		t.Run(name, func(t *testing.T) {
			plan := Decide(mk())
			got, err := json.MarshalIndent(plan, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", "decide", name+".golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if string(got) != string(want) {
				t.Errorf("plan differs from %s (run with -update if the change is intended):\ngot:\n%s\nwant:\n%s", path, got, want)
			}
		})
	}
}

// The decisions the golden files show, stated: these hold whatever the
// files say.
func TestDecideRules(t *testing.T) {
	if p := Decide(goldenCases["idle"]()); p.Epoch != 0 || p.FollowUp || p.Reconfigure != nil || p.Abort != nil {
		t.Errorf("idle: %+v", p)
	}
	if p := Decide(goldenCases["preparing_send_reconfigure"]()); p.Reconfigure == nil ||
		p.Reconfigure.Coordinator != board(3) || p.Reconfigure.Reconfigure.LastCommittedEpoch != 1 || p.Abort != nil {
		t.Errorf("a new epoch is not sent to its coordinator: %+v", p)
	}
	if p := Decide(goldenCases["lrtq_upgrade_send"]()); p.Reconfigure == nil || p.Reconfigure.LrtqUpgrade == nil ||
		p.Reconfigure.Reconfigure != nil {
		t.Errorf("an LRTQ upgrade is not sent as one: %+v", p)
	}
	p := Decide(goldenCases["preparing_some_acks"]())
	if p.Prepares == nil || p.Prepares.Committing || len(p.Commits) != 0 {
		t.Errorf("2 of 4 acks: %+v", p)
	}
	p = Decide(goldenCases["preparing_reaches_k_plus_z"]())
	if p.Prepares == nil || !p.Prepares.Committing || len(p.Commits) != 5 {
		t.Fatalf("K+Z acks: %+v", p)
	}
	for _, c := range p.Commits {
		want := OpCommit
		if c.Member == board(5) {
			want = OpPrepareAndCommit
		}
		if c.Op != want {
			t.Errorf("%s: %s, want %s", c.Member, c.Op, want)
		}
	}
	if p := Decide(goldenCases["coordinator_unreachable_waits"]()); p.Abort != nil || p.Waiting == "" {
		t.Errorf("an unreachable coordinator within the timeout: %+v", p)
	}
	for name, cause := range map[string]string{"coordinator_unreachable_aborts": "coordinator_unreachable",
		"coordinator_lost": "coordinator_lost", "no_progress_aborts": "no_progress"} {
		if p := Decide(goldenCases[name]()); p.Abort == nil || p.Abort.Cause != cause || len(p.Commits) != 0 {
			t.Errorf("%s: %+v", name, p)
		}
	}
	p = Decide(goldenCases["committing_mixed"]())
	if len(p.Observed) != 1 || p.Observed[0] != board(2) || len(p.Commits) != 3 || !p.Finish {
		t.Fatalf("committing: %+v", p)
	}
	for _, c := range p.Commits {
		switch c.Member {
		case board(5):
			if c.Via == nil || *c.Via != board(1) || c.Address != "sled-1:12345" || c.Op != OpCommit {
				t.Errorf("the bootstrap-only member: %+v", c)
			}
		case board(4):
			if c.Op != OpPrepareAndCommit || c.Via != nil {
				t.Errorf("the unacked member: %+v", c)
			}
		}
	}
	if p := Decide(goldenCases["removed_sled_told"]()); len(p.Removed) != 1 || p.Removed[0].Sled != board(5) || p.FollowUp {
		t.Errorf("removed sleds: %+v", p)
	}
	if p := Decide(goldenCases["committing_unroutable"]()); len(p.Commits) != 3 || p.Waiting == "" {
		t.Errorf("unroutable: %+v", p)
	}
}

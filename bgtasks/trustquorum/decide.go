package trustquorum

import (
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/nexus/model"
)

// Input is everything a decision is made on: the database's view and what
// this run observed of the nodes. Decide reads nothing else.
type Input struct {
	// Now is the database's clock when the view was read.
	Now time.Time
	// NoProgress is how long a prepare may stand still before the epoch
	// is aborted (and retried); MaxAttempts bounds the attempts at one
	// change.
	NoProgress  time.Duration
	MaxAttempts int
	RackID      uuid.UUID
	// Active is the configuration in progress (nil: none); LatestCommitted
	// the newest Nexus decided to commit.
	Active, LatestCommitted *model.TQConfiguration
	// Sleds are the registered sleds by baseboard.
	Sleds map[model.Baseboard]SledInfo
	// Nodes is what this run saw of each watched node.
	Nodes map[model.Baseboard]NodeObs
}

// SledInfo is what decisions need of a registered sled.
type SledInfo struct {
	Address string
	// InService is false for an expunged sled.
	InService bool
}

// NodeObs is one node's status as this run read it: directly (Via
// "direct") or through another sled's proxy, or the error that stopped it.
type NodeObs struct {
	Via    string
	Error  string
	Status *api.TQStatus
}

// Reached reports whether the node answered.
func (o NodeObs) Reached() bool { return o.Status != nil }

// Plan is what one activation does, in order: abort (and retry), or send
// the coordinator its request, or record the prepare acks the coordinator
// reports (then commit, when that makes the epoch committing), or commit
// members and record their acks.
type Plan struct {
	// Epoch and State are the configuration in progress (0, "" when none).
	Epoch uint64        `json:"epoch"`
	State model.TQState `json:"state"`
	// Abort aborts Epoch; with Retry the same change starts again.
	Abort *AbortPlan `json:"abort,omitempty"`
	// Reconfigure is the request to send the coordinator.
	Reconfigure *ReconfigurePlan `json:"reconfigure,omitempty"`
	// Prepares is the coordinator's report to record.
	Prepares *PreparesPlan `json:"prepares,omitempty"`
	// Observed are members whose status shows Epoch (or a newer epoch)
	// committed: their commit ack is recorded without asking.
	Observed []model.Baseboard `json:"observed_committed,omitempty"`
	// Commits are sent to the members not known to have committed, once
	// the epoch is committing (now, or by Prepares).
	Commits []CommitPlan `json:"commits,omitempty"`
	// Finish records commit acks (Observed and the commits' answers) and
	// completes the epoch when every member has acked.
	Finish bool `json:"finish,omitempty"`
	// Waiting says what the epoch waits for, for people.
	Waiting string `json:"waiting,omitempty"`
	// FollowUp asks for another run soon: an epoch is in progress.
	FollowUp bool `json:"follow_up,omitempty"`
	// Removed are sleds the latest committed epoch left out that do not
	// know it yet: each is asked to load the rack secret, and the members
	// it asks for shares answer that it is expunged.
	Removed []RemovedPlan `json:"removed,omitempty"`
	// Starts are committed members of the latest committed epoch that
	// have no sled agent Nexus knows (a spare just added runs only its
	// bootstrap agent): each is asked, through a committed member's
	// proxy, to start it; it unlocks its disks and registers.
	Starts []StartPlan `json:"starts,omitempty"`
}

// StartPlan is a member to ask to start its sled agent.
type StartPlan struct {
	Sled    model.Baseboard `json:"sled"`
	Via     model.Baseboard `json:"via"`
	Address string          `json:"address"`
}

// RemovedPlan is a removed sled to tell.
type RemovedPlan struct {
	Sled    model.Baseboard `json:"sled"`
	Address string          `json:"address"`
}

// AbortPlan is an automatic abort.
type AbortPlan struct {
	// Cause is a metric label: no_progress, coordinator_unreachable,
	// coordinator_lost or refused.
	Cause  string `json:"cause"`
	Reason string `json:"reason"`
}

// ReconfigurePlan is the coordinator's request.
type ReconfigurePlan struct {
	Coordinator model.Baseboard `json:"coordinator"`
	Address     string          `json:"address"`
	// Exactly one is set.
	Reconfigure *api.TQReconfigureRequest `json:"reconfigure,omitempty"`
	LrtqUpgrade *api.TQLrtqUpgradeRequest `json:"lrtq_upgrade,omitempty"`
	// LostIfNotCoordinating: a coordinator that answers without
	// coordinating the epoch had prepared it before a restart, and the
	// shares it handed out died with it: the epoch must be aborted.
	LostIfNotCoordinating bool `json:"lost_if_not_coordinating"`
}

// PreparesPlan is the coordinator's report of the epoch it prepares.
type PreparesPlan struct {
	Configuration *api.TQConfiguration `json:"configuration"`
	Acked         []model.Baseboard    `json:"acked"`
	// Committing is set when the acks reach K+Z: the commits follow.
	Committing bool `json:"committing"`
}

// Commit operations.
const (
	OpCommit           = "commit"
	OpPrepareAndCommit = "prepare_and_commit"
)

// CommitPlan is one member's commit.
type CommitPlan struct {
	Member model.Baseboard `json:"member"`
	// Op is OpCommit for a member recorded as prepared (escalated to
	// OpPrepareAndCommit if it answers not_prepared), OpPrepareAndCommit
	// for one that never acked the prepare.
	Op string `json:"op"`
	// Address is the sled API the request goes to: the member's own, or
	// Via's when it is proxied.
	Address string           `json:"address"`
	Via     *model.Baseboard `json:"via,omitempty"`
}

// Decide plans one activation. It is a pure function of its input.
func Decide(in Input) Plan {
	c := in.Active
	if c == nil {
		return Plan{Removed: removed(in), Starts: starts(in)}
	}
	p := Plan{Epoch: c.Epoch, State: c.State, FollowUp: true, Removed: removed(in), Starts: starts(in)}
	if c.State.Preparing() {
		decidePreparing(in, c, &p)
		if p.Prepares == nil || !p.Prepares.Committing {
			return p
		}
	}
	decideCommitting(in, c, &p)
	return p
}

func decidePreparing(in Input, c *model.TQConfiguration, p *Plan) {
	co := in.Nodes[c.Coordinator]
	stalled := in.Now.Sub(c.TimeLastProgress)
	timedOut := in.NoProgress > 0 && stalled > in.NoProgress
	stall := func(cause, what string) {
		if timedOut {
			p.Abort = &AbortPlan{Cause: cause, Reason: fmt.Sprintf("%s; no progress for %s", what, stalled.Round(time.Second))}
			return
		}
		p.Waiting = what
	}
	if !co.Reached() {
		stall("coordinator_unreachable", fmt.Sprintf("coordinator %s is unreachable: %s", c.Coordinator, co.Error))
		return
	}
	st := co.Status
	cs := st.Coordination
	switch {
	case cs.Epoch == c.Epoch && cs.State == "preparing" && cs.Configuration != nil:
		prep := &PreparesPlan{Configuration: cs.Configuration, Acked: baseboards(cs.Acked)}
		fresh := 0
		prepared := 0
		for _, m := range c.Members {
			if m.State != model.TQMemberUnacked || slices.Contains(prep.Acked, m.Baseboard) {
				prepared++
			}
			if m.State == model.TQMemberUnacked && slices.Contains(prep.Acked, m.Baseboard) {
				fresh++
			}
		}
		prep.Committing = prepared >= c.Threshold+c.CommitCrashTolerance
		if fresh > 0 || !c.Recorded || prep.Committing {
			p.Prepares = prep
		}
		if fresh == 0 && c.Recorded && !prep.Committing {
			stall("no_progress", fmt.Sprintf("%d of %d prepare acks (K+Z), the coordinator waits for the rest",
				prepared, c.Threshold+c.CommitCrashTolerance))
		}
	case cs.Epoch > c.Epoch:
		p.Abort = &AbortPlan{Cause: "coordinator_lost",
			Reason: fmt.Sprintf("coordinator %s coordinates epoch %d, newer than this one", c.Coordinator, cs.Epoch)}
	case cs.Epoch == c.Epoch:
		stall("no_progress", fmt.Sprintf("coordinator %s is %s", c.Coordinator, cs.State))
	case c.Recorded || (st.LatestConfiguration != nil && st.LatestConfiguration.Epoch >= c.Epoch):
		// It prepared this epoch and no longer coordinates it: it
		// restarted, and the shares it made are gone with it.
		p.Abort = &AbortPlan{Cause: "coordinator_lost",
			Reason: fmt.Sprintf("coordinator %s restarted and lost its coordination of epoch %d", c.Coordinator, c.Epoch)}
	case st.Expunged != nil:
		p.Abort = &AbortPlan{Cause: "refused", Reason: fmt.Sprintf("coordinator %s is expunged", c.Coordinator)}
	default:
		if timedOut {
			stall("no_progress", fmt.Sprintf("coordinator %s has not started epoch %d", c.Coordinator, c.Epoch))
			return
		}
		p.Reconfigure = reconfigurePlan(in, c)
		if p.Reconfigure == nil {
			stall("coordinator_unreachable", fmt.Sprintf("coordinator %s has no sled agent Nexus can call", c.Coordinator))
		}
	}
}

// removed lists the watched sleds that are members of neither the epoch
// in progress nor the latest committed one, answer through their own sled
// agent and do not know they are expunged — once every member of the
// latest committed epoch committed it (a member that has not would hand
// the removed sled a share instead).
func removed(in Input) []RemovedPlan {
	lc := in.LatestCommitted
	if lc == nil || lc.Lrtq || (lc.State != model.TQCommitted && lc.State != model.TQCommittedPartially) {
		return nil
	}
	var out []RemovedPlan
	for b, o := range in.Nodes {
		if lc.IsMember(b) || (in.Active != nil && in.Active.IsMember(b)) {
			continue
		}
		// A removed sled's record is expunged as its epoch commits; it
		// is still told (that gives it no work).
		s, ok := in.Sleds[b]
		if !o.Reached() || o.Via != model.TQViaDirect || o.Status.Expunged != nil || !ok || s.Address == "" {
			continue
		}
		if o.Status.LatestCommittedEpoch == 0 && !o.Status.HasLrtq {
			// It never held anything: not a removed member.
			continue
		}
		out = append(out, RemovedPlan{Sled: b, Address: s.Address})
	}
	slices.SortFunc(out, func(a, b RemovedPlan) int { return model.CompareBaseboards(a.Sled, b.Sled) })
	return out
}

// starts lists the members that committed the latest committed epoch,
// answer through a proxy, and have no registered sled agent: each is asked
// to start it, through the first committed member whose own sled agent
// answered.
func starts(in Input) []StartPlan {
	lc := in.LatestCommitted
	if lc == nil {
		return nil
	}
	committed := map[model.Baseboard]bool{}
	for _, m := range lc.Members {
		o := in.Nodes[m.Baseboard]
		committed[m.Baseboard] = m.State == model.TQMemberCommitted ||
			(o.Reached() && o.Status.LatestCommittedEpoch >= lc.Epoch)
	}
	vias := proxies(in, lc, committed)
	var out []StartPlan
	for _, m := range lc.Members {
		b := m.Baseboard
		o := in.Nodes[b]
		if s, ok := in.Sleds[b]; (ok && s.Address != "") || !committed[b] || !o.Reached() || o.Via == model.TQViaDirect ||
			o.Status.Expunged != nil {
			continue
		}
		for _, via := range vias {
			if via != b {
				out = append(out, StartPlan{Sled: b, Via: via, Address: in.Sleds[via].Address})
				break
			}
		}
	}
	return out
}

func reconfigurePlan(in Input, c *model.TQConfiguration) *ReconfigurePlan {
	s, ok := in.Sleds[c.Coordinator]
	if !ok || !s.InService || s.Address == "" {
		return nil
	}
	rp := &ReconfigurePlan{Coordinator: c.Coordinator, Address: s.Address, LostIfNotCoordinating: true}
	members := make([]api.Baseboard, len(c.Members))
	for i, m := range c.Members {
		members[i] = api.Baseboard{Part: m.Baseboard.Part, Serial: m.Baseboard.Serial}
	}
	if c.LrtqUpgrade {
		rp.LrtqUpgrade = &api.TQLrtqUpgradeRequest{RackID: in.RackID, Epoch: c.Epoch, Members: members,
			Threshold: uint8(c.Threshold)}
	} else {
		rp.Reconfigure = &api.TQReconfigureRequest{RackID: in.RackID, Epoch: c.Epoch, LastCommittedEpoch: c.LastCommittedEpoch,
			Members: members, Threshold: uint8(c.Threshold)}
	}
	return rp
}

func decideCommitting(in Input, c *model.TQConfiguration, p *Plan) {
	prepared := map[model.Baseboard]bool{}
	for _, m := range c.Members {
		prepared[m.Baseboard] = m.State != model.TQMemberUnacked
	}
	if p.Prepares != nil {
		for _, b := range p.Prepares.Acked {
			prepared[b] = true
		}
	}
	committed := map[model.Baseboard]bool{}
	for _, m := range c.Members {
		if m.State == model.TQMemberCommitted {
			committed[m.Baseboard] = true
			continue
		}
		if o := in.Nodes[m.Baseboard]; o.Reached() && o.Status.LatestCommittedEpoch >= c.Epoch {
			p.Observed = append(p.Observed, m.Baseboard)
			committed[m.Baseboard] = true
		}
	}
	var unroutable []string
	for _, m := range c.Members {
		if committed[m.Baseboard] {
			continue
		}
		cp, ok := route(in, c, m.Baseboard, committed)
		if !ok {
			unroutable = append(unroutable, m.Baseboard.String())
			continue
		}
		cp.Op = OpPrepareAndCommit
		if prepared[m.Baseboard] {
			cp.Op = OpCommit
		}
		p.Commits = append(p.Commits, cp)
	}
	p.Finish = true
	if len(unroutable) > 0 {
		p.Waiting = fmt.Sprintf("no way to reach %v: no sled agent of theirs, and no committed member to proxy through",
			unroutable)
	}
}

// route is how a member is reached for its commit: its own sled agent if
// it has one that answered this run (or was not asked), otherwise through
// a member that committed (this epoch, or the one it is built on) whose
// sled agent answered.
func route(in Input, c *model.TQConfiguration, b model.Baseboard, committed map[model.Baseboard]bool) (CommitPlan, bool) {
	obs, asked := in.Nodes[b]
	if s, ok := in.Sleds[b]; ok && s.InService && s.Address != "" && (!asked || obs.Via == model.TQViaDirect) {
		return CommitPlan{Member: b, Address: s.Address}, true
	}
	for _, via := range proxies(in, c, committed) {
		if via == b {
			continue
		}
		v := via
		return CommitPlan{Member: b, Address: in.Sleds[via].Address, Via: &v}, true
	}
	return CommitPlan{}, false
}

// proxies are the sleds a request for another can go through: committed
// members (of c, then of the epoch it is built on) whose own sled agent
// answered this run, in baseboard order.
func proxies(in Input, c *model.TQConfiguration, committed map[model.Baseboard]bool) []model.Baseboard {
	var out []model.Baseboard
	add := func(b model.Baseboard) {
		o := in.Nodes[b]
		s, ok := in.Sleds[b]
		if ok && s.InService && o.Reached() && o.Via == model.TQViaDirect && !slices.Contains(out, b) {
			out = append(out, b)
		}
	}
	for _, m := range c.Members {
		if committed[m.Baseboard] {
			add(m.Baseboard)
		}
	}
	if lc := in.LatestCommitted; lc != nil && lc.Epoch != c.Epoch {
		for _, m := range lc.Members {
			if m.State == model.TQMemberCommitted {
				add(m.Baseboard)
			}
		}
	}
	return out
}

func baseboards(bs []api.Baseboard) []model.Baseboard {
	out := make([]model.Baseboard, len(bs))
	for i, b := range bs {
		out[i] = model.Baseboard{Part: b.Part, Serial: b.Serial}
	}
	slices.SortFunc(out, model.CompareBaseboards)
	return out
}

// WireConfiguration is c as the sled API takes it (for prepare-and-commit).
func WireConfiguration(rack uuid.UUID, c *model.TQConfiguration) *api.TQConfiguration {
	w := &api.TQConfiguration{RackID: rack, Epoch: c.Epoch, Threshold: uint8(c.Threshold),
		Coordinator: api.Baseboard{Part: c.Coordinator.Part, Serial: c.Coordinator.Serial}}
	for _, m := range c.Members {
		w.Members = append(w.Members, api.TQMember{Part: m.Baseboard.Part, Serial: m.Baseboard.Serial,
			ShareDigest: hex.EncodeToString(m.ShareDigest), X: uint8(m.X)})
	}
	if c.EncryptedSalt != nil {
		w.EncryptedRackSecrets = &api.TQEncryptedRackSecrets{Salt: c.EncryptedSalt, Ciphertext: c.EncryptedCiphertext}
	}
	return w
}

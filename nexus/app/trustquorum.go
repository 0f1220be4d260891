package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/reqid"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/model"
)

// The trust quorum as Nexus orchestrates it: epochs and their members in
// the database, the operator's requests (membership changes, the LRTQ
// upgrade, aborts), rack setup's handoff, and the fenced writes of the
// trust_quorum_manager task. Every change is judged on a view read in the
// change's own transaction (datastore.TQChange), so two Nexus instances
// racing on any step can never both win it.

// Limits on membership (the protocol's).
const (
	TQMinMembers = 3
	TQMaxMembers = 32
)

// TrustQuorumState is the rack's trust quorum as the API shows it.
type TrustQuorumState struct {
	Rack *model.Rack
	// Latest is the newest epoch in any state, LatestCommitted the newest
	// Nexus decided to commit; either may be nil.
	Latest, LatestCommitted *model.TQConfiguration
	Nodes                   []model.TQNodeStatus
}

// TrustQuorum returns the latest and latest committed configurations and
// every node's last observed status.
func (a *App) TrustQuorum(ctx context.Context) (TrustQuorumState, error) {
	v, err := a.ds.TQViewRead(ctx, datastore.TQViewNeeds{})
	if err != nil {
		return TrustQuorumState{}, translate(err)
	}
	nodes, err := a.ds.TQNodeStatusList(ctx)
	if err != nil {
		return TrustQuorumState{}, translate(err)
	}
	return TrustQuorumState{Rack: v.Rack, Latest: v.Latest, LatestCommitted: v.LatestCommitted, Nodes: nodes}, nil
}

// TrustQuorumEpoch returns one epoch.
func (a *App) TrustQuorumEpoch(ctx context.Context, epoch uint64) (model.TQConfiguration, error) {
	c, err := a.ds.TQConfigurationGet(ctx, epoch)
	return c, translate(err)
}

// TrustQuorumEpochs returns up to limit epochs, newest first, below
// `before` (0: from the newest).
func (a *App) TrustQuorumEpochs(ctx context.Context, before uint64, limit int) ([]model.TQConfiguration, error) {
	out, err := a.ds.TQConfigurationList(ctx, before, limit)
	return out, translate(err)
}

// TrustQuorumNodes returns every node's last observed status.
func (a *App) TrustQuorumNodes(ctx context.Context) ([]model.TQNodeStatus, error) {
	out, err := a.ds.TQNodeStatusList(ctx)
	return out, translate(err)
}

// UninitializedSleds lists the sleds the rack's nodes report seeing on the
// bootstrap network that are not members of the latest committed
// configuration (and never were: a removed sled is expunged, not
// uninitialised).
func (a *App) UninitializedSleds(ctx context.Context) ([]model.TQUninitializedSled, error) {
	v, err := a.ds.TQViewRead(ctx, datastore.TQViewNeeds{Seen: true, Former: true})
	if err != nil {
		return nil, translate(err)
	}
	return uninitialized(v), nil
}

func uninitialized(v *datastore.TQView) []model.TQUninitializedSled {
	out := []model.TQUninitializedSled{}
	lc := v.LatestCommitted
	for _, s := range v.Seen {
		if lc != nil && lc.IsMember(s.Baseboard) {
			continue
		}
		if slices.Contains(v.Former, s.Baseboard) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// Operator requests -----------------------------------------------------------

// ChangeTrustQuorumMembership starts the next epoch: the latest committed
// membership with add added and remove removed, coordinated by a member
// (picked at random) that committed the last epoch. The manager task
// sends the coordinator its request and drives the epoch to commit.
func (a *App) ChangeTrustQuorumMembership(ctx context.Context, add, remove []model.Baseboard) (model.TQConfiguration, error) {
	target := fmt.Sprintf("trust quorum: add %s remove %s", boardList(add), boardList(remove))
	return a.startTrustQuorumChange(ctx, "trust_quorum.membership", target, func(v *datastore.TQView, pick uint64) (model.TQConfiguration, []datastore.TQOp, error) {
		return planMembership(v, add, remove, pick)
	})
}

// UpgradeTrustQuorumFromLrtq starts the first trust-quorum epoch of a rack
// set up with LRTQ, over the LRTQ members, coordinated by one of them.
func (a *App) UpgradeTrustQuorumFromLrtq(ctx context.Context) (model.TQConfiguration, error) {
	return a.startTrustQuorumChange(ctx, "trust_quorum.lrtq_upgrade", "trust quorum: upgrade from LRTQ", planLrtqUpgrade)
}

type tqPlan func(v *datastore.TQView, pick uint64) (model.TQConfiguration, []datastore.TQOp, error)

func (a *App) startTrustQuorumChange(ctx context.Context, action, target string, plan tqPlan) (model.TQConfiguration, error) {
	var out model.TQConfiguration
	err := a.audited(ctx, model.RoleAdmin, action, target, func(ctx context.Context) error {
		// One draw for the whole change, so that a retried transaction
		// picks the same coordinator from the same view.
		pick := a.rng.Uint64()
		err := a.ds.TQChange(ctx, action, datastore.TQViewNeeds{Sleds: true, Seen: true, Former: true},
			func(v *datastore.TQView) ([]datastore.TQOp, error) {
				var ops []datastore.TQOp
				var err error
				out, ops, err = plan(v, pick)
				if err == nil {
					datastore.UpdateAudit(ctx, func(e *model.AuditEntry) {
						e.Target = fmt.Sprintf("trust quorum epoch %d", out.Epoch)
						e.Detail = target
					})
				}
				return ops, err
			})
		return translate(err)
	})
	if err != nil {
		return out, err
	}
	zerolog.Ctx(ctx).Info().Uint64("epoch", out.Epoch).Str("coordinator", out.Coordinator.String()).
		Int("members", len(out.Members)).Str("change_id", out.ChangeID.String()).Msg("trust-quorum epoch started")
	a.notify(TrustQuorumChanged, reqid.From(ctx))
	return out, nil
}

func boardList(bs []model.Baseboard) string {
	if len(bs) == 0 {
		return "none"
	}
	s := make([]string, len(bs))
	for i, b := range bs {
		s[i] = b.String()
	}
	return strings.Join(s, ",")
}

// notSetUp is the refusal while rack setup has not handed the rack over.
func notSetUp() error {
	return fault.Conflictf(api.CodeTQNotSetUp,
		"the rack's trust quorum is not set up: rack setup has not handed a committed configuration to Nexus yet")
}

// inProgress refuses a change while c is in progress.
func inProgress(c *model.TQConfiguration) error {
	return fault.Conflictf(api.CodeTQInProgress,
		"trust-quorum epoch %d is %s (%d of %d acked); wait for it to finish, or abort it while it is preparing",
		c.Epoch, c.State, c.Acked(), c.Required())
}

// checkNoneActive refuses a change while another is in progress, except
// that a committing epoch that K+Z members already committed is
// superseded (it becomes committed_partially; its stragglers learn the
// commit from the members of the newer epoch). It returns the operation
// that supersedes it, if any.
func checkNoneActive(v *datastore.TQView) ([]datastore.TQOp, error) {
	c := v.Active
	if c == nil {
		return nil, nil
	}
	if c.State == model.TQCommitting && c.CommitAcks() >= c.Threshold+c.CommitCrashTolerance {
		return []datastore.TQOp{datastore.TQSetState{Epoch: c.Epoch, From: model.TQCommitting, To: model.TQCommittedPartially}}, nil
	}
	return nil, inProgress(c)
}

func planMembership(v *datastore.TQView, add, remove []model.Baseboard, pick uint64) (model.TQConfiguration, []datastore.TQOp, error) {
	var none model.TQConfiguration
	if len(add)+len(remove) == 0 {
		return none, nil, fault.Invalidf(api.CodeInvalidField, "name at least one sled to add or remove")
	}
	seen := map[model.Baseboard]string{}
	for _, l := range []struct {
		name string
		bs   []model.Baseboard
	}{{"add", add}, {"remove", remove}} {
		for _, b := range l.bs {
			if prev, dup := seen[b]; dup {
				return none, nil, fault.Invalidf(api.CodeInvalidField, "sled %s is named twice (in %s and %s)", b, prev, l.name)
			}
			seen[b] = l.name
		}
	}
	if v.Rack == nil || v.LatestCommitted == nil {
		return none, nil, notSetUp()
	}
	ops, err := checkNoneActive(v)
	if err != nil {
		return none, nil, err
	}
	last := v.LatestCommitted
	if last.Lrtq {
		return none, nil, fault.Conflictf(api.CodeUpgradeFromLrtqRequired,
			"the rack runs LRTQ; upgrade it to the trust quorum first (POST /v1/system/trust-quorum/lrtq-upgrade, "+
				"rackctl trust-quorum upgrade-from-lrtq)")
	}
	members := last.Baseboards()
	for _, b := range remove {
		if !last.IsMember(b) {
			return none, nil, fault.Conflictf(api.CodeNotAMember, "sled %s is not a member of epoch %d", b, last.Epoch)
		}
		members = slices.DeleteFunc(members, func(m model.Baseboard) bool { return m == b })
	}
	for _, b := range add {
		switch {
		case last.IsMember(b):
			return none, nil, fault.Conflictf(api.CodeTQAlreadyMember, "sled %s is a member of epoch %d already", b, last.Epoch)
		case slices.Contains(v.Former, b):
			return none, nil, fault.Conflictf(api.CodeSledExpunged,
				"sled %s was removed from the trust quorum and is expunged for good (until a factory reset)", b)
		case !knownBaseboard(v, b):
			return none, nil, fault.Invalidf(api.CodeTQUnknownBaseboard,
				"Nexus knows no sled %s: it is neither registered nor seen on the bootstrap network by a member "+
					"(GET /v1/system/hardware/sleds-uninitialized lists the sleds members see)", b)
		}
		members = append(members, b)
	}
	if len(members) < TQMinMembers || len(members) > TQMaxMembers {
		return none, nil, fault.Invalidf(api.CodeInvalidMembership,
			"the new membership would have %d sleds; the trust quorum needs %d to %d", len(members), TQMinMembers, TQMaxMembers)
	}
	slices.SortFunc(members, model.CompareBaseboards)
	candidates := coordinatorCandidates(v, members, func(b model.Baseboard) bool {
		m, ok := last.Member(b)
		return ok && m.State == model.TQMemberCommitted
	})
	coord, err := pickCoordinator(candidates, nil, pick, fmt.Sprintf("committed epoch %d", last.Epoch))
	if err != nil {
		return none, nil, err
	}
	c := newConfig(v, members, coord, last.Epoch, false, uuid.New(), 1)
	return c, append(ops, datastore.TQInsertConfig{Config: c}), nil
}

func planLrtqUpgrade(v *datastore.TQView, pick uint64) (model.TQConfiguration, []datastore.TQOp, error) {
	var none model.TQConfiguration
	if v.Rack == nil || v.LatestCommitted == nil {
		return none, nil, notSetUp()
	}
	if v.Active != nil {
		return none, nil, inProgress(v.Active)
	}
	if !v.LatestCommitted.Lrtq {
		return none, nil, fault.Conflictf(api.CodeAlreadyUpgraded,
			"the rack runs the trust quorum already (epoch %d is committed); there is no LRTQ to upgrade", v.LatestCommitted.Epoch)
	}
	lrtq := v.LatestCommitted
	members := lrtq.Baseboards()
	// The coordinator rebuilds the LRTQ secret from LRTQ shares: it must
	// hold one itself.
	candidates := coordinatorCandidates(v, members, lrtq.IsMember)
	coord, err := pickCoordinator(candidates, nil, pick, "LRTQ")
	if err != nil {
		return none, nil, err
	}
	c := newConfig(v, members, coord, lrtq.Epoch, true, uuid.New(), 1)
	return c, []datastore.TQOp{datastore.TQInsertConfig{Config: c}}, nil
}

// newConfig is the next epoch over members (sorted).
func newConfig(v *datastore.TQView, members []model.Baseboard, coord model.Baseboard, last uint64, upgrade bool,
	change uuid.UUID, attempt int) model.TQConfiguration {
	k := model.TQThreshold(len(members))
	c := model.TQConfiguration{
		RackID: v.Rack.ID, Epoch: v.Latest.Epoch + 1, LastCommittedEpoch: last, State: model.TQPreparing,
		Threshold: k, CommitCrashTolerance: model.CommitCrashTolerance(len(members), k), Coordinator: coord,
		LrtqUpgrade: upgrade, ChangeID: change, Attempt: attempt, TimeCreated: v.Now, TimeLastProgress: v.Now,
	}
	if upgrade {
		c.State = model.TQPreparingLrtqUpgrade
	}
	for _, m := range members {
		c.Members = append(c.Members, model.TQMember{Baseboard: m, State: model.TQMemberUnacked})
	}
	return c
}

// knownBaseboard reports whether Nexus has heard of b: a registered sled,
// or one a member sees on the bootstrap network.
func knownBaseboard(v *datastore.TQView, b model.Baseboard) bool {
	for _, s := range v.Sleds {
		if s.Baseboard == b && s.Policy == model.SledPolicyInService {
			return true
		}
	}
	for _, s := range uninitialized(v) {
		if s.Baseboard == b {
			return true
		}
	}
	return false
}

// coordinatorCandidates are the members that may coordinate: eligible
// (they hold what the coordinator collects from) and with a sled agent
// Nexus can reach (the reconfigure request is not proxied).
func coordinatorCandidates(v *datastore.TQView, members []model.Baseboard, eligible func(model.Baseboard) bool) []model.Baseboard {
	var out []model.Baseboard
	for _, m := range members {
		if !eligible(m) {
			continue
		}
		for _, s := range v.Sleds {
			if s.Baseboard == m && s.Policy == model.SledPolicyInService && s.State == model.SledStateActive {
				out = append(out, m)
			}
		}
	}
	return out
}

// pickCoordinator picks one of candidates not in exclude (pick chooses),
// or fails saying what was required.
func pickCoordinator(candidates, exclude []model.Baseboard, pick uint64, eligible string) (model.Baseboard, error) {
	var left []model.Baseboard
	for _, c := range candidates {
		if !slices.Contains(exclude, c) {
			left = append(left, c)
		}
	}
	if len(left) == 0 {
		return model.Baseboard{}, fault.Conflictf(api.CodeTQNoCoordinator,
			"no member can coordinate: a coordinator must be a member of the new epoch that holds %s, "+
				"with a sled agent registered and active%s", eligible, excludedNote(exclude))
	}
	return left[pick%uint64(len(left))], nil
}

func excludedNote(exclude []model.Baseboard) string {
	if len(exclude) == 0 {
		return ""
	}
	return fmt.Sprintf(", other than the earlier attempts' coordinators (%s)", boardList(exclude))
}

// AbortTrustQuorum aborts the epoch being prepared, at an operator's
// request. It is not retried. An epoch Nexus decided to commit cannot be
// aborted; aborting one aborted already changes nothing.
func (a *App) AbortTrustQuorum(ctx context.Context, epoch uint64) (model.TQConfiguration, error) {
	actor, _ := ActorFrom(ctx)
	reason := "aborted by " + actor.String()
	var out model.TQConfiguration
	changed := false
	err := a.audited(ctx, model.RoleAdmin, "trust_quorum.abort", fmt.Sprintf("trust quorum epoch %d", epoch), func(ctx context.Context) error {
		err := a.ds.TQChange(ctx, "trust_quorum_abort", datastore.TQViewNeeds{}, func(v *datastore.TQView) ([]datastore.TQOp, error) {
			changed = false
			if v.Rack == nil || v.Latest == nil {
				return nil, notSetUp()
			}
			c := v.Latest
			switch {
			case epoch > c.Epoch:
				// Epochs are assigned one after another: every one up to
				// the latest exists.
				return nil, fault.NotFoundf(api.CodeNotFound, "there is no trust-quorum epoch %d (the latest is %d)", epoch, c.Epoch)
			case c.Epoch != epoch:
				return nil, fault.Conflictf(api.CodeTQNotLatest,
					"epoch %d is not the latest; epoch %d is (%s), and only the epoch being prepared can be aborted",
					epoch, c.Epoch, c.State)
			case c.State == model.TQAborted:
				out = *c
				return nil, nil
			case c.State.Committed():
				return nil, fault.Conflictf(api.CodeTQCommitting,
					"epoch %d is %s: %d members prepared it and Nexus decided to commit it, which cannot be undone",
					epoch, c.State, c.Threshold+c.CommitCrashTolerance)
			}
			changed = true
			out = *c
			return abortOps(v, c, reason), nil
		})
		return translate(err)
	})
	if err != nil || !changed {
		return out, err
	}
	zerolog.Ctx(ctx).Info().Uint64("epoch", epoch).Str("reason", reason).Msg("trust-quorum epoch aborted")
	a.notify(TrustQuorumChanged, reqid.From(ctx))
	return a.TrustQuorumEpoch(ctx, epoch)
}

// abortOps aborts c; an epoch it had superseded that was committed only
// partially goes back to committing, so its stragglers get their commits.
func abortOps(v *datastore.TQView, c *model.TQConfiguration, reason string) []datastore.TQOp {
	ops := []datastore.TQOp{datastore.TQSetState{Epoch: c.Epoch, From: c.State, To: model.TQAborted, Reason: reason}}
	if lc := v.LatestCommitted; lc != nil && lc.State == model.TQCommittedPartially {
		ops = append(ops, datastore.TQSetState{Epoch: lc.Epoch, From: model.TQCommittedPartially, To: model.TQCommitting})
	}
	return ops
}

// Rack setup ----------------------------------------------------------------

// HandOffRackSetup records the rack the rack-setup service set up: its id
// and epoch 1 (or LRTQ) committed with every member acked. Only the
// rack-setup identity may hand a rack over. The same handoff again
// changes nothing (created false); a different one is refused.
func (a *App) HandOffRackSetup(ctx context.Context, cfg model.TQConfiguration) (model.TQConfiguration, bool, error) {
	actor, ok := ActorFrom(ctx)
	if !ok || actor.Kind != ActorRSS {
		err := fault.New(fault.Forbidden, api.CodeForbiddenIdentity,
			"only the rack-setup service hands a rack over; the caller is %s", actor)
		a.AuditRefusal(ctx, "rack.setup", "rack "+cfg.RackID.String(), err)
		return model.TQConfiguration{}, false, err
	}
	// The rack-setup service is the authority over a rack Nexus does not
	// have yet; this is the one change it may make.
	ctx = WithActor(ctx, Actor{Kind: ActorRSS, Name: actor.Name, Role: model.RoleAdmin})
	created := false
	var out model.TQConfiguration
	err := a.audited(ctx, model.RoleAdmin, "rack.setup", "rack "+cfg.RackID.String(), func(ctx context.Context) error {
		if err := checkHandoff(cfg); err != nil {
			return err
		}
		err := a.ds.TQChange(ctx, "rack_setup", datastore.TQViewNeeds{}, func(v *datastore.TQView) ([]datastore.TQOp, error) {
			created = false
			if v.Rack != nil {
				if v.Rack.ID != cfg.RackID {
					return nil, fault.Conflictf(api.CodeRackAlreadySetUp,
						"this Nexus governs rack %s; it cannot take rack %s", v.Rack.ID, cfg.RackID)
				}
				if v.Epoch1 == nil || !sameHandoff(*v.Epoch1, cfg) {
					return nil, fault.Conflictf(api.CodeRackAlreadySetUp,
						"rack %s was handed over before with a different epoch 1; rack setup happens once", cfg.RackID)
				}
				out = *v.Epoch1
				return nil, nil
			}
			created = true
			setup := model.RackSetupTrustQuorum
			if cfg.Lrtq {
				setup = model.RackSetupLrtq
			}
			c := cfg
			c.State, c.ChangeID, c.Attempt, c.TimeCreated, c.TimeLastProgress = model.TQCommitted, uuid.New(), 1, v.Now, v.Now
			c.CommitCrashTolerance = model.CommitCrashTolerance(len(c.Members), c.Threshold)
			c.Recorded = !c.Lrtq
			for i := range c.Members {
				c.Members[i].State = model.TQMemberCommitted
			}
			out = c
			return []datastore.TQOp{
				datastore.TQInsertRack{Rack: model.Rack{ID: cfg.RackID, Setup: setup}},
				datastore.TQInsertConfig{Config: c},
			}, nil
		})
		return translate(err)
	})
	if err != nil {
		return out, false, err
	}
	if created {
		zerolog.Ctx(ctx).Info().Str("rack_id", cfg.RackID.String()).Bool("lrtq", cfg.Lrtq).Int("members", len(cfg.Members)).
			Msg("rack handed over by rack setup")
		a.notify(TrustQuorumChanged, reqid.From(ctx))
		out, err = a.TrustQuorumEpoch(ctx, 1)
	}
	return out, created, err
}

func checkHandoff(c model.TQConfiguration) error {
	n := len(c.Members)
	switch {
	case c.Epoch != 1:
		return fault.Invalidf(api.CodeInvalidField, "rack setup hands over epoch 1, not %d", c.Epoch)
	case n < TQMinMembers || n > TQMaxMembers:
		return fault.Invalidf(api.CodeInvalidMembership, "%d members; the trust quorum needs %d to %d", n, TQMinMembers, TQMaxMembers)
	case c.Threshold < 2 || c.Threshold >= n:
		return fault.Invalidf(api.CodeInvalidThreshold, "threshold %d for %d members", c.Threshold, n)
	case !c.IsMember(c.Coordinator):
		return fault.Invalidf(api.CodeInvalidField, "the coordinator %s is not a member", c.Coordinator)
	}
	for i, m := range c.Members {
		if i > 0 && model.CompareBaseboards(c.Members[i-1].Baseboard, m.Baseboard) >= 0 {
			return fault.Invalidf(api.CodeInvalidMembership, "members must be distinct (sorted by baseboard)")
		}
		if !c.Lrtq && (len(m.ShareDigest) != 32 || m.X < 1 || m.X > 255) {
			return fault.Invalidf(api.CodeInvalidField, "member %s has no share digest and x", m.Baseboard)
		}
	}
	return nil
}

// sameHandoff reports whether the recorded epoch 1 is what c hands over.
func sameHandoff(rec, c model.TQConfiguration) bool {
	if rec.Lrtq != c.Lrtq || rec.Coordinator != c.Coordinator || rec.Threshold != c.Threshold ||
		len(rec.Members) != len(c.Members) || !bytes.Equal(rec.EncryptedSalt, c.EncryptedSalt) ||
		!bytes.Equal(rec.EncryptedCiphertext, c.EncryptedCiphertext) {
		return false
	}
	for i, m := range rec.Members {
		o := c.Members[i]
		if m.Baseboard != o.Baseboard || !bytes.Equal(m.ShareDigest, o.ShareDigest) || m.X != o.X {
			return false
		}
	}
	return true
}

// The manager task's writes ----------------------------------------------------

// ErrTrustQuorumMovedOn is what a fenced write returns (as the cause of a
// conflict fault) when its configuration is no longer the one in progress
// in the state the write expects.
var ErrTrustQuorumMovedOn = datastore.ErrTQFenced

// TrustQuorumView is the view the manager task collects from: the rack,
// the configurations, the registered sleds and the attempts at the latest
// change.
func (a *App) TrustQuorumView(ctx context.Context) (*datastore.TQView, error) {
	v, err := a.ds.TQViewRead(ctx, datastore.TQViewNeeds{Sleds: true, Attempts: true})
	return v, translate(err)
}

// TQPrepareReport is what the coordinator reported of the epoch it
// prepares: the configuration it made and the members that acked.
type TQPrepareReport struct {
	Coordinator      model.Baseboard
	Threshold        int
	Salt, Ciphertext []byte
	// Shares maps every member to its share's digest and x.
	Shares map[model.Baseboard]TQShare
	Acked  []model.Baseboard
}

// TQShare is one member's share as the configuration records it.
type TQShare struct {
	Digest []byte
	X      int
}

// TQPrepareResult is what recording a prepare report did.
type TQPrepareResult struct {
	// Recorded is set when the configuration was recorded now; NewAcks
	// counts members newly recorded as prepared.
	Recorded   bool
	NewAcks    int
	Acked      int
	Committing bool
	// Expunged are the sleds the epoch leaves out, expunged as it became
	// committing.
	Expunged []model.Baseboard
}

// RecordTrustQuorumPrepares records the coordinator's report for epoch,
// fenced: only while epoch is the latest and still preparing. At K+Z
// prepare acks the epoch moves to committing, for good.
func (a *App) RecordTrustQuorumPrepares(ctx context.Context, epoch uint64, r TQPrepareReport) (TQPrepareResult, error) {
	var res TQPrepareResult
	err := a.audited(ctx, model.RoleAdmin, "trust_quorum.prepares", fmt.Sprintf("trust quorum epoch %d", epoch), func(ctx context.Context) error {
		err := a.ds.TQChange(ctx, "trust_quorum_prepares", datastore.TQViewNeeds{}, func(v *datastore.TQView) ([]datastore.TQOp, error) {
			res = TQPrepareResult{}
			c, err := fenced(v, epoch, true)
			if err != nil {
				return nil, err
			}
			var ops []datastore.TQOp
			if !c.Recorded {
				op, err := recordOp(c, r)
				if err != nil {
					return nil, err
				}
				ops, res.Recorded = append(ops, op), true
			} else if err := sameShares(c, r); err != nil {
				return nil, err
			}
			var fresh []model.Baseboard
			for _, b := range r.Acked {
				if m, ok := c.Member(b); ok && m.State == model.TQMemberUnacked {
					fresh = append(fresh, b)
				}
			}
			res.NewAcks, res.Acked = len(fresh), c.Acked()+len(fresh)
			if len(fresh) > 0 {
				ops = append(ops, datastore.TQMarkMembers{Epoch: epoch, Members: fresh, To: model.TQMemberPrepared})
			}
			if len(fresh) > 0 || res.Recorded {
				ops = append(ops, datastore.TQProgress{Epoch: epoch})
			}
			if res.Acked >= c.Threshold+c.CommitCrashTolerance {
				res.Committing = true
				ops = append(ops, datastore.TQSetState{Epoch: epoch, From: c.State, To: model.TQCommitting})
				// The epoch is decided: the sleds it leaves out are
				// expunged now (no more work, no registration), whether
				// or not they have heard yet.
				if gone := leftOut(v.LatestCommitted, c); len(gone) > 0 {
					ops = append(ops, datastore.TQExpungeSleds{Baseboards: gone})
					res.Expunged = gone
				}
			}
			if len(ops) == 0 {
				return nil, nil
			}
			datastore.UpdateAudit(ctx, func(e *model.AuditEntry) {
				e.Detail = fmt.Sprintf("%d prepare acks of %d needed", res.Acked, c.Threshold+c.CommitCrashTolerance)
				if res.Committing {
					e.Detail += "; committing"
				}
			})
			return ops, nil
		})
		return translateTQ(err)
	})
	if err == nil && (res.NewAcks > 0 || res.Recorded) {
		a.notify(TrustQuorumChanged, "trust-quorum-prepares")
	}
	if err == nil && len(res.Expunged) > 0 {
		zerolog.Ctx(ctx).Info().Uint64("epoch", epoch).Interface("sleds", res.Expunged).
			Msg("sleds left out of a committed trust-quorum epoch are expunged")
		a.notify(SledsChanged, "trust-quorum-expunged")
	}
	return res, err
}

// fenced returns epoch's configuration if it is the one in progress, in a
// preparing state (preparing) or committing (!preparing), and no epoch
// other than aborted ones is newer.
func fenced(v *datastore.TQView, epoch uint64, preparing bool) (*model.TQConfiguration, error) {
	c := v.Active
	if v.Rack == nil || c == nil || c.Epoch != epoch || c.State.Preparing() != preparing {
		state := "none"
		if c != nil {
			state = fmt.Sprintf("epoch %d %s", c.Epoch, c.State)
		}
		return nil, fmt.Errorf("%w: epoch %d; in progress: %s", datastore.ErrTQFenced, epoch, state)
	}
	if preparing && v.Latest.Epoch != epoch {
		return nil, fmt.Errorf("%w: epoch %d is not the latest (%d is)", datastore.ErrTQFenced, epoch, v.Latest.Epoch)
	}
	return c, nil
}

func translateTQ(err error) error {
	if errors.Is(err, datastore.ErrTQFenced) {
		return fault.Wrap(err, fault.Conflict, api.CodeTQMovedOn, "%s", stripSentinel(err, datastore.ErrTQFenced))
	}
	return translate(err)
}

func recordOp(c *model.TQConfiguration, r TQPrepareReport) (datastore.TQOp, error) {
	if r.Coordinator != c.Coordinator || r.Threshold != c.Threshold || len(r.Shares) != len(c.Members) {
		return nil, fault.Conflictf(api.CodeMismatchedConfiguration,
			"the coordinator reported a configuration that is not epoch %d's (coordinator %s, threshold %d, %d members)",
			c.Epoch, r.Coordinator, r.Threshold, len(r.Shares))
	}
	op := datastore.TQRecordConfig{Epoch: c.Epoch, Salt: r.Salt, Ciphertext: r.Ciphertext,
		Digests: map[model.Baseboard][]byte{}, X: map[model.Baseboard]int{}}
	xs := map[int]bool{}
	for _, m := range c.Members {
		s, ok := r.Shares[m.Baseboard]
		if !ok || len(s.Digest) != 32 || s.X < 1 || s.X > 255 || xs[s.X] {
			return nil, fault.Conflictf(api.CodeMismatchedConfiguration,
				"the coordinator's configuration of epoch %d has no valid share for member %s", c.Epoch, m.Baseboard)
		}
		xs[s.X] = true
		op.Digests[m.Baseboard], op.X[m.Baseboard] = s.Digest, s.X
	}
	if (r.Salt == nil) != (r.Ciphertext == nil) || (r.Salt != nil && len(r.Salt) != 32) {
		return nil, fault.Conflictf(api.CodeMismatchedConfiguration, "the coordinator's encrypted secrets of epoch %d are malformed", c.Epoch)
	}
	return op, nil
}

// sameShares checks a report against the recorded configuration: a
// coordinator never changes the configuration it made.
func sameShares(c *model.TQConfiguration, r TQPrepareReport) error {
	for _, m := range c.Members {
		s := r.Shares[m.Baseboard]
		if !bytes.Equal(s.Digest, m.ShareDigest) || s.X != m.X {
			return fault.Conflictf(api.CodeMismatchedConfiguration,
				"the coordinator reports a configuration of epoch %d that differs from the one recorded (member %s)",
				c.Epoch, m.Baseboard)
		}
	}
	if !bytes.Equal(r.Salt, c.EncryptedSalt) || !bytes.Equal(r.Ciphertext, c.EncryptedCiphertext) {
		return fault.Conflictf(api.CodeMismatchedConfiguration,
			"the coordinator reports encrypted secrets of epoch %d that differ from the ones recorded", c.Epoch)
	}
	return nil
}

// TQCommitResult is what recording commit acks did.
type TQCommitResult struct {
	NewAcks   int
	Acked     int
	Committed bool
}

// leftOut are the members of prev (the epoch c is built on) that c leaves
// out.
func leftOut(prev, c *model.TQConfiguration) []model.Baseboard {
	if prev == nil || prev.Epoch == c.Epoch {
		return nil
	}
	var out []model.Baseboard
	for _, m := range prev.Members {
		if !c.IsMember(m.Baseboard) {
			out = append(out, m.Baseboard)
		}
	}
	return out
}

// RecordTrustQuorumCommits records that members acked epoch's commit,
// fenced: only while epoch is the one committing. Once every member has,
// the epoch is committed.
func (a *App) RecordTrustQuorumCommits(ctx context.Context, epoch uint64, acked []model.Baseboard) (TQCommitResult, error) {
	var res TQCommitResult
	err := a.audited(ctx, model.RoleAdmin, "trust_quorum.commits", fmt.Sprintf("trust quorum epoch %d", epoch), func(ctx context.Context) error {
		err := a.ds.TQChange(ctx, "trust_quorum_commits", datastore.TQViewNeeds{}, func(v *datastore.TQView) ([]datastore.TQOp, error) {
			res = TQCommitResult{}
			c, err := fenced(v, epoch, false)
			if err != nil {
				return nil, err
			}
			var fresh []model.Baseboard
			for _, b := range acked {
				if m, ok := c.Member(b); ok && m.State != model.TQMemberCommitted {
					fresh = append(fresh, b)
				}
			}
			res.NewAcks, res.Acked = len(fresh), c.CommitAcks()+len(fresh)
			var ops []datastore.TQOp
			if len(fresh) > 0 {
				ops = append(ops, datastore.TQMarkMembers{Epoch: epoch, Members: fresh, To: model.TQMemberCommitted})
			}
			if res.Acked == len(c.Members) {
				res.Committed = true
				ops = append(ops, datastore.TQSetState{Epoch: epoch, From: model.TQCommitting, To: model.TQCommitted})
			}
			if len(ops) == 0 {
				return nil, nil
			}
			datastore.UpdateAudit(ctx, func(e *model.AuditEntry) {
				e.Detail = fmt.Sprintf("%d of %d members committed", res.Acked, len(c.Members))
			})
			return ops, nil
		})
		return translateTQ(err)
	})
	if err == nil && res.NewAcks > 0 {
		a.notify(TrustQuorumChanged, "trust-quorum-commits")
	}
	return res, err
}

// AbortAndRetryTrustQuorum aborts epoch (fenced: the latest, still
// preparing) for reason, and unless its change has had maxAttempts
// attempts already, starts the same change again as the next epoch with
// a coordinator no earlier attempt used (when there is one). It returns
// the new epoch, or nil when the change was given up.
func (a *App) AbortAndRetryTrustQuorum(ctx context.Context, epoch uint64, reason string, maxAttempts int) (*model.TQConfiguration, error) {
	var retry *model.TQConfiguration
	err := a.audited(ctx, model.RoleAdmin, "trust_quorum.abort", fmt.Sprintf("trust quorum epoch %d", epoch), func(ctx context.Context) error {
		pick := a.rng.Uint64()
		err := a.ds.TQChange(ctx, "trust_quorum_retry", datastore.TQViewNeeds{Sleds: true, Attempts: true},
			func(v *datastore.TQView) ([]datastore.TQOp, error) {
				retry = nil
				c, err := fenced(v, epoch, true)
				if err != nil {
					return nil, err
				}
				next, why := planRetry(v, c, pick, maxAttempts)
				full := reason
				if next == nil {
					full += "; " + why
				} else {
					full += fmt.Sprintf("; retried as epoch %d (attempt %d) coordinated by %s", next.Epoch, next.Attempt, next.Coordinator)
				}
				var ops []datastore.TQOp
				if next == nil {
					ops = abortOps(v, c, full)
				} else {
					// A superseded, partially committed epoch stays so:
					// the retry supersedes it again.
					ops = []datastore.TQOp{datastore.TQSetState{Epoch: epoch, From: c.State, To: model.TQAborted, Reason: full},
						datastore.TQInsertConfig{Config: *next}}
					retry = next
				}
				datastore.UpdateAudit(ctx, func(e *model.AuditEntry) { e.Detail = full })
				return ops, nil
			})
		return translateTQ(err)
	})
	if err != nil {
		return nil, err
	}
	log := zerolog.Ctx(ctx).Warn().Uint64("epoch", epoch).Str("reason", reason)
	if retry != nil {
		log = log.Uint64("retry_epoch", retry.Epoch).Int("attempt", retry.Attempt).Str("coordinator", retry.Coordinator.String())
	}
	log.Msg("trust-quorum epoch aborted")
	a.notify(TrustQuorumChanged, "trust-quorum-abort")
	return retry, nil
}

// planRetry is the next attempt at c's change, or nil and why there is
// none.
func planRetry(v *datastore.TQView, c *model.TQConfiguration, pick uint64, maxAttempts int) (*model.TQConfiguration, string) {
	if c.Attempt >= maxAttempts {
		return nil, fmt.Sprintf("gave up after %d attempts", c.Attempt)
	}
	members := c.Baseboards()
	var eligible func(model.Baseboard) bool
	what := "LRTQ"
	if c.LrtqUpgrade {
		if v.Epoch1 == nil {
			return nil, "the LRTQ epoch is not recorded"
		}
		eligible = v.Epoch1.IsMember
	} else {
		last := v.LatestCommitted
		if last == nil || last.Epoch != c.LastCommittedEpoch {
			return nil, "the epoch it was built on is no longer the latest committed"
		}
		what = fmt.Sprintf("committed epoch %d", last.Epoch)
		eligible = func(b model.Baseboard) bool {
			m, ok := last.Member(b)
			return ok && m.State == model.TQMemberCommitted
		}
	}
	var tried []model.Baseboard
	for _, at := range v.Attempts {
		tried = append(tried, at.Coordinator)
	}
	candidates := coordinatorCandidates(v, members, eligible)
	coord, err := pickCoordinator(candidates, tried, pick, what)
	if err != nil {
		// Every candidate coordinated an attempt already: any but the
		// last one's will do.
		if coord, err = pickCoordinator(candidates, []model.Baseboard{c.Coordinator}, pick, what); err != nil {
			return nil, "no other member can coordinate"
		}
	}
	next := newConfig(v, members, coord, c.LastCommittedEpoch, c.LrtqUpgrade, c.ChangeID, c.Attempt+1)
	return &next, ""
}

// RecordTrustQuorumNodes records what this Nexus observed of nodes. Node
// statuses are observations, not changes anyone asked for: they are not
// audited.
func (a *App) RecordTrustQuorumNodes(ctx context.Context, statuses []model.TQNodeStatus) error {
	return translate(a.ds.TQNodeStatusRecord(ctx, a.cfg.NexusID, statuses))
}

package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/model"
)

// RegisterSled records a sled agent's (re-)registration.
//
// Only a sled may register, and only itself: the caller's certificate
// must name the baseboard the registration carries, and a sled id stays
// with the baseboard it was first registered with.
func (a *App) RegisterSled(ctx context.Context, id uuid.UUID, reg model.SledRegistration) (model.SledUpsertResult, error) {
	var res model.SledUpsertResult
	actor, ok := ActorFrom(ctx)
	switch {
	case !ok || actor.Kind != ActorSled:
		return res, fault.New(fault.Forbidden, api.CodeIdentityMismatch,
			"only a sled registers, with its own certificate; the caller is %s", actor)
	case actor.Sled != reg.Baseboard:
		return res, fault.New(fault.Forbidden, api.CodeIdentityMismatch,
			"the registration is for baseboard %s but the caller's certificate names %s", reg.Baseboard, actor.Sled)
	}
	res, err := a.ds.SledUpsert(ctx, id, reg)
	switch {
	case errors.Is(err, datastore.ErrBaseboardMismatch):
		return res, fault.Wrap(err, fault.Forbidden, api.CodeIdentityMismatch, "%s",
			stripSentinel(err, datastore.ErrBaseboardMismatch))
	case errors.Is(err, datastore.ErrConflict):
		return res, fault.Wrap(err, fault.Conflict, api.CodeBaseboardInUse, "%s", stripSentinel(err, datastore.ErrConflict))
	case errors.Is(err, datastore.ErrExpunged):
		// Its certificate is still the rack CA's, but the sled was removed
		// from the trust quorum: it may no longer take part.
		return res, fault.Wrap(err, fault.Forbidden, api.CodeSledExpunged, "%s", stripSentinel(err, datastore.ErrExpunged))
	case err != nil:
		return res, translate(err)
	}
	log := zerolog.Ctx(ctx).With().Str("sled_id", id.String()).Logger()
	switch {
	case res.Created:
		log.Info().Str("baseboard", reg.Baseboard.String()).Str("address", reg.SledAgentAddress).Msg("sled registered")
	case res.Changed:
		log.Info().Str("baseboard", reg.Baseboard.String()).Str("address", reg.SledAgentAddress).Msg("sled registration changed")
	default:
		log.Debug().Msg("sled registration refreshed")
	}
	if res.Created || res.Changed || res.InventoryChanged || res.Revived {
		// What the sled can hold or serve changed: work for (and from) it
		// should start now rather than at the tasks' next period.
		a.notify(SledsChanged, "sled-registration:"+id.String())
	}
	return res, nil
}

// ListSleds returns up to limit sleds with ids after `after`, in id order.
func (a *App) ListSleds(ctx context.Context, after uuid.UUID, limit int) ([]model.Sled, error) {
	out, err := a.ds.SledList(ctx, after, limit)
	if err != nil {
		return nil, translate(err)
	}
	return out, a.withStorageLocks(ctx, out)
}

// Sled returns one sled.
func (a *App) Sled(ctx context.Context, id uuid.UUID) (model.Sled, error) {
	s, err := a.ds.SledGet(ctx, id)
	if err != nil {
		return s, translate(err)
	}
	one := []model.Sled{s}
	err = a.withStorageLocks(ctx, one)
	return one[0], err
}

// withStorageLocks fills in each sled's storage lock from the status its
// trust-quorum node last gave (the manager records every member's).
func (a *App) withStorageLocks(ctx context.Context, sleds []model.Sled) error {
	if len(sleds) == 0 {
		return nil
	}
	nodes, err := a.ds.TQNodeStatusList(ctx)
	if err != nil {
		return translate(err)
	}
	locks := map[model.Baseboard]string{}
	for _, n := range nodes {
		if n.Seen != nil {
			locks[n.Baseboard] = n.Seen.StorageLock
		}
	}
	for i := range sleds {
		sleds[i].StorageLock = locks[sleds[i].Baseboard]
	}
	return nil
}

// SledHealth says what is wrong with a sled's hardware from its last
// reported inventory: an M.2 it should have that is not in use makes it
// degraded (every sled has model.SledM2Devices; artifacts on it have one
// copy too few), and no inventory at all makes its health unknown.
func SledHealth(s model.Sled) model.SledHealth {
	h := model.SledHealth{State: model.SledHealthOK, M2Expected: max(model.SledM2Devices, len(s.M2s)),
		StorageLock: model.StorageLockUnknown}
	switch s.StorageLock {
	case model.StorageLockLocked, model.StorageLockUnlocked, model.StorageLockExpunged:
		h.StorageLock = s.StorageLock
	}
	if s.M2s == nil {
		h.State = model.SledHealthUnknown
		h.Problems = []string{"the sled has not reported its M.2 devices yet"}
		return h
	}
	for _, d := range s.M2s {
		if d.Present {
			h.M2Present++
			continue
		}
		h.M2Missing = append(h.M2Missing, d)
		why := "M.2 " + d.Path + " is missing"
		if d.Error != "" {
			why += ": " + d.Error
		}
		h.Problems = append(h.Problems, why)
	}
	if unconfigured := h.M2Expected - len(s.M2s); unconfigured > 0 {
		h.Problems = append(h.Problems, fmt.Sprintf("the sled agent is configured with %d of the %d M.2 devices a sled has",
			len(s.M2s), h.M2Expected))
	}
	if h.M2Present < h.M2Expected {
		h.State = model.SledHealthDegraded
	}
	return h
}

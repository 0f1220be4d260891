package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/reqid"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/model"
)

// ErrGenerationNotBehind is FastForwardTufGeneration's answer when the
// database is not behind the sled: the caller's view was stale (another
// Nexus moved the generation since it read it), which the caller handles
// by reading again, not by changing anything.
var ErrGenerationNotBehind = datastore.ErrGenerationNotBehind

// FastForwardTufGeneration moves the wanted-artifact generation past
// seen, the highest generation sled reported holding, when the
// database's own generation is behind it: the database lost changes its
// sleds saw (it was restored from a backup, or recreated under sleds that
// kept their M.2s). Sleds refuse any config older than theirs, so
// without this nothing would converge again. The wanted set stays what
// the database says; sleds are brought to it at the new generation.
//
// The database's generation is checked twice: once outside any
// transaction, so that the ordinary stale view of a Nexus (its snapshot
// older than its own database) costs one read and leaves no audit entry,
// and then inside the transaction that changes it. When it is not behind,
// nothing changes and the error wraps ErrGenerationNotBehind.
func (a *App) FastForwardTufGeneration(ctx context.Context, seen int64, sled uuid.UUID) (model.GenerationFastForward, error) {
	out := model.GenerationFastForward{SledGeneration: seen, Sled: sled}
	if _, err := Authorize(ctx, model.RoleAdmin); err != nil {
		return out, err
	}
	cur, err := a.ds.TufGeneration(ctx)
	if err != nil {
		return out, translate(err)
	}
	if cur >= seen {
		out.Before, out.After = cur, cur
		return out, fmt.Errorf("%w: the database holds generation %d, sled %s %d", ErrGenerationNotBehind, cur, sled, seen)
	}
	target := fmt.Sprintf("tuf generation (database %d, sled %s holds %d)", cur, sled, seen)
	err = a.audited(ctx, model.RoleAdmin, "tuf_generation.fast_forward", target, func(ctx context.Context) error {
		var err error
		out.Before, out.After, err = a.ds.TufGenerationFastForward(ctx, seen)
		if errors.Is(err, datastore.ErrGenerationNotBehind) {
			return fault.Wrap(err, fault.Conflict, api.CodeConflict,
				"the database's generation is no longer behind sled %s (another Nexus moved it); nothing was changed", sled)
		}
		return translate(err)
	})
	if err != nil {
		return out, err
	}
	zerolog.Ctx(ctx).Error().Int64("db_generation", out.Before).Int64("sled_generation", seen).
		Str("sled_id", sled.String()).Int64("generation", out.After).
		Msg("the database's artifact generation was behind what a sled holds (restored database?): " +
			"fast-forwarded past it; sleds will be brought to the database's wanted set")
	a.notify(ReposChanged, reqid.From(ctx))
	return out, nil
}

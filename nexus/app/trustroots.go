package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/model"
	"github.com/rackplane/rackplane/nexus/tufrepo"
)

// MaxTrustRootBytes bounds a root.json.
const MaxTrustRootBytes = 1 << 20

// CreateTrustRoot registers a root.json that uploads will be verified
// against. Registering the same document again returns the existing root
// (created false).
func (a *App) CreateTrustRoot(ctx context.Context, rootJSON []byte) (root model.TrustRoot, created bool, err error) {
	err = a.audited(ctx, model.RoleAdmin, "trust_root.create", "trust root", func(ctx context.Context) error {
		var err error
		root, created, err = a.createTrustRoot(ctx, rootJSON)
		return err
	})
	return root, created, err
}

func (a *App) createTrustRoot(ctx context.Context, rootJSON []byte) (root model.TrustRoot, created bool, err error) {
	if len(rootJSON) > MaxTrustRootBytes {
		return root, false, fault.New(fault.TooLarge, api.CodeBodyTooLarge,
			"a root.json larger than %d bytes is not a TUF root", MaxTrustRootBytes)
	}
	if err := tufrepo.CheckTrustRoot(rootJSON); err != nil {
		return root, false, err
	}
	tm, err := trustedmetadata.New(rootJSON)
	if err != nil {
		return root, false, fault.Invalidf(api.CodeInvalidTrustRoot,
			"the body is not a TUF root.json signed by a threshold of its own root keys: %v", err)
	}
	sum := sha256.Sum256(rootJSON)
	datastore.UpdateAudit(ctx, func(e *model.AuditEntry) { e.Target = "trust root sha256 " + hex.EncodeToString(sum[:]) })
	root, created, err = a.ds.TrustRootCreate(ctx, model.TrustRoot{ID: uuid.New(), SHA256: hex.EncodeToString(sum[:]),
		Version: tm.Root.Signed.Version, Expires: tm.Root.Signed.Expires, JSON: rootJSON})
	if err != nil {
		return root, false, translate(err)
	}
	if created {
		zerolog.Ctx(ctx).Info().Str("trust_root_id", root.ID.String()).Str("sha256", root.SHA256).
			Int64("root_version", root.Version).Msg("trust root registered")
	}
	return root, created, nil
}

// ListTrustRoots returns up to limit live trust roots with ids after
// `after`, in id order.
func (a *App) ListTrustRoots(ctx context.Context, after uuid.UUID, limit int) ([]model.TrustRoot, error) {
	out, err := a.ds.TrustRootList(ctx, after, limit)
	return out, translate(err)
}

// TrustRoot returns one live trust root.
func (a *App) TrustRoot(ctx context.Context, id uuid.UUID) (model.TrustRoot, error) {
	t, err := a.ds.TrustRootGet(ctx, id)
	return t, translate(err)
}

// DeleteTrustRoot removes a trust root: later uploads are no longer
// verified against it; repos already recorded stay.
func (a *App) DeleteTrustRoot(ctx context.Context, id uuid.UUID) error {
	return a.audited(ctx, model.RoleAdmin, "trust_root.delete", "trust root "+id.String(), func(ctx context.Context) error {
		if err := a.ds.TrustRootDelete(ctx, id); err != nil {
			return translate(err)
		}
		zerolog.Ctx(ctx).Info().Str("trust_root_id", id.String()).Msg("trust root deleted")
		return nil
	})
}

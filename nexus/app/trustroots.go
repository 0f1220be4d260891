package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

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

// TrustRootDeleted is what deleting a trust root did.
type TrustRootDeleted struct {
	Root model.TrustRoot
	// LiveRepos are the live repos verified against it (deleted anyway,
	// with force).
	LiveRepos []string
	// Remaining counts the trust roots left.
	Remaining int
	// Message says what the deletion means for uploads.
	Message string
}

// DeleteTrustRoot removes a trust root: later uploads are no longer
// verified against it; repos already recorded stay. A root that live repos
// were verified against is refused (409 trust_root_in_use, naming them)
// unless force is set: without it, a re-upload of those releases (to
// restore a lost copy, or a pruned repo) would fail after sending every
// byte. Deleting the last root is allowed and says that every upload will
// now be refused.
func (a *App) DeleteTrustRoot(ctx context.Context, id uuid.UUID, force bool) (TrustRootDeleted, error) {
	var out TrustRootDeleted
	err := a.audited(ctx, model.RoleAdmin, "trust_root.delete", "trust root "+id.String(), func(ctx context.Context) error {
		if force {
			datastore.UpdateAudit(ctx, func(e *model.AuditEntry) { e.Detail = "force" })
		}
		res, err := a.ds.TrustRootDelete(ctx, id, force)
		if errors.Is(err, datastore.ErrTrustRootInUse) {
			return fault.Wrap(err, fault.Conflict, api.CodeTrustRootInUse,
				"trust root %s signs %s: uploads are verified against it, so uploading %s again (to restore a pruned "+
					"repo or a lost copy) would be refused once it is gone. Prune %s first, or delete it anyway with "+
					"force=true (`rackctl trust-root delete --force %s`)", id, plural(len(res.LiveRepos), "live repo"),
				theseReleases(res.LiveRepos), them(len(res.LiveRepos)), id).
				With("live_repos", res.LiveRepos)
		}
		if err != nil {
			return translate(err)
		}
		out = TrustRootDeleted{Root: res.Root, LiveRepos: res.LiveRepos, Remaining: res.Remaining}
		out.Message = fmt.Sprintf("trust root %s deleted; uploads are no longer verified against it", id)
		if len(res.LiveRepos) > 0 {
			out.Message += fmt.Sprintf(". The live repos it signed (%s) stay, but uploading them again will be "+
				"refused unless another trust root signs them", strings.Join(res.LiveRepos, ", "))
		}
		if res.Remaining == 0 {
			out.Message += ". That was the last trust root: every upload is refused (no_trust_roots) until one is " +
				"added with `rackctl trust-root add FILE`"
		} else {
			out.Message += fmt.Sprintf(" (%s left)", plural(res.Remaining, "trust root"))
		}
		zerolog.Ctx(ctx).Info().Str("trust_root_id", id.String()).Bool("force", force).Strs("live_repos", res.LiveRepos).
			Int("remaining", res.Remaining).Msg("trust root deleted")
		return nil
	})
	return out, err
}

// plural is "1 thing" or "n things".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

func theseReleases(vs []string) string { return strings.Join(vs, ", ") }

func them(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}

package app

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/reqid"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/model"
)

// Who may do what. Every caller of the application layer is an Actor in
// its context: an operator authenticated by a token, the console (nexus
// token create), or a background task. Reads are authorised at the edge
// (every authenticated caller may read); every change goes through
// audited, which checks the role and records the change in the audit log
// in the same transaction.

// Actor kinds.
const (
	ActorOperator = "operator"
	ActorConsole  = "console"
	ActorTask     = "task"
	// ActorSled and ActorNexus are the internal listener's callers, known
	// by their certificates.
	ActorSled  = "sled"
	ActorNexus = "nexus"
	// ActorRSS is the rack-setup service: it hands the rack it set up to
	// Nexus, and may do nothing else.
	ActorRSS = "rss"
)

// Actor is who is calling.
type Actor struct {
	Kind string
	// Name is what the audit log shows: a token's name, a task's name.
	Name string
	// TokenID is the operator token used (operators only).
	TokenID uuid.UUID
	Role    model.Role
	// Token is the token's record (operators only).
	Token *model.OperatorToken
	// Sled is the baseboard a sled's certificate names (sleds only).
	Sled model.Baseboard
	// Cached is set for an operator whose token was accepted from memory
	// because the database could not be asked (authcache.go): such an
	// actor may read, never change anything.
	Cached bool
}

// PeerActor is the actor of a caller on the internal listener, from the
// identity its verified certificate names. Sleds and Nexus instances get
// no operator role: what they may do is each operation's own rule.
func PeerActor(id rackpki.Identity) Actor {
	switch id.Kind {
	case rackpki.KindSled:
		return Actor{Kind: ActorSled, Name: id.URI(), Sled: model.Baseboard{Part: id.Part, Serial: id.Serial}}
	case rackpki.KindNexus:
		return Actor{Kind: ActorNexus, Name: id.URI()}
	case rackpki.KindRSS:
		return Actor{Kind: ActorRSS, Name: id.URI()}
	}
	return Actor{Kind: string(id.Kind), Name: id.URI()}
}

func (a Actor) String() string {
	if a.Kind == "" {
		return "anonymous"
	}
	if a.Kind == ActorOperator {
		return fmt.Sprintf("token %q (%s)", a.Name, a.Role)
	}
	return a.Kind + " " + a.Name
}

type actorKey struct{}

// WithActor returns ctx carrying actor.
func WithActor(ctx context.Context, actor Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// ActorFrom returns ctx's actor, if it has one.
func ActorFrom(ctx context.Context) (Actor, bool) {
	a, ok := ctx.Value(actorKey{}).(Actor)
	return a, ok
}

// TaskActor is a background task acting on its own account.
func TaskActor(name string) Actor { return Actor{Kind: ActorTask, Name: name, Role: model.RoleAdmin} }

// ConsoleActor is someone with database access on a Nexus host (nexus
// token create): the way the first admin token comes to be.
func ConsoleActor() Actor {
	return Actor{Kind: ActorConsole, Name: "nexus token create", Role: model.RoleAdmin}
}

// TokenPrefix starts every operator token, so one is recognisable in a
// file or a leaked log line.
const TokenPrefix = "rp_"

// tokenBytes is the secret's size.
const tokenBytes = 32

// hashToken is what is stored: a token is 32 random bytes, so a plain
// SHA-256 (no salt, no stretching) is enough and lets lookups be exact.
func hashToken(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// wellFormed reports whether s looks like a token Nexus makes.
func wellFormed(s string) bool {
	rest, ok := strings.CutPrefix(s, TokenPrefix)
	if !ok {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	return err == nil && len(b) == tokenBytes
}

// tokenHint says how to get a token; every 401 ends with it.
const tokenHint = "an admin makes one with `rackctl token create NAME --role viewer|admin`, " +
	"or on a Nexus host with `nexus token create --name NAME --role admin`"

// ErrNoCredentials is what Authenticate answers for an empty token.
var ErrNoCredentials = fault.New(fault.Unauthenticated, api.CodeUnauthenticated,
	"this needs an operator token (Authorization: Bearer rp_...); "+tokenHint)

// tokenTouchInterval bounds how often a token's last use is written.
const tokenTouchInterval = time.Minute

// Authenticate returns the operator a bearer token belongs to.
func (a *App) Authenticate(ctx context.Context, secret string) (Actor, error) {
	if secret == "" {
		return Actor{}, ErrNoCredentials
	}
	if !wellFormed(secret) {
		return Actor{}, fault.New(fault.Unauthenticated, api.CodeInvalidToken,
			"the token is not one Nexus issued (tokens start with %q); %s", TokenPrefix, tokenHint)
	}
	hash := hashToken(secret)
	t, err := a.ds.OperatorTokenByHash(ctx, hash)
	if errors.Is(err, datastore.ErrUnavailable) {
		if t, ok := a.tokens.get(hash, a.cfg.Now()); ok {
			return Actor{Kind: ActorOperator, Name: t.Name, TokenID: t.ID, Role: t.Role, Token: &t, Cached: true}, nil
		}
	}
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		return Actor{}, fault.New(fault.Unauthenticated, api.CodeInvalidToken,
			"the token is not one this rack issued; "+tokenHint)
	case err != nil:
		return Actor{}, translate(err)
	case t.TimeRevoked != nil:
		return Actor{}, fault.New(fault.Unauthenticated, api.CodeTokenRevoked,
			"token %q was revoked at %s; ask an admin for a new one", t.Name, t.TimeRevoked.UTC().Format(time.RFC3339))
	case t.TimeExpires != nil && !a.cfg.Now().Before(*t.TimeExpires):
		return Actor{}, fault.New(fault.Unauthenticated, api.CodeTokenExpired,
			"token %q expired at %s; ask an admin for a new one", t.Name, t.TimeExpires.UTC().Format(time.RFC3339))
	}
	a.tokens.put(hash, t, a.cfg.Now())
	if err := a.ds.OperatorTokenUsed(ctx, t.ID, tokenTouchInterval); err != nil {
		// Last use is for the operator's information; failing to note it
		// must not lock anyone out.
		zerolog.Ctx(ctx).Warn().Err(err).Str("token_id", t.ID.String()).Msg("could not record token use")
	}
	return Actor{Kind: ActorOperator, Name: t.Name, TokenID: t.ID, Role: t.Role, Token: &t}, nil
}

// Authorize checks that ctx's actor has role need.
func Authorize(ctx context.Context, need model.Role) (Actor, error) {
	actor, ok := ActorFrom(ctx)
	if !ok {
		return Actor{}, ErrNoCredentials
	}
	if !actor.Role.Allows(need) {
		return actor, fault.New(fault.Forbidden, api.CodeForbidden,
			"this needs a token with the %s role; %s has only %s", need, actor, actor.Role)
	}
	return actor, nil
}

// audited runs the change fn on behalf of ctx's actor, if that actor has
// role need, and records it in the audit log: in fn's own transaction
// when it commits one, on its own otherwise (a refusal, a failure, or a
// change without a transaction).
func (a *App) audited(ctx context.Context, need model.Role, action, target string, fn func(ctx context.Context) error) error {
	actor, err := Authorize(ctx, need)
	if err == nil && actor.Cached {
		// Authenticated from memory: the database is away, so the change
		// could be neither made durable nor audited.
		return fault.New(fault.Unavailable, api.CodeServiceUnavailable,
			"the database is unavailable, so no change can be made (nothing was changed); "+
				"reads of this Nexus's background tasks still work; try again once the database is back")
	}
	entry := model.AuditEntry{Actor: actor.Name, ActorKind: actor.Kind, Action: action, Target: target,
		RequestID: reqid.From(ctx)}
	if entry.ActorKind == "" {
		entry.ActorKind, entry.Actor = "anonymous", "anonymous"
	}
	if err != nil {
		a.auditAlone(ctx, entry, err)
		return err
	}
	actx := datastore.WithAudit(ctx, entry)
	err = fn(actx)
	if !datastore.AuditWritten(actx) {
		if e, ok := datastore.PendingAudit(actx); ok {
			entry = e
		}
		a.auditAlone(ctx, entry, err)
	}
	return err
}

// AuditRefusal records a change refused before it reached the application
// layer (the HTTP edge's role check): action and target are what was
// asked, as the edge can name it. Only authenticated callers are
// recorded; anonymous noise stays in the access log.
func (a *App) AuditRefusal(ctx context.Context, action, target string, err error) {
	actor, ok := ActorFrom(ctx)
	if !ok {
		return
	}
	a.auditAlone(ctx, model.AuditEntry{Actor: actor.Name, ActorKind: actor.Kind, Action: action, Target: target,
		RequestID: reqid.From(ctx)}, err)
}

// auditAlone writes entry with err's outcome, outside any transaction.
func (a *App) auditAlone(ctx context.Context, entry model.AuditEntry, err error) {
	entry.Outcome = model.AuditOK
	if err != nil {
		entry.Outcome, entry.ErrorCode = model.AuditRefused, fault.CodeOf(err)
		switch fault.KindOf(err) {
		case fault.Internal, fault.Unavailable, fault.Canceled:
			entry.Outcome = model.AuditFailed
			if entry.ErrorCode == "" {
				entry.ErrorCode = api.CodeInternal
			}
		}
	}
	if werr := a.ds.AuditInsert(ctx, entry); werr != nil {
		zerolog.Ctx(ctx).Error().Err(werr).Str("action", entry.Action).Str("target", entry.Target).
			Str("outcome", entry.Outcome).Msg("could not write the audit log")
	}
}

// Token lifetimes.
const (
	// MaxTokenTTL bounds a token's lifetime when one is given.
	MaxTokenTTL = 10 * 365 * 24 * time.Hour
)

// NewToken is a token just made: the secret is shown once and never
// stored.
type NewToken struct {
	Secret string
	Token  model.OperatorToken
}

// CreateToken makes an operator token with role, valid for ttl (0: until
// revoked).
func (a *App) CreateToken(ctx context.Context, name string, role model.Role, ttl time.Duration) (NewToken, error) {
	var out NewToken
	err := a.audited(ctx, model.RoleAdmin, "token.create", "token "+name, func(ctx context.Context) error {
		if err := checkTokenName(name); err != nil {
			return err
		}
		if role != model.RoleViewer && role != model.RoleAdmin {
			return fault.Invalidf(api.CodeInvalidField, "role must be viewer or admin, not %q", role)
		}
		if ttl < 0 || ttl > MaxTokenTTL {
			return fault.Invalidf(api.CodeInvalidField, "a token's lifetime must be positive and at most %s", MaxTokenTTL)
		}
		raw := make([]byte, tokenBytes)
		if _, err := rand.Read(raw); err != nil {
			return err
		}
		out.Secret = TokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
		t := model.OperatorToken{ID: uuid.New(), Name: name, Role: role}
		actor, _ := ActorFrom(ctx)
		t.CreatedBy = actor.String()
		if ttl > 0 {
			exp := a.cfg.Now().Add(ttl)
			t.TimeExpires = &exp
		}
		var err error
		out.Token, err = a.ds.OperatorTokenCreate(ctx, t, hashToken(out.Secret))
		if err != nil {
			return translate(err)
		}
		zerolog.Ctx(ctx).Info().Str("token_id", t.ID.String()).Str("name", name).Str("role", string(role)).
			Str("by", t.CreatedBy).Msg("operator token created")
		return nil
	})
	return out, err
}

func checkTokenName(name string) error {
	if name == "" || len(name) > 64 {
		return fault.Invalidf(api.CodeInvalidField, "a token needs a name of 1-64 characters (who or what uses it)")
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f {
			return fault.Invalidf(api.CodeInvalidField, "a token's name must be printable, got %q", name)
		}
	}
	return nil
}

// ListTokens returns up to limit tokens with ids after `after`.
func (a *App) ListTokens(ctx context.Context, after uuid.UUID, limit int) ([]model.OperatorToken, error) {
	if _, err := Authorize(ctx, model.RoleAdmin); err != nil {
		return nil, err
	}
	out, err := a.ds.OperatorTokenList(ctx, after, limit)
	return out, translate(err)
}

// RevokeToken revokes a token at once: the next request with it is
// refused.
func (a *App) RevokeToken(ctx context.Context, id uuid.UUID) (model.OperatorToken, error) {
	var out model.OperatorToken
	err := a.audited(ctx, model.RoleAdmin, "token.revoke", "token "+id.String(), func(ctx context.Context) error {
		var err error
		out, err = a.ds.OperatorTokenRevoke(ctx, id)
		if err != nil {
			return translate(err)
		}
		a.tokens.forget(id)
		zerolog.Ctx(ctx).Info().Str("token_id", id.String()).Str("name", out.Name).Msg("operator token revoked")
		return nil
	})
	return out, err
}

// AuditLog returns up to limit entries, newest first, before the cursor.
func (a *App) AuditLog(ctx context.Context, before *datastore.AuditCursor, limit int) ([]model.AuditEntry, error) {
	out, err := a.ds.AuditList(ctx, before, limit)
	return out, translate(err)
}

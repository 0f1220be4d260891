package client

import (
	"context"
	"net/http"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/gen/external"
)

// WithToken returns a client that sends token (an operator token, rp_...)
// with every request.
func (n Nexus) WithToken(token string) Nexus { return Nexus{n.Client.withToken(token)} }

// TokenCreate makes an operator token; the answer holds its secret, which
// is never shown again.
func (n Nexus) TokenCreate(ctx context.Context, req api.OperatorTokenCreate) (api.OperatorTokenCreated, error) {
	var out api.OperatorTokenCreated
	err := n.call(ctx, func(server string) (*http.Request, error) { return external.NewTokenCreateRequest(server, req) }, &out)
	return out, err
}

// TokenList lists every operator token (never their secrets).
func (n Nexus) TokenList(ctx context.Context) ([]api.OperatorToken, error) {
	return listAll[api.OperatorToken](ctx, n.Client, func(server string, token *string) (*http.Request, error) {
		return external.NewTokenListRequest(server, &external.TokenListParams{PageToken: token})
	})
}

// TokenRevoke revokes a token and returns it as it now stands.
func (n Nexus) TokenRevoke(ctx context.Context, id uuid.UUID) (api.OperatorToken, error) {
	var out api.OperatorToken
	err := n.call(ctx, func(server string) (*http.Request, error) { return external.NewTokenRevokeRequest(server, id) }, &out)
	return out, err
}

// AuditLog returns up to limit entries of the audit log, newest first
// (limit ≤ 0: every entry).
func (n Nexus) AuditLog(ctx context.Context, limit int) ([]api.AuditEntry, error) {
	if limit <= 0 {
		return listAll[api.AuditEntry](ctx, n.Client, func(server string, token *string) (*http.Request, error) {
			return external.NewAuditLogListRequest(server, &external.AuditLogListParams{PageToken: token})
		})
	}
	var page api.Page[api.AuditEntry]
	err := n.call(ctx, func(server string) (*http.Request, error) {
		return external.NewAuditLogListRequest(server, &external.AuditLogListParams{Limit: &limit})
	}, &page)
	return page.Items, err
}

package api

import (
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Operator roles.
const (
	RoleViewer = "viewer"
	RoleAdmin  = "admin"
)

// OperatorToken is an operator's bearer token as Nexus lists it (the
// secret itself is shown only once, when it is made).
type OperatorToken struct {
	ID           uuid.UUID  `json:"id"`
	Name         string     `json:"name"`
	Role         string     `json:"role"`
	TimeCreated  time.Time  `json:"time_created"`
	TimeExpires  *time.Time `json:"time_expires,omitempty"`
	TimeLastUsed *time.Time `json:"time_last_used,omitempty"`
	TimeRevoked  *time.Time `json:"time_revoked,omitempty"`
	CreatedBy    string     `json:"created_by"`
}

// OperatorTokenCreate is the body of POST /v1/system/tokens.
type OperatorTokenCreate struct {
	// Name says who or what uses the token (shown in the audit log).
	Name string `json:"name"`
	// Role is "viewer" or "admin".
	Role string `json:"role"`
	// TTLSeconds bounds the token's life; 0 or absent: until revoked.
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`
}

// Validate checks the request's fields.
func (c *OperatorTokenCreate) Validate() error {
	if c.Name == "" {
		return fieldErr("name", "is required: say who or what will use the token")
	}
	if c.Role != RoleViewer && c.Role != RoleAdmin {
		return fieldErr("role", "must be %q or %q, not %q", RoleViewer, RoleAdmin, c.Role)
	}
	if c.TTLSeconds < 0 {
		return fieldErr("ttl_seconds", "must not be negative")
	}
	return nil
}

// OperatorTokenCreated is the answer to a token's creation: the only time
// its secret is shown.
type OperatorTokenCreated struct {
	OperatorToken
	// Token is the secret to send as "Authorization: Bearer <token>".
	Token string `json:"token"`
}

// AuditEntry is one operator mutation in the audit log.
type AuditEntry struct {
	ID        uuid.UUID `json:"id"`
	Time      time.Time `json:"time"`
	Actor     string    `json:"actor"`
	ActorKind string    `json:"actor_kind"`
	Action    string    `json:"action"`
	Target    string    `json:"target"`
	RequestID string    `json:"request_id"`
	// Outcome is "ok", "refused" (the request was wrong or not allowed)
	// or "failed" (something broke); ErrorCode says why.
	Outcome   string `json:"outcome"`
	ErrorCode string `json:"error_code,omitempty"`
	Detail    string `json:"detail,omitempty"`
}

func (e AuditEntry) String() string {
	return fmt.Sprintf("%s %s %s %s %s", e.Time.Format(time.RFC3339), e.Actor, e.Action, e.Target, e.Outcome)
}

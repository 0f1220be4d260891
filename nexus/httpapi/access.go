package httpapi

import (
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/model"
)

// APIToken is t on the wire.
func APIToken(t model.OperatorToken) api.OperatorToken {
	return api.OperatorToken{ID: t.ID, Name: t.Name, Role: string(t.Role), TimeCreated: t.TimeCreated,
		TimeExpires: t.TimeExpires, TimeLastUsed: t.TimeLastUsed, TimeRevoked: t.TimeRevoked, CreatedBy: t.CreatedBy}
}

// APIAuditEntry is e on the wire.
func APIAuditEntry(e model.AuditEntry) api.AuditEntry {
	return api.AuditEntry{ID: e.ID, Time: e.Time, Actor: e.Actor, ActorKind: e.ActorKind, Action: e.Action,
		Target: e.Target, RequestID: e.RequestID, Outcome: e.Outcome, ErrorCode: e.ErrorCode, Detail: e.Detail}
}

func (s *API) tokenCreate(w http.ResponseWriter, r *http.Request) error {
	var req api.OperatorTokenCreate
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	nt, err := s.app.CreateToken(r.Context(), req.Name, model.Role(req.Role), time.Duration(req.TTLSeconds)*time.Second)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusCreated, api.OperatorTokenCreated{OperatorToken: APIToken(nt.Token), Token: nt.Secret})
	return nil
}

func (s *API) tokenList(w http.ResponseWriter, r *http.Request) error {
	return listByID(w, r, s.app.ListTokens, APIToken, func(t model.OperatorToken) uuid.UUID { return t.ID })
}

func (s *API) tokenRevoke(w http.ResponseWriter, r *http.Request) error {
	id, err := httpx.PathUUID(r, "id")
	if err != nil {
		return err
	}
	t, err := s.app.RevokeToken(r.Context(), id)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, APIToken(t))
	return nil
}

func (s *API) auditList(w http.ResponseWriter, r *http.Request) error {
	page, err := httpx.PageParams(r)
	if err != nil {
		return err
	}
	var before *datastore.AuditCursor
	if page.Token != "" {
		c, err := datastore.ParseRepoCursor(page.Token)
		if err != nil {
			return fault.Invalidf(api.CodeInvalidParameter, "page_token %q is not one this server issued", page.Token)
		}
		before = &c
	}
	entries, err := s.app.AuditLog(r.Context(), before, page.Limit+1)
	if err != nil {
		return err
	}
	writePage(w, entries, page.Limit, APIAuditEntry, func(e model.AuditEntry) string {
		return datastore.AuditCursor{TimeCreated: e.Time, ID: e.ID}.String()
	})
	return nil
}

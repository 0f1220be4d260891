package client

import (
	"context"
	"net/http"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
)

// Nexus is a client of Nexus's external (operator) API.
type Nexus struct{ *Client }

// NewNexus returns a client of the external API at baseURL.
func NewNexus(baseURL string, hc *http.Client) (Nexus, error) {
	c, err := New(baseURL, hc)
	return Nexus{c}, err
}

// Health fetches /healthz.
func (n Nexus) Health(ctx context.Context) (api.Health, error) { return n.health(ctx) }

// SledList lists every registered sled.
func (n Nexus) SledList(ctx context.Context) ([]api.Sled, error) {
	return listAll[api.Sled](ctx, n.Client, "/v1/system/hardware/sleds", nil)
}

// SledGet fetches one sled.
func (n Nexus) SledGet(ctx context.Context, id uuid.UUID) (api.Sled, error) {
	var s api.Sled
	err := n.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/system/hardware/sleds/" + id.String()}, &s)
	return s, err
}

// NexusInternal is a client of Nexus's internal API (used by sled agents).
type NexusInternal struct{ *Client }

// NewNexusInternal returns a client of the internal API at baseURL.
func NewNexusInternal(baseURL string, hc *http.Client) (NexusInternal, error) {
	c, err := New(baseURL, hc)
	return NexusInternal{c}, err
}

// SledRegister upserts the sled's registration.
func (n NexusInternal) SledRegister(ctx context.Context, id uuid.UUID, reg api.SledRegistration) (api.Sled, error) {
	var s api.Sled
	err := n.Do(ctx, Request{Method: http.MethodPut, Path: "/v1/sled-agents/" + id.String(), JSON: reg}, &s)
	return s, err
}

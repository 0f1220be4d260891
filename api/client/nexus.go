package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/gen/external"
	"github.com/rackplane/rackplane/api/gen/nexusint"
)

// Nexus is a client of Nexus's external (operator) API.
type Nexus struct{ *Client }

// NewNexus returns a client of the external API at baseURL.
func NewNexus(baseURL string, hc *http.Client) (Nexus, error) {
	c, err := New(baseURL, hc)
	return Nexus{c}, err
}

// Health fetches /healthz.
func (n Nexus) Health(ctx context.Context) (api.Health, error) {
	return n.health(ctx, external.NewHealthzRequest)
}

// Readiness fetches /readyz. A Nexus that is not ready answers with a
// body too: it is returned with an error saying which checks fail. With a
// token, the body's Detail says why.
func (n Nexus) Readiness(ctx context.Context) (api.Readiness, error) {
	var rd api.Readiness
	hreq, err := external.NewReadyzRequest(n.server())
	if err != nil {
		return rd, fmt.Errorf("build request: %w", err)
	}
	if n.token != "" {
		hreq.Header.Set("Authorization", "Bearer "+n.token)
	}
	resp, err := n.hc.Do(hreq.WithContext(ctx))
	if err != nil {
		return rd, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&rd); err != nil {
		return rd, fmt.Errorf("decode /readyz (HTTP %d): %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		return rd, fmt.Errorf("not ready (HTTP %d): %v", resp.StatusCode, rd.Checks)
	}
	return rd, nil
}

// SledList lists every registered sled.
func (n Nexus) SledList(ctx context.Context) ([]api.Sled, error) {
	return listAll[api.Sled](ctx, n.Client, func(server string, token *string) (*http.Request, error) {
		return external.NewSledListRequest(server, &external.SledListParams{PageToken: token})
	})
}

// SledGet fetches one sled.
func (n Nexus) SledGet(ctx context.Context, id uuid.UUID) (api.Sled, error) {
	var s api.Sled
	err := n.call(ctx, func(server string) (*http.Request, error) { return external.NewSledGetRequest(server, id) }, &s)
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
	err := n.call(ctx, func(server string) (*http.Request, error) {
		return nexusint.NewSledRegisterRequest(server, id, reg)
	}, &s)
	return s, err
}

// RackSetupHandoff hands the rack over from rack setup; it reports
// whether Nexus recorded it now (false: the same handoff was recorded
// before). Only a client presenting the rack-setup service's certificate
// may.
func (n NexusInternal) RackSetupHandoff(ctx context.Context, h api.RackSetupHandoff) (api.TrustQuorumConfig, bool, error) {
	var c api.TrustQuorumConfig
	resp, err := n.send(ctx, func(server string) (*http.Request, error) { return nexusint.NewRackSetupHandoffRequest(server, h) })
	if err != nil {
		return c, false, err
	}
	defer resp.Body.Close()
	err = decodeJSON(resp, &c)
	return c, resp.StatusCode == http.StatusCreated, err
}

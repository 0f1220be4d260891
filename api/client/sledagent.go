package client

import (
	"context"
	"net/http"

	"github.com/rackplane/rackplane/api"
)

// SledAgent is a client of a sled agent's API.
type SledAgent struct{ *Client }

// NewSledAgent returns a client of the sled agent at baseURL.
func NewSledAgent(baseURL string, hc *http.Client) (SledAgent, error) {
	c, err := New(baseURL, hc)
	return SledAgent{c}, err
}

// Health fetches /healthz.
func (s SledAgent) Health(ctx context.Context) (api.Health, error) { return s.health(ctx) }

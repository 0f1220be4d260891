package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/rackplane/rackplane/api"
)

// Trust-quorum calls of the sled API. The sled serves them over mutual
// TLS only: pass NewSledAgent an *http.Client whose transport presents a
// certificate of the rack CA (Nexus's for mutations).

// TQReconfigure asks the sled to coordinate a new configuration.
func (s SledAgent) TQReconfigure(ctx context.Context, req api.TQReconfigureRequest) (api.TQCoordinatorStatus, error) {
	var out api.TQCoordinatorStatus
	err := s.Do(ctx, Request{Method: http.MethodPost, Path: "/trust-quorum/reconfigure", JSON: req}, &out)
	return out, err
}

// TQLrtqUpgrade asks the sled to coordinate the upgrade from LRTQ.
func (s SledAgent) TQLrtqUpgrade(ctx context.Context, req api.TQLrtqUpgradeRequest) (api.TQCoordinatorStatus, error) {
	var out api.TQCoordinatorStatus
	err := s.Do(ctx, Request{Method: http.MethodPost, Path: "/trust-quorum/lrtq-upgrade", JSON: req}, &out)
	return out, err
}

// TQCommit commits an epoch at the sled, or with req.Destination set, at
// the destination through the sled.
func (s SledAgent) TQCommit(ctx context.Context, req api.TQCommitRequest) (api.TQCommitResult, error) {
	path := "/trust-quorum/commit"
	if req.Destination != nil {
		path = "/trust-quorum/proxy/commit"
	}
	var out api.TQCommitResult
	err := s.Do(ctx, Request{Method: http.MethodPost, Path: path, JSON: req}, &out)
	return out, err
}

// TQPrepareAndCommit commits a configuration the sled (or the
// destination) never prepared.
func (s SledAgent) TQPrepareAndCommit(ctx context.Context, req api.TQPrepareAndCommitRequest) (api.TQCommitResult, error) {
	path := "/trust-quorum/prepare-and-commit"
	if req.Destination != nil {
		path = "/trust-quorum/proxy/prepare-and-commit"
	}
	var out api.TQCommitResult
	err := s.Do(ctx, Request{Method: http.MethodPost, Path: path, JSON: req}, &out)
	return out, err
}

// TQCoordinatorStatus reports the coordination in progress at the sled.
func (s SledAgent) TQCoordinatorStatus(ctx context.Context) (api.TQCoordinatorStatus, error) {
	var out api.TQCoordinatorStatus
	err := s.Do(ctx, Request{Method: http.MethodGet, Path: "/trust-quorum/coordinator-status"}, &out)
	return out, err
}

// TQStatus reports the sled's trust-quorum status, or with dest set, the
// destination's through the sled.
func (s SledAgent) TQStatus(ctx context.Context, dest *api.Baseboard) (api.TQStatus, error) {
	req := Request{Method: http.MethodGet, Path: "/trust-quorum/status"}
	if dest != nil {
		req.Path = "/trust-quorum/proxy/status"
		req.Query = url.Values{"part": {dest.Part}, "serial": {dest.Serial}}
	}
	var out api.TQStatus
	err := s.Do(ctx, req, &out)
	return out, err
}

// TQStartSledAgent asks the destination, through the sled, to start its
// sled agent.
func (s SledAgent) TQStartSledAgent(ctx context.Context, dest api.Baseboard) (api.TQStartSledAgentResult, error) {
	var out api.TQStartSledAgentResult
	err := s.Do(ctx, Request{Method: http.MethodPost, Path: "/trust-quorum/proxy/start-sled-agent",
		JSON: api.TQDestinationRequest{Destination: dest}}, &out)
	return out, err
}

package client

import (
	"context"
	"net/http"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/gen/sled"
)

// Trust-quorum calls of the sled API. The sled serves them over mutual
// TLS only: pass NewSledAgent an *http.Client whose transport presents a
// certificate of the rack CA (Nexus's for mutations).

// TQReconfigure asks the sled to coordinate a new configuration.
func (s SledAgent) TQReconfigure(ctx context.Context, req api.TQReconfigureRequest) (api.TQCoordinatorStatus, error) {
	var out api.TQCoordinatorStatus
	err := s.call(ctx, func(server string) (*http.Request, error) { return sled.NewTqReconfigureRequest(server, req) }, &out)
	return out, err
}

// TQLrtqUpgrade asks the sled to coordinate the upgrade from LRTQ.
func (s SledAgent) TQLrtqUpgrade(ctx context.Context, req api.TQLrtqUpgradeRequest) (api.TQCoordinatorStatus, error) {
	var out api.TQCoordinatorStatus
	err := s.call(ctx, func(server string) (*http.Request, error) { return sled.NewTqLrtqUpgradeRequest(server, req) }, &out)
	return out, err
}

// TQCommit commits an epoch at the sled, or with req.Destination set, at
// the destination through the sled.
func (s SledAgent) TQCommit(ctx context.Context, req api.TQCommitRequest) (api.TQCommitResult, error) {
	var out api.TQCommitResult
	err := s.call(ctx, func(server string) (*http.Request, error) {
		if req.Destination != nil {
			return sled.NewTqProxyCommitRequest(server, req)
		}
		return sled.NewTqCommitRequest(server, req)
	}, &out)
	return out, err
}

// TQPrepareAndCommit commits a configuration the sled (or the
// destination) never prepared.
func (s SledAgent) TQPrepareAndCommit(ctx context.Context, req api.TQPrepareAndCommitRequest) (api.TQCommitResult, error) {
	var out api.TQCommitResult
	err := s.call(ctx, func(server string) (*http.Request, error) {
		if req.Destination != nil {
			return sled.NewTqProxyPrepareAndCommitRequest(server, req)
		}
		return sled.NewTqPrepareAndCommitRequest(server, req)
	}, &out)
	return out, err
}

// TQCoordinatorStatus reports the coordination in progress at the sled.
func (s SledAgent) TQCoordinatorStatus(ctx context.Context) (api.TQCoordinatorStatus, error) {
	var out api.TQCoordinatorStatus
	err := s.call(ctx, sled.NewTqCoordinatorStatusRequest, &out)
	return out, err
}

// TQStatus reports the sled's trust-quorum status, or with dest set, the
// destination's through the sled.
func (s SledAgent) TQStatus(ctx context.Context, dest *api.Baseboard) (api.TQStatus, error) {
	var out api.TQStatus
	err := s.call(ctx, func(server string) (*http.Request, error) {
		if dest != nil {
			return sled.NewTqProxyStatusRequest(server, &sled.TqProxyStatusParams{Part: dest.Part, Serial: dest.Serial})
		}
		return sled.NewTqStatusRequest(server)
	}, &out)
	return out, err
}

// TQStartSledAgent asks the destination, through the sled, to start its
// sled agent.
func (s SledAgent) TQStartSledAgent(ctx context.Context, dest api.Baseboard) (api.TQStartSledAgentResult, error) {
	var out api.TQStartSledAgentResult
	err := s.call(ctx, func(server string) (*http.Request, error) {
		return sled.NewTqProxyStartSledAgentRequest(server, api.TQDestinationRequest{Destination: dest})
	}, &out)
	return out, err
}

// TQLoadRackSecret has the sled gather the rack secret of its latest
// committed epoch (it never leaves the sled); a removed sled learns here
// that it is expunged.
func (s SledAgent) TQLoadRackSecret(ctx context.Context) (api.TQLoadRackSecretResult, error) {
	var out api.TQLoadRackSecretResult
	err := s.call(ctx, sled.NewTqLoadRackSecretRequest, &out)
	return out, err
}

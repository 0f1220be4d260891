package client

import (
	"context"
	"net/http"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/gen/external"
)

// Nexus's trust-quorum operations (external API): the operator's view,
// membership changes, the LRTQ upgrade and aborts.

// TrustQuorumStatus fetches the latest and latest committed epochs and
// every watched node's status.
func (n Nexus) TrustQuorumStatus(ctx context.Context) (api.TrustQuorumStatus, error) {
	var out api.TrustQuorumStatus
	err := n.call(ctx, external.NewTrustQuorumStatusRequest, &out)
	return out, err
}

// TrustQuorumEpoch fetches one epoch.
func (n Nexus) TrustQuorumEpoch(ctx context.Context, epoch uint64) (api.TrustQuorumConfig, error) {
	var out api.TrustQuorumConfig
	err := n.call(ctx, func(server string) (*http.Request, error) {
		return external.NewTrustQuorumEpochGetRequest(server, int64(epoch))
	}, &out)
	return out, err
}

// TrustQuorumMembership starts an epoch that adds and removes sleds.
func (n Nexus) TrustQuorumMembership(ctx context.Context, req api.TrustQuorumMembership) (api.TrustQuorumConfig, error) {
	var out api.TrustQuorumConfig
	err := n.call(ctx, func(server string) (*http.Request, error) {
		return external.NewTrustQuorumMembershipChangeRequest(server, req)
	}, &out)
	return out, err
}

// TrustQuorumLrtqUpgrade starts the upgrade of an LRTQ rack.
func (n Nexus) TrustQuorumLrtqUpgrade(ctx context.Context) (api.TrustQuorumConfig, error) {
	var out api.TrustQuorumConfig
	err := n.call(ctx, external.NewTrustQuorumLrtqUpgradeRequest, &out)
	return out, err
}

// TrustQuorumAbort aborts the epoch being prepared.
func (n Nexus) TrustQuorumAbort(ctx context.Context, epoch uint64) (api.TrustQuorumConfig, error) {
	var out api.TrustQuorumConfig
	err := n.call(ctx, func(server string) (*http.Request, error) {
		return external.NewTrustQuorumAbortRequest(server, api.TrustQuorumAbort{Epoch: epoch})
	}, &out)
	return out, err
}

// SledsUninitialized lists the sleds members see that are not members.
func (n Nexus) SledsUninitialized(ctx context.Context) ([]api.UninitializedSled, error) {
	return listAll[api.UninitializedSled](ctx, n.Client, func(server string, _ *string) (*http.Request, error) {
		return external.NewSledUninitializedListRequest(server)
	})
}

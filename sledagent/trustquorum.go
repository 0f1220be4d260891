package sledagent

import (
	"context"
	"errors"
	"net/http"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/gen/sled"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/trustquorum"
)

// TrustQuorum is the bootstrap agent as the sled API sees it
// (*bootstrap.Agent). Its errors are domain errors: bootstrap's and
// trustquorum's sentinels.
type TrustQuorum interface {
	Reconfigure(context.Context, trustquorum.ReconfigureMsg) (trustquorum.CoordinatorStatus, error)
	LrtqUpgrade(context.Context, trustquorum.LrtqUpgradeMsg) (trustquorum.CoordinatorStatus, error)
	Commit(context.Context, trustquorum.RackID, trustquorum.Epoch) (trustquorum.CommitStatus, error)
	PrepareAndCommit(context.Context, *trustquorum.Configuration) (trustquorum.CommitStatus, error)
	CoordinatorStatus(context.Context) (trustquorum.CoordinatorStatus, error)
	LoadRackSecret(context.Context) (trustquorum.Epoch, bool, error)
	Status(context.Context) (bootstrap.Status, error)
	ProxyCommit(context.Context, trustquorum.BaseboardID, trustquorum.RackID, trustquorum.Epoch) (trustquorum.CommitStatus, error)
	ProxyPrepareAndCommit(context.Context, trustquorum.BaseboardID, *trustquorum.Configuration) (trustquorum.CommitStatus, error)
	ProxyStatus(context.Context, trustquorum.BaseboardID) (bootstrap.Status, error)
	ProxyStartSledAgent(context.Context, trustquorum.BaseboardID) (bool, error)
}

// The /trust-quorum/ operations (api/openapi/sled-agent.json): each
// handler decodes, calls the bootstrap agent and maps its errors; nothing
// else happens here. They are mounted with the rest of the sled API by
// the generated routes; agentHandlers hands each to its handler, wrapped
// in its authorisation.
//
// Authorisation comes from the verified client certificate only: no
// certificate (a plain-HTTP listener, or none presented) is 403
// mtls_required; mutations from anyone but Nexus are 403
// forbidden_identity; reads are for any rack identity.
var tqHandlers = httpx.Handlers{MapError: mapTrustQuorumError}

// tqRead serves a read for any rack identity.
func tqRead(h httpx.HandlerFunc) http.Handler { return requireRackIdentity(tqHandlers.H(h)) }

// tqChange serves a change for Nexus only.
func tqChange(h httpx.HandlerFunc) http.Handler {
	return requireRackIdentity(requireNexus(tqHandlers.H(h)))
}

func (a agentHandlers) TqStatus(w http.ResponseWriter, r *http.Request) {
	tqRead(a.s.tqStatus).ServeHTTP(w, r)
}
func (a agentHandlers) TqCoordinatorStatus(w http.ResponseWriter, r *http.Request) {
	tqRead(a.s.tqCoordinatorStatus).ServeHTTP(w, r)
}
func (a agentHandlers) TqProxyStatus(w http.ResponseWriter, r *http.Request, _ sled.TqProxyStatusParams) {
	tqRead(a.s.tqProxyStatus).ServeHTTP(w, r)
}
func (a agentHandlers) TqReconfigure(w http.ResponseWriter, r *http.Request) {
	tqChange(a.s.tqReconfigure).ServeHTTP(w, r)
}
func (a agentHandlers) TqLrtqUpgrade(w http.ResponseWriter, r *http.Request) {
	tqChange(a.s.tqLrtqUpgrade).ServeHTTP(w, r)
}
func (a agentHandlers) TqCommit(w http.ResponseWriter, r *http.Request) {
	tqChange(a.s.tqCommit).ServeHTTP(w, r)
}
func (a agentHandlers) TqPrepareAndCommit(w http.ResponseWriter, r *http.Request) {
	tqChange(a.s.tqPrepareAndCommit).ServeHTTP(w, r)
}
func (a agentHandlers) TqLoadRackSecret(w http.ResponseWriter, r *http.Request) {
	tqChange(a.s.tqLoadRackSecret).ServeHTTP(w, r)
}
func (a agentHandlers) TqProxyCommit(w http.ResponseWriter, r *http.Request) {
	tqChange(a.s.tqProxyCommit).ServeHTTP(w, r)
}
func (a agentHandlers) TqProxyPrepareAndCommit(w http.ResponseWriter, r *http.Request) {
	tqChange(a.s.tqProxyPrepareAndCommit).ServeHTTP(w, r)
}
func (a agentHandlers) TqProxyStartSledAgent(w http.ResponseWriter, r *http.Request) {
	tqChange(a.s.tqProxyStartSledAgent).ServeHTTP(w, r)
}

type identityKey struct{}

func requireRackIdentity(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The listener's TLS configuration verified the chain against
		// the rack CA during the handshake; this reads what it named.
		id, err := rackpki.PeerIdentity(r.TLS)
		if err != nil {
			httpx.WriteError(w, r, fault.New(fault.Forbidden, api.CodeMTLSRequired,
				"the trust-quorum API needs mutual TLS with a certificate of the rack CA"))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
	})
}

func requireNexus(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := r.Context().Value(identityKey{}).(rackpki.Identity)
		if id.Kind != rackpki.KindNexus {
			httpx.WriteError(w, r, fault.New(fault.Forbidden, api.CodeForbiddenIdentity,
				"only Nexus may change the trust quorum; the caller is %s", id))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) agent() (TrustQuorum, error) {
	if s.tq == nil {
		return nil, fault.New(fault.Unavailable, api.CodeNoTrustQuorum, "this sled agent runs without a bootstrap agent")
	}
	return s.tq, nil
}

func (s *Server) tqStatus(w http.ResponseWriter, r *http.Request) error {
	tq, err := s.agent()
	if err != nil {
		return err
	}
	st, err := tq.Status(r.Context())
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, tqStatusFrom(st))
	return nil
}

func (s *Server) tqCoordinatorStatus(w http.ResponseWriter, r *http.Request) error {
	tq, err := s.agent()
	if err != nil {
		return err
	}
	cs, err := tq.CoordinatorStatus(r.Context())
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, api.TQCoordinatorStatusFrom(cs))
	return nil
}

func (s *Server) tqReconfigure(w http.ResponseWriter, r *http.Request) error {
	var req api.TQReconfigureRequest
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	tq, err := s.agent()
	if err != nil {
		return err
	}
	cs, err := tq.Reconfigure(r.Context(), req.ToTrustQuorum())
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, api.TQCoordinatorStatusFrom(cs))
	return nil
}

func (s *Server) tqLrtqUpgrade(w http.ResponseWriter, r *http.Request) error {
	var req api.TQLrtqUpgradeRequest
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	tq, err := s.agent()
	if err != nil {
		return err
	}
	cs, err := tq.LrtqUpgrade(r.Context(), req.ToTrustQuorum())
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, api.TQCoordinatorStatusFrom(cs))
	return nil
}

func (s *Server) tqCommit(w http.ResponseWriter, r *http.Request) error {
	var req api.TQCommitRequest
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	if req.Destination != nil {
		return fault.Invalidf(api.CodeInvalidField, "destination is for /trust-quorum/proxy/commit")
	}
	tq, err := s.agent()
	if err != nil {
		return err
	}
	cs, err := tq.Commit(r.Context(), trustquorum.RackID(req.RackID), trustquorum.Epoch(req.Epoch))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, api.TQCommitResult{Status: cs.String()})
	return nil
}

func (s *Server) tqPrepareAndCommit(w http.ResponseWriter, r *http.Request) error {
	var req api.TQPrepareAndCommitRequest
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	if req.Destination != nil {
		return fault.Invalidf(api.CodeInvalidField, "destination is for /trust-quorum/proxy/prepare-and-commit")
	}
	cfg, err := req.Configuration.ToTrustQuorum()
	if err != nil {
		return fault.Invalidf(api.CodeInvalidField, "%v", err)
	}
	tq, err := s.agent()
	if err != nil {
		return err
	}
	cs, err := tq.PrepareAndCommit(r.Context(), cfg)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, api.TQCommitResult{Status: cs.String()})
	return nil
}

func (s *Server) tqLoadRackSecret(w http.ResponseWriter, r *http.Request) error {
	tq, err := s.agent()
	if err != nil {
		return err
	}
	epoch, loaded, err := tq.LoadRackSecret(r.Context())
	if err != nil {
		return err
	}
	res := api.TQLoadRackSecretResult{Status: "pending", Epoch: uint64(epoch)}
	if loaded {
		res.Status = "loaded"
	}
	httpx.WriteJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) tqProxyCommit(w http.ResponseWriter, r *http.Request) error {
	var req api.TQCommitRequest
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	if req.Destination == nil {
		return fault.Invalidf(api.CodeInvalidField, "field \"destination\" is required")
	}
	tq, err := s.agent()
	if err != nil {
		return err
	}
	cs, err := tq.ProxyCommit(r.Context(), req.Destination.TrustQuorum(), trustquorum.RackID(req.RackID), trustquorum.Epoch(req.Epoch))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, api.TQCommitResult{Status: cs.String()})
	return nil
}

func (s *Server) tqProxyPrepareAndCommit(w http.ResponseWriter, r *http.Request) error {
	var req api.TQPrepareAndCommitRequest
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	if req.Destination == nil {
		return fault.Invalidf(api.CodeInvalidField, "field \"destination\" is required")
	}
	cfg, err := req.Configuration.ToTrustQuorum()
	if err != nil {
		return fault.Invalidf(api.CodeInvalidField, "%v", err)
	}
	tq, err := s.agent()
	if err != nil {
		return err
	}
	cs, err := tq.ProxyPrepareAndCommit(r.Context(), req.Destination.TrustQuorum(), cfg)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, api.TQCommitResult{Status: cs.String()})
	return nil
}

func (s *Server) tqProxyStatus(w http.ResponseWriter, r *http.Request) error {
	dest := api.Baseboard{Part: r.URL.Query().Get("part"), Serial: r.URL.Query().Get("serial")}
	if err := (api.TQDestinationRequest{Destination: dest}).Validate(); err != nil {
		return fault.Invalidf(api.CodeInvalidParameter, "query parameters part and serial name the destination: %v", err)
	}
	tq, err := s.agent()
	if err != nil {
		return err
	}
	st, err := tq.ProxyStatus(r.Context(), dest.TrustQuorum())
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, tqStatusFrom(st))
	return nil
}

func (s *Server) tqProxyStartSledAgent(w http.ResponseWriter, r *http.Request) error {
	var req api.TQDestinationRequest
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	tq, err := s.agent()
	if err != nil {
		return err
	}
	started, err := tq.ProxyStartSledAgent(r.Context(), req.Destination.TrustQuorum())
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, api.TQStartSledAgentResult{Started: started})
	return nil
}

// tqErrors maps the agent's domain errors (bootstrap's and trustquorum's
// sentinels) to kinds and codes; httpx gives each kind its status.
var tqErrors = []struct {
	err  error
	kind fault.Kind
	code string
}{
	// Busy is "try again shortly", which the sled API has always
	// answered as unavailable rather than as too many requests.
	{bootstrap.ErrBusy, fault.Unavailable, api.CodeBusy},
	{bootstrap.ErrStopped, fault.Unavailable, api.CodeTrustQuorumStopped},
	{bootstrap.ErrNotRunning, fault.Unavailable, api.CodeServiceUnavailable},
	{bootstrap.ErrDestinationNotConnected, fault.Unavailable, api.CodeDestinationNotConnected},
	{bootstrap.ErrProxyConnectionLost, fault.Unavailable, api.CodeProxyConnectionLost},
	{bootstrap.ErrNoSledAgent, fault.Conflict, api.CodeNoSledAgent},
	{bootstrap.ErrForbidden, fault.Forbidden, api.CodeForbiddenIdentity},
	{bootstrap.ErrInvalidRequest, fault.Invalid, api.CodeInvalidBody},
	{context.DeadlineExceeded, fault.Timeout, api.CodeProxyTimeout},
	{trustquorum.ErrInvalidMembership, fault.Invalid, api.CodeInvalidMembership},
	{trustquorum.ErrInvalidThreshold, fault.Invalid, api.CodeInvalidThreshold},
	{trustquorum.ErrMalformed, fault.Invalid, api.CodeInvalidField},
	{trustquorum.ErrNotAMember, fault.Conflict, api.CodeNotAMember},
	{trustquorum.ErrExpunged, fault.Conflict, api.CodeExpunged},
	{trustquorum.ErrUpgradeFromLrtqRequired, fault.Conflict, api.CodeUpgradeFromLrtqRequired},
	{trustquorum.ErrNoLrtq, fault.Conflict, api.CodeNoLrtq},
	{trustquorum.ErrAlreadyUpgraded, fault.Conflict, api.CodeAlreadyUpgraded},
	{trustquorum.ErrRackIDMismatch, fault.Conflict, api.CodeRackIDMismatch},
	{trustquorum.ErrLastCommittedEpochMismatch, fault.Conflict, api.CodeLastCommittedEpochMismatch},
	{trustquorum.ErrStaleEpoch, fault.Conflict, api.CodeStaleEpoch},
	{trustquorum.ErrConflictingReconfiguration, fault.Conflict, api.CodeConflictingReconfiguration},
	{trustquorum.ErrNotPrepared, fault.Conflict, api.CodeNotPrepared},
	{trustquorum.ErrMismatchedConfiguration, fault.Conflict, api.CodeMismatchedConfiguration},
	{trustquorum.ErrNotCommitted, fault.Conflict, api.CodeNotCommitted},
	{trustquorum.ErrUnknownEpoch, fault.Conflict, api.CodeUnknownEpoch},
	{trustquorum.ErrNotInitialized, fault.Conflict, api.CodeNotInitialized},
	{trustquorum.ErrAlreadyInitialized, fault.Conflict, api.CodeAlreadyInitialized},
	{trustquorum.ErrRebuildInProgress, fault.Conflict, api.CodeRebuildInProgress},
	{trustquorum.ErrSecretUnavailable, fault.Conflict, api.CodeSecretUnavailable},
}

// mapTrustQuorumError turns the agent's sentinels into faults; faults
// (the handlers' own refusals) and unknown errors pass unchanged.
func mapTrustQuorumError(err error) error {
	if _, ok := fault.As(err); ok {
		return err
	}
	for _, m := range tqErrors {
		if errors.Is(err, m.err) {
			return fault.Wrap(err, m.kind, m.code, "%s", err.Error())
		}
	}
	return err
}

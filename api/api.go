// Package api holds the wire types shared by Nexus, the sled agent and
// rackctl: request and response bodies, error bodies and error codes.
//
// Handlers and clients both use these types, so a change here is a change to
// the protocol; fields are only ever added, with JSON names in snake_case.
package api

import (
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Error is the body of every non-2xx response from Nexus and the sled agent.
type Error struct {
	// ErrorCode is a stable, machine-readable snake_case code.
	ErrorCode string `json:"error_code"`
	// Message tells a person what was wrong and, where possible, what to do.
	Message string `json:"message"`
	// RequestID matches the server's log lines for this request.
	RequestID string `json:"request_id,omitempty"`

	// StatusCode is the HTTP status the error arrived with (client side
	// only; not part of the body).
	StatusCode int `json:"-"`
}

func (e *Error) Error() string {
	if e.RequestID != "" {
		return fmt.Sprintf("%s (%s, request %s)", e.Message, e.ErrorCode, e.RequestID)
	}
	return fmt.Sprintf("%s (%s)", e.Message, e.ErrorCode)
}

// Error codes shared by every server.
const (
	CodeInvalidBody        = "invalid_body"
	CodeInvalidField       = "invalid_field"
	CodeInvalidParameter   = "invalid_parameter"
	CodeNotFound           = "not_found"
	CodeMethodNotAllowed   = "method_not_allowed"
	CodeConflict           = "conflict"
	CodeBodyTooLarge       = "body_too_large"
	CodeInternal           = "internal_error"
	CodeServiceUnavailable = "service_unavailable"
)

// Sled-specific error codes.
const (
	CodeBaseboardInUse = "baseboard_in_use"
	CodeSledExpunged   = "sled_expunged"
)

// Page is one page of a listing. NextPage, when set, is passed back as the
// page_token query parameter to get the next page.
type Page[T any] struct {
	Items    []T    `json:"items"`
	NextPage string `json:"next_page,omitempty"`
}

// Health is the body of /healthz.
type Health struct {
	// Status is "ok" or "unhealthy".
	Status string `json:"status"`
	// Checks maps a component ("database", "nexus_registration", ...) to
	// "ok" or a description of what is wrong.
	Checks map[string]string `json:"checks,omitempty"`
	// Build is which build answers; only an authenticated caller (any
	// operator token) gets it.
	Build *BuildInfo `json:"build,omitempty"`
}

// BuildInfo says which build of rackplane is running.
type BuildInfo struct {
	// Version is the release version ("dev" for a build from a checkout).
	Version string `json:"version"`
	// Commit is the VCS revision it was built from, when recorded.
	Commit     string    `json:"commit,omitempty"`
	CommitTime time.Time `json:"commit_time,omitzero"`
	// Modified is set when the checkout had local changes.
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"go_version"`
}

// Readiness states (Readiness.Status) and check values.
const (
	ReadyStatus    = "ready"
	NotReadyStatus = "not_ready"
	CheckOK        = "ok"
	CheckFailing   = "failing"
)

// Readiness is the body of /readyz: whether this Nexus can do its work.
type Readiness struct {
	// Status is "ready" or "not_ready".
	Status string `json:"status"`
	// Checks maps "database" and "background_tasks" to "ok" or "failing".
	Checks map[string]string `json:"checks"`
	// Detail says what fails; only an authenticated caller (any operator
	// token) gets it, since errors can name internals.
	Detail *ReadinessDetail `json:"detail,omitempty"`
}

// ReadinessDetail is what an operator learns from /readyz.
type ReadinessDetail struct {
	// Database is "ok" or why the database did not answer.
	Database string `json:"database"`
	// FailingTasks are the background tasks whose last two or more
	// activations failed.
	FailingTasks []FailingTask `json:"failing_tasks"`
	Build        BuildInfo     `json:"build"`
}

// FailingTask is a background task readiness counts as failing.
type FailingTask struct {
	Name              string    `json:"name"`
	ConsecutiveErrors uint64    `json:"consecutive_errors"`
	LastError         string    `json:"last_error"`
	LastStart         time.Time `json:"last_start"`
}

// Baseboard is a sled's hardware identity.
type Baseboard struct {
	Part   string `json:"part"`
	Serial string `json:"serial"`
}

func (b Baseboard) String() string { return b.Part + "/" + b.Serial }

// Sled policies and states, as stored in the database.
const (
	SledPolicyInService = "in_service"
	SledPolicyExpunged  = "expunged"

	SledStateActive         = "active"
	SledStateUnreachable    = "unreachable"
	SledStateDecommissioned = "decommissioned"
)

// DefaultRepoDepotPort is the port every real sled serves its depot on.
const DefaultRepoDepotPort = 12348

// SledRegistration is what a sled agent sends to Nexus's internal API
// (PUT /v1/sled-agents/{sled_id}) on start and periodically.
type SledRegistration struct {
	Baseboard Baseboard `json:"baseboard"`
	// SledAgentAddress is host:port of the sled agent's API, as Nexus
	// should dial it.
	SledAgentAddress string `json:"sled_agent_address"`
	// RepoDepotPort is the port of the sled's repo depot on the same host.
	RepoDepotPort int `json:"repo_depot_port"`

	// Inventory, sent by sled agents that have an artifact store; absent
	// from older agents, in which case Nexus keeps what it had.

	// M2s lists the sled's configured M.2 devices.
	M2s []M2Device `json:"m2s,omitempty"`
	// ArtifactGeneration is the artifact config generation the sled holds.
	ArtifactGeneration *uint64 `json:"artifact_generation,omitempty"`
	// ArtifactsComplete counts the config's artifacts the sled holds on
	// every M.2 in use. It changes as copies finish or are lost, and the
	// sled re-registers when it does, which is how Nexus learns promptly
	// that replication has work (or new sources).
	ArtifactsComplete *int `json:"artifacts_complete,omitempty"`
}

// Sled is a registered sled, as Nexus lists it.
type Sled struct {
	ID               uuid.UUID `json:"id"`
	Baseboard        Baseboard `json:"baseboard"`
	SledAgentAddress string    `json:"sled_agent_address"`
	RepoDepotPort    int       `json:"repo_depot_port"`
	Policy           string    `json:"policy"`
	State            string    `json:"state"`
	TimeCreated      time.Time `json:"time_created"`
	TimeModified     time.Time `json:"time_modified"`
	TimeLastSeen     time.Time `json:"time_last_seen"`
	// M2s and ArtifactGeneration are the sled's last reported inventory
	// (absent until a sled agent that reports them has registered).
	M2s                []M2Device `json:"m2s,omitempty"`
	ArtifactGeneration *uint64    `json:"artifact_generation,omitempty"`
	ArtifactsComplete  *int       `json:"artifacts_complete,omitempty"`
	// Health is what that inventory says is wrong with the sled.
	Health SledHealth `json:"health"`
}

// Sled health states (SledHealth.State).
const (
	SledHealthOK       = "ok"
	SledHealthDegraded = "degraded"
	SledHealthUnknown  = "unknown"
)

// SledHealth is what is wrong with a sled's hardware, from its last
// reported inventory.
type SledHealth struct {
	// State is "ok", "degraded" (an M.2 it should have is not in use, so
	// its artifacts have one copy too few) or "unknown" (no inventory
	// reported yet).
	State string `json:"state"`
	// M2Expected is how many M.2s the sled should have (every sled has
	// two), M2Present how many are in use.
	M2Expected int `json:"m2_expected"`
	M2Present  int `json:"m2_present"`
	// M2Missing are the configured devices not in use.
	M2Missing []M2Device `json:"m2_missing"`
	// StorageLock is the sled's storage unlock: "unknown" until sleds
	// report it (then "locked" or "unlocked").
	StorageLock string `json:"storage_lock"`
	// Problems says what is wrong, in words.
	Problems []string `json:"problems"`
}

// Access error codes.
const (
	// CodeUnauthenticated: no credentials were sent.
	CodeUnauthenticated = "unauthenticated"
	// CodeInvalidToken: the token is not one Nexus issued.
	CodeInvalidToken = "invalid_token"
	CodeTokenExpired = "token_expired"
	CodeTokenRevoked = "token_revoked"
	// CodeForbidden: the caller is known but may not do this.
	CodeForbidden = "forbidden"
	// CodeCrossSite: a state-changing browser request did not come from
	// Nexus's own pages.
	CodeCrossSite = "cross_site_request"
	// CodeIdentityMismatch: a request names another party than the
	// caller's certificate does.
	CodeIdentityMismatch = "identity_mismatch"
	// CodeMTLSRequired (403): the caller presented no certificate of the
	// rack CA (or the listener does not serve mutual TLS).
	CodeMTLSRequired = "mtls_required"
	// CodeTooManyRequests: too many requests of this kind are in progress.
	CodeTooManyRequests = "too_many_requests"
)

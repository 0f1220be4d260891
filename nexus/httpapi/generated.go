package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	openapi_types "github.com/oapi-codegen/runtime/types"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/gen/depot"
	"github.com/rackplane/rackplane/api/gen/external"
	"github.com/rackplane/rackplane/api/gen/nexusint"
	"github.com/rackplane/rackplane/internal/httpx"
)

// Nexus's listeners are served through the routes generated from their
// OpenAPI documents (api/openapi): a route exists exactly when its
// operation is documented, and the generated wrappers bind and check path
// and query parameters. These adapters hand each operation to the handler
// that implements it; the handlers still read their bodies themselves, so
// every message stays ours.

// paramRules words the wrappers' parameter errors as our own checks do.
var paramRules = httpx.PageRules.With(httpx.ParamRules{
	"sled_id": httpx.UUIDParam("sled_id"),
	"id":      httpx.UUIDParam("id"),
	"epoch":   {Invalid: "path parameter epoch: %q is not an epoch (a whole number from 1)"},
	"file_name": {Code: api.CodeMissingFileName,
		Missing: "query parameter file_name is required: the archive's file name, kept for the record"},
})

// externalOps implements external.ServerInterface.
type externalOps struct {
	s       *API
	metrics http.Handler
}

var _ external.ServerInterface = externalOps{}

func (o externalOps) Healthz(w http.ResponseWriter, r *http.Request) { o.s.healthz(w, r) }
func (o externalOps) Readyz(w http.ResponseWriter, r *http.Request)  { o.s.readyz(w, r) }
func (o externalOps) Metrics(w http.ResponseWriter, r *http.Request) { o.metrics.ServeHTTP(w, r) }
func (o externalOps) OpenapiDocument(w http.ResponseWriter, r *http.Request) {
	o.s.openapiDocument(w, r)
}
func (o externalOps) BackgroundTaskList(w http.ResponseWriter, r *http.Request) {
	h(o.s.bgtaskList)(w, r)
}
func (o externalOps) BackgroundTaskActivate(w http.ResponseWriter, r *http.Request) {
	h(o.s.bgtaskActivate)(w, r)
}
func (o externalOps) BackgroundTaskGet(w http.ResponseWriter, r *http.Request, _ external.TaskName) {
	h(o.s.bgtaskGet)(w, r)
}
func (o externalOps) BackgroundTaskSetEnabled(w http.ResponseWriter, r *http.Request, _ external.TaskName) {
	h(o.s.bgtaskSetEnabled)(w, r)
}
func (o externalOps) SledList(w http.ResponseWriter, r *http.Request, _ external.SledListParams) {
	h(o.s.sledList)(w, r)
}
func (o externalOps) SledGet(w http.ResponseWriter, r *http.Request, _ openapi_types.UUID) {
	h(o.s.sledGet)(w, r)
}
func (o externalOps) ArtifactList(w http.ResponseWriter, r *http.Request, _ external.ArtifactListParams) {
	h(o.s.artifactList)(w, r)
}
func (o externalOps) RepoList(w http.ResponseWriter, r *http.Request, _ external.RepoListParams) {
	h(o.s.repoList)(w, r)
}
func (o externalOps) RepoUpload(w http.ResponseWriter, r *http.Request, _ external.RepoUploadParams) {
	// A refused upload may have thrown away gigabytes an operator sent.
	httpx.Handlers{WarnRefusals: true}.H(o.s.repoUpload)(w, r)
}
func (o externalOps) RepoPrune(w http.ResponseWriter, r *http.Request, _ external.SystemVersion) {
	h(o.s.repoPrune)(w, r)
}
func (o externalOps) RepoGet(w http.ResponseWriter, r *http.Request, _ external.SystemVersion) {
	h(o.s.repoGet)(w, r)
}
func (o externalOps) RepoSetKept(w http.ResponseWriter, r *http.Request, _ external.SystemVersion) {
	h(o.s.repoSetKept)(w, r)
}
func (o externalOps) TrustRootList(w http.ResponseWriter, r *http.Request, _ external.TrustRootListParams) {
	h(o.s.trustRootList)(w, r)
}
func (o externalOps) TrustRootAdd(w http.ResponseWriter, r *http.Request) {
	h(o.s.trustRootCreate)(w, r)
}
func (o externalOps) TrustRootDelete(w http.ResponseWriter, r *http.Request, _ external.TrustRootID, _ external.TrustRootDeleteParams) {
	h(o.s.trustRootDelete)(w, r)
}
func (o externalOps) TrustRootGet(w http.ResponseWriter, r *http.Request, _ external.TrustRootID) {
	h(o.s.trustRootGet)(w, r)
}

// internalOps implements nexusint.ServerInterface.
type internalOps struct{ s *API }

var _ nexusint.ServerInterface = internalOps{}

func (o internalOps) Healthz(w http.ResponseWriter, r *http.Request) { o.s.healthz(w, r) }
func (o internalOps) RackSetupHandoff(w http.ResponseWriter, r *http.Request) {
	h(o.s.rackSetupHandoff)(w, r)
}
func (o internalOps) SledRegister(w http.ResponseWriter, r *http.Request, _ openapi_types.UUID) {
	h(o.s.sledRegister)(w, r)
}

// mountExternalOps puts the external API's generated routes on r.
func (s *API) mountExternalOps(r chi.Router, metrics http.Handler) {
	external.HandlerWithOptions(externalOps{s: s, metrics: metrics}, external.ChiServerOptions{
		BaseRouter: r, ErrorHandlerFunc: httpx.ParamErrorHandler(paramRules)})
}

// mountInternalOps puts the internal API's generated routes on r.
func (s *API) mountInternalOps(r chi.Router) {
	nexusint.HandlerWithOptions(internalOps{s: s}, nexusint.ChiServerOptions{
		BaseRouter: r, ErrorHandlerFunc: httpx.ParamErrorHandler(paramRules)})
}

// depotOps implements depot.ServerInterface: this Nexus's local copies,
// served in the same shape as a sled's depot.
type depotOps struct{ s *API }

var _ depot.ServerInterface = depotOps{}

func (o depotOps) Healthz(w http.ResponseWriter, r *http.Request) { o.s.healthz(w, r) }
func (o depotOps) ArtifactGet(w http.ResponseWriter, r *http.Request, _ depot.ArtifactSHA256, _ depot.ArtifactGetParams) {
	h(o.s.depotServe)(w, r)
}
func (o depotOps) ArtifactHead(w http.ResponseWriter, r *http.Request, _ depot.ArtifactSHA256, _ depot.ArtifactHeadParams) {
	h(o.s.depotServe)(w, r)
}

// mountDepotOps puts the depot's generated routes on r.
func (s *API) mountDepotOps(r chi.Router) {
	depot.HandlerWithOptions(depotOps{s: s}, depot.ChiServerOptions{
		BaseRouter: r, ErrorHandlerFunc: httpx.ParamErrorHandler(paramRules)})
}

func (o externalOps) TokenList(w http.ResponseWriter, r *http.Request, _ external.TokenListParams) {
	h(o.s.tokenList)(w, r)
}
func (o externalOps) TokenCreate(w http.ResponseWriter, r *http.Request) { h(o.s.tokenCreate)(w, r) }
func (o externalOps) TokenRevoke(w http.ResponseWriter, r *http.Request, _ external.TokenID) {
	h(o.s.tokenRevoke)(w, r)
}
func (o externalOps) AuditLogList(w http.ResponseWriter, r *http.Request, _ external.AuditLogListParams) {
	h(o.s.auditList)(w, r)
}

func (o externalOps) UploadList(w http.ResponseWriter, r *http.Request) { h(o.s.uploadList)(w, r) }
func (o externalOps) TrustQuorumStatus(w http.ResponseWriter, r *http.Request) {
	h(o.s.trustQuorumStatus)(w, r)
}
func (o externalOps) TrustQuorumEpochGet(w http.ResponseWriter, r *http.Request, epoch external.Epoch) {
	h(func(w http.ResponseWriter, r *http.Request) error { return o.s.trustQuorumEpochGet(w, r, epoch) })(w, r)
}
func (o externalOps) TrustQuorumMembershipChange(w http.ResponseWriter, r *http.Request) {
	h(o.s.trustQuorumMembership)(w, r)
}
func (o externalOps) TrustQuorumLrtqUpgrade(w http.ResponseWriter, r *http.Request) {
	h(o.s.trustQuorumLrtqUpgrade)(w, r)
}
func (o externalOps) TrustQuorumAbort(w http.ResponseWriter, r *http.Request) {
	h(o.s.trustQuorumAbort)(w, r)
}
func (o externalOps) SledUninitializedList(w http.ResponseWriter, r *http.Request) {
	h(o.s.sledUninitializedList)(w, r)
}

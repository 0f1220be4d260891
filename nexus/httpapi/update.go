package httpapi

import (
	"errors"
	"io"
	"net/http"
	"os"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/depot"
	"github.com/rackplane/rackplane/nexus/model"
)

func (s *API) trustRootCreate(w http.ResponseWriter, r *http.Request) error {
	// One byte past the limit lets the application layer refuse it.
	body, err := io.ReadAll(io.LimitReader(r.Body, app.MaxTrustRootBytes+1))
	if err != nil {
		return fault.Invalidf(api.CodeInvalidBody, "the request body could not be read: %v", err)
	}
	root, created, err := s.app.CreateTrustRoot(r.Context(), body)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	httpx.WriteJSON(w, status, APITrustRoot(root))
	return nil
}

func (s *API) trustRootList(w http.ResponseWriter, r *http.Request) error {
	return listByID(w, r, s.app.ListTrustRoots, APITrustRoot, func(t model.TrustRoot) uuid.UUID { return t.ID })
}

func (s *API) trustRootGet(w http.ResponseWriter, r *http.Request) error {
	id, err := httpx.PathUUID(r, "id")
	if err != nil {
		return err
	}
	root, err := s.app.TrustRoot(r.Context(), id)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, APITrustRoot(root))
	return nil
}

func (s *API) trustRootDelete(w http.ResponseWriter, r *http.Request) error {
	id, err := httpx.PathUUID(r, "id")
	if err != nil {
		return err
	}
	force := false
	switch v := r.URL.Query().Get("force"); v {
	case "", "false":
	case "true":
		force = true
	default:
		return fault.Invalidf(api.CodeInvalidParameter, "query parameter force must be true or false, not %q", v)
	}
	res, err := s.app.DeleteTrustRoot(r.Context(), id, force)
	if err != nil {
		return err
	}
	live := res.LiveRepos
	if live == nil {
		live = []string{}
	}
	httpx.WriteJSON(w, http.StatusOK, api.TrustRootDeleted{TrustRoot: APITrustRoot(res.Root), LiveRepos: live,
		Remaining: res.Remaining, Message: res.Message})
	return nil
}

// repoUpload streams the body into the application layer, which verifies
// and records it; nothing here buffers it. A client that stops sending is
// cut off after the idle timeout (the read deadline moves with progress,
// so a slow but steady upload is never cut off).
func (s *API) repoUpload(w http.ResponseWriter, r *http.Request) error {
	length := r.ContentLength
	if length < 0 {
		length = -1
	}
	body := httpx.IdleBody(w, r.Body, s.app.UploadIdleTimeout())
	res, err := s.app.UploadRepo(r.Context(), app.Upload{FileName: r.URL.Query().Get("file_name"),
		Body: body, ContentLength: length})
	if err != nil {
		return err
	}
	out := api.TufRepoUpload{Repo: APIRepo(res.Repo), Status: res.Status, Generation: res.Generation,
		Message: res.Message}
	if res.Replaced != nil {
		old := APIRepo(*res.Replaced)
		out.Replaced = &old
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *API) repoList(w http.ResponseWriter, r *http.Request) error {
	page, err := httpx.PageParams(r)
	if err != nil {
		return err
	}
	var after *datastore.RepoCursor
	if page.Token != "" {
		c, err := datastore.ParseRepoCursor(page.Token)
		if err != nil {
			return fault.Invalidf(api.CodeInvalidParameter, "page_token %q is not one this server issued", page.Token)
		}
		after = &c
	}
	includePruned := r.URL.Query().Get("include_pruned") == "true"
	repos, err := s.app.ListRepos(r.Context(), includePruned, after, page.Limit+1)
	if err != nil {
		return err
	}
	writePage(w, repos, page.Limit, APIRepo, func(t model.TufRepo) string {
		return datastore.RepoCursor{TimeCreated: t.TimeCreated, ID: t.ID}.String()
	})
	return nil
}

func (s *API) repoGet(w http.ResponseWriter, r *http.Request) error {
	d, err := s.app.Repo(r.Context(), chi.URLParam(r, "system_version"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, APIRepoDetail(d))
	return nil
}

func (s *API) repoPrune(w http.ResponseWriter, r *http.Request) error {
	res, err := s.app.PruneRepo(r.Context(), chi.URLParam(r, "system_version"), "operator", nil)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, api.TufRepoPrune{Repo: APIRepo(res.Repo), Generation: res.Generation,
		AlreadyPruned: res.AlreadyPruned, Message: res.Message})
	return nil
}

func (s *API) repoSetKept(w http.ResponseWriter, r *http.Request) error {
	var body api.TufRepoKeep
	if err := httpx.DecodeJSON(r, &body, 0); err != nil {
		return err
	}
	repo, err := s.app.SetRepoKept(r.Context(), chi.URLParam(r, "system_version"), body.Kept)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, APIRepo(repo))
	return nil
}

func (s *API) artifactList(w http.ResponseWriter, r *http.Request) error {
	return listByID(w, r, s.app.ListArtifacts, apiArtifactListItem, func(a model.ArtifactListItem) uuid.UUID { return a.ID })
}

// depotServe serves this Nexus's local copy of an artifact, Range requests
// included.
func (s *API) depotServe(w http.ResponseWriter, r *http.Request) error {
	sha := chi.URLParam(r, "sha256")
	if err := api.CheckSHA256(sha); err != nil || !depot.ValidHash(sha) {
		return fault.Invalidf(api.CodeInvalidSHA256, "path parameter sha256: %v", err)
	}
	f, err := os.Open(s.app.Depot().Path(sha))
	if errors.Is(err, os.ErrNotExist) {
		return fault.NotFoundf(api.CodeNotFound, "this Nexus holds no local copy of artifact %s", sha)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+sha+`"`)
	http.ServeContent(w, r, "", fi.ModTime(), f)
	return nil
}

func (s *API) uploadList(w http.ResponseWriter, _ *http.Request) error {
	out := api.TufUploadList{NexusID: s.app.NexusID(), Items: []api.TufUpload{}}
	for _, u := range s.app.Uploads() {
		out.Items = append(out.Items, APIUpload(u))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

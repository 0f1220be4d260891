package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/httpx"
)

func (s *API) bgtaskList(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, s.app.TaskList(r.Context()))
	return nil
}

func (s *API) bgtaskGet(w http.ResponseWriter, r *http.Request) error {
	t, _, err := s.app.Task(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, t)
	return nil
}

func (s *API) bgtaskActivate(w http.ResponseWriter, r *http.Request) error {
	var req api.BackgroundTaskActivate
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	names, err := s.app.ActivateTasks(r.Context(), apiRequester(r), req.Names...)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusAccepted, api.BackgroundTaskActivated{Activated: names})
	return nil
}

func (s *API) bgtaskSetEnabled(w http.ResponseWriter, r *http.Request) error {
	name := chi.URLParam(r, "name")
	// An unknown task is a 404 before the body is looked at.
	if err := s.app.CheckTask(name); err != nil {
		return err
	}
	var req api.BackgroundTaskEnabled
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	if err := s.app.SetTaskEnabled(r.Context(), name, *req.Enabled, apiRequester(r)); err != nil {
		return err
	}
	t, _, err := s.app.Task(r.Context(), name)
	if err != nil {
		return err
	}
	t.History = nil
	httpx.WriteJSON(w, http.StatusOK, t)
	return nil
}

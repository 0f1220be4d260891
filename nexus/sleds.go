package nexus

import (
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/nexus/datastore"
)

func (s *Server) mountSledsExternal(r chi.Router) {
	r.Get("/v1/system/hardware/sleds", handlers.H(s.sledList))
	r.Get("/v1/system/hardware/sleds/{sled_id}", handlers.H(s.sledGet))
}

func (s *Server) mountSledsInternal(r chi.Router) {
	r.Put("/v1/sled-agents/{sled_id}", handlers.H(s.sledRegister))
}

func (s *Server) sledList(w http.ResponseWriter, r *http.Request) error {
	return listByID(w, r, s.ds.SledList, func(sl api.Sled) uuid.UUID { return sl.ID })
}

func (s *Server) sledGet(w http.ResponseWriter, r *http.Request) error {
	id, err := httpx.PathUUID(r, "sled_id")
	if err != nil {
		return err
	}
	sled, err := s.ds.SledGet(r.Context(), id)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, sled)
	return nil
}

func (s *Server) sledRegister(w http.ResponseWriter, r *http.Request) error {
	id, err := httpx.PathUUID(r, "sled_id")
	if err != nil {
		return err
	}
	var reg api.SledRegistration
	if err := httpx.DecodeJSON(r, &reg, 0); err != nil {
		return err
	}
	res, err := s.ds.SledUpsert(r.Context(), id, reg)
	switch {
	case errors.Is(err, datastore.ErrConflict):
		return httpx.Conflict(api.CodeBaseboardInUse, "%s", stripSentinel(err, datastore.ErrConflict))
	case errors.Is(err, datastore.ErrExpunged):
		return httpx.Conflict(api.CodeSledExpunged, "%s", stripSentinel(err, datastore.ErrExpunged))
	case err != nil:
		return err
	}
	log := zerolog.Ctx(r.Context()).With().Str("sled_id", id.String()).Logger()
	switch {
	case res.Created:
		log.Info().Str("baseboard", reg.Baseboard.String()).Str("address", reg.SledAgentAddress).Msg("sled registered")
	case res.Changed:
		log.Info().Str("baseboard", reg.Baseboard.String()).Str("address", reg.SledAgentAddress).Msg("sled registration changed")
	default:
		log.Debug().Msg("sled registration refreshed")
	}
	if res.Created || res.Changed || res.InventoryChanged || res.Revived {
		// What the sled can hold or serve changed: replicate to (and
		// from) it now rather than at the task's next period.
		s.activateTask(ReplicationTask, "sled-registration:"+id.String())
	}
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
	}
	httpx.WriteJSON(w, status, res.Sled)
	return nil
}

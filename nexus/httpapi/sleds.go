package httpapi

import (
	"net/http"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/nexus/model"
)

func (s *API) sledList(w http.ResponseWriter, r *http.Request) error {
	return listByID(w, r, s.app.ListSleds, APISled, func(sl model.Sled) uuid.UUID { return sl.ID })
}

func (s *API) sledGet(w http.ResponseWriter, r *http.Request) error {
	id, err := httpx.PathUUID(r, "sled_id")
	if err != nil {
		return err
	}
	sled, err := s.app.Sled(r.Context(), id)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, APISled(sled))
	return nil
}

func (s *API) sledRegister(w http.ResponseWriter, r *http.Request) error {
	id, err := httpx.PathUUID(r, "sled_id")
	if err != nil {
		return err
	}
	var reg api.SledRegistration
	if err := httpx.DecodeJSON(r, &reg, 0); err != nil {
		return err
	}
	res, err := s.app.RegisterSled(r.Context(), id, modelRegistration(reg))
	if err != nil {
		return err
	}
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
	}
	httpx.WriteJSON(w, status, APISled(res.Sled))
	return nil
}

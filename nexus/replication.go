package nexus

import (
	"net/http"
	"os"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/nexus/depot"
)

// ReplicationConfig tunes the replication task (see tufreplication.Limits).
type ReplicationConfig struct {
	// MinSledReplication: sleds that must hold an artifact before this
	// Nexus drops its local copy; also how many sleds Nexus seeds itself.
	MinSledReplication int
	MaxCopiesPerSource int
	// FollowUp is how soon the task looks again while copies run.
	FollowUp time.Duration
	// HTTP talks to sleds (nil: the task's default client). Benchmarks
	// set one that counts the bytes Nexus sends.
	HTTP *http.Client
}

func (s *Server) newReplicationTask() *tufreplication.Task {
	t := tufreplication.New(tufreplication.Config{
		DS: s.ds, Depot: s.depot, DepotLock: &s.uploadMu, NexusID: s.cfg.ID, Log: s.log,
		Limits: tufreplication.Limits{
			MinSledReplication: s.cfg.Replication.MinSledReplication,
			MaxCopiesPerSource: s.cfg.Replication.MaxCopiesPerSource,
		},
		FollowUp: s.cfg.Replication.FollowUp,
		HTTP:     s.cfg.Replication.HTTP,
	})
	s.replication = t
	return t
}

// mountDepotServe serves this Nexus's local copies on the internal
// listener, in the same shape as a sled's repo depot, so sleds can copy
// from a Nexus exactly as from another sled (Range requests included).
func (s *Server) mountDepotServe(r chi.Router) {
	r.Get("/artifact/sha256/{sha256}", handlers.H(s.depotServe))
	r.Head("/artifact/sha256/{sha256}", handlers.H(s.depotServe))
}

func (s *Server) depotServe(w http.ResponseWriter, r *http.Request) error {
	sha := chi.URLParam(r, "sha256")
	if err := api.CheckSHA256(sha); err != nil || !depot.ValidHash(sha) {
		return httpx.BadRequest(api.CodeInvalidSHA256, "path parameter sha256: %v", err)
	}
	f, err := os.Open(s.depot.Path(sha))
	if os.IsNotExist(err) {
		return httpx.NotFound("this Nexus holds no local copy of artifact %s", sha)
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

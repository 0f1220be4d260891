package api

import (
	"time"

	"github.com/google/uuid"
)

// The status of the tuf_artifact_replication background task: what GET
// /v1/system/background-tasks/tuf_artifact_replication returns as its
// status, and what the replication status page shows.

// ReplicationCounters count requests by outcome.
type ReplicationCounters struct {
	ConfigPutOK  int `json:"config_put_ok"`
	ConfigPutErr int `json:"config_put_err"`
	ListOK       int `json:"list_ok"`
	ListErr      int `json:"list_err"`
	// SeedOK and SeedErr count requests that a sled copy an artifact from
	// a Nexus's depot (the one copy of it a Nexus sends), CopyOK and
	// CopyErr requests that it copy from another sled's.
	SeedOK       int `json:"seed_ok"`
	SeedErr      int `json:"seed_err"`
	CopyOK       int `json:"copy_ok"`
	CopyErr      int `json:"copy_err"`
	LocalDropped int `json:"local_dropped"`
	// BytesSeeded counts the bytes of the seeds sleds were asked to copy
	// from a Nexus: what leaves Nexus.
	BytesSeeded int64 `json:"bytes_seeded"`
	// BytesCopied counts the bytes of copies sleds were asked to make
	// from sleds.
	BytesCopied int64 `json:"bytes_copied"`
}

// ReplicationRequest is one request made to a sled, for the ring buffer.
type ReplicationRequest struct {
	Time      time.Time `json:"time"`
	Sled      uuid.UUID `json:"sled_id"`
	Operation string    `json:"operation"`
	SHA256    string    `json:"sha256,omitempty"`
	Source    string    `json:"source,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// ReplicationSled is what a run learned about one sled.
type ReplicationSled struct {
	ID         uuid.UUID `json:"id"`
	Address    string    `json:"address"`
	Generation uint64    `json:"generation"`
	M2Present  int       `json:"m2_present"`
	// M2Expected is how many M.2s the sled should have; with fewer
	// present it is degraded and the rack is not converged.
	M2Expected int    `json:"m2_expected"`
	InFlight   int    `json:"copies_in_flight"`
	Error      string `json:"error,omitempty"`
}

// ReplicationArtifact is one artifact's spread, for the status.
type ReplicationArtifact struct {
	SHA256       string `json:"sha256"`
	Length       int64  `json:"length"`
	Sleds        int    `json:"sleds"`
	FullSleds    int    `json:"full_sleds"`
	InFlight     int    `json:"in_flight"`
	NexusHolders int    `json:"nexus_holders"`
}

// ReplicationFastForward records the wanted-set generation moved past
// what a sled held, because the database was behind its sleds (restored
// from a backup, say).
type ReplicationFastForward struct {
	Time time.Time `json:"time"`
	// From is the database's generation before, To the one after.
	From int64 `json:"from"`
	To   int64 `json:"to"`
	// SledGeneration is the highest generation a sled held, and Sled the
	// sled holding it.
	SledGeneration int64     `json:"sled_generation"`
	Sled           uuid.UUID `json:"sled_id"`
}

// ReplicationStatus is what one activation saw and did.
type ReplicationStatus struct {
	Generation int64 `json:"generation"`
	// Stopped says why the run stopped before acting (a stale view).
	Stopped   string `json:"stopped,omitempty"`
	Artifacts int    `json:"artifacts"`
	Sleds     int    `json:"sleds"`
	// Converged is set when every in-service sled answered at the
	// generation and holds every wanted artifact on every M.2 it should
	// have: a sled with an M.2 missing (DegradedSleds) keeps it unset.
	Converged bool `json:"converged"`
	// DegradedSleds counts answering sleds with fewer M.2s present than
	// they should have.
	DegradedSleds int   `json:"degraded_sleds"`
	Requests      int   `json:"requests"`
	Deferred      int   `json:"deferred"`
	InFlight      int   `json:"copies_in_flight"`
	RoundTrips    int64 `json:"db_round_trips"`
	// Phases says where the run's time went.
	Phases ReplicationPhaseTimes `json:"phase_ms"`
	// FullyReplicated counts artifacts every reachable sled holds on
	// every M.2.
	FullyReplicated int `json:"fully_replicated"`
	// LeastReplicated lists the artifacts with the fewest holders.
	LeastReplicated []ReplicationArtifact `json:"least_replicated"`
	Unheld          []string              `json:"unheld,omitempty"`
	RepoChanges     []string              `json:"repo_state_changes,omitempty"`
	// LocalCopies counts artifacts this Nexus holds in its depot, and
	// Dropped those this run removed.
	LocalCopies int                  `json:"local_copies"`
	Dropped     []string             `json:"local_dropped,omitempty"`
	SledStates  []ReplicationSled    `json:"sled_states"`
	LastRun     ReplicationCounters  `json:"last_run"`
	Lifetime    ReplicationCounters  `json:"lifetime"`
	Recent      []ReplicationRequest `json:"recent_requests"`

	// FastForward is the last time this Nexus found the database behind
	// its sleds and moved its generation past theirs (kept across runs, so
	// operators see that it happened).
	FastForward *ReplicationFastForward `json:"generation_fast_forward,omitempty"`
	// HeldBack counts requests this run did not send because the same
	// request to the same sled failed recently and is backing off (they
	// are also counted in Deferred).
	HeldBack int `json:"held_back,omitempty"`
	// BackingOff counts sleds not asked anything this run because their
	// recent requests failed; each says so in SledStates.
	BackingOff int `json:"sleds_backing_off,omitempty"`
}

// ReplicationPhaseTimes are the durations of a run's phases, in milliseconds: asking
// the database and every sled (collect), planning, sending the requests
// (execute; Nexus's own PUTs are answered only once the sled has stored
// the artifact, copies as soon as the sled has queued them), and dropping
// local copies and updating repo states (finish).
type ReplicationPhaseTimes struct {
	Collect float64 `json:"collect"`
	Plan    float64 `json:"plan"`
	Execute float64 `json:"execute"`
	Finish  float64 `json:"finish"`
}

// Package model holds Nexus's domain types: what the datastore returns and
// the application layer works with. They carry no JSON tags on purpose:
// the wire types in package api are built from them at the HTTP edge, so a
// column added here does not change an API, and an API field renamed there
// does not reach the SQL.
package model

import (
	"time"

	"github.com/google/uuid"
)

// Baseboard is a sled's hardware identity.
type Baseboard struct {
	Part, Serial string
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

// SledM2Devices is how many M.2 devices every sled has: a sled reporting
// fewer present is degraded.
const SledM2Devices = 2

// Sled health states (SledHealth.State).
const (
	// SledHealthOK: every M.2 the sled should have is present.
	SledHealthOK = "ok"
	// SledHealthDegraded: something the sled should have is missing.
	SledHealthDegraded = "degraded"
	// SledHealthUnknown: the sled has not reported its inventory.
	SledHealthUnknown = "unknown"
)

// Storage lock states (SledHealth.StorageLock). A sled reports its lock
// in its trust-quorum status, which the trust-quorum manager records; a
// sled whose node was never read (no trust quorum) is unknown.
const (
	StorageLockUnknown  = "unknown"
	StorageLockLocked   = "locked"
	StorageLockUnlocked = "unlocked"
	StorageLockExpunged = "expunged"
)

// SledHealth is what is wrong with a sled's hardware, as its inventory
// says.
type SledHealth struct {
	State string
	// M2Expected is how many M.2s the sled should have (SledM2Devices,
	// or more if it reports more), M2Present how many are in use.
	M2Expected, M2Present int
	// M2Missing are the configured devices that are not in use; a sled
	// configured with fewer devices than expected has fewer here than
	// M2Expected-M2Present.
	M2Missing   []M2Device
	StorageLock string
	// Problems says what is wrong, in an operator's words.
	Problems []string
}

// M2Device is one M.2 in a sled's inventory.
type M2Device struct {
	Path                  string
	Present               bool
	FreeBytes, TotalBytes uint64
	// Error says why a configured device is not in use, when known.
	Error string
}

// Sled is a registered sled.
type Sled struct {
	ID               uuid.UUID
	Baseboard        Baseboard
	SledAgentAddress string
	RepoDepotPort    int
	Policy, State    string
	TimeCreated      time.Time
	TimeModified     time.Time
	TimeLastSeen     time.Time
	// The inventory the sled last reported: nil/empty until a sled agent
	// that reports it has registered.
	M2s                []M2Device
	ArtifactGeneration *uint64
	ArtifactsComplete  *int
	// StorageLock is the data disks' lock state the sled's trust-quorum
	// node last reported (StorageLock*; "" when none did).
	StorageLock string
}

// SledRegistration is what a sled agent reports when it registers. The
// inventory fields are nil when the agent does not report them, in which
// case what was recorded stays.
type SledRegistration struct {
	Baseboard          Baseboard
	SledAgentAddress   string
	RepoDepotPort      int
	M2s                []M2Device
	ArtifactGeneration *uint64
	ArtifactsComplete  *int
}

// SledUpsertResult says what a registration did.
type SledUpsertResult struct {
	Sled    Sled
	Created bool
	// Changed is set when the baseboard or addresses differ from what was
	// recorded (always set when Created).
	Changed bool
	// InventoryChanged is set when the artifact config generation, the
	// complete count or the set of present M.2s differs from what was
	// recorded (always set when Created with an inventory).
	InventoryChanged bool
	// Revived is set when the sled had been marked unreachable.
	Revived bool
}

// TrustRoot is a registered TUF root that uploads are verified against.
type TrustRoot struct {
	ID          uuid.UUID
	TimeCreated time.Time
	// SHA256 is the hash of the root document as registered.
	SHA256  string
	Version int64
	Expires time.Time
	// JSON is the root.json document exactly as registered.
	JSON []byte
}

// TUF repo states: State holds one of the first three (the replication
// health of the repo's artifacts); a pruned repo's state is reported as
// RepoStatePruned whatever it holds.
const (
	RepoStateActive   = "active"
	RepoStateDegraded = "degraded"
	RepoStateFailed   = "failed"
	RepoStatePruned   = "pruned"
)

// TufRepo is an uploaded TUF repository.
type TufRepo struct {
	ID            uuid.UUID
	SystemVersion string
	FileName      string
	// SHA256 is the hash of the uploaded archive.
	SHA256      string
	TimeCreated time.Time
	// ValidUntil is the earliest expiry among the repo's metadata roles.
	ValidUntil time.Time
	// TimePruned is set once the repo was pruned; PrunedBy says by whom.
	TimePruned *time.Time
	PrunedBy   string
	// Kept repos are never pruned automatically.
	Kept        bool
	State       string
	StateReason string

	TrustRootID      uuid.UUID
	RootVersion      int64
	TimestampVersion int64
	SnapshotVersion  int64
	TargetsVersion   int64

	ArtifactCount int
	TotalBytes    int64
}

// TufArtifact is one artifact as recorded (shared by every repo that
// carries the same name, version, kind and bytes).
type TufArtifact struct {
	ID      uuid.UUID
	Name    string
	Version string
	Kind    string
	SHA256  string
	Length  int64
	Tags    map[string]string
}

// TufRepoArtifact is an artifact as one repo carries it.
type TufRepoArtifact struct {
	TufArtifact
	// TargetName is the TUF target the artifact's bytes came from (for a
	// part, its composite's).
	TargetName string
	// PartOf names the composite artifact of the repo a part was read out
	// of; nil for every other artifact.
	PartOf *ArtifactPartOf
	// NexusCopies counts Nexus instances holding a local copy.
	NexusCopies int
	// Replication is how far it has spread to sleds, as this Nexus's
	// replication task last observed it; nil when it has not observed it.
	Replication *ArtifactReplication
}

// ArtifactPartOf is the composite a part was read out of on upload, and
// where in its tarball the part was.
type ArtifactPartOf struct {
	ID                  uuid.UUID
	Kind, Name, Version string
	SHA256              string
	Path                string
}

// ArtifactReplication is one artifact's spread over the in-service sleds
// as one Nexus's replication task last saw it (see api.ArtifactReplication
// for what each count means).
type ArtifactReplication struct {
	TimeObserved       time.Time
	Generation         int64
	SledsInService     int
	SledsObserved      int
	SledsHolding       int
	SledsHoldingAllM2s int
	SledsCopying       int
}

// TufRepoDetail is one repo with its artifacts.
type TufRepoDetail struct {
	Repo      TufRepo
	Artifacts []TufRepoArtifact
}

// Upload outcomes (UploadResult.Status).
const (
	// UploadInserted: a system version not recorded before.
	UploadInserted = "inserted"
	// UploadAlreadyExists: this archive is recorded and live; nothing
	// changed.
	UploadAlreadyExists = "already_exists"
	// UploadRestored: this archive was recorded and pruned; it is live
	// again (and kept).
	UploadRestored = "restored"
	// UploadReplaced: another archive of this system version was
	// recorded and pruned; this one took its place.
	UploadReplaced = "replaced"
)

// UploadResult is what recording an upload did.
type UploadResult struct {
	Repo TufRepo
	// Status is one of the Upload* outcomes.
	Status string
	// Generation is the wanted-artifact generation after the upload.
	Generation int64
	// GenerationBumped is set when the wanted artifact set changed.
	GenerationBumped bool
	// Replaced is the pruned record a replacing upload removed, and
	// Restored the pruned record a restoring one brought back, as each was
	// before the upload.
	Replaced, Restored *TufRepo
	// Message says what happened, and what the operator may do next.
	Message string
}

// Upload phases (UploadProgress.Phase), in the order an upload moves
// through them.
const (
	// UploadReceiving: the body is streaming to disk.
	UploadReceiving = "receiving"
	// UploadWaiting: the body is on disk; another upload is being
	// verified (one at a time per Nexus).
	UploadWaiting = "waiting"
	// UploadVerifying: the metadata is checked and every artifact
	// hashed as it is copied into the depot.
	UploadVerifying = "verifying"
	// UploadRecording: the database transaction.
	UploadRecording = "recording"
)

// UploadProgress is an upload this Nexus is receiving or verifying.
type UploadProgress struct {
	ID        uuid.UUID
	FileName  string
	Actor     string
	RequestID string
	Started   time.Time
	// Phase is one of the Upload* phases, entered at PhaseStarted.
	Phase        string
	PhaseStarted time.Time
	// BytesReceived counts the body's bytes so far, of ContentLength (-1
	// when the client did not declare it).
	BytesReceived, ContentLength int64
	// SystemVersion is known once the metadata is verified.
	SystemVersion string
}

// PruneResult is what a prune did.
type PruneResult struct {
	Repo       TufRepo
	Generation int64
	// AlreadyPruned is set when the repo had been pruned before.
	AlreadyPruned bool
	// Message says what happened, and how to bring the repo back.
	Message string
}

// GenerationFastForward is a wanted-set generation moved past what a sled
// holds: the database was behind its sleds (restored from a backup, say).
type GenerationFastForward struct {
	// Before is the database's generation when the change was decided, and
	// After the one it holds now (SledGeneration + 1).
	Before, After int64
	// SledGeneration is the highest generation a sled reported, and Sled
	// the sled that reported it.
	SledGeneration int64
	Sled           uuid.UUID
}

// ArtifactListItem is an artifact with the system versions of the repos
// that carry it; WantedOnSleds is false when no live repo carries it.
type ArtifactListItem struct {
	TufArtifact
	SystemVersions []string
	WantedOnSleds  bool
}

// ReplicationMatrix is the artifact × sled holdings the replication task
// saw when it last listed every in-service sled (kept in memory by that
// task; too big for every activation's status).
type ReplicationMatrix struct {
	// Time is when it was collected; zero before the task's first run.
	Time       time.Time
	Generation int64
	Artifacts  []MatrixArtifact
	Sleds      []MatrixSled
	// Copies[s][a] is sled s's copy count of artifact a; -1 when unknown
	// (the sled did not answer at the run's generation).
	Copies [][]int8
	// InFlight[s] holds the artifact indexes sled s is copying.
	InFlight []map[int]bool
}

// MatrixArtifact is one column of the matrix.
type MatrixArtifact struct {
	SHA256 string
	Length int64
}

// MatrixSled is one row of the matrix: what the run learned of a sled.
type MatrixSled struct {
	ID         uuid.UUID
	Address    string
	Generation uint64
	M2Present  int
	// M2Expected is how many M.2s the sled should have: with fewer
	// present, nothing on it is fully replicated.
	M2Expected int
	InFlight   int
	Error      string
}

// ArtifactLabel names an artifact hash for people: the status pages show
// it instead of a bare SHA-256.
type ArtifactLabel struct {
	Name, Version, Kind string
	// Names counts the distinct recorded artifacts with this hash (the
	// same bytes may be recorded under two names); Name is the first.
	Names int
	// SystemVersions are the live repos that carry it, sorted.
	SystemVersions []string
}

// Role is what an operator token may do.
type Role string

// The roles: a viewer reads everything (every GET, /metrics); an admin may
// also change things.
const (
	RoleViewer Role = "viewer"
	RoleAdmin  Role = "admin"
)

// Allows reports whether r includes what need requires.
func (r Role) Allows(need Role) bool {
	switch need {
	case RoleViewer:
		return r == RoleViewer || r == RoleAdmin
	case RoleAdmin:
		return r == RoleAdmin
	}
	return false
}

// OperatorToken is an operator's bearer token as recorded (never the token
// itself: only its hash is stored).
type OperatorToken struct {
	ID           uuid.UUID
	Name         string
	Role         Role
	TimeCreated  time.Time
	TimeExpires  *time.Time
	TimeLastUsed *time.Time
	TimeRevoked  *time.Time
	CreatedBy    string
}

// Audit outcomes.
const (
	AuditOK      = "ok"
	AuditRefused = "refused"
	AuditFailed  = "failed"
)

// AuditEntry is one operator mutation in the audit log.
type AuditEntry struct {
	ID   uuid.UUID
	Time time.Time
	// Actor names who asked (a token's name, a task, the console) and
	// ActorKind what kind of caller that is.
	Actor, ActorKind string
	// Action is what was asked ("repo.upload"), Target on what.
	Action, Target string
	RequestID      string
	// Outcome is AuditOK, AuditRefused (the request was wrong or not
	// allowed) or AuditFailed (something broke); ErrorCode says why.
	Outcome, ErrorCode string
	Detail             string
}

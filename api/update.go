package api

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// TUF depot error codes. Every way an upload can be refused has its own
// code, so an operator (or a script) can tell what to fix without parsing
// the message.
const (
	// Trust roots.
	CodeNoTrustRoots     = "no_trust_roots"
	CodeInvalidTrustRoot = "invalid_trust_root"
	// A role's threshold is 0, or larger than the number of distinct
	// keys the role lists: nothing, or nothing ever, could be signed.
	CodeTrustRootThreshold = "trust_root_threshold"
	// The root lists one public key under two key ids.
	CodeTrustRootDuplicateKey = "trust_root_duplicate_key"
	// CodeTrustRootInUse (409): live repos were verified against the root
	// being deleted; the body's live_repos names them.
	CodeTrustRootInUse = "trust_root_in_use"

	// Upload limits. Too many uploads at once, or their temp files
	// would exceed the temp-space budget: 429 with Retry-After.
	CodeTooManyUploads = "too_many_uploads"
	CodeUploadBudget   = "upload_budget"
	// The client sent nothing for the idle timeout: 408, temp file gone.
	CodeUploadStalled = "upload_stalled"
	// The depot's filesystem cannot hold the upload (507).
	CodeDepotFull = "depot_full"

	// Archive hygiene.
	CodeNotAZip                = "not_a_zip"
	CodeTruncatedArchive       = "truncated_archive"
	CodeTrailingData           = "trailing_data"
	CodeLeadingData            = "leading_data"
	CodeEntryOutsideRepo       = "entry_outside_repo"
	CodeUnsafePath             = "unsafe_path"
	CodeDuplicateEntry         = "duplicate_entry"
	CodeSpecialFile            = "special_file"
	CodeUnsupportedCompress    = "unsupported_compression"
	CodeExpansionLimit         = "expansion_limit"
	CodeCorruptEntry           = "corrupt_entry"
	CodeMissingEntry           = "missing_entry"
	CodeMetadataTooLarge       = "metadata_too_large"
	CodeEntryExceedsSigned     = "entry_exceeds_signed_length"
	CodeArtifactLengthMismatch = "artifact_length_mismatch"
	CodeArtifactHashMismatch   = "artifact_hash_mismatch"

	// Zip structure: what the central directory says must be what the
	// bytes are, and every byte must belong to something it names, so
	// that no two zip readers can see different archives.
	CodeLocalHeaderMismatch    = "local_header_mismatch"
	CodeDataDescriptorMismatch = "data_descriptor_mismatch"
	CodeSecondDirectory        = "second_central_directory"
	CodeUnaccountedBytes       = "unaccounted_bytes"
	CodeOverlappingEntries     = "overlapping_entries"
	CodeMalformedDirectory     = "malformed_directory"
	CodeDirectoryTooLarge      = "directory_too_large"
	CodeControlCharacter       = "control_character"
	// An entry that no signed metadata names (and that is not one of the
	// metadata files the verification read).
	CodeUnsignedEntry = "unsigned_entry"

	// Manifest.
	CodeMissingManifest        = "missing_manifest"
	CodeAmbiguousManifest      = "ambiguous_manifest"
	CodeInvalidManifest        = "invalid_manifest"
	CodeManifestMissingField   = "manifest_missing_field"
	CodeManifestTargetUnsigned = "manifest_target_unsigned"
	CodeDuplicateArtifact      = "duplicate_artifact"
	CodeInvalidSystemVersion   = "invalid_system_version"
	// targets.json signs a target the manifest does not list, or the
	// manifest lists one target for two artifacts.
	CodeManifestOmitsTarget   = "manifest_omits_target"
	CodeManifestRepeatsTarget = "manifest_repeats_target"

	// TUF metadata.
	CodeInvalidMetadata         = "invalid_metadata"
	CodeUntrustedRoot           = "untrusted_root"
	CodeRootVersionGap          = "root_version_gap"
	CodeRootRotationUnsigned    = "root_rotation_unsigned"
	CodeSignatureThreshold      = "signature_threshold"
	CodeMetadataHashMismatch    = "metadata_hash_mismatch"
	CodeMetadataVersionMismatch = "metadata_version_mismatch"
	CodeMetadataExpired         = "metadata_expired"
	// targets.json signs a name that is not a plain relative path.
	CodeUnsafeTargetName = "unsafe_target_name"

	// Composite artifacts (host, trampoline, RoT and control-plane
	// archives), expanded into their parts on upload. Not a gzip tar,
	// damaged, or data after the tar's end:
	CodeCompositeBadArchive = "composite_bad_archive"
	// A part's bytes end before the size its tar header declares.
	CodeCompositeSizeMismatch = "composite_size_mismatch"
	// A tar entry's path is absolute, climbs out with "..", or is a link.
	CodeCompositeUnsafePath = "composite_unsafe_path"
	// An entry the kind's layout has no place for, or a part twice.
	CodeCompositeExtraPart = "composite_extra_part"
	// A part the kind's layout needs is missing.
	CodeCompositeMissingPart = "composite_missing_part"
	// oxide.json is missing or names another archive type than the kind.
	CodeCompositeWrongType = "composite_wrong_type"
	// A control-plane zone image's own oxide.json does not name the zone.
	CodeCompositeBadZone = "composite_bad_zone"

	// Rollback against earlier uploads of the same trust-root lineage.
	CodeRootRollback      = "root_rollback"
	CodeTimestampRollback = "timestamp_rollback"
	CodeSnapshotRollback  = "snapshot_rollback"
	CodeTargetsRollback   = "targets_rollback"

	// Conflicts with what is already recorded (409).
	CodeRepoConflict     = "repo_conflict"
	CodeArtifactConflict = "artifact_conflict"

	// Request problems.
	CodeMissingFileName = "missing_file_name"
)

// Upload outcomes (TufRepoUpload.Status).
const (
	// UploadInserted: a system version not recorded before.
	UploadInserted = "inserted"
	// UploadAlreadyExists: this archive is recorded and live.
	UploadAlreadyExists = "already_exists"
	// UploadRestored: this archive was recorded and pruned; it is live
	// again and marked kept.
	UploadRestored = "restored"
	// UploadReplaced: another archive of this system version was recorded
	// and pruned; this one took its place.
	UploadReplaced = "replaced"
)

// TUF repo states. A pruned repo is RepoStatePruned; a live one is active,
// degraded (an artifact has no holder at all) or failed.
const (
	RepoStateActive   = "active"
	RepoStateDegraded = "degraded"
	RepoStateFailed   = "failed"
	RepoStatePruned   = "pruned"
)

// TrustRoot is a registered TUF root that uploads are verified against.
type TrustRoot struct {
	ID          uuid.UUID `json:"id"`
	TimeCreated time.Time `json:"time_created"`
	// SHA256 is the hash of the root document as registered.
	SHA256 string `json:"sha256"`
	// Version and Expires come from the root's signed part. An expired
	// root is still a valid starting point for verification.
	Version int64     `json:"version"`
	Expires time.Time `json:"expires"`
	// Root is the root.json document exactly as registered.
	Root json.RawMessage `json:"root"`
}

// TrustRootDeleted is the answer to deleting a trust root.
type TrustRootDeleted struct {
	TrustRoot TrustRoot `json:"trust_root"`
	// LiveRepos are the live repos verified against it, deleted anyway
	// with force=true (empty otherwise).
	LiveRepos []string `json:"live_repos"`
	// Remaining counts the trust roots left; 0 means every upload is
	// refused until one is added.
	Remaining int `json:"remaining"`
	// Message says what the deletion means for uploads.
	Message string `json:"message"`
}

// TufRepo is an uploaded TUF repository.
type TufRepo struct {
	ID            uuid.UUID `json:"id"`
	SystemVersion string    `json:"system_version"`
	FileName      string    `json:"file_name"`
	// SHA256 is the hash of the uploaded archive.
	SHA256      string    `json:"sha256"`
	TimeCreated time.Time `json:"time_created"`
	// ValidUntil is the earliest expiry among the repo's metadata roles.
	ValidUntil time.Time `json:"valid_until"`
	// TimePruned is set once the repo has been pruned (by the operator or
	// the pruner); its artifacts are then no longer wanted on sleds unless
	// another live repo holds them.
	TimePruned *time.Time `json:"time_pruned,omitempty"`
	PrunedBy   string     `json:"pruned_by,omitempty"`
	// Kept repos are never pruned automatically.
	Kept        bool   `json:"kept"`
	State       string `json:"state"`
	StateReason string `json:"state_reason,omitempty"`

	TrustRootID      uuid.UUID `json:"trust_root_id"`
	RootVersion      int64     `json:"root_version"`
	TimestampVersion int64     `json:"timestamp_version"`
	SnapshotVersion  int64     `json:"snapshot_version"`
	TargetsVersion   int64     `json:"targets_version"`

	ArtifactCount int   `json:"artifact_count"`
	TotalBytes    int64 `json:"total_bytes"`
}

// TufArtifact is one artifact as recorded (shared by every repo that
// carries the same name, version, kind and bytes).
type TufArtifact struct {
	ID      uuid.UUID         `json:"id"`
	Name    string            `json:"name"`
	Version string            `json:"version"`
	Kind    string            `json:"kind"`
	SHA256  string            `json:"sha256"`
	Length  int64             `json:"length"`
	Tags    map[string]string `json:"tags,omitempty"`
}

// TufRepoArtifact is an artifact as one repo carries it, with its
// replication state as far as Nexus knows it.
type TufRepoArtifact struct {
	TufArtifact
	// TargetName is the TUF target the artifact's bytes came from (for a
	// part, its composite's).
	TargetName string `json:"target_name"`
	// PartOf, for a part of a composite artifact, names the composite and
	// where in its tarball the part was; nil for every other artifact.
	PartOf *ArtifactPartOf `json:"part_of,omitempty"`
	// NexusCopies counts Nexus instances holding a local copy.
	NexusCopies int `json:"nexus_copies"`
	// Replication is how far the artifact has spread to sleds, as the
	// answering Nexus's replication task last observed it. It is null
	// until that Nexus has observed the artifact: before the task's first
	// run there, for an artifact uploaded since its last run, and for the
	// artifacts of a pruned repo that no live repo carries (they are no
	// longer wanted on sleds, so no run looks for them).
	Replication *ArtifactReplication `json:"replication"`
}

// ArtifactPartOf is the composite artifact a part was read out of on
// upload: a host or trampoline image's phase-1 or phase-2 image, an RoT's
// A or B image, one zone of the control plane.
type ArtifactPartOf struct {
	ID      uuid.UUID `json:"id"`
	Kind    string    `json:"kind"`
	Name    string    `json:"name"`
	Version string    `json:"version"`
	SHA256  string    `json:"sha256"`
	// Path is where the part was in the composite's tarball.
	Path string `json:"path"`
}

// ArtifactReplication is one artifact's spread over the in-service sleds,
// as one Nexus's replication task saw it when it last listed every sled's
// holdings. A sled "holds" an artifact when at least one of its M.2s has a
// verified copy, and holds it on all M.2s when every M.2 the sled should
// have does (a sled with an M.2 missing never does).
type ArtifactReplication struct {
	// TimeObserved is when the holdings were listed, and Generation the
	// wanted-artifact generation that run worked at.
	TimeObserved time.Time `json:"time_observed"`
	Generation   int64     `json:"generation"`
	// SledsInService counts the sleds the run looked at; SledsObserved
	// those that answered at that generation (the others' holdings are
	// unknown, not absent).
	SledsInService int `json:"sleds_in_service"`
	SledsObserved  int `json:"sleds_observed"`
	// SledsHolding counts observed sleds with at least one verified copy,
	// SledsHoldingAllM2s those with a verified copy on every M.2 they
	// should have.
	SledsHolding       int `json:"sleds_holding"`
	SledsHoldingAllM2s int `json:"sleds_holding_all_m2s"`
	// SledsCopying counts sleds with a copy of it in flight.
	SledsCopying int `json:"sleds_copying"`
}

// TufRepoDetail is one repo with its artifacts.
type TufRepoDetail struct {
	Repo      TufRepo           `json:"repo"`
	Artifacts []TufRepoArtifact `json:"artifacts"`
}

// TufRepoUpload is the reply to an upload.
type TufRepoUpload struct {
	Repo TufRepo `json:"repo"`
	// Status is one of the Upload* outcomes.
	Status string `json:"status"`
	// Generation is the wanted-artifact generation after the upload.
	Generation int64 `json:"generation"`
	// Message says what the upload did, and what may be done next.
	Message string `json:"message"`
	// Replaced is, for UploadReplaced, the pruned record this upload
	// took the place of.
	Replaced *TufRepo `json:"replaced,omitempty"`
}

// TufRepoPrune is the reply to an operator prune.
type TufRepoPrune struct {
	Repo       TufRepo `json:"repo"`
	Generation int64   `json:"generation"`
	// AlreadyPruned is set when the repo had been pruned before.
	AlreadyPruned bool `json:"already_pruned"`
	// Message says what the prune did and how to bring the repo back.
	Message string `json:"message"`
}

// TufRepoKeep is the body of PUT .../repositories/{system_version}/kept.
type TufRepoKeep struct {
	Kept bool `json:"kept"`
}

// ArtifactListItem is an artifact with the system versions of the repos
// that carry it (pruned ones included, marked by WantedOnSleds false when
// no live repo carries it).
type ArtifactListItem struct {
	TufArtifact
	SystemVersions []string `json:"system_versions"`
	WantedOnSleds  bool     `json:"wanted_on_sleds"`
}

// Upload phases (TufUpload.Phase), in order.
const (
	UploadPhaseReceiving = "receiving"
	UploadPhaseWaiting   = "waiting"
	UploadPhaseVerifying = "verifying"
	UploadPhaseRecording = "recording"
)

// TufUpload is an upload the answering Nexus is receiving or verifying.
type TufUpload struct {
	ID       uuid.UUID `json:"id"`
	FileName string    `json:"file_name"`
	// Actor is who uploads (a token's name), RequestID the upload's
	// request.
	Actor       string    `json:"actor"`
	RequestID   string    `json:"request_id,omitempty"`
	TimeStarted time.Time `json:"time_started"`
	// Phase is receiving (the body streams to disk), waiting (for
	// another upload's verification: one at a time), verifying (metadata
	// and every artifact's hash) or recording (the database), entered at
	// TimePhaseStarted.
	Phase            string    `json:"phase"`
	TimePhaseStarted time.Time `json:"time_phase_started"`
	// BytesReceived of ContentLength (-1 when the client did not say).
	BytesReceived int64 `json:"bytes_received"`
	ContentLength int64 `json:"content_length"`
	// SystemVersion is known once the metadata is verified.
	SystemVersion string `json:"system_version,omitempty"`
}

// TufUploadList is GET /v1/system/update/uploads: the answering Nexus's
// uploads in progress, oldest first (each Nexus receives its own).
type TufUploadList struct {
	NexusID uuid.UUID   `json:"nexus_id"`
	Items   []TufUpload `json:"items"`
}

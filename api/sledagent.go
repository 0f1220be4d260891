package api

import (
	"fmt"
	"net/url"
	"slices"
	"time"
)

// Error codes of the sled agent's artifact store and repo depot.
const (
	// CodeConfigGeneration (409): PUT /artifacts-config with a generation
	// lower than the sled's, or equal to it with different contents.
	CodeConfigGeneration = "config_generation"
	// CodeGenerationMismatch (409): an artifact write or copy carries a
	// generation other than the sled's current one.
	CodeGenerationMismatch = "generation_mismatch"
	// CodeArtifactNotInConfig (400): the hash is not in the sled's config.
	CodeArtifactNotInConfig = "artifact_not_in_config"
	// CodeInvalidSHA256 (400): a hash that is not 64 lowercase hex digits.
	CodeInvalidSHA256 = "invalid_sha256"
	// CodeLengthMismatch (400): the body ended before its Content-Length.
	CodeLengthMismatch = "length_mismatch"
	// CodeHashMismatch (400): the body's SHA-256 is not the one named.
	CodeHashMismatch = "hash_mismatch"
	// CodeInsufficientStorage (507): every M.2 that was written ran out of
	// space.
	CodeInsufficientStorage = "insufficient_storage"
	// CodeNoM2 (503): no M.2 device is present, so nothing can be stored.
	CodeNoM2 = "no_m2_present"
	// CodeM2WriteFailed (503): no M.2 could store the data, for reasons
	// other than space (the message names each device and its error).
	CodeM2WriteFailed = "m2_write_failed"
	// CodeInvalidRange (416): a depot Range header that cannot be served.
	CodeInvalidRange = "invalid_range"
)

// Artifact copy states, in the order a copy moves through them.
const (
	CopyQueued  = "queued"
	CopyRunning = "running"
	CopyDone    = "done"
	CopyFailed  = "failed"
)

// DepotArtifactPath is the path of an artifact on a repo depot (a sled's
// depot listener, or Nexus's internal listener serving the same shape).
func DepotArtifactPath(sha256 string) string { return "/artifact/sha256/" + sha256 }

// CheckSHA256 reports whether s is a SHA-256 as the sled names artifacts:
// exactly 64 lowercase hexadecimal digits.
func CheckSHA256(s string) error {
	if len(s) != 64 {
		return fmt.Errorf("a sha256 is 64 lowercase hex digits, got %d characters in %q", len(s), s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			if c >= 'A' && c <= 'F' {
				return fmt.Errorf("a sha256 is written in lowercase hex, got %q", s)
			}
			return fmt.Errorf("a sha256 is 64 lowercase hex digits, got %q (character %d is %q)", s, i, c)
		}
	}
	return nil
}

// ArtifactConfig is the set of artifacts Nexus wants a sled to hold
// (PUT/GET /artifacts-config). The sled keeps Artifacts sorted.
type ArtifactConfig struct {
	Generation uint64   `json:"generation"`
	Artifacts  []string `json:"artifacts"`
}

// MaxConfigArtifacts bounds the size of an artifact config.
const MaxConfigArtifacts = 100_000

// Validate checks every hash and refuses duplicates.
func (c ArtifactConfig) Validate() error {
	if c.Artifacts == nil {
		return fieldErr("artifacts", "is required (an empty list is allowed)")
	}
	if len(c.Artifacts) > MaxConfigArtifacts {
		return fieldErr("artifacts", "may list at most %d hashes, got %d", MaxConfigArtifacts, len(c.Artifacts))
	}
	seen := make(map[string]int, len(c.Artifacts))
	for i, h := range c.Artifacts {
		if err := CheckSHA256(h); err != nil {
			return fieldErr(fmt.Sprintf("artifacts[%d]", i), "%v", err)
		}
		if j, dup := seen[h]; dup {
			return fieldErr(fmt.Sprintf("artifacts[%d]", i), "repeats artifacts[%d] (%s)", j, h)
		}
		seen[h] = i
	}
	return nil
}

// Sorted returns a copy with Artifacts in sorted order, the form the sled
// stores and compares.
func (c ArtifactConfig) Sorted() ArtifactConfig {
	out := ArtifactConfig{Generation: c.Generation, Artifacts: slices.Clone(c.Artifacts)}
	if out.Artifacts == nil {
		out.Artifacts = []string{}
	}
	slices.Sort(out.Artifacts)
	return out
}

// GenerationConflict is the body of the sled's 409 answers
// (config_generation, generation_mismatch): the usual error fields plus the
// generation the sled holds, so Nexus can tell that its view is stale.
type GenerationConflict struct {
	Error
	HeldGeneration uint64 `json:"held_generation"`
}

// ArtifactList is GET /artifacts: every hash of the current config and how
// many of the sled's present M.2s hold a verified copy of it (0-2).
type ArtifactList struct {
	Generation uint64 `json:"generation"`
	// M2Present counts the M.2s in use: an artifact is fully held when
	// its count reaches it.
	M2Present int            `json:"m2_present"`
	Artifacts map[string]int `json:"artifacts"`
	// Copying maps each hash with a copy-from-depot queued or running at
	// this generation to the URL it is copied from, so one listing tells
	// Nexus both what the sled holds and what is on its way.
	Copying map[string]string `json:"copying,omitempty"`
}

// M2Failure says why one M.2 did not take an artifact.
type M2Failure struct {
	M2    string `json:"m2"`
	Error string `json:"error"`
	// Full is set when the device ran out of space.
	Full bool `json:"full,omitempty"`
}

// ArtifactPutResult is the answer to PUT /artifacts/{sha256}.
type ArtifactPutResult struct {
	SHA256     string `json:"sha256"`
	Generation uint64 `json:"generation"`
	// Size is the number of bytes received (and verified).
	Size int64 `json:"size"`
	// Written lists the M.2s this request stored the artifact on.
	Written []string `json:"written"`
	// AlreadyHeld lists the M.2s that already held a copy.
	AlreadyHeld []string `json:"already_held"`
	// Failed lists the present M.2s that could not store it.
	Failed []M2Failure `json:"failed,omitempty"`
	// Copies is the number of present M.2s holding it now.
	Copies int `json:"copies"`
}

// ArtifactCopyRequest is the body of POST /artifacts/{sha256}/copy-from-depot.
type ArtifactCopyRequest struct {
	// SourceURL is where to fetch the artifact: either the full URL of
	// GET /artifact/sha256/{sha256} on another sled's depot or on Nexus's
	// internal listener, or just the server's base URL (scheme://host:port),
	// to which that path is appended.
	SourceURL string `json:"source_url"`
}

// Validate checks that SourceURL is an absolute http(s) URL.
func (r ArtifactCopyRequest) Validate() error {
	u, err := url.Parse(r.SourceURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fieldErr("source_url", "must be an absolute http:// or https:// URL, got %q", r.SourceURL)
	}
	if u.User != nil || u.Fragment != "" {
		return fieldErr("source_url", "must not carry credentials or a fragment, got %q", r.SourceURL)
	}
	return nil
}

// ArtifactCopy is the progress and outcome of one copy-from-depot request.
type ArtifactCopy struct {
	SHA256     string `json:"sha256"`
	Generation uint64 `json:"generation"`
	// SourceURL is the URL the artifact is fetched from.
	SourceURL string `json:"source_url"`
	// State is queued, running, done or failed.
	State string `json:"state"`
	// AlreadyPresent is set when every present M.2 already held the
	// artifact, so nothing was copied.
	AlreadyPresent bool `json:"already_present,omitempty"`
	// LocalSource, when set, is the sibling M.2 the bytes were copied from
	// instead of SourceURL (the sled already held one verified copy).
	LocalSource string `json:"local_source,omitempty"`
	// BytesDone counts verified-so-far bytes received; BytesTotal is the
	// artifact's size once the source has said it (0 before).
	BytesDone  int64 `json:"bytes_done"`
	BytesTotal int64 `json:"bytes_total"`
	// Attempts counts requests made to the source; Resumes counts those
	// that continued an interrupted transfer with a Range request.
	Attempts int `json:"attempts"`
	Resumes  int `json:"resumes"`
	// Written and Failed say which M.2s got the artifact (when done).
	Written []string    `json:"written,omitempty"`
	Failed  []M2Failure `json:"failed,omitempty"`
	// Error says why the copy failed.
	Error string `json:"error,omitempty"`
	// RequestID is the id of the request that started the copy.
	RequestID    string    `json:"request_id,omitempty"`
	TimeQueued   time.Time `json:"time_queued"`
	TimeStarted  time.Time `json:"time_started,omitzero"`
	TimeFinished time.Time `json:"time_finished,omitzero"`
}

// Finished reports whether the copy is done or failed.
func (c ArtifactCopy) Finished() bool { return c.State == CopyDone || c.State == CopyFailed }

// ArtifactCopyList is GET /artifacts/copies: copies in flight and those
// finished recently, newest first.
type ArtifactCopyList struct {
	// InFlight counts queued and running copies.
	InFlight int            `json:"in_flight"`
	Copies   []ArtifactCopy `json:"copies"`
}

// ScrubFinding is one corrupt copy a scrub (or a local copy) found.
type ScrubFinding struct {
	SHA256 string    `json:"sha256"`
	M2     string    `json:"m2"`
	Time   time.Time `json:"time"`
	// Detail says what was wrong (the hash found) and what was done.
	Detail string `json:"detail"`
}

// ScrubStatus is GET /artifacts/scrub.
type ScrubStatus struct {
	// RateBytesPerSecond bounds how fast a scrub reads.
	RateBytesPerSecond int64 `json:"rate_bytes_per_second"`
	// IntervalSeconds is the least time between the starts of two
	// passes: the scrub runs at start and then pass after pass at
	// RateBytesPerSecond; 0 when only passes asked for run.
	IntervalSeconds float64   `json:"interval_seconds"`
	Running         bool      `json:"running"`
	Passes          int64     `json:"passes"`
	LastStarted     time.Time `json:"last_started,omitzero"`
	LastFinished    time.Time `json:"last_finished,omitzero"`
	// LastError is set when the last pass stopped early.
	LastError string `json:"last_error,omitempty"`
	// Lifetime totals.
	FilesChecked int64 `json:"files_checked"`
	BytesChecked int64 `json:"bytes_checked"`
	CorruptFound int64 `json:"corrupt_found"`
	// Recent lists the latest corrupt copies found, newest first.
	Recent []ScrubFinding `json:"recent"`
}

// M2Device is one M.2 in a sled's inventory.
type M2Device struct {
	Path    string `json:"path"`
	Present bool   `json:"present"`
	// FreeBytes and TotalBytes are the device's space (0 when absent).
	FreeBytes  uint64 `json:"free_bytes"`
	TotalBytes uint64 `json:"total_bytes"`
	// Error says why a configured device is not in use, when known.
	Error string `json:"error,omitempty"`
}

// MaxM2Devices bounds the M.2 list of a registration.
const MaxM2Devices = 16

func (r SledRegistration) validateInventory() error {
	if r.ArtifactsComplete != nil && (*r.ArtifactsComplete < 0 || *r.ArtifactsComplete > MaxConfigArtifacts) {
		return fieldErr("artifacts_complete", "must be 0-%d, got %d", MaxConfigArtifacts, *r.ArtifactsComplete)
	}
	if len(r.M2s) > MaxM2Devices {
		return fieldErr("m2s", "may list at most %d devices, got %d", MaxM2Devices, len(r.M2s))
	}
	seen := map[string]bool{}
	for i, d := range r.M2s {
		field := fmt.Sprintf("m2s[%d].path", i)
		switch {
		case d.Path == "":
			return fieldErr(field, "must not be empty")
		case len(d.Path) > 4096:
			return fieldErr(field, "must be at most 4096 bytes, got %d", len(d.Path))
		case seen[d.Path]:
			return fieldErr(field, "repeats %q", d.Path)
		case len(d.Error) > 4096:
			return fieldErr(fmt.Sprintf("m2s[%d].error", i), "must be at most 4096 bytes")
		case d.FreeBytes > d.TotalBytes:
			return fieldErr(fmt.Sprintf("m2s[%d].free_bytes", i), "is %d, more than total_bytes %d", d.FreeBytes, d.TotalBytes)
		}
		seen[d.Path] = true
	}
	if r.ArtifactGeneration != nil && *r.ArtifactGeneration > 1<<63-1 {
		return fieldErr("artifact_generation", "must fit in a signed 64-bit integer, got %d", *r.ArtifactGeneration)
	}
	return nil
}

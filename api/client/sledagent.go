package client

import (
	"context"
	"io"
	"net/http"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/gen/sled"
)

// SledAgent is a client of a sled agent's API.
type SledAgent struct{ *Client }

// NewSledAgent returns a client of the sled agent at baseURL.
func NewSledAgent(baseURL string, hc *http.Client) (SledAgent, error) {
	c, err := New(baseURL, hc)
	return SledAgent{c}, err
}

// Health fetches /healthz.
func (s SledAgent) Health(ctx context.Context) (api.Health, error) {
	return s.health(ctx, sled.NewHealthzRequest)
}

// Artifact store calls. Errors are *api.Error; a 409 about generations
// (config_generation, generation_mismatch) carries the sled's generation in
// its message and, on the wire, in held_generation (api.GenerationConflict).

// ArtifactConfigPut pushes an artifact config and returns the one the sled
// holds afterwards.
func (s SledAgent) ArtifactConfigPut(ctx context.Context, cfg api.ArtifactConfig) (api.ArtifactConfig, error) {
	var out api.ArtifactConfig
	err := s.call(ctx, func(server string) (*http.Request, error) { return sled.NewArtifactConfigPutRequest(server, cfg) }, &out)
	return out, err
}

// ArtifactConfigGet returns the artifact config the sled holds.
func (s SledAgent) ArtifactConfigGet(ctx context.Context) (api.ArtifactConfig, error) {
	var out api.ArtifactConfig
	err := s.call(ctx, sled.NewArtifactConfigGetRequest, &out)
	return out, err
}

// ArtifactList returns the hashes of the sled's config with their copy
// counts.
func (s SledAgent) ArtifactList(ctx context.Context) (api.ArtifactList, error) {
	var out api.ArtifactList
	err := s.call(ctx, sled.NewArtifactListRequest, &out)
	return out, err
}

// ArtifactPut streams an artifact of length bytes (-1 if unknown) to the
// sled. Large bodies need a client without a whole-request timeout (pass
// &http.Client{} to NewSledAgent, not the default).
func (s SledAgent) ArtifactPut(ctx context.Context, sha256 string, gen uint64, body io.Reader, length int64) (api.ArtifactPutResult, error) {
	var out api.ArtifactPutResult
	err := s.call(ctx, withLength(func(server string) (*http.Request, error) {
		return sled.NewArtifactPutRequestWithBody(server, sha256, &sled.ArtifactPutParams{Generation: gen},
			"application/octet-stream", body)
	}, length), &out)
	return out, err
}

// ArtifactCopyFromDepot asks the sled to fetch an artifact from sourceURL
// (a depot's /artifact/sha256/{sha256} URL, or its base URL). The answer
// comes at once: done when the sled already holds it everywhere, otherwise
// the queued or running copy (never a second copy of the same hash).
func (s SledAgent) ArtifactCopyFromDepot(ctx context.Context, sha256 string, gen uint64, sourceURL string) (api.ArtifactCopy, error) {
	var out api.ArtifactCopy
	err := s.call(ctx, func(server string) (*http.Request, error) {
		return sled.NewArtifactCopyFromDepotRequest(server, sha256, &sled.ArtifactCopyFromDepotParams{Generation: gen},
			api.ArtifactCopyRequest{SourceURL: sourceURL})
	}, &out)
	return out, err
}

// ArtifactCopies lists copies in flight and recently finished.
func (s SledAgent) ArtifactCopies(ctx context.Context) (api.ArtifactCopyList, error) {
	var out api.ArtifactCopyList
	err := s.call(ctx, sled.NewArtifactCopyListRequest, &out)
	return out, err
}

// ArtifactCopyGet returns the latest copy of one hash (404 when none is
// remembered).
func (s SledAgent) ArtifactCopyGet(ctx context.Context, sha256 string) (api.ArtifactCopy, error) {
	var out api.ArtifactCopy
	err := s.call(ctx, func(server string) (*http.Request, error) { return sled.NewArtifactCopyGetRequest(server, sha256) }, &out)
	return out, err
}

// ArtifactScrubStatus returns the scrub's status.
func (s SledAgent) ArtifactScrubStatus(ctx context.Context) (api.ScrubStatus, error) {
	var out api.ScrubStatus
	err := s.call(ctx, sled.NewArtifactScrubStatusRequest, &out)
	return out, err
}

// ArtifactScrubStart asks for a scrub pass now.
func (s SledAgent) ArtifactScrubStart(ctx context.Context) (api.ScrubStatus, error) {
	var out api.ScrubStatus
	err := s.call(ctx, sled.NewArtifactScrubStartRequest, &out)
	return out, err
}

package client

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/gen/external"
)

// TrustRootAdd registers a root.json; created is false when the same
// document was already registered.
func (n Nexus) TrustRootAdd(ctx context.Context, rootJSON []byte) (root api.TrustRoot, created bool, err error) {
	// The document goes out byte for byte (its hash is recorded), so the
	// raw-body builder, not the one that re-encodes a value.
	resp, err := n.send(ctx, func(server string) (*http.Request, error) {
		return external.NewTrustRootAddRequestWithBody(server, "application/json", bytes.NewReader(rootJSON))
	})
	if err != nil {
		return root, false, err
	}
	defer resp.Body.Close()
	err = decodeJSON(resp, &root)
	return root, resp.StatusCode == http.StatusCreated, err
}

// TrustRootList lists the registered trust roots.
func (n Nexus) TrustRootList(ctx context.Context) ([]api.TrustRoot, error) {
	return listAll[api.TrustRoot](ctx, n.Client, func(server string, token *string) (*http.Request, error) {
		return external.NewTrustRootListRequest(server, &external.TrustRootListParams{PageToken: token})
	})
}

// TrustRootGet fetches one trust root.
func (n Nexus) TrustRootGet(ctx context.Context, id uuid.UUID) (api.TrustRoot, error) {
	var t api.TrustRoot
	err := n.call(ctx, func(server string) (*http.Request, error) { return external.NewTrustRootGetRequest(server, id) }, &t)
	return t, err
}

// TrustRootRemove removes a trust root; one that live repos were verified
// against only with force (409 trust_root_in_use otherwise, naming them).
// The answer says what the removal means for uploads.
func (n Nexus) TrustRootRemove(ctx context.Context, id uuid.UUID, force bool) (api.TrustRootDeleted, error) {
	var out api.TrustRootDeleted
	params := &external.TrustRootDeleteParams{}
	if force {
		params.Force = &force
	}
	err := n.call(ctx, func(server string) (*http.Request, error) {
		return external.NewTrustRootDeleteRequest(server, id, params)
	}, &out)
	return out, err
}

// Progress is called as an upload's bytes are sent, with the bytes sent
// so far and the total. It may be called from another goroutine.
type Progress func(sent, total int64)

// RepoUpload streams a repository archive of length bytes from body.
// progress, when not nil, is told how many bytes have been sent. The
// client's own timeout applies to the whole upload, so pass a client
// without one (or a long one) for real archives.
func (n Nexus) RepoUpload(ctx context.Context, fileName string, body io.Reader, length int64, progress Progress) (api.TufRepoUpload, error) {
	var out api.TufRepoUpload
	if progress != nil {
		body = &progressReader{r: body, total: length, fn: progress}
	}
	err := n.call(ctx, withLength(func(server string) (*http.Request, error) {
		req, err := external.NewRepoUploadRequestWithBody(server, &external.RepoUploadParams{FileName: fileName},
			"application/zip", body)
		if err == nil && length > 0 {
			// Nexus refuses some uploads before reading a byte (no trust
			// root, a declared length over its limit, a bad file name);
			// with a transport that waits for 100 Continue
			// (http.Transport.ExpectContinueTimeout), the body is then
			// never sent. Only for a declared length: a chunked body
			// refused part-way would have its refusal lost to the reset
			// of a connection the client is still writing to.
			req.Header.Set("Expect", "100-continue")
		}
		return req, err
	}, length), &out)
	return out, err
}

type progressReader struct {
	r     io.Reader
	total int64
	sent  atomic.Int64
	fn    Progress
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.fn(p.sent.Add(int64(n)), p.total)
	}
	return n, err
}

// RepoList lists repos, newest first; pruned ones only when asked.
func (n Nexus) RepoList(ctx context.Context, includePruned bool) ([]api.TufRepo, error) {
	return listAll[api.TufRepo](ctx, n.Client, func(server string, token *string) (*http.Request, error) {
		return external.NewRepoListRequest(server, &external.RepoListParams{IncludePruned: onlyTrue(includePruned),
			PageToken: token})
	})
}

// RepoListPage fetches one page of repos.
func (n Nexus) RepoListPage(ctx context.Context, includePruned bool, limit int, token string) (api.Page[api.TufRepo], error) {
	var page api.Page[api.TufRepo]
	params := &external.RepoListParams{IncludePruned: onlyTrue(includePruned), Limit: &limit}
	if token != "" {
		params.PageToken = &token
	}
	err := n.call(ctx, func(server string) (*http.Request, error) { return external.NewRepoListRequest(server, params) }, &page)
	return page, err
}

// onlyTrue sends a boolean query parameter only when it is set, as the
// default is false.
func onlyTrue(b bool) *bool {
	if !b {
		return nil
	}
	return &b
}

// RepoGet fetches a repo with its artifacts.
func (n Nexus) RepoGet(ctx context.Context, systemVersion string) (api.TufRepoDetail, error) {
	var d api.TufRepoDetail
	err := n.call(ctx, func(server string) (*http.Request, error) { return external.NewRepoGetRequest(server, systemVersion) }, &d)
	return d, err
}

// RepoDelete prunes a repo.
func (n Nexus) RepoDelete(ctx context.Context, systemVersion string) (api.TufRepoPrune, error) {
	var p api.TufRepoPrune
	err := n.call(ctx, func(server string) (*http.Request, error) { return external.NewRepoPruneRequest(server, systemVersion) }, &p)
	return p, err
}

// RepoSetKept marks a repo kept, or not, against automatic pruning.
func (n Nexus) RepoSetKept(ctx context.Context, systemVersion string, kept bool) (api.TufRepo, error) {
	var r api.TufRepo
	err := n.call(ctx, func(server string) (*http.Request, error) {
		return external.NewRepoSetKeptRequest(server, systemVersion, api.TufRepoKeep{Kept: kept})
	}, &r)
	return r, err
}

// ArtifactList lists every recorded artifact.
func (n Nexus) ArtifactList(ctx context.Context) ([]api.ArtifactListItem, error) {
	return listAll[api.ArtifactListItem](ctx, n.Client, func(server string, token *string) (*http.Request, error) {
		return external.NewArtifactListRequest(server, &external.ArtifactListParams{PageToken: token})
	})
}

// UploadList lists the uploads the Nexus is receiving or verifying now.
func (n Nexus) UploadList(ctx context.Context) (api.TufUploadList, error) {
	var out api.TufUploadList
	err := n.call(ctx, func(server string) (*http.Request, error) { return external.NewUploadListRequest(server) }, &out)
	return out, err
}

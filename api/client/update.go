package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
)

// TrustRootAdd registers a root.json; created is false when the same
// document was already registered.
func (n Nexus) TrustRootAdd(ctx context.Context, rootJSON []byte) (root api.TrustRoot, created bool, err error) {
	resp, err := n.Send(ctx, Request{Method: http.MethodPost, Path: "/v1/system/update/trust-roots",
		Body: bytes.NewReader(rootJSON), ContentLength: int64(len(rootJSON)), ContentType: "application/json"})
	if err != nil {
		return root, false, err
	}
	defer resp.Body.Close()
	err = decodeJSON(resp, &root)
	return root, resp.StatusCode == http.StatusCreated, err
}

// TrustRootList lists the registered trust roots.
func (n Nexus) TrustRootList(ctx context.Context) ([]api.TrustRoot, error) {
	return listAll[api.TrustRoot](ctx, n.Client, "/v1/system/update/trust-roots", nil)
}

// TrustRootGet fetches one trust root.
func (n Nexus) TrustRootGet(ctx context.Context, id uuid.UUID) (api.TrustRoot, error) {
	var t api.TrustRoot
	err := n.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/system/update/trust-roots/" + id.String()}, &t)
	return t, err
}

// TrustRootDelete removes a trust root.
func (n Nexus) TrustRootDelete(ctx context.Context, id uuid.UUID) error {
	return n.Do(ctx, Request{Method: http.MethodDelete, Path: "/v1/system/update/trust-roots/" + id.String()}, nil)
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
	// http.Request treats a zero ContentLength with a body as unknown;
	// an empty archive is still sent with its length.
	resp, err := n.Send(ctx, Request{Method: http.MethodPut, Path: "/v1/system/update/repositories",
		Query: url.Values{"file_name": {fileName}}, Body: body, ContentLength: length,
		ContentType: "application/zip"})
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	err = decodeJSON(resp, &out)
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
	q := url.Values{}
	if includePruned {
		q.Set("include_pruned", "true")
	}
	return listAll[api.TufRepo](ctx, n.Client, "/v1/system/update/repositories", q)
}

// RepoListPage fetches one page of repos.
func (n Nexus) RepoListPage(ctx context.Context, includePruned bool, limit int, token string) (api.Page[api.TufRepo], error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if includePruned {
		q.Set("include_pruned", "true")
	}
	if token != "" {
		q.Set("page_token", token)
	}
	var page api.Page[api.TufRepo]
	err := n.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/system/update/repositories", Query: q}, &page)
	return page, err
}

// RepoGet fetches a repo with its artifacts.
func (n Nexus) RepoGet(ctx context.Context, systemVersion string) (api.TufRepoDetail, error) {
	var d api.TufRepoDetail
	err := n.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/system/update/repositories/" + url.PathEscape(systemVersion)}, &d)
	return d, err
}

// RepoDelete prunes a repo.
func (n Nexus) RepoDelete(ctx context.Context, systemVersion string) (api.TufRepoPrune, error) {
	var p api.TufRepoPrune
	err := n.Do(ctx, Request{Method: http.MethodDelete, Path: "/v1/system/update/repositories/" + url.PathEscape(systemVersion)}, &p)
	return p, err
}

// RepoSetKept marks a repo kept, or not, against automatic pruning.
func (n Nexus) RepoSetKept(ctx context.Context, systemVersion string, kept bool) (api.TufRepo, error) {
	var r api.TufRepo
	err := n.Do(ctx, Request{Method: http.MethodPut, Path: "/v1/system/update/repositories/" + url.PathEscape(systemVersion) + "/kept",
		JSON: api.TufRepoKeep{Kept: kept}}, &r)
	return r, err
}

// ArtifactList lists every recorded artifact.
func (n Nexus) ArtifactList(ctx context.Context) ([]api.ArtifactListItem, error) {
	return listAll[api.ArtifactListItem](ctx, n.Client, "/v1/system/update/artifacts", nil)
}

func decodeJSON(resp *http.Response, out any) error {
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", resp.Request.Method, resp.Request.URL.Path, err)
	}
	return nil
}

// Package client holds typed HTTP clients for Nexus's external and internal
// APIs and for the sled agent's API. Every non-2xx answer comes back as an
// *api.Error, and the request id in the caller's context (see
// internal/reqid) is sent along so both sides log the same id.
//
// Each call builds its request with the request builder generated from
// the API's OpenAPI document (api/gen), so paths, methods and parameters
// cannot drift from the document; this package adds the handling every
// call shares: the context and request id, JSON answers, errors and
// paging.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/reqid"
)

// Client is the shared JSON-over-HTTP machinery.
type Client struct {
	base *url.URL
	hc   *http.Client
	// token, when set, is sent as "Authorization: Bearer <token>".
	token string
}

// withToken is a copy of c that authenticates with token.
func (c *Client) withToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

// DefaultHTTPClient has a whole-request timeout suited to small JSON calls;
// streaming calls pass their own client.
var DefaultHTTPClient = &http.Client{Timeout: 30 * time.Second}

// New returns a client for the server at baseURL ("http://host:port").
// A nil hc means DefaultHTTPClient.
func New(baseURL string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("invalid server URL %q: want http://host:port", baseURL)
	}
	if hc == nil {
		hc = DefaultHTTPClient
	}
	return &Client{base: u, hc: hc}, nil
}

// BaseURL returns the server URL the client talks to.
func (c *Client) BaseURL() string { return c.base.String() }

// URL returns the absolute URL of path with query.
func (c *Client) URL(path string, query url.Values) string {
	u := *c.base
	u.Path = c.base.Path + path
	if query != nil {
		u.RawQuery = query.Encode()
	}
	return u.String()
}

// Request describes one call.
type Request struct {
	Method string
	Path   string
	Query  url.Values
	// JSON is marshalled as the body when Body is nil.
	JSON any
	// Body is sent as is (with ContentLength, when known and > 0).
	Body          io.Reader
	ContentLength int64
	ContentType   string
	Header        http.Header
}

// Do sends req and decodes a 2xx JSON answer into out (when out is not nil).
// It is for requests no generated builder makes (tests of malformed
// requests); the typed methods are the API.
func (c *Client) Do(ctx context.Context, req Request, out any) error {
	resp, err := c.Send(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeJSON(resp, out)
}

// Send sends req and returns the response when it is 2xx; otherwise it
// consumes the body and returns an *api.Error. The caller closes the body.
func (c *Client) Send(ctx context.Context, req Request) (*http.Response, error) {
	body := req.Body
	ctype := req.ContentType
	if body == nil && req.JSON != nil {
		b, err := json.Marshal(req.JSON)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
		ctype = "application/json"
	}
	hreq, err := http.NewRequestWithContext(ctx, req.Method, c.URL(req.Path, req.Query), body)
	if err != nil {
		return nil, err
	}
	if req.ContentLength > 0 {
		hreq.ContentLength = req.ContentLength
	}
	for k, vs := range req.Header {
		hreq.Header[k] = vs
	}
	if ctype != "" {
		hreq.Header.Set("Content-Type", ctype)
	}
	return c.roundTrip(ctx, hreq)
}

// builder is a generated request builder with its arguments bound: it
// makes the request for the server at the URL it is given.
type builder func(server string) (*http.Request, error)

// server is the base URL as the generated builders take it: with a
// trailing slash, so that a base URL with a path keeps it.
func (c *Client) server() string { return c.base.String() + "/" }

// send builds a request and sends it as Send does.
func (c *Client) send(ctx context.Context, build builder) (*http.Response, error) {
	hreq, err := build(c.server())
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	return c.roundTrip(ctx, hreq)
}

// call builds and sends a request and decodes a 2xx JSON answer into out
// (when out is not nil).
func (c *Client) call(ctx context.Context, build builder, out any) error {
	resp, err := c.send(ctx, build)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeJSON(resp, out)
}

// roundTrip sends hreq under ctx with the request id, returning a 2xx
// response or the *api.Error a non-2xx one carries.
func (c *Client) roundTrip(ctx context.Context, hreq *http.Request) (*http.Response, error) {
	hreq = hreq.WithContext(ctx)
	hreq.Header.Set("Accept", "application/json")
	if id := reqid.From(ctx); id != "" {
		hreq.Header.Set(reqid.Header, id)
	}
	if c.token != "" && hreq.Header.Get("Authorization") == "" {
		hreq.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(hreq)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, DecodeError(resp)
}

// withLength sends a streamed body with its Content-Length when the caller
// knows it (length > 0): http.NewRequest knows the length only of bytes
// and strings readers and would otherwise send the body chunked. A length
// of 0 or -1 leaves it as the builder made it (unknown for other readers),
// as callers that stream data of unknown size pass.
func withLength(build builder, length int64) builder {
	return func(server string) (*http.Request, error) {
		req, err := build(server)
		if err == nil && length > 0 {
			req.ContentLength = length
		}
		return req, err
	}
}

// DecodeError turns a non-2xx response into an *api.Error, whether or not
// the body is one of ours.
func DecodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e api.Error
	if err := json.Unmarshal(b, &e); err != nil || e.ErrorCode == "" {
		msg := strings.TrimSpace(string(b))
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		e = api.Error{ErrorCode: fmt.Sprintf("http_%d", resp.StatusCode), Message: msg}
	}
	e.StatusCode = resp.StatusCode
	if e.RequestID == "" {
		e.RequestID = resp.Header.Get(reqid.Header)
	}
	return &e
}

// ErrorCode returns err's api error code, or "" when err is not an
// *api.Error.
func ErrorCode(err error) string {
	var e *api.Error
	if errors.As(err, &e) {
		return e.ErrorCode
	}
	return ""
}

// StatusCode returns err's HTTP status, or 0 when err is not an *api.Error.
func StatusCode(err error) int {
	var e *api.Error
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

// health fetches /healthz, which answers 503 with a Health body when
// unhealthy; that body is returned along with the error.
func (c *Client) health(ctx context.Context, build builder) (api.Health, error) {
	var h api.Health
	hreq, err := build(c.server())
	if err != nil {
		return h, fmt.Errorf("build request: %w", err)
	}
	if c.token != "" {
		// Public, but an operator also learns which build answers.
		hreq.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(hreq.WithContext(ctx))
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return h, fmt.Errorf("decode /healthz: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("unhealthy (HTTP %d): %v", resp.StatusCode, h.Checks)
	}
	return h, nil
}

// listAll follows next_page tokens to collect every item; page builds the
// request for one page (token nil for the first).
func listAll[T any](ctx context.Context, c *Client, page func(server string, token *string) (*http.Request, error)) ([]T, error) {
	var all []T
	var token *string
	for {
		var p api.Page[T]
		if err := c.call(ctx, func(server string) (*http.Request, error) { return page(server, token) }, &p); err != nil {
			return nil, err
		}
		all = append(all, p.Items...)
		if p.NextPage == "" {
			return all, nil
		}
		next := p.NextPage
		token = &next
	}
}

// decodeJSON decodes a response's JSON body into out, or discards the body
// when out is nil.
func decodeJSON(resp *http.Response, out any) error {
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", resp.Request.Method, resp.Request.URL.Path, err)
	}
	return nil
}

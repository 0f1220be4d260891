package openapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/openapi"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// listener is one listener of a running rack and the documents that
// describe what it serves.
type listener struct {
	name    string
	routes  chi.Routes
	baseURL string
	docs    []openapi.Document
	// undocumented says why a served route is deliberately not in the
	// documents ("" when it must be).
	undocumented func(method, route string) string
	// client calls the listener as a caller that may (an operator with an
	// admin token; a Nexus over mutual TLS), so requests reach the
	// operations' handlers.
	client *http.Client
}

// bearer adds an operator token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func listeners(rack *racktest.Rack) []listener {
	nx, sled := rack.Nexus, rack.Sleds[0]
	none := func(string, string) string { return "" }
	asNexus := sledtest.HTTPClient(rack.T, rackpki.Nexus("drift-test"))
	operator := &http.Client{Transport: bearer{token: nx.AdminToken, next: http.DefaultTransport}}
	return []listener{
		{
			name: "nexus external", routes: nx.ExternalRouter(), baseURL: nx.ExternalURL(), client: operator,
			docs: []openapi.Document{doc("nexus-external.json")},
			undocumented: func(method, route string) string {
				switch {
				case route == "/ui" || strings.HasPrefix(route, "/ui/"):
					return "the HTML status pages are for people; the document's description names them"
				}
				return ""
			},
		},
		{
			name: "nexus internal", routes: nx.InternalRouter(), baseURL: nx.InternalURL(), client: asNexus,
			docs:         []openapi.Document{doc("nexus-internal.json"), doc("repo-depot.json")},
			undocumented: none,
		},
		{
			name: "sled API", routes: sled.APIRouter(), baseURL: sled.URL(), client: asNexus,
			docs: []openapi.Document{doc("sled-agent.json")}, undocumented: none,
		},
		{
			name: "sled depot", routes: sled.DepotRouter(), baseURL: sled.DepotURL(), client: asNexus,
			docs: []openapi.Document{doc("repo-depot.json")}, undocumented: none,
		},
	}
}

func doc(file string) openapi.Document {
	for _, d := range openapi.Documents() {
		if d.File == file {
			return d
		}
	}
	panic("no document " + file)
}

// operation is one documented operation.
type operation struct {
	method, path string
	op           *openapi3.Operation
}

func operations(t *testing.T, docs []openapi.Document) []operation {
	t.Helper()
	var out []operation
	for _, d := range docs {
		doc := load(t, d)
		for _, path := range doc.Paths.InMatchingOrder() {
			for method, op := range doc.Paths.Value(path).Operations() {
				out = append(out, operation{method: method, path: path, op: op})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path+out[i].method < out[j].path+out[j].method })
	return out
}

// TestRoutesMatchDocuments walks the router of every listener of a
// running rack and holds its (method, path template) pairs to the
// documents, both ways: a route nobody documented and a documented
// operation nobody serves both fail.
func TestRoutesMatchDocuments(t *testing.T) {
	rack := racktest.StartRack(t, racktest.RackConfig{Sleds: 1})
	for _, l := range listeners(rack) {
		t.Run(l.name, func(t *testing.T) {
			served := map[string]bool{}
			err := chi.Walk(l.routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
				served[method+" "+route] = true
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			documented := map[string]bool{}
			for _, o := range operations(t, l.docs) {
				documented[o.method+" "+o.path] = true
			}
			if len(served) == 0 || len(documented) == 0 {
				t.Fatalf("%d routes served, %d documented", len(served), len(documented))
			}
			for _, k := range sortedKeys(served) {
				method, route, _ := strings.Cut(k, " ")
				if documented[k] || l.undocumented(method, route) != "" {
					continue
				}
				t.Errorf("%s is served but no document describes it", k)
			}
			for _, k := range sortedKeys(documented) {
				if !served[k] {
					t.Errorf("%s is documented but not served", k)
				}
			}
		})
	}
}

// TestEveryOperationAnswers calls every documented operation on a running
// rack with made-up arguments. Any answer from the operation's handler
// will do (a 400 for a bad argument, a 404 not_found for an unknown id);
// the router's own answers (404 "no such route", 405) fail. Error bodies
// must be ours, and a 2xx must be one the document lists.
func TestEveryOperationAnswers(t *testing.T) {
	rack := racktest.StartRack(t, racktest.RackConfig{Sleds: 1})
	for _, l := range listeners(rack) {
		for _, o := range operations(t, l.docs) {
			name := l.name + " " + o.method + " " + o.path
			t.Run(name, func(t *testing.T) {
				req := exampleRequest(t, l.baseURL, o)
				resp, err := l.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				var e api.Error
				isErr := resp.StatusCode >= 400 && o.method != http.MethodHead
				if isErr && (json.Unmarshal(body, &e) != nil || e.ErrorCode == "") {
					t.Fatalf("%s: HTTP %d with a body that is not an Error: %q", req.URL, resp.StatusCode, body)
				}
				switch {
				case resp.StatusCode == http.StatusMethodNotAllowed:
					t.Fatalf("%s: 405, the route does not take %s: %s", req.URL, o.method, body)
				case resp.StatusCode == http.StatusNotFound && o.method == http.MethodHead:
					t.Fatalf("%s: a 404 to HEAD cannot tell a missing route from a missing artifact; "+
						"the example arguments should draw another answer", req.URL)
				case resp.StatusCode == http.StatusNotFound && strings.HasPrefix(e.Message, "no such route"):
					t.Fatalf("%s: %s", req.URL, e.Message)
				case resp.StatusCode/100 == 2 && o.op.Responses.Status(resp.StatusCode) == nil:
					t.Fatalf("%s: HTTP %d is not among the documented answers", req.URL, resp.StatusCode)
				}
			})
		}
	}
	// The external listener serves its own document, as built in.
	resp, err := http.Get(rack.Nexus.ExternalURL() + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	served, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !bytes.Equal(served, openapi.NexusExternal) {
		t.Fatalf("GET /openapi.json: %d %s, %d bytes; want the embedded document", resp.StatusCode,
			resp.Header.Get("Content-Type"), len(served))
	}
}

// exampleRequest builds a request for o with made-up path and required
// query parameters, and an empty JSON object (or an empty body) where a
// body is required.
func exampleRequest(t *testing.T, base string, o operation) *http.Request {
	t.Helper()
	path := o.path
	query := []string{}
	for _, p := range o.op.Parameters {
		v := exampleValue(p.Value, o.method)
		switch p.Value.In {
		case "path":
			path = strings.ReplaceAll(path, "{"+p.Value.Name+"}", v)
		case "query":
			if p.Value.Required {
				query = append(query, p.Value.Name+"="+v)
			}
		}
	}
	u := base + path
	if len(query) > 0 {
		u += "?" + strings.Join(query, "&")
	}
	var body io.Reader
	ctype := ""
	if rb := o.op.RequestBody; rb != nil && rb.Value.Required {
		if rb.Value.Content.Get("application/json") != nil {
			body, ctype = strings.NewReader("{}"), "application/json"
		} else {
			body = strings.NewReader("")
		}
	}
	req, err := http.NewRequest(o.method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return req
}

// exampleValue is a well-formed value for p that names nothing the rack
// has, except for HEAD, which gets a malformed one: HEAD answers have no
// body, so only a 400 tells the handler answered.
func exampleValue(p *openapi3.Parameter, method string) string {
	s := p.Schema.Value
	switch {
	case method == http.MethodHead:
		return "not-well-formed"
	case s.Format == "uuid":
		return uuid.NewString()
	case s.Type.Is("integer"):
		return strconv.Itoa(1)
	case s.Type.Is("boolean"):
		return "false"
	case s.Pattern == "^[0-9a-f]{64}$":
		return strings.Repeat("0", 64)
	}
	return fmt.Sprintf("no-such-%s", p.Name)
}

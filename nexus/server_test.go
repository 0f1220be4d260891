package nexus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/migrations"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/sledagent"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func TestSledsRegisterAndAreListed(t *testing.T) {
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	var sleds []*racktest.Sled
	for i := range 3 {
		sleds = append(sleds, racktest.StartSled(t, nx.InternalURL(), sledagent.Config{
			RegisterInterval: 100 * time.Millisecond,
			Baseboard:        api.Baseboard{Part: "913-0000019", Serial: fmt.Sprintf("BRM4200%d", i)},
		}))
	}
	listed := racktest.WaitRegistered(t, nx.Client, sleds...)
	if len(listed) != 3 {
		t.Fatalf("listed %d sleds, want 3", len(listed))
	}
	byID := map[uuid.UUID]api.Sled{}
	for _, s := range listed {
		byID[s.ID] = s
	}
	for _, s := range sleds {
		got := byID[s.ID()]
		if got.Baseboard != s.Baseboard() || got.SledAgentAddress != s.Address() ||
			fmt.Sprintf("https://127.0.0.1:%d", got.RepoDepotPort) != s.DepotURL() ||
			got.Policy != api.SledPolicyInService || got.State != api.SledStateActive {
			t.Errorf("sled %s listed as %+v; agent has baseboard %s address %s depot %s",
				s.ID(), got, s.Baseboard(), s.Address(), s.DepotURL())
		}
	}

	// Periodic re-registration moves last-seen forward.
	first := byID[sleds[0].ID()].TimeLastSeen
	racktest.WaitFor(t, 5*time.Second, "a periodic re-registration", func() error {
		got, err := nx.Client.SledGet(context.Background(), sleds[0].ID())
		if err != nil {
			return err
		}
		if !got.TimeLastSeen.After(first) {
			return errors.New("last seen has not moved")
		}
		return nil
	})
}

// admin is the header that authenticates with nx's admin token.
func admin(nx *racktest.Nexus) http.Header { return withAdmin(nx, http.Header{}) }

func withAdmin(nx *racktest.Nexus, h http.Header) http.Header {
	h.Set("Authorization", "Bearer "+nx.AdminToken)
	return h
}

// rawCall sends a request and returns the status, decoded error body (if
// any) and the response's request-id header.
func rawCall(t *testing.T, method, url, body string, header http.Header) (int, api.Error, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	hc := http.DefaultClient
	if strings.HasPrefix(url, "https://") {
		// The internal listener: a sled's certificate (baseboard p/s).
		hc = sledtest.HTTPClient(t, rackpki.Sled("p", "s"))
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e api.Error
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("%s %s: %d with a non-JSON body %q", method, url, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, e, resp.Header.Get("X-Request-Id")
}

func TestRegistrationRejectsBadInput(t *testing.T) {
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	url := nx.InternalURL() + "/v1/sled-agents/" + uuid.NewString()
	good := `{"baseboard":{"part":"p","serial":"s"},"sled_agent_address":"10.0.0.1:12345","repo_depot_port":12348}`
	for _, tc := range []struct {
		name, url, body string
		status          int
		code, mention   string
	}{
		{"empty body", url, ``, 400, api.CodeInvalidBody, "empty"},
		{"not JSON", url, `{"baseboard":`, 400, api.CodeInvalidBody, "truncated"},
		{"syntax", url, `{"baseboard" 1}`, 400, api.CodeInvalidBody, "not valid JSON"},
		{"wrong type", url, `{"baseboard":{"part":"p","serial":7}}`, 400, api.CodeInvalidField, "baseboard.serial"},
		{"unknown field", url, strings.Replace(good, `"repo_depot_port"`, `"depot_port"`, 1), 400, api.CodeInvalidField, "depot_port"},
		{"missing serial", url, strings.Replace(good, `"serial":"s"`, `"serial":""`, 1), 400, api.CodeInvalidField, "baseboard.serial"},
		{"missing part", url, strings.Replace(good, `"part":"p",`, ``, 1), 400, api.CodeInvalidField, "baseboard.part"},
		{"bad address", url, strings.Replace(good, `10.0.0.1:12345`, `10.0.0.1`, 1), 400, api.CodeInvalidField, "sled_agent_address"},
		{"bad port", url, strings.Replace(good, `12348`, `70000`, 1), 400, api.CodeInvalidField, "repo_depot_port"},
		{"zero port", url, strings.Replace(good, `,"repo_depot_port":12348`, ``, 1), 400, api.CodeInvalidField, "repo_depot_port"},
		{"trailing data", url, good + `{}`, 400, api.CodeInvalidBody, "after the JSON"},
		{"array", url, `[]`, 400, api.CodeInvalidBody, "object"},
		{"bad sled id", nx.InternalURL() + "/v1/sled-agents/not-a-uuid", good, 400, api.CodeInvalidParameter, "sled_id"},
		{"huge body", url, `{"baseboard":{"part":"` + strings.Repeat("x", 2<<20) + `"}}`, 413, api.CodeBodyTooLarge, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, e, rid := rawCall(t, http.MethodPut, tc.url, tc.body, nil)
			if status != tc.status || e.ErrorCode != tc.code || !strings.Contains(e.Message, tc.mention) {
				t.Fatalf("got %d %+v; want %d %s mentioning %q", status, e, tc.status, tc.code, tc.mention)
			}
			if e.RequestID == "" || e.RequestID != rid {
				t.Fatalf("error body request id %q, header %q", e.RequestID, rid)
			}
		})
	}
	// Nothing was stored by any of them.
	sleds, err := nx.Client.SledList(context.Background())
	if err != nil || len(sleds) != 0 {
		t.Fatalf("bad registrations left %d sleds (%v)", len(sleds), err)
	}
}

func TestRoutingErrorsAreJSON(t *testing.T) {
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	status, e, _ := rawCall(t, http.MethodGet, nx.ExternalURL()+"/v1/nope", "", admin(nx))
	if status != 404 || e.ErrorCode != api.CodeNotFound || !strings.Contains(e.Message, "/v1/nope") {
		t.Errorf("unknown route: %d %+v", status, e)
	}
	status, e, _ = rawCall(t, http.MethodDelete, nx.ExternalURL()+"/v1/system/hardware/sleds", "", admin(nx))
	if status != 405 || e.ErrorCode != api.CodeMethodNotAllowed {
		t.Errorf("wrong method: %d %+v", status, e)
	}
	status, e, _ = rawCall(t, http.MethodGet, nx.ExternalURL()+"/v1/system/hardware/sleds/"+uuid.NewString(), "", admin(nx))
	if status != 404 || e.ErrorCode != api.CodeNotFound || !strings.Contains(e.Message, "no sled") {
		t.Errorf("missing sled: %d %+v", status, e)
	}
	status, e, _ = rawCall(t, http.MethodGet, nx.ExternalURL()+"/v1/system/hardware/sleds?limit=0", "", admin(nx))
	if status != 400 || e.ErrorCode != api.CodeInvalidParameter || !strings.Contains(e.Message, "limit") {
		t.Errorf("bad limit: %d %+v", status, e)
	}
	status, e, _ = rawCall(t, http.MethodGet, nx.ExternalURL()+"/v1/system/hardware/sleds?page_token=zzz", "", admin(nx))
	if status != 400 || e.ErrorCode != api.CodeInvalidParameter || !strings.Contains(e.Message, "page_token") {
		t.Errorf("bad page token: %d %+v", status, e)
	}
	// A caller's request id is adopted, so logs line up across processes.
	status, e, rid := rawCall(t, http.MethodGet, nx.ExternalURL()+"/v1/nope", "", withAdmin(nx, http.Header{"X-Request-Id": {"op-1234"}}))
	if status != 404 || rid != "op-1234" || e.RequestID != "op-1234" {
		t.Errorf("request id not adopted: header %q body %q", rid, e.RequestID)
	}
	_, _, rid = rawCall(t, http.MethodGet, nx.ExternalURL()+"/v1/nope", "", withAdmin(nx, http.Header{"X-Request-Id": {"bad id;drop"}}))
	if rid == "" || strings.ContainsAny(rid, " ;") {
		t.Errorf("invalid request id adopted or none made: %q", rid)
	}
}

func TestSledListPagination(t *testing.T) {
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	for i := range 5 {
		// Each registers as itself: its certificate names its baseboard.
		in, err := client.NewNexusInternal(nx.InternalURL(), sledtest.HTTPClient(t, rackpki.Sled("p", fmt.Sprint(i))))
		if err != nil {
			t.Fatal(err)
		}
		_, err = in.SledRegister(context.Background(), uuid.New(), api.SledRegistration{
			Baseboard: api.Baseboard{Part: "p", Serial: fmt.Sprint(i)}, SledAgentAddress: "h:1", RepoDepotPort: 2})
		if err != nil {
			t.Fatal(err)
		}
	}
	var page api.Page[api.Sled]
	if err := nx.Client.Do(context.Background(), client.Request{Method: "GET", Path: "/v1/system/hardware/sleds",
		Query: map[string][]string{"limit": {"2"}}}, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 2 || page.NextPage == "" {
		t.Fatalf("first page of 2: %d items, next %q", len(page.Items), page.NextPage)
	}
	all, err := nx.Client.SledList(context.Background())
	if err != nil || len(all) != 5 {
		t.Fatalf("following pages: %d sleds, %v", len(all), err)
	}
}

// A database that goes away makes /healthz say so and requests fail fast
// with 503; when it comes back, Nexus recovers without a restart.
func TestDatabaseOutage(t *testing.T) {
	cluster, url := testdb.NewCluster(t)
	nx := racktest.StartNexus(t, url, nexus.Config{})
	ctx := context.Background()
	if _, err := nx.Client.Health(ctx); err != nil {
		t.Fatalf("healthy at first: %v", err)
	}

	cluster.Stop()
	start := time.Now()
	h, err := nx.Client.Health(ctx)
	if err == nil || h.Status != "unhealthy" || h.Checks["database"] != "unhealthy" {
		t.Fatalf("health with the database down: %+v, %v", h, err)
	}
	// Anyone may ask, so the answer names no internals: no database user,
	// host or socket path, no error text.
	if b, _ := json.Marshal(h); strings.Contains(string(b), "postgres") || strings.Contains(string(b), "sock") ||
		strings.Contains(string(b), "dial") {
		t.Fatalf("health leaks internals: %s", b)
	}
	_, err = nx.Client.SledList(ctx)
	if client.StatusCode(err) != 503 || client.ErrorCode(err) != api.CodeServiceUnavailable {
		t.Fatalf("request with the database down: %v; want 503 service_unavailable", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("took %s to fail with the database down", d)
	}

	if err := cluster.Start(ctx); err != nil {
		t.Fatal(err)
	}
	racktest.WaitFor(t, 20*time.Second, "Nexus to recover", func() error {
		if _, err := nx.Client.Health(ctx); err != nil {
			return err
		}
		_, err := nx.Client.SledList(ctx)
		return err
	})
}

func TestStartupChecksSchema(t *testing.T) {
	ctx := context.Background()
	log := racktest.Logger(t, "nexus")
	cfg := func(url string, auto bool) nexus.Config {
		id := uuid.New()
		return nexus.Config{ID: id, ExternalAddr: "127.0.0.1:0", InternalAddr: "127.0.0.1:0",
			DatabaseURL: url, AutoMigrate: auto, DataDir: t.TempDir(), DatabaseWait: time.Second,
			TLS:   sledtest.Bundle(t, rackpki.Nexus(id.String())),
			Tasks: nexustasks.Registrar(nexustasks.Config{})}
	}

	empty := testdb.NewEmpty(t)
	if _, err := nexus.New(ctx, cfg(empty.URL, false), log); !errors.Is(err, migrations.ErrNotInitialised) {
		t.Fatalf("empty database without --auto-migrate: %v", err)
	}
	srv, err := nexus.New(ctx, cfg(empty.URL, true), log)
	if err != nil {
		t.Fatalf("empty database with --auto-migrate: %v", err)
	}
	runAndStop(t, srv)
	if st, err := migrations.Check(ctx, empty.Pool); err != nil || st.Err() != nil {
		t.Fatalf("after auto-migrate: %+v %v", st, err)
	}

	newer := testdb.New(t)
	if _, err := newer.Pool.Exec(ctx, "UPDATE schema_migrations SET version = version + 1"); err != nil {
		t.Fatal(err)
	}
	for _, auto := range []bool{false, true} {
		if _, err := nexus.New(ctx, cfg(newer.URL, auto), log); !errors.Is(err, migrations.ErrTooNew) {
			t.Fatalf("newer schema (auto-migrate %v): %v", auto, err)
		}
	}

	dirty := testdb.New(t)
	if _, err := dirty.Pool.Exec(ctx, "UPDATE schema_migrations SET dirty = true"); err != nil {
		t.Fatal(err)
	}
	if _, err := nexus.New(ctx, cfg(dirty.URL, true), log); !errors.Is(err, migrations.ErrDirty) ||
		!strings.Contains(err.Error(), "failed part-way") {
		t.Fatalf("dirty schema: %v", err)
	}

	_, err = nexus.New(ctx, cfg("postgres://postgres@/x?host=/nonexistent&sslmode=disable", false), log)
	if err == nil || !strings.Contains(err.Error(), "database did not answer") {
		t.Fatalf("unreachable database: %v", err)
	}
}

func runAndStop(t *testing.T, srv *nexus.Server) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

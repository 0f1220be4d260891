package nexus_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/buildinfo"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/sledagent"
)

// scrape reads nx's /metrics with token into series → value, the series
// written as the text format writes them (labels sorted by name).
func scrape(t *testing.T, nx *racktest.Nexus, token string) map[string]float64 {
	t.Helper()
	req := nx.Request(t, http.MethodGet, "/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// expect checks series values, failing for a missing series.
func expect(t *testing.T, got map[string]float64, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("no series %s", k)
		case g != v:
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
}

const uploadRoute = `route="/v1/system/update/repositories"`

// Nexus's /metrics count what really happened: every counter exists at
// zero before the first event, and after an upload, a refused upload, a
// bad route and replication, each says so.
func TestMetricsAfterRealActions(t *testing.T) {
	rack := racktest.StartRack(t, racktest.RackConfig{Sleds: 2, Seed: 41,
		Sled: sledagent.Config{RegisterInterval: 200 * time.Millisecond}})
	nx := rack.Nexus
	viewer := nx.Token(t, "prometheus", "viewer", 0)
	b := buildinfo.Read()

	m := scrape(t, nx, viewer)
	expect(t, m, map[string]float64{
		`rackplane_build_info{commit="` + b.ShortCommit() + `",go_version="` + b.GoVersion + `",version="` + b.Version + `"}`: 1,
		`rackplane_tuf_uploads_total{outcome="inserted"}`:                                                                     0,
		`rackplane_tuf_uploads_total{outcome="refused"}`:                                                                      0,
		`rackplane_tuf_uploads_total{outcome="restored"}`:                                                                     0,
		`rackplane_tuf_upload_received_bytes_total`:                                                                           0,
		`rackplane_tuf_upload_duration_seconds_count{outcome="inserted"}`:                                                     0,
		`rackplane_tuf_uploads_in_progress`:                                                                                   0,
		`rackplane_tuf_repos{state="active"}`:                                                                                 0,
		`rackplane_tuf_repos{state="pruned"}`:                                                                                 0,
		`rackplane_sleds{state="active"}`:                                                                                     2,
		`rackplane_sleds{state="unreachable"}`:                                                                                0,
		`rackplane_sleds_by_health{health="ok"}`:                                                                              2,
		`rackplane_sleds_by_health{health="degraded"}`:                                                                        0,
		`rackplane_sleds_by_storage_lock{storage_lock="unknown"}`:                                                             2,
		`rackplane_sleds_by_storage_lock{storage_lock="locked"}`:                                                              0,
		`rackplane_depot_bytes`:                                                                                               0,
		`rackplane_depot_artifacts`:                                                                                           0,
		`rackplane_http_request_duration_seconds_count{api="external",method="PUT",` + uploadRoute + `}`:                      0,
		`rackplane_http_request_duration_seconds_count{api="external",method="GET",route="/readyz"}`:                          0,
		`rackplane_replication_bytes_total{path="nexus_seed"}`:                                                                0,
		`rackplane_bgtask_errors_total{task="tuf_repo_pruner"}`:                                                               0,
		`rackplane_bgtask_activations_total{outcome="error",task="tuf_artifact_replication"}`:                                 0,
	})

	archive, built := buildRepo(t, rack.Lineage, tufgen.Demo("1.0.0"))
	mustUpload(t, nx.Client, archive, "inserted")
	junk := strings.Repeat("not a zip ", 10_000)
	if _, err := nx.Client.RepoUpload(context.Background(), "junk.zip", strings.NewReader(junk), int64(len(junk)), nil); err == nil {
		t.Fatal("junk accepted")
	}
	resp, err := http.DefaultClient.Do(nx.Request(t, http.MethodGet, "/v1/no/such/route", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	racktest.WaitFor(t, 30*time.Second, "replication to converge", func() error {
		if st := racktest.ReplicationStatus(t, nx); !st.Converged || st.Artifacts != len(built.Artifacts) {
			return fmt.Errorf("converged %v, %d artifacts", st.Converged, st.Artifacts)
		}
		return nil
	})

	m = scrape(t, nx, viewer)
	var artifactBytes int64
	for _, a := range built.Artifacts {
		artifactBytes += a.Length
	}
	expect(t, m, map[string]float64{
		`rackplane_tuf_uploads_total{outcome="inserted"}`:                                           1,
		`rackplane_tuf_uploads_total{outcome="refused"}`:                                            1,
		`rackplane_tuf_uploads_total{outcome="failed"}`:                                             0,
		`rackplane_tuf_upload_duration_seconds_count{outcome="inserted"}`:                           1,
		`rackplane_tuf_uploads_in_progress`:                                                         0,
		`rackplane_tuf_repos{state="active"}`:                                                       1,
		`rackplane_depot_artifacts`:                                                                 float64(len(built.Artifacts)),
		`rackplane_depot_bytes`:                                                                     float64(artifactBytes),
		`rackplane_http_requests_total{api="external",code="200",method="PUT",` + uploadRoute + `}`: 1,
		`rackplane_http_requests_total{api="external",code="400",method="PUT",` + uploadRoute + `}`: 1,
		`rackplane_http_requests_total{api="external",code="404",method="GET",route="unmatched"}`:   1,
		`rackplane_replication_artifacts_wanted`:                                                    float64(len(built.Artifacts)),
		`rackplane_replication_artifacts_fully_replicated`:                                          float64(len(built.Artifacts)),
		`rackplane_replication_copies_in_flight`:                                                    0,
		`rackplane_replication_converged`:                                                           1,
		`rackplane_replication_seconds_since_converged`:                                             0,
		`rackplane_replication_sleds{answered="true"}`:                                              2,
		`rackplane_replication_degraded_sleds`:                                                      0,
	})
	// The body bytes received: all of the archive, and of the junk what
	// was read before it was refused (its first few KiB).
	if got := m[`rackplane_tuf_upload_received_bytes_total`]; got <= float64(len(archive)) || got >= float64(len(archive)+len(junk)) {
		t.Errorf("received bytes %v, want more than the archive's %d and less than %d", got, len(archive), len(archive)+len(junk))
	}
	// Nexus seeded each artifact to at least one sled (the sled copied it from Nexus's depot).
	if got := m[`rackplane_replication_bytes_total{path="nexus_seed"}`]; got < float64(artifactBytes) {
		t.Errorf("bytes seeded by Nexus %v, want at least %d", got, artifactBytes)
	}
	if m[`rackplane_http_request_duration_seconds_count{api="internal",method="PUT",route="/v1/sled-agents/{sled_id}"}`] < 2 {
		t.Error("the sleds' registrations are not counted on the internal listener")
	}
}

package nexus_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
)

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// A trust root that live repos were verified against is not deleted
// without force, and the refusal names them; deleting the last root says
// that uploads are now refused, and an upload then is refused before its
// body is sent.
func TestTrustRootDeleteGuards(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	ctx := context.Background()
	l := newLineage(t, 31, tufgen.LineageOptions{})
	root := addRoot(t, nx.Client, l.TrustRoot())
	spare := addRoot(t, nx.Client, newLineage(t, 32, tufgen.LineageOptions{}).TrustRoot())
	for _, v := range []string{"1.0.0", "2.0.0"} {
		r := tufgen.Demo(v)
		if v == "2.0.0" {
			r.TimestampVersion, r.SnapshotVersion, r.TargetsVersion = 2, 2, 2
		}
		a, _ := buildRepo(t, l, r)
		mustUpload(t, nx.Client, a, api.UploadInserted)
	}

	_, err := nx.Client.TrustRootRemove(ctx, root.ID, false)
	if client.StatusCode(err) != http.StatusConflict || client.ErrorCode(err) != api.CodeTrustRootInUse ||
		!strings.Contains(err.Error(), "signs 2 live repos") || !strings.Contains(err.Error(), "1.0.0, 2.0.0") ||
		!strings.Contains(err.Error(), "force=true") {
		t.Fatalf("delete of a root in use: %v", err)
	}
	if _, err := nx.Client.TrustRootGet(ctx, root.ID); err != nil {
		t.Fatalf("a refused delete deleted the root: %v", err)
	}
	// The refusal's body names the repos for scripts too.
	resp, err := http.DefaultClient.Do(nx.Request(t, http.MethodDelete, "/v1/system/update/trust-roots/"+root.ID.String(), nil))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), `"live_repos": [`) ||
		!strings.Contains(string(body), `"2.0.0"`) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	resp, err = http.DefaultClient.Do(nx.Request(t, http.MethodDelete,
		"/v1/system/update/trust-roots/"+root.ID.String()+"?force=maybe", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("force=maybe: %d", resp.StatusCode)
	}

	// A root no live repo needs goes without force, and the answer says
	// how many are left.
	res, err := nx.Client.TrustRootRemove(ctx, spare.ID, false)
	if err != nil || res.Remaining != 1 || len(res.LiveRepos) != 0 || !strings.Contains(res.Message, "(1 trust root left)") {
		t.Fatalf("delete of an unused root: %v %+v", err, res)
	}
	// Pruned repos do not hold a root.
	if _, err := nx.Client.RepoDelete(ctx, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	res, err = nx.Client.TrustRootRemove(ctx, root.ID, true)
	if err != nil || res.TrustRoot.ID != root.ID || res.Remaining != 0 || len(res.LiveRepos) != 1 ||
		res.LiveRepos[0] != "2.0.0" || !strings.Contains(res.Message, "That was the last trust root") ||
		!strings.Contains(res.Message, "(2.0.0) stay") {
		t.Fatalf("forced delete of the last root: %v %+v", err, res)
	}
	entries, err := nx.Client.AuditLog(ctx, 20)
	if err != nil || entries[0].Action != "trust_root.delete" || entries[0].Detail != "force" || entries[0].Outcome != "ok" {
		t.Fatalf("audit: %v %+v", err, entries[0])
	}

	// With no root left, an upload is refused before its body is sent:
	// the client waits for 100 Continue, which never comes.
	archive, _ := buildRepo(t, l, tufgen.Sized("3.0.0", 8<<20, 4, 3))
	body2 := &countingReader{r: strings.NewReader(string(archive))}
	_, err = nx.Client.RepoUpload(ctx, "big.zip", body2, int64(len(archive)), nil)
	if client.ErrorCode(err) != api.CodeNoTrustRoots {
		t.Fatalf("upload with no trust root: %v", err)
	}
	if sent := body2.n.Load(); sent > 0 {
		t.Fatalf("%d of %d bytes of the body were sent before the refusal", sent, len(archive))
	}
}

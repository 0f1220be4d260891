package ui_test

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/buildinfo"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
)

// A person who opens / or a /ui path that does not exist gets an HTML
// page with the navigation, not a JSON error; the API keeps its JSON 404;
// browsers get a favicon; every page's footer names the build.
func TestNotFoundPagesFaviconAndFooter(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, racktest.FastHeartbeat())
	get := func(path string) (int, http.Header, []byte) {
		t.Helper()
		resp, err := http.Get(nx.ExternalURL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	for _, path := range []string{"/", "/ui/no-such-page", "/ui/sleds/x/y"} {
		code, h, body := get(path)
		if code != 404 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !bytes.Contains(body, []byte(`href="/ui/sleds"`)) ||
			!bytes.Contains(body, []byte(`id="notfound"`)) || !bytes.Contains(body, []byte(`<nav>`)) {
			t.Errorf("%s: %d %s\n%s", path, code, h.Get("Content-Type"), body)
		}
	}
	if _, _, body := get("/"); !bytes.Contains(body, []byte("Nothing is served at <code>/</code>")) {
		t.Errorf("/ does not say what is here:\n%s", body)
	}
	code, h, body := get("/v1/no-such-route")
	if code != 404 || h.Get("Content-Type") != "application/json" || !bytes.Contains(body, []byte(`"error_code": "not_found"`)) {
		t.Errorf("an unknown API path: %d %s\n%s", code, h.Get("Content-Type"), body)
	}
	code, h, body = get("/favicon.ico")
	if code != 200 || h.Get("Content-Type") != "image/png" {
		t.Fatalf("favicon: %d %s", code, h.Get("Content-Type"))
	}
	if img, err := png.Decode(bytes.NewReader(body)); err != nil || img.Bounds().Dx() != 32 {
		t.Fatalf("favicon is not a 32-pixel PNG: %v", err)
	}
	op := signIn(t, nx, nx.AdminToken)
	for _, path := range []string{"/ui/background-tasks", "/ui/sleds", "/ui/trust-roots"} {
		code, page, _ := op.get(path)
		if code != 200 || !strings.Contains(page, `id="build">rackplane `+buildinfo.Read().String()) {
			t.Errorf("%s: %d, footer lacks the build:\n%s", path, code, page)
		}
	}
}

// slowBody hands out an archive in two halves: the second only once the
// test says so, so the upload is caught in the middle.
type slowBody struct {
	first, second []byte
	gate          chan struct{}
	served        bool
}

func (b *slowBody) Read(p []byte) (int, error) {
	if len(b.first) > 0 {
		n := copy(p, b.first)
		b.first = b.first[n:]
		return n, nil
	}
	if !b.served {
		<-b.gate
		b.served = true
	}
	if len(b.second) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.second)
	b.second = b.second[n:]
	return n, nil
}

// An upload in progress is visible in the API and on the repos page: its
// phase and the bytes received so far; once answered, it is gone.
func TestUploadInProgressIsVisible(t *testing.T) {
	t.Parallel()
	r := newUIRack(t, 1)
	op := signIn(t, r.Nexus, r.Nexus.AdminToken)
	ctx := context.Background()
	archive, _, err := r.Lineage.BuildBytes(tufgen.Sized("7.0.0", 4<<20, 4, 7))
	if err != nil {
		t.Fatal(err)
	}
	half := len(archive) / 2
	body := &slowBody{first: archive[:half], second: archive[half:], gate: make(chan struct{})}
	done := make(chan error, 1)
	var res api.TufRepoUpload
	go func() {
		var err error
		res, err = r.Nexus.Client.RepoUpload(ctx, "seven.zip", body, int64(len(archive)), nil)
		done <- err
	}()
	var up api.TufUpload
	racktest.WaitFor(t, 20*time.Second, "the upload to show half its bytes received", func() error {
		list, err := r.Nexus.Client.UploadList(ctx)
		if err != nil {
			return err
		}
		if len(list.Items) != 1 || list.NexusID != r.Nexus.ID() {
			return fmt.Errorf("uploads %+v", list)
		}
		up = list.Items[0]
		if up.BytesReceived < int64(half/2) {
			return fmt.Errorf("%d bytes received", up.BytesReceived)
		}
		return nil
	})
	if up.FileName != "seven.zip" || up.Phase != api.UploadPhaseReceiving || up.ContentLength != int64(len(archive)) ||
		up.Actor != "racktest-admin" || up.BytesReceived > int64(half) || up.SystemVersion != "" {
		t.Fatalf("upload in progress %+v", up)
	}
	code, page, _ := op.get("/ui/repos?fragment=1")
	if code != 200 || !strings.Contains(page, `data-upload="`+up.ID.String()+`"`) || !strings.Contains(page, `data-phase="receiving"`) ||
		!strings.Contains(page, "seven.zip") || !strings.Contains(page, " of 4.") {
		t.Fatalf("repos page during the upload: %d\n%s", code, page)
	}
	close(body.gate)
	if err := <-done; err != nil || res.Status != api.UploadInserted {
		t.Fatalf("upload: %v %+v", err, res)
	}
	if list, err := r.Nexus.Client.UploadList(ctx); err != nil || len(list.Items) != 0 {
		t.Fatalf("after the upload: %v %+v", err, list)
	}
	if _, page, _ := op.get("/ui/repos?fragment=1"); strings.Contains(page, `id="uploads"`) {
		t.Fatal("the finished upload is still shown")
	}
}

package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
)

func TestPanicBecomes500WithRequestID(t *testing.T) {
	r := NewRouter(zerolog.Nop())
	r.Get("/boom", func(http.ResponseWriter, *http.Request) { panic("kaboom") })
	r.Get("/fine", func(w http.ResponseWriter, _ *http.Request) { WriteJSON(w, 200, map[string]bool{"ok": true}) })
	srv := httptest.NewServer(r)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/boom")
	if err != nil {
		t.Fatal(err)
	}
	var e api.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 500 || e.ErrorCode != api.CodeInternal || e.RequestID == "" ||
		e.RequestID != resp.Header.Get("X-Request-Id") {
		t.Fatalf("panic answered %d %+v", resp.StatusCode, e)
	}
	// The server keeps serving.
	resp, err = http.Get(srv.URL + "/fine")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after a panic: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestInternalErrorsHideTheirCause(t *testing.T) {
	r := NewRouter(zerolog.Nop())
	r.Get("/x", Handlers{}.H(func(http.ResponseWriter, *http.Request) error {
		return errors.New("secret detail: password=hunter2")
	}))
	srv := httptest.NewServer(r)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || !json.Valid(b) || strings.Contains(string(b), "hunter2") {
		t.Fatalf("internal error leaked or malformed: %d %s", resp.StatusCode, b)
	}
}

func TestMapErrorIsApplied(t *testing.T) {
	sentinel := errors.New("gone")
	h := Handlers{MapError: func(err error) error {
		if errors.Is(err, sentinel) {
			return fault.Conflictf("gone_away", "it is gone")
		}
		return err
	}}
	r := NewRouter(zerolog.Nop())
	r.Get("/x", h.H(func(http.ResponseWriter, *http.Request) error { return sentinel }))
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	var e api.Error
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	if rec.Code != http.StatusConflict || e.ErrorCode != "gone_away" || e.Message != "it is gone" {
		t.Fatalf("got %d %+v", rec.Code, e)
	}
}

// Shutdown lets a request that is already running finish.
func TestServeShutsDownGracefully(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		time.Sleep(300 * time.Millisecond)
		w.Write([]byte("done"))
	})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error)
	go func() { served <- Serve(ctx, ln, h, 5*time.Second, zerolog.Nop()) }()

	got := make(chan string)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String())
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-entered
	cancel()
	if body := <-got; body != "done" {
		t.Fatalf("in-flight request got %q during shutdown", body)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("listener still accepting after shutdown")
	}
}

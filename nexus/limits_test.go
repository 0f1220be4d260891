package nexus_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
)

// stalledUpload is an upload sent by hand over a raw connection: headers
// declaring length bytes (or chunked when length < 0) and then only
// prefix, after which the client goes quiet.
type stalledUpload struct {
	conn net.Conn
	br   *bufio.Reader
}

func startStalledUpload(t *testing.T, nx *racktest.Nexus, length int, prefix []byte) *stalledUpload {
	t.Helper()
	u, err := url.Parse(nx.ExternalURL())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var hdr strings.Builder
	fmt.Fprintf(&hdr, "PUT /v1/system/update/repositories?file_name=stall.zip HTTP/1.1\r\nHost: %s\r\n", u.Host)
	fmt.Fprintf(&hdr, "Authorization: Bearer %s\r\nContent-Type: application/zip\r\n", nx.AdminToken)
	body := prefix
	if length >= 0 {
		fmt.Fprintf(&hdr, "Content-Length: %d\r\n\r\n", length)
	} else {
		hdr.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		body = append([]byte(fmt.Sprintf("%x\r\n", len(prefix))), append(prefix, "\r\n"...)...)
	}
	if _, err := conn.Write(append([]byte(hdr.String()), body...)); err != nil {
		t.Fatal(err)
	}
	return &stalledUpload{conn: conn, br: bufio.NewReader(conn)}
}

// answer reads the server's response to the stalled upload.
func (s *stalledUpload) answer(t *testing.T, within time.Duration) (int, api.Error) {
	t.Helper()
	_ = s.conn.SetReadDeadline(time.Now().Add(within))
	resp, err := http.ReadResponse(s.br, nil)
	if err != nil {
		t.Fatalf("no answer to the stalled upload: %v", err)
	}
	defer resp.Body.Close()
	var e api.Error
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("answer %d is not a JSON error: %q", resp.StatusCode, b)
	}
	return resp.StatusCode, e
}

// TestUploadLimits: clients that stall, crowd or overfill are refused
// with the status and code that say so, are cut off without holding a
// connection or a temp file, and leave nothing behind.
func TestUploadLimits(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	const idle = 2 * time.Second
	nx := racktest.StartNexus(t, db.URL, nexus.Config{UploadMaxBytes: 8 << 20, UploadConcurrency: 2,
		UploadTempBudget: 3 << 20, UploadIdleTimeout: idle})
	l := newLineage(t, 40, tufgen.LineageOptions{})
	addRoot(t, nx.Client, l.TrustRoot())
	archive, _ := buildRepo(t, l, tufgen.Demo("1.0.0"))
	prefix := archive[:8<<10]
	depotDir := nx.Depot().Dir()
	before := snapshotWorld(t, db.Pool, depotDir)
	held := func() int64 { return nx.App().UploadTempHeld() }
	// cutOff checks that each stalled upload is answered 408 and that,
	// with them gone, no temp space is held and nothing is left behind.
	cutOff := func(t *testing.T, stalled ...*stalledUpload) {
		t.Helper()
		for _, s := range stalled {
			if status, e := s.answer(t, 3*idle); status != http.StatusRequestTimeout || e.ErrorCode != api.CodeUploadStalled {
				t.Fatalf("stalled upload answered %d %+v", status, e)
			}
		}
		sledtest.WaitFor(t, idle, "temp space released", func() error {
			if h := held(); h != 0 {
				return fmt.Errorf("temp space held %d", h)
			}
			return nil
		})
		if after := snapshotWorld(t, db.Pool, depotDir); !after.equal(before) {
			t.Fatalf("refused uploads left %v (before %v)", after, before)
		}
	}

	t.Run("stalled uploads hold the slots; a third is told to come back", func(t *testing.T) {
		a := startStalledUpload(t, nx, 1<<20, prefix)
		b := startStalledUpload(t, nx, 1<<20, prefix)
		sledtest.WaitFor(t, idle, "both stalled uploads admitted", func() error {
			if h := held(); h != 2<<20 {
				return fmt.Errorf("temp space held %d", h)
			}
			return nil
		})
		_, err := upload(t, nx.Client, "third.zip", archive)
		var apiErr *api.Error
		if !asAPIError(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests ||
			apiErr.ErrorCode != api.CodeTooManyUploads {
			t.Fatalf("third upload: %v", err)
		}
		// The client sees Retry-After on the raw response.
		req := nx.Request(t, http.MethodPut, "/v1/system/update/repositories?file_name=x.zip", bytes.NewReader(archive))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "10" {
			t.Fatalf("raw third upload: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		cutOff(t, a, b)
	})

	t.Run("a declared length beyond the budget is refused before its body", func(t *testing.T) {
		_, err := nx.Client.RepoUpload(context.Background(), "big.zip", io.MultiReader(bytes.NewReader(prefix),
			strings.NewReader(strings.Repeat("x", 4<<20-len(prefix)))), 4<<20, nil)
		if client.StatusCode(err) != http.StatusRequestEntityTooLarge || client.ErrorCode(err) != api.CodeBodyTooLarge ||
			!strings.Contains(err.Error(), "upload-temp-budget") {
			t.Fatalf("over-budget upload: %v", err)
		}
	})

	t.Run("a chunked body is cut off where the budget ends", func(t *testing.T) {
		// One stalled upload holds 2 MiB of the 3 MiB budget; a chunked
		// body of 2 MiB then runs out of budget part-way.
		a := startStalledUpload(t, nx, 2<<20, prefix)
		sledtest.WaitFor(t, idle, "the stalled upload admitted", func() error {
			if h := held(); h != 2<<20 {
				return fmt.Errorf("temp space held %d", h)
			}
			return nil
		})
		body := io.MultiReader(bytes.NewReader(prefix), strings.NewReader(strings.Repeat("x", 2<<20)))
		_, err := nx.Client.RepoUpload(context.Background(), "chunked.zip", body, -1, nil)
		if client.StatusCode(err) != http.StatusTooManyRequests || client.ErrorCode(err) != api.CodeUploadBudget {
			t.Fatalf("chunked over-budget upload: %v", err)
		}
		if h := held(); h != 2<<20 {
			t.Fatalf("after the refused chunked upload, %d bytes held (want the stalled one's 2 MiB)", h)
		}
		cutOff(t, a)
	})

	t.Run("a slow but steady client is never cut off", func(t *testing.T) {
		// Each piece arrives well inside the idle timeout, the whole
		// well beyond it.
		pr, pw := io.Pipe()
		go func() {
			step := len(archive)/6 + 1
			for off := 0; off < len(archive); off += step {
				if _, err := pw.Write(archive[off:min(off+step, len(archive))]); err != nil {
					return
				}
				time.Sleep(idle / 4)
			}
			pw.Close()
		}()
		res, err := nx.Client.RepoUpload(context.Background(), "slow.zip", pr, int64(len(archive)), nil)
		if err != nil || res.Status != api.UploadInserted {
			t.Fatalf("slow upload: %+v %v", res, err)
		}
		if h := held(); h != 0 {
			t.Fatalf("after the upload %d bytes held", h)
		}
	})

	t.Run("an oversized header block is refused", func(t *testing.T) {
		req := nx.Request(t, http.MethodGet, "/v1/system/update/repositories", nil)
		req.Header.Set("X-Padding", strings.Repeat("p", 128<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("128 KiB of headers: %d", resp.StatusCode)
		}
	})
}

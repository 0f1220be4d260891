package nexus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/sledagent"
)

// TestLogLinesFollowTheConvention runs a rack through the things that log
// (uploads accepted and refused, a bad route, task runs, sled
// registration and replication) and holds every line Nexus and the sled
// agent wrote to the convention of internal/logging.
func TestLogLinesFollowTheConvention(t *testing.T) {
	sink := &racktest.LogSink{}
	rack := racktest.StartRack(t, racktest.RackConfig{Sleds: 1, Seed: 14, Logs: sink,
		Sled: sledagent.Config{RegisterInterval: 200 * time.Millisecond}})
	nx := rack.Nexus
	built := rack.Upload(nx, tufgen.Demo("1.0.0"), "demo.zip")
	if _, err := nx.Client.RepoUpload(context.Background(), "junk.zip", strings.NewReader(strings.Repeat("junk", 4096)),
		4*4096, nil); err == nil {
		t.Fatal("a body that is not a zip was accepted")
	}
	resp, err := http.DefaultClient.Do(nx.Request(t, http.MethodGet, "/v1/no-such-route", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	racktest.WaitFor(t, 30*time.Second, "replication to converge", func() error {
		if st := racktest.ReplicationStatus(t, nx); !st.Converged || st.Artifacts != len(built.Artifacts) {
			return errString("not converged with the upload's artifacts")
		}
		return nil
	})
	if racktest.CopiesOn(rack.Sleds[0], built.Artifacts[0].SHA256) != 2 {
		t.Fatal("the sled does not hold the artifact on both M.2s")
	}

	lines := sink.Lines()
	if len(lines) < 20 {
		t.Fatalf("only %d log lines", len(lines))
	}
	var refused, access, task, sled map[string]any
	for _, line := range lines {
		for _, err := range logging.Check(line) {
			t.Errorf("%v\n  in %s", err, line)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		switch {
		case m["message"] == "request failed" && m["error_code"] == "not_a_zip":
			refused = m
		case m["message"] == "request" && m["path"] == "/v1/system/update/repositories":
			access = m
		case m["message"] == "background task activation finished" && m["task"] == tufreplication.Name:
			task = m
		case m["component"] == "sled-agent" && m["subsystem"] != nil:
			sled = m
		}
	}
	// The refusal is a warning naming the code, the message and the status.
	if refused == nil || refused["level"] != "warn" || refused["status"] != float64(400) ||
		!strings.Contains(refused["error_message"].(string), "zip") {
		t.Errorf("the refused upload was logged as %v", refused)
	}
	if access == nil || access["duration_ms"] == nil || access["method"] != http.MethodPut {
		t.Errorf("the upload's access line is %v", access)
	}
	if task == nil || task["component"] != "nexus" || task["subsystem"] != "bgtasks" || task["duration_ms"] == nil {
		t.Errorf("the replication task's line is %v", task)
	}
	if sled == nil {
		t.Error("no line of a sled agent's subsystem")
	}
	if t.Failed() {
		t.Logf("all lines:\n%s", bytes.Join(lines, []byte("\n")))
	}
}

type errString string

func (e errString) Error() string { return string(e) }

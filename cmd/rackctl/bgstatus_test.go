package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks/sledliveness"
)

// The statuses of real task types, rendered at a fixed time with a fixed
// sled list, against testdata/status/*.golden: units humanized, sled ids
// shown as serials, long lists cut, nothing printed as raw JSON.
func TestStatusRendering(t *testing.T) {
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	sledA, sledB := uuid.MustParse("8be0b587-2a17-463a-9d85-3f6db4aef1c0"), uuid.MustParse("d6717d01-80db-4918-a6b3-c7fe397e34ab")
	unknown := uuid.MustParse("0e8a0d9e-0000-4000-8000-000000000001")
	r := statusRenderer{now: now, sleds: map[uuid.UUID]string{sledA: "BRM42220001", sledB: "BRM42220002"}}
	sha := func(i int) string { return strings.Repeat(fmt.Sprintf("%x", i%16), 64) }

	var recent []api.ReplicationRequest
	for i := range 12 {
		recent = append(recent, api.ReplicationRequest{Time: now.Add(-time.Duration(30+i) * time.Second), Sled: []uuid.UUID{sledA, sledB}[i%2],
			Operation: "copy", SHA256: sha(i), Source: "https://127.0.0.1:4" + fmt.Sprint(1000+i)})
	}
	recent[3].Error = "sled BRM42220002 answered 507: no space on m2-b"
	replication := api.ReplicationStatus{
		Generation: 7, Artifacts: 4, Sleds: 3, Converged: false, Requests: 5, Deferred: 1, InFlight: 2, RoundTrips: 4,
		Phases: api.ReplicationPhaseTimes{Collect: 1.98593, Plan: 0.011, Execute: 1250.5, Finish: 0.2},
		// The second sled has one of its two M.2s: degraded, so nothing
		// counts as fully replicated (as the task reports it).
		DegradedSleds: 1, FullyReplicated: 0,
		LeastReplicated: []api.ReplicationArtifact{{SHA256: sha(1), Length: 360448, Sleds: 1, FullSleds: 0, InFlight: 2, NexusHolders: 1}},
		Unheld:          []string{sha(2)},
		RepoChanges:     []string{"2.0.0: active -> degraded"},
		LocalCopies:     3,
		SledStates: []api.ReplicationSled{{ID: sledA, Address: "127.0.0.1:38271", Generation: 7, M2Present: 2, M2Expected: 2},
			{ID: sledB, Address: "127.0.0.1:44799", Generation: 6, M2Present: 1, M2Expected: 2, InFlight: 2},
			{ID: unknown, Address: "127.0.0.1:40001", Error: "sled " + unknown.String() + " did not answer: connection refused"}},
		LastRun:  api.ReplicationCounters{ListOK: 2, ListErr: 1, SeedOK: 1, BytesSeeded: 360448},
		Lifetime: api.ReplicationCounters{ConfigPutOK: 4, ListOK: 35, SeedOK: 8, BytesSeeded: 245760, BytesCopied: 3 << 30},
		Recent:   recent,
	}
	liveness := sledliveness.Status{ThresholdSeconds: 90, DatabaseTime: now.Add(-1500 * time.Millisecond), Active: 2, Unreachable: 1,
		MarkedUnreachable: []sledliveness.SledChange{{ID: sledB, Serial: "BRM42220002", TimeLastSeen: now.Add(-2 * time.Minute),
			SilentSeconds: 120.4}},
		MarkedActive: []sledliveness.SledChange{}}
	for name, status := range map[string]any{
		"tuf_artifact_replication": replication,
		"sled_liveness":            liveness,
		"disabled":                 map[string]string{"disabled": "this task is switched off; enable it with `rackctl bgtasks enable x`"},
	} {
		raw, err := json.Marshal(status)
		if err != nil {
			t.Fatal(err)
		}
		v, err := parseStatus(raw)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := r.render(&out, "  ", v); err != nil {
			t.Fatal(err)
		}
		got := out.String()
		for _, bad := range []string{"{", "}", "\"", sledA.String(), sledB.String(), sha(1), "_ms", "_seconds"} {
			if strings.Contains(got, bad) {
				t.Errorf("%s: the rendering shows %q:\n%s", name, bad, got)
			}
		}
		golden(t, "status/"+name, got)
	}
}

// Field order is the task's: the renderer keeps the document's order,
// not a sorted one.
func TestStatusKeepsFieldOrder(t *testing.T) {
	v, err := parseStatus([]byte(`{"zeta": 1, "alpha": {"b_ms": 2, "a_ms": 1}, "mid": [1, 2], "empty": []}`))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := (statusRenderer{}).render(&out, "", v); err != nil {
		t.Fatal(err)
	}
	if want := "zeta   1\nalpha  b 2.0ms, a 1.0ms\nmid    1, 2\nempty  none\n"; out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}

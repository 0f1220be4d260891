package bootstrap

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/rackplane/rackplane/trustquorum"
)

// encodeLedgerValue splices the encoded state in instead of letting
// encoding/json validate and copy it; the result must be exactly what
// json.Marshal makes of the ledger value, with and without alarms, so that
// ledgers read the same whichever wrote them.
func TestEncodeLedgerValueIsJSONMarshal(t *testing.T) {
	st := trustquorum.NewPersistentState()
	enc, err := trustquorum.EncodeState(&st)
	if err != nil {
		t.Fatal(err)
	}
	alarm := AlarmRecord{
		Alarm: trustquorum.Alarm{Kind: trustquorum.AlarmMismatchedConfigurations, Epoch: 7,
			Peer: trustquorum.BaseboardID{Part: "p<&>", Serial: "s\"1"}, Detail: "détail <b>"},
		Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
	}
	for name, alarms := range map[string][]AlarmRecord{"none": nil, "empty": {}, "one": {alarm}} {
		got, err := encodeLedgerValue(enc, alarms)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(ledgerValue{State: enc, Alarms: alarms})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
		var back ledgerValue
		if err := json.Unmarshal(got, &back); err != nil || !bytes.Equal(back.State, enc) || len(back.Alarms) != len(alarms) {
			t.Errorf("%s: does not decode back: %v", name, err)
		}
	}
}

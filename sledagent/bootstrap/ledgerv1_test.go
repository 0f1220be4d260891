package bootstrap_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/sledagent/ledger"
	"github.com/rackplane/rackplane/trustquorum"
)

// The files under testdata/ledger-v1 are the ledgers three sleds (S00, S01,
// S02, this harness's identities) wrote before the trust-quorum state was
// pruned: epochs 1 to 3 committed over all three, each ledger holding all
// three configurations and shares (state version 1). Sleds restarted on
// them load them, store them pruned as version 2, and go on: the next
// epoch is built on the old ledgers' shares of epoch 3.
func TestLedgerWrittenBeforePruningLoads(t *testing.T) {
	r := newRack(t, 3, nil)
	for i, s := range r.sleds {
		s.stop()
		old, err := os.ReadFile(filepath.Join("testdata", "ledger-v1", s.bundle.Identity.Serial+".json"))
		if err != nil {
			t.Fatal(err)
		}
		// Sled 0 finds it on one M.2 only; the other gets it on load.
		for _, m := range s.m2s[:1+min(i, 1)] {
			if err := os.WriteFile(filepath.Join(m, bootstrap.LedgerDir, bootstrap.LedgerFile), old, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		s.restart()
	}
	r.waitConnected()
	onDisk := func(s *sled) (map[string]uint64, trustquorum.PersistentState) {
		t.Helper()
		gens := map[string]uint64{}
		var st trustquorum.PersistentState
		for _, m := range s.m2s {
			res, err := ledger.New[struct {
				State json.RawMessage `json:"state"`
			}](bootstrap.LedgerFile).Read([]string{filepath.Join(m, bootstrap.LedgerDir)})
			if err != nil || !res.Found {
				t.Fatalf("ledger on %s: %v", m, err)
			}
			if !bytes.HasPrefix(res.Value.State, []byte(`{"version":2,`)) {
				t.Fatalf("ledger on %s still %.14s", m, res.Value.State)
			}
			if st, err = trustquorum.DecodeState(res.Value.State); err != nil {
				t.Fatalf("ledger on %s: %v", m, err)
			}
			gens[m] = res.Generation
		}
		return gens, st
	}
	for _, s := range r.sleds {
		waitFor(t, 10*time.Second, "the pruned ledger on "+s.id().String(), func() error {
			st, err := s.agent.Status(ctxT(t))
			if err != nil {
				return err
			}
			if st.LatestCommittedEpoch != 3 || !slices.Equal(st.CommittedEpochs, []trustquorum.Epoch{1, 2, 3}) || st.LatestConfig.Epoch != 3 {
				t.Fatalf("%s from the old ledger: %+v", s.id(), st)
			}
			for _, d := range st.Ledger.Devices {
				// Every fixture is at generation 7; the pruned
				// state is the next one written.
				if d.Generation <= 7 || d.Error != "" {
					return fmt.Errorf("%s: %+v", d.Path, d)
				}
			}
			return nil
		})
		gens, st := onDisk(s)
		if g := slices.Collect(maps.Values(gens)); g[0] != g[1] {
			t.Fatalf("%s: M.2s at generations %v", s.id(), gens)
		}
		if len(st.Configs) != 1 || st.Configs[3] == nil || !st.Prepared(3) || !slices.Equal(st.CommittedEpochs(), []trustquorum.Epoch{1, 2, 3}) {
			t.Fatalf("%s: pruned ledger holds configs %v, commits %v", s.id(), slices.Sorted(maps.Keys(st.Configs)), st.CommittedEpochs())
		}
	}
	r.commitEpoch(r.sleds[1], 4, 3, r.sleds)
	for _, s := range r.sleds {
		_, st := onDisk(s)
		if len(st.Configs) != 1 || !st.Prepared(4) || !slices.Equal(st.CommittedEpochs(), []trustquorum.Epoch{1, 2, 3, 4}) {
			t.Fatalf("%s after epoch 4: configs %v, commits %v", s.id(), slices.Sorted(maps.Keys(st.Configs)), st.CommittedEpochs())
		}
	}
}

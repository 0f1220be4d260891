package sled_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/sledagent/bootstrap/rss"
	"github.com/rackplane/rackplane/sledagent/ledger"
	"github.com/rackplane/rackplane/sledagent/sled"
	"github.com/rackplane/rackplane/sledagent/storage"
	"github.com/rackplane/rackplane/trustquorum"
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// The storage lifecycle of whole sled processes, without Nexus: rack
// setup over the bootstrap network (as rackdev does it), epochs driven
// through the bootstrap agents as Nexus's task would, processes stopped
// and started on their own directories.

type lockedRack struct {
	t    *testing.T
	ps   []*sledtest.Process
	rack trustquorum.RackID
	ids  []uuid.UUID // each sled's id once first unlocked
	logs *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

func newLockedRack(t *testing.T, n int, tweak func(i int, c *sled.Config)) *lockedRack {
	t.Helper()
	refuser := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no Nexus in this test", http.StatusServiceUnavailable)
	}))
	t.Cleanup(refuser.Close)
	r := &lockedRack{t: t, logs: &syncBuffer{}, rack: trustquorum.RackID(uuid.New())}
	r.ps = sledtest.NewProcesses(t, n, sledtest.ProcessOptions{NexusURL: refuser.URL, DataDisks: true, Logs: r.logs, Tweak: tweak})
	for i, p := range r.ps {
		if p.Server() != nil {
			t.Fatalf("sled %d runs its sled agent before any epoch exists", i)
		}
	}
	r.waitLocked(span(0, n), "not a committed member")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := rss.Dial(ctx, sledtest.BootstrapAddrs(r.ps),
		rss.Options{Bundle: sledtest.Bundle(t, rackpki.RSS()), PollInterval: 20 * time.Millisecond, Log: sledtest.Logger(t, "rss")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.SetupRack(ctx, rss.SetupOptions{RackID: r.rack}); err != nil {
		t.Fatalf("rack setup: %v", err)
	}
	r.ids = make([]uuid.UUID, n)
	for _, i := range span(0, n) {
		r.waitUnlocked(i, 1)
		r.ids[i] = r.ps[i].Server().ID()
	}
	return r
}

func span(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func (r *lockedRack) lock(i int) (string, string, trustquorum.Epoch) {
	st, err := r.ps[i].Agent().Status(context.Background())
	if err != nil {
		return "", err.Error(), 0
	}
	return st.StorageLock.State, st.StorageLock.Reason, st.StorageLock.Epoch
}

// waitUnlocked waits until sled i's disks are unlocked under epoch and
// its sled agent runs (with the id it had, once it has one).
func (r *lockedRack) waitUnlocked(i int, epoch trustquorum.Epoch) {
	r.t.Helper()
	sledtest.WaitFor(r.t, 30*time.Second, fmt.Sprintf("sled %d to unlock at epoch %d", i, epoch), func() error {
		state, reason, e := r.lock(i)
		if state != storage.Unlocked || e != epoch {
			return fmt.Errorf("%s at epoch %d (%s)", state, e, reason)
		}
		srv := r.ps[i].Server()
		if srv == nil {
			return errors.New("unlocked, but no sled agent")
		}
		if r.ids != nil && r.ids[i] != uuid.Nil && srv.ID() != r.ids[i] {
			r.t.Fatalf("sled %d came back as sled %s, was %s", i, srv.ID(), r.ids[i])
		}
		for serial, es := range r.ps[i].Sled().Storage().Epochs() {
			if !slices.Equal(es, []uint64{uint64(epoch)}) {
				return fmt.Errorf("disk %s holds wrappings for epochs %v", serial, es)
			}
		}
		return nil
	})
}

// waitLocked waits until every sled in idx reports locked, for a reason
// containing why, and checks none runs a sled agent.
func (r *lockedRack) waitLocked(idx []int, why string) {
	r.t.Helper()
	for _, i := range idx {
		sledtest.WaitFor(r.t, 30*time.Second, fmt.Sprintf("sled %d to report itself locked", i), func() error {
			state, reason, _ := r.lock(i)
			if state != storage.Locked || !bytes.Contains([]byte(reason), []byte(why)) {
				return fmt.Errorf("%s (%s)", state, reason)
			}
			return nil
		})
		if r.ps[i].Server() != nil {
			r.t.Fatalf("sled %d runs its sled agent while locked", i)
		}
	}
}

func (r *lockedRack) members(idx []int) []trustquorum.BaseboardID {
	var out []trustquorum.BaseboardID
	for _, i := range idx {
		out = append(out, r.ps[i].Agent().ID())
	}
	return out
}

// commitEpoch has sled coord coordinate epoch over members (all of
// them), waits for K+Z prepare acks, and commits it on the members that
// acked, as Nexus's task does. Members that are down commit later.
func (r *lockedRack) commitEpoch(coord int, epoch, last trustquorum.Epoch, members, up []int) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k := uint8(len(members)/2 + 1)
	if _, err := r.ps[coord].Agent().Reconfigure(ctx, trustquorum.ReconfigureMsg{RackID: r.rack, Epoch: epoch,
		LastCommittedEpoch: last, Members: r.members(members), Threshold: k}); err != nil {
		r.t.Fatalf("reconfigure epoch %d: %v", epoch, err)
	}
	sledtest.WaitFor(r.t, 30*time.Second, fmt.Sprintf("epoch %d's prepare acks", epoch), func() error {
		cs, err := r.ps[coord].Agent().CoordinatorStatus(ctx)
		if err != nil {
			return err
		}
		if len(cs.Acked) < len(up) {
			return fmt.Errorf("%d of %d acked", len(cs.Acked), len(up))
		}
		return nil
	})
	for _, i := range up {
		if st, err := r.ps[i].Agent().Commit(ctx, r.rack, epoch); err != nil || st != trustquorum.CommitCommitted {
			r.t.Fatalf("commit epoch %d on sled %d: %v %v", epoch, i, st, err)
		}
	}
}

// Cold boot: every sled stops at once; two come back and stay locked
// (each holds its own share and one peer's: below K=3); a third comes
// back and the three unlock, with no Nexus anywhere.
func TestColdBootUnlocksAtK(t *testing.T) {
	r := newLockedRack(t, 5, nil)
	for _, p := range r.ps {
		p.Stop()
	}
	r.ps[0].Start()
	r.ps[1].Start()
	r.waitLocked([]int{0, 1}, "gathering the rack secret's shares")
	// They keep trying: the attempts go up while below K.
	before := attempts(t, r.ps[0])
	sledtest.WaitFor(t, 10*time.Second, "sled 0 to keep trying", func() error {
		if a := attempts(t, r.ps[0]); a <= before+1 {
			return fmt.Errorf("%d attempts, %d before", a, before)
		}
		return nil
	})
	if r.ps[0].Server() != nil || r.ps[1].Server() != nil {
		t.Fatal("a sled below K started its sled agent")
	}
	r.ps[2].Start()
	for _, i := range []int{0, 1, 2} {
		r.waitUnlocked(i, 1)
	}
	assertNoKeysLeaked(t, r)
}

func attempts(t *testing.T, p *sledtest.Process) uint64 {
	st, err := p.Agent().Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.StorageLock.Attempts
}

// A sled that slept through two epochs finds, on waking, that the members
// moved on: it learns the newest configuration from them, rebuilds its
// share, unwraps its keys with epoch 1's secret (from the newest epoch's
// encrypted chain) and re-keys straight to epoch 3.
func TestSleptThroughTwoEpochsUnlocksAndRekeys(t *testing.T) {
	r := newLockedRack(t, 5, nil)
	r.ps[4].Stop()
	all, up := span(0, 5), span(0, 4)
	r.commitEpoch(0, 2, 1, all, up)
	for _, i := range up {
		r.waitUnlocked(i, 2) // re-keyed after the commit
	}
	r.commitEpoch(1, 3, 2, all, up)
	for _, i := range up {
		r.waitUnlocked(i, 3)
	}
	disks := r.ps[4].Config.Storage.Dirs
	if got := wraps(t, disks[0]); !slices.Equal(got, []string{"key-epoch-1.wrapped"}) {
		t.Fatalf("the sleeping sled's disk holds %v", got)
	}
	r.ps[4].Start()
	r.waitUnlocked(4, 3)
	st, err := r.ps[4].Agent().Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.LatestCommittedEpoch != 3 {
		t.Fatalf("the woken sled's latest committed epoch is %d", st.LatestCommittedEpoch)
	}
	for _, d := range disks {
		if got := wraps(t, d); !slices.Equal(got, []string{"key-epoch-3.wrapped"}) {
			t.Fatalf("after waking, disk %s holds %v", d, got)
		}
	}
	assertNoKeysLeaked(t, r)
}

func wraps(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "key-epoch-*.wrapped"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range m {
		out = append(out, filepath.Base(p))
	}
	slices.Sort(out)
	return out
}

// A crash between the two writes of a re-key (the new wrapping durable,
// the old not yet removed) leaves a sled that unlocks on its next boot and
// finishes the re-key.
func TestCrashBetweenRekeyWritesUnlocks(t *testing.T) {
	var crash atomic.Bool
	var crashed atomic.Int32
	r := newLockedRack(t, 4, func(i int, c *sled.Config) {
		if i == 3 {
			c.Storage.AfterNewWrap = func(epoch uint64) error {
				if crash.Load() {
					crashed.Add(1)
					return errors.New("injected crash between the re-key's writes")
				}
				return nil
			}
		}
	})
	crash.Store(true)
	r.commitEpoch(0, 2, 1, span(0, 4), span(0, 4))
	disks := r.ps[3].Config.Storage.Dirs
	sledtest.WaitFor(t, 30*time.Second, "the injected crash", func() error {
		if crashed.Load() == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	// Stopped as by the crash: both wrappings are on every disk.
	r.ps[3].Stop()
	for _, d := range disks {
		if got := wraps(t, d); !slices.Equal(got, []string{"key-epoch-1.wrapped", "key-epoch-2.wrapped"}) {
			t.Fatalf("after the crash, disk %s holds %v", d, got)
		}
	}
	crash.Store(false)
	r.ps[3].Start()
	r.waitUnlocked(3, 2)
	for _, d := range disks {
		if got := wraps(t, d); !slices.Equal(got, []string{"key-epoch-2.wrapped"}) {
			t.Fatalf("after the restart, disk %s holds %v", d, got)
		}
	}
}

// rackSecret rebuilds the rack secret of the sleds' latest committed
// epoch the way an attacker holding K sleds' M.2s would: K shares from
// their trust-quorum ledgers.
func rackSecret(t *testing.T, r *lockedRack) (*tqcrypto.Secret, trustquorum.Epoch) {
	t.Helper()
	l := ledger.New[struct {
		State json.RawMessage `json:"state"`
	}](bootstrap.LedgerFile)
	var shares []tqcrypto.Share
	var epoch trustquorum.Epoch
	k := 0
	for _, p := range r.ps {
		var dirs []string
		for _, m2 := range p.Config.Agent.M2Dirs {
			dirs = append(dirs, filepath.Join(m2, bootstrap.LedgerDir))
		}
		rec, err := l.Read(dirs)
		if err != nil || !rec.Found {
			t.Fatalf("sled %d's ledger: %v", p.Index, err)
		}
		st, err := trustquorum.DecodeState(rec.Value.State)
		if err != nil {
			t.Fatal(err)
		}
		e := st.LatestCommittedEpoch()
		if epoch == 0 {
			epoch = e
		}
		if e != epoch {
			continue
		}
		if s, ok := st.Shares[e]; ok {
			shares = append(shares, s)
			k = int(st.Configs[e].Threshold)
		}
	}
	if k == 0 || len(shares) < k {
		t.Fatalf("%d shares of epoch %d on the M.2s, threshold %d", len(shares), epoch, k)
	}
	secret, err := tqcrypto.Combine(shares, k)
	if err != nil {
		t.Fatal(err)
	}
	return secret, epoch
}

func encodings(raw []byte) [][]byte {
	return [][]byte{raw, []byte(hex.EncodeToString(raw)), []byte(strings.ToUpper(hex.EncodeToString(raw))),
		[]byte(base64.StdEncoding.EncodeToString(raw)), []byte(base64.RawStdEncoding.EncodeToString(raw)),
		[]byte(base64.URLEncoding.EncodeToString(raw)), []byte(base64.RawURLEncoding.EncodeToString(raw))}
}

// assertNoKeysLeaked checks that neither the rack secret of the latest
// committed epoch nor any unlocked sled's disk keys (derived through its
// bootstrap agent, the only holder) appear, raw, in hex or in base64, in
// any log line of any sled, nor the disk keys in any file on its M.2s or
// data disks. The secret rebuilt from the ledgers is checked against the
// agents' own disk keys first, so the scan looks for the right bytes.
func assertNoKeysLeaked(t *testing.T, r *lockedRack) {
	t.Helper()
	logs := r.logs.Bytes()
	if len(logs) == 0 {
		t.Fatal("no log lines were captured")
	}
	ctx := context.Background()
	secret, secretEpoch := rackSecret(t, r)
	for _, enc := range encodings(secret.Expose()) {
		if bytes.Contains(logs, enc) {
			t.Fatalf("the rack secret of epoch %d is in the logs", secretEpoch)
		}
	}
	checked := 0
	for _, p := range r.ps {
		if !p.Running() {
			continue
		}
		st, err := p.Agent().Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.StorageLock.State != storage.Unlocked {
			continue
		}
		var files [][]byte
		dirs := append(slices.Clone(p.Config.Agent.M2Dirs), p.Config.Storage.Dirs...)
		for _, d := range dirs {
			_ = filepath.WalkDir(d, func(path string, e fs.DirEntry, err error) error {
				if err == nil && e.Type().IsRegular() {
					if b, err := os.ReadFile(path); err == nil {
						files = append(files, b)
					}
				}
				return nil
			})
		}
		for _, serial := range p.Sled().Storage().Serials() {
			k, err := p.Agent().DiskKey(ctx, uint64(st.StorageLock.Epoch), serial)
			if err != nil {
				t.Fatal(err)
			}
			raw := bytes.Clone(k.Expose())
			k.Zero()
			if st.StorageLock.Epoch == secretEpoch {
				mine, err := tqcrypto.DeriveDiskKey(secret, r.rack, serial)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(mine.Expose(), raw) {
					t.Fatalf("the secret rebuilt from the ledgers does not give sled %d's disk key", p.Index)
				}
			}
			for _, enc := range encodings(raw) {
				if bytes.Contains(logs, enc) {
					t.Fatalf("sled %d's disk key for %s is in the logs", p.Index, serial)
				}
				for _, f := range files {
					if bytes.Contains(f, enc) {
						t.Fatalf("sled %d's disk key for %s is stored on a device", p.Index, serial)
					}
				}
			}
			checked++
		}
	}
	if checked == 0 {
		t.Fatal("no unlocked sled to check")
	}
}

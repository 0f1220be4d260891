package storage_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/sledagent/storage"
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// secrets is a key source holding rack secrets in the test itself; the
// bootstrap agent, which rebuilds them from shares, is the real one (its
// tests in sledagent/sled unlock whole sleds).
type secrets struct {
	rack    [16]byte
	latest  uint64
	by      map[uint64]*tqcrypto.Secret
	pending bool
}

func (s *secrets) Committed(context.Context) ([16]byte, uint64, bool, error) {
	return s.rack, s.latest, s.latest != 0, nil
}

func (s *secrets) DiskKey(_ context.Context, epoch uint64, serial string) (*tqcrypto.Secret, error) {
	if s.pending {
		return nil, storage.ErrPending
	}
	sec, ok := s.by[epoch]
	if !ok {
		return nil, fmt.Errorf("no secret for epoch %d", epoch)
	}
	return tqcrypto.DeriveDiskKey(sec, s.rack, serial)
}

func newSecret(t *testing.T) *tqcrypto.Secret {
	s, err := tqcrypto.NewSecret(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func openStore(t *testing.T, dirs []string, hook func(uint64) error) *storage.Store {
	t.Helper()
	s, err := storage.Open(storage.Config{Dirs: dirs, Rand: rand.Reader, Log: zerolog.Nop(), AfterNewWrap: hook})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func disks(t *testing.T) []string {
	d := t.TempDir()
	return []string{filepath.Join(d, "u2-a"), filepath.Join(d, "u2-b")}
}

func fresh() storage.SledState { return storage.SledState{SledID: uuid.New()} }

func mustUnlock(t *testing.T, s *storage.Store, src storage.KeySource) storage.SledState {
	t.Helper()
	if err := s.Unlock(context.Background(), src, fresh); err != nil {
		t.Fatal(err)
	}
	st, err := s.State()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func wantEpochs(t *testing.T, s *storage.Store, want ...uint64) {
	t.Helper()
	for serial, got := range s.Epochs() {
		if !slices.Equal(got, want) {
			t.Fatalf("disk %s holds wrappings for epochs %v, want %v", serial, got, want)
		}
	}
}

func TestFormatUnlockAndRekey(t *testing.T) {
	dirs := disks(t)
	src := &secrets{rack: uuid.New(), latest: 1, by: map[uint64]*tqcrypto.Secret{1: newSecret(t)}}
	s := openStore(t, dirs, nil)
	if _, err := s.State(); !errors.Is(err, storage.ErrLocked) {
		t.Fatalf("state of a locked store: %v", err)
	}
	first := mustUnlock(t, s, src)
	wantEpochs(t, s, 1)

	// Reopened (a reboot): the same state comes back, under the same key.
	again := mustUnlock(t, openStore(t, dirs, nil), src)
	if again != first {
		t.Fatalf("after a reboot the sled's state is %+v, was %+v", again, first)
	}

	// Epoch 2 commits: an unlocked store re-keys in place.
	src.latest, src.by[2] = 2, newSecret(t)
	if err := s.Unlock(context.Background(), src, fresh); err != nil {
		t.Fatal(err)
	}
	wantEpochs(t, s, 2)
	// Only epoch 2's secret is needed from now on.
	only2 := &secrets{rack: src.rack, latest: 2, by: map[uint64]*tqcrypto.Secret{2: src.by[2]}}
	if got := mustUnlock(t, openStore(t, dirs, nil), only2); got != first {
		t.Fatalf("after the re-key the state is %+v, was %+v", got, first)
	}
}

// A sled that slept through epochs unwraps with its old epoch's key (the
// source rebuilds it from the newest epoch's chain) and re-keys straight
// to the newest.
func TestUnlockAfterSleepingThroughEpochs(t *testing.T) {
	dirs := disks(t)
	src := &secrets{rack: uuid.New(), latest: 1, by: map[uint64]*tqcrypto.Secret{1: newSecret(t)}}
	first := mustUnlock(t, openStore(t, dirs, nil), src)
	src.latest, src.by[2], src.by[3] = 3, newSecret(t), newSecret(t)
	s := openStore(t, dirs, nil)
	if got := mustUnlock(t, s, src); got != first {
		t.Fatalf("state %+v, want %+v", got, first)
	}
	wantEpochs(t, s, 3)
}

// A crash between writing the new wrapping and removing the old leaves
// both; each alone unlocks the disk.
func TestCrashBetweenRekeyWrites(t *testing.T) {
	dirs := disks(t)
	src := &secrets{rack: uuid.New(), latest: 1, by: map[uint64]*tqcrypto.Secret{1: newSecret(t)}}
	crash := errors.New("injected crash")
	first := mustUnlock(t, openStore(t, dirs, func(uint64) error { return crash }), src)
	// The first unlock formats under epoch 1 and has nothing to remove.
	src.latest, src.by[2] = 2, newSecret(t)
	s := openStore(t, dirs, func(uint64) error { return crash })
	if err := s.Unlock(context.Background(), src, fresh); err != nil {
		t.Fatal(err) // unlocked, the re-key left for later
	}
	wantEpochs(t, s, 2, 1)

	for _, keep := range []uint64{1, 2} {
		t.Run(fmt.Sprintf("only epoch %d's wrapping", keep), func(t *testing.T) {
			copyDirs := copyDisks(t, dirs)
			for _, d := range copyDirs {
				drop := 3 - keep
				if err := os.Remove(filepath.Join(d, fmt.Sprintf("key-epoch-%d.wrapped", drop))); err != nil {
					t.Fatal(err)
				}
			}
			// The source holds only the kept epoch's secret.
			one := &secrets{rack: src.rack, latest: 2, by: map[uint64]*tqcrypto.Secret{keep: src.by[keep]}}
			c := openStore(t, copyDirs, nil)
			if err := c.Unlock(context.Background(), one, fresh); err != nil {
				t.Fatal(err)
			}
			if got, _ := c.State(); got != first {
				t.Fatalf("state %+v, want %+v", got, first)
			}
			if keep == 2 {
				wantEpochs(t, c, 2)
			}
		})
	}
	// With both secrets, the interrupted re-key completes.
	s2 := openStore(t, dirs, nil)
	if got := mustUnlock(t, s2, src); got != first {
		t.Fatalf("state %+v, want %+v", got, first)
	}
	wantEpochs(t, s2, 2)
}

func copyDisks(t *testing.T, dirs []string) []string {
	t.Helper()
	base := t.TempDir()
	var out []string
	for _, d := range dirs {
		to := filepath.Join(base, filepath.Base(d))
		if err := os.CopyFS(to, os.DirFS(d)); err != nil {
			t.Fatal(err)
		}
		out = append(out, to)
	}
	return out
}

func TestWrongKeyIsDetected(t *testing.T) {
	dirs := disks(t)
	src := &secrets{rack: uuid.New(), latest: 1, by: map[uint64]*tqcrypto.Secret{1: newSecret(t)}}
	mustUnlock(t, openStore(t, dirs, nil), src)

	other := &secrets{rack: src.rack, latest: 1, by: map[uint64]*tqcrypto.Secret{1: newSecret(t)}}
	s := openStore(t, dirs, nil)
	if err := s.Unlock(context.Background(), other, fresh); !errors.Is(err, storage.ErrWrongKey) {
		t.Fatalf("unlock with another rack secret: %v", err)
	}
	if ok, _ := s.Unlocked(); ok {
		t.Fatal("unlocked with a wrong key")
	}
	otherRack := &secrets{rack: uuid.New(), latest: 1, by: src.by}
	if err := openStore(t, dirs, nil).Unlock(context.Background(), otherRack, fresh); !errors.Is(err, storage.ErrWrongKey) {
		t.Fatalf("unlock with another rack's id: %v", err)
	}

	// The sealed state is checked too: a tampered one is refused, not
	// replaced.
	p := filepath.Join(dirs[1], storage.StateFile)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := openStore(t, dirs, nil).Unlock(context.Background(), src, fresh); !errors.Is(err, storage.ErrWrongKey) {
		t.Fatalf("unlock with a tampered sealed state: %v", err)
	}
	after, err := os.ReadFile(p)
	if err != nil || string(after) != string(b) {
		t.Fatal("the tampered state was rewritten")
	}
}

func TestLockedUntilTheSecretLoads(t *testing.T) {
	dirs := disks(t)
	src := &secrets{rack: uuid.New(), latest: 1, by: map[uint64]*tqcrypto.Secret{1: newSecret(t)}}
	first := mustUnlock(t, openStore(t, dirs, nil), src)
	src.pending = true
	s := openStore(t, dirs, nil)
	if err := s.Unlock(context.Background(), src, fresh); !errors.Is(err, storage.ErrPending) {
		t.Fatalf("unlock while pending: %v", err)
	}
	if _, err := s.State(); !errors.Is(err, storage.ErrLocked) {
		t.Fatalf("state while pending: %v", err)
	}
	src.pending = false
	if got := mustUnlock(t, s, src); got != first {
		t.Fatalf("state %+v, want %+v", got, first)
	}
	none := &secrets{rack: src.rack}
	if err := openStore(t, disks(t), nil).Unlock(context.Background(), none, fresh); !errors.Is(err, storage.ErrNoEpoch) {
		t.Fatalf("unlock with no committed epoch: %v", err)
	}
}

// Package storage holds a sled's data disks (directories standing in for
// its U.2 devices) and their keys. Each disk has a random data key that is
// stored only wrapped (XChaCha20-Poly1305) under the disk key of a
// committed trust-quorum epoch, with the epoch beside it; the disk key is
// derived from that epoch's rack secret, which only K members together can
// rebuild. Unlocking unwraps every data key; re-keying wraps them under a
// newer epoch's disk key, writing the new wrapping durably before the old
// one is removed, so a crash between the two leaves a disk that unlocks
// with either.
//
// What the keys protect is real: the sled's own state that is not on the
// M.2s (its sled id) is sealed under the data keys, so a wrong key is
// noticed when the state does not open, never assumed away.
package storage

import (
	"context"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/rackplane/rackplane/internal/fsutil"
	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// Files on every data disk.
const (
	// DiskFile names the disk (its serial, not secret).
	DiskFile = "disk.json"
	// StateFile is the sled's state sealed under the disk's data key.
	StateFile = "sled-state.sealed"
	// wrapPrefix + epoch names a wrapping of the data key.
	wrapPrefix = "key-epoch-"
	wrapSuffix = ".wrapped"
)

// Lock states, as the sled reports them.
const (
	// Locked: no data key is unwrapped yet (the shares are being
	// gathered, or the sled is not a committed member).
	Locked = "locked"
	// Unlocked: every data key is unwrapped and the state opened.
	Unlocked = "unlocked"
	// Expunged: the sled was removed from the rack; it cannot unlock.
	Expunged = "expunged"
)

// Errors at the package's edge.
var (
	// ErrPending: the key source is still gathering shares.
	ErrPending = errors.New("storage: the rack secret is not loaded yet")
	// ErrNoEpoch: the sled holds no committed epoch, so there is no key
	// to unlock or format with.
	ErrNoEpoch = errors.New("storage: the sled is not a committed member of any epoch")
	// ErrWrongKey: a wrapping or the sealed state did not open under the
	// key derived for it.
	ErrWrongKey = errors.New("storage: a data disk does not open with the rack's key")
	// ErrLocked: the operation needs the disks unlocked.
	ErrLocked = errors.New("storage: the data disks are locked")
)

// KeySource gives the keys of the sled's trust-quorum epochs. The
// bootstrap agent is one: it rebuilds rack secrets from K members' shares
// and derives disk keys from them, so no rack secret leaves it.
type KeySource interface {
	// Committed reports the rack id and the latest committed epoch (ok
	// false: none yet).
	Committed(ctx context.Context) (rack [16]byte, epoch uint64, ok bool, err error)
	// DiskKey derives the disk key of one disk for a committed epoch;
	// ErrPending (wrapped) while the shares are still being gathered.
	DiskKey(ctx context.Context, epoch uint64, serial string) (*tqcrypto.Secret, error)
}

// Config configures a Store.
type Config struct {
	// Dirs are the data disks, one directory each (created if missing).
	Dirs []string
	// Rand supplies data keys, nonces and disk serials.
	Rand io.Reader
	Log  zerolog.Logger
	// AfterNewWrap, when set, runs during a re-key once every disk's new
	// wrapping is durable and before any old one is removed; an error
	// stops the re-key there (tests inject a crash with it).
	AfterNewWrap func(epoch uint64) error
}

// SledState is what the sled keeps on its data disks, sealed.
type SledState struct {
	SledID uuid.UUID `json:"sled_id"`
}

// Store is a sled's data disks.
type Store struct {
	cfg   Config
	log   zerolog.Logger
	disks []*disk

	mu       sync.Mutex
	unlocked bool
	rack     [16]byte
	epoch    uint64 // every disk's key is wrapped under this epoch
	state    SledState
}

type disk struct {
	dir    string
	serial string
	key    []byte // the data key, once unwrapped
}

type diskFile struct {
	Serial string `json:"serial"`
}

// wrapFile is one wrapping of a data key.
type wrapFile struct {
	Version    int    `json:"version"`
	Epoch      uint64 `json:"epoch"`
	Rack       string `json:"rack_id"`
	Serial     string `json:"serial"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

// Open opens the data disks, naming a blank one with a fresh serial. It
// unwraps nothing.
func Open(cfg Config) (*Store, error) {
	if len(cfg.Dirs) == 0 {
		return nil, errors.New("storage: no data disks configured")
	}
	if cfg.Rand == nil {
		return nil, errors.New("storage: a source of randomness is required")
	}
	s := &Store{cfg: cfg, log: cfg.Log.With().Str("subsystem", "storage").Logger()}
	for _, dir := range cfg.Dirs {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("storage: data disk %s: %w", dir, err)
		}
		if _, err := fsutil.RemoveTemps(dir); err != nil {
			return nil, fmt.Errorf("storage: data disk %s: %w", dir, err)
		}
		d := &disk{dir: dir}
		b, err := os.ReadFile(filepath.Join(dir, DiskFile))
		switch {
		case errors.Is(err, os.ErrNotExist):
			var raw [8]byte
			if _, err := io.ReadFull(cfg.Rand, raw[:]); err != nil {
				return nil, fmt.Errorf("storage: disk serial: %w", err)
			}
			d.serial = "U2-" + strings.ToUpper(hex.EncodeToString(raw[:]))
			enc, _ := json.Marshal(diskFile{Serial: d.serial})
			if err := fsutil.WriteFileAtomic(filepath.Join(dir, DiskFile), enc, 0o600); err != nil {
				return nil, fmt.Errorf("storage: data disk %s: %w", dir, err)
			}
		case err != nil:
			return nil, fmt.Errorf("storage: data disk %s: %w", dir, err)
		default:
			var f diskFile
			if err := json.Unmarshal(b, &f); err != nil || f.Serial == "" {
				return nil, fmt.Errorf("storage: data disk %s: %s is not a disk label", dir, DiskFile)
			}
			d.serial = f.Serial
		}
		s.disks = append(s.disks, d)
	}
	return s, nil
}

// Formatted reports whether any disk holds a wrapped key: the sled has
// been unlocked before.
func (s *Store) Formatted() bool {
	for _, d := range s.disks {
		if ws, _ := d.wraps(); len(ws) > 0 {
			return true
		}
	}
	return false
}

// Serials are the disks' serials, in configuration order.
func (s *Store) Serials() []string {
	out := make([]string, len(s.disks))
	for i, d := range s.disks {
		out[i] = d.serial
	}
	return out
}

// Unlocked reports whether the keys are unwrapped, and the epoch they are
// wrapped under.
func (s *Store) Unlocked() (bool, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unlocked, s.epoch
}

// State is the sled's state (ErrLocked until unlocked).
func (s *Store) State() (SledState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.unlocked {
		return SledState{}, ErrLocked
	}
	return s.state, nil
}

// Unlock unwraps every disk's data key with the keys of src, formats a
// disk that has none (a fresh data key, wrapped under the latest
// committed epoch), opens the sealed state (creating it with init on a
// sled that has none) and re-keys to the latest committed epoch. It may
// be called again on an unlocked store: it then only re-keys.
func (s *Store) Unlock(ctx context.Context, src KeySource, init func() SledState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rack, latest, ok, err := src.Committed(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return ErrNoEpoch
	}
	if s.unlocked {
		return s.rekeyLocked(ctx, src, rack, latest)
	}
	for _, d := range s.disks {
		if err := s.unwrap(ctx, src, rack, latest, d); err != nil {
			s.forget()
			return err
		}
	}
	st, err := s.openState(init)
	if err != nil {
		s.forget()
		return err
	}
	s.state, s.rack, s.unlocked = st, rack, true
	s.epoch = 0
	if err := s.rekeyLocked(ctx, src, rack, latest); err != nil {
		// Unlocked all the same: the next attempt re-keys.
		s.log.Warn().Err(err).Uint64("epoch", latest).Msg("data disks unlocked but not yet re-keyed")
	}
	return nil
}

// forget drops every unwrapped key.
func (s *Store) forget() {
	for _, d := range s.disks {
		clear(d.key)
		d.key = nil
	}
}

// unwrap gets d's data key: from the newest wrapping whose key opens it
// (a crash during a re-key leaves two), or, on a blank disk, a fresh one.
func (s *Store) unwrap(ctx context.Context, src KeySource, rack [16]byte, latest uint64, d *disk) error {
	ws, err := d.wraps()
	if err != nil {
		return err
	}
	if len(ws) == 0 {
		key := make([]byte, chacha20poly1305.KeySize)
		if _, err := io.ReadFull(s.cfg.Rand, key); err != nil {
			return fmt.Errorf("storage: data key: %w", err)
		}
		if err := s.writeWrap(ctx, src, rack, latest, d, key); err != nil {
			clear(key)
			return err
		}
		d.key = key
		s.log.Info().Str("disk", d.serial).Uint64("epoch", latest).Msg("data disk formatted: a new data key, wrapped")
		return nil
	}
	var errs []error
	for _, e := range ws {
		if e > latest {
			// Wrapped under an epoch this sled never committed: not ours
			// to trust.
			errs = append(errs, fmt.Errorf("disk %s: a wrapping for epoch %d, newer than the sled's latest committed %d", d.serial, e, latest))
			continue
		}
		key, err := s.openWrap(ctx, src, rack, d, e)
		if errors.Is(err, ErrPending) {
			return err
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d.key = key
		return nil
	}
	return fmt.Errorf("%w: %w", ErrWrongKey, errors.Join(errs...))
}

func wrapAD(rack [16]byte, epoch uint64, serial string) []byte {
	ad := []byte("rackplane-disk-wrap-v1")
	ad = append(ad, rack[:]...)
	ad = binary.BigEndian.AppendUint64(ad, epoch)
	return append(ad, serial...)
}

func (s *Store) aead(ctx context.Context, src KeySource, epoch uint64, serial string) (cipher.AEAD, error) {
	k, err := src.DiskKey(ctx, epoch, serial)
	if err != nil {
		return nil, err
	}
	defer k.Zero()
	return chacha20poly1305.NewX(k.Expose())
}

func (s *Store) openWrap(ctx context.Context, src KeySource, rack [16]byte, d *disk, epoch uint64) ([]byte, error) {
	b, err := os.ReadFile(d.wrapPath(epoch))
	if err != nil {
		return nil, fmt.Errorf("storage: disk %s: %w", d.serial, err)
	}
	var w wrapFile
	if err := json.Unmarshal(b, &w); err != nil || w.Version != 1 || w.Epoch != epoch || w.Serial != d.serial {
		return nil, fmt.Errorf("storage: disk %s: %s is not a wrapping for epoch %d", d.serial, filepath.Base(d.wrapPath(epoch)), epoch)
	}
	a, err := s.aead(ctx, src, epoch, d.serial)
	if err != nil {
		return nil, err
	}
	if len(w.Nonce) != a.NonceSize() {
		return nil, fmt.Errorf("storage: disk %s: epoch %d's wrapping has a malformed nonce", d.serial, epoch)
	}
	key, err := a.Open(nil, w.Nonce, w.Ciphertext, wrapAD(rack, epoch, d.serial))
	if err != nil {
		return nil, fmt.Errorf("disk %s: epoch %d's wrapping does not open: %w", d.serial, epoch, err)
	}
	return key, nil
}

// writeWrap stores key wrapped under epoch's disk key, durably.
func (s *Store) writeWrap(ctx context.Context, src KeySource, rack [16]byte, epoch uint64, d *disk, key []byte) error {
	a, err := s.aead(ctx, src, epoch, d.serial)
	if err != nil {
		return err
	}
	nonce := make([]byte, a.NonceSize())
	if _, err := io.ReadFull(s.cfg.Rand, nonce); err != nil {
		return fmt.Errorf("storage: nonce: %w", err)
	}
	w := wrapFile{Version: 1, Epoch: epoch, Rack: uuid.UUID(rack).String(), Serial: d.serial, Nonce: nonce,
		Ciphertext: a.Seal(nil, nonce, key, wrapAD(rack, epoch, d.serial))}
	enc, err := json.Marshal(w)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(d.wrapPath(epoch), enc, 0o600); err != nil {
		return fmt.Errorf("storage: disk %s: write epoch %d's wrapping: %w", d.serial, epoch, err)
	}
	return nil
}

// rekeyLocked wraps every data key under latest, new wrapping first, then
// removes the older ones. mu is held; the store is unlocked.
func (s *Store) rekeyLocked(ctx context.Context, src KeySource, rack [16]byte, latest uint64) error {
	if s.epoch == latest {
		return nil
	}
	// Every disk's new wrapping is durable before any old one goes.
	olds := make([][]uint64, len(s.disks))
	for i, d := range s.disks {
		ws, err := d.wraps()
		if err != nil {
			return err
		}
		olds[i] = ws
		if !slices.Contains(ws, latest) {
			if err := s.writeWrap(ctx, src, rack, latest, d, d.key); err != nil {
				return err
			}
		}
	}
	if s.cfg.AfterNewWrap != nil {
		if err := s.cfg.AfterNewWrap(latest); err != nil {
			return err
		}
	}
	for i, d := range s.disks {
		for _, e := range olds[i] {
			if e == latest {
				continue
			}
			if err := os.Remove(d.wrapPath(e)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("storage: disk %s: remove epoch %d's wrapping: %w", d.serial, e, err)
			}
		}
		if err := fsutil.SyncDir(d.dir); err != nil {
			return err
		}
	}
	if s.epoch != 0 {
		s.log.Info().Uint64("from_epoch", s.epoch).Uint64("epoch", latest).Msg("data keys re-wrapped for the new epoch")
	}
	s.epoch = latest
	return nil
}

func stateAD(serial string) []byte { return append([]byte("rackplane-sled-state-v1"), serial...) }

// openState opens the sealed state on every disk that has it; they must
// agree. A sled with none (a fresh one) seals init's on every disk.
func (s *Store) openState(init func() SledState) (SledState, error) {
	var st *SledState
	var missing []*disk
	for _, d := range s.disks {
		b, err := os.ReadFile(filepath.Join(d.dir, StateFile))
		if errors.Is(err, os.ErrNotExist) {
			missing = append(missing, d)
			continue
		}
		if err != nil {
			return SledState{}, fmt.Errorf("storage: disk %s: %w", d.serial, err)
		}
		a, err := chacha20poly1305.NewX(d.key)
		if err != nil {
			return SledState{}, err
		}
		if len(b) < a.NonceSize() {
			return SledState{}, fmt.Errorf("%w: disk %s: the sealed state is truncated", ErrWrongKey, d.serial)
		}
		pt, err := a.Open(nil, b[:a.NonceSize()], b[a.NonceSize():], stateAD(d.serial))
		if err != nil {
			return SledState{}, fmt.Errorf("%w: disk %s: the sealed state does not open with its data key", ErrWrongKey, d.serial)
		}
		var got SledState
		if err := json.Unmarshal(pt, &got); err != nil {
			return SledState{}, fmt.Errorf("storage: disk %s: sealed state: %w", d.serial, err)
		}
		if st != nil && *st != got {
			return SledState{}, fmt.Errorf("storage: the data disks disagree on the sled's state (%s: %+v, others: %+v)", d.serial, got, *st)
		}
		st = &got
	}
	if st == nil {
		v := init()
		st = &v
	}
	for _, d := range missing {
		if err := s.sealState(d, *st); err != nil {
			return SledState{}, err
		}
	}
	return *st, nil
}

func (s *Store) sealState(d *disk, st SledState) error {
	a, err := chacha20poly1305.NewX(d.key)
	if err != nil {
		return err
	}
	pt, err := json.Marshal(st)
	if err != nil {
		return err
	}
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(pt)+a.Overhead())
	if _, err := io.ReadFull(s.cfg.Rand, nonce); err != nil {
		return fmt.Errorf("storage: nonce: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(d.dir, StateFile), a.Seal(nonce, nonce, pt, stateAD(d.serial)), 0o600); err != nil {
		return fmt.Errorf("storage: disk %s: seal the sled's state: %w", d.serial, err)
	}
	return nil
}

// wraps lists the epochs d holds wrappings for, newest first.
func (d *disk) wraps() ([]uint64, error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("storage: data disk %s: %w", d.dir, err)
	}
	var out []uint64
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, wrapPrefix) || !strings.HasSuffix(n, wrapSuffix) {
			continue
		}
		ep, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, wrapPrefix), wrapSuffix), 10, 64)
		if err != nil || ep == 0 {
			continue
		}
		out = append(out, ep)
	}
	slices.Sort(out)
	slices.Reverse(out)
	return out, nil
}

func (d *disk) wrapPath(epoch uint64) string {
	return filepath.Join(d.dir, fmt.Sprintf("%s%d%s", wrapPrefix, epoch, wrapSuffix))
}

// Epochs lists, per disk serial, the epochs its data key is wrapped under
// (newest first): what a crash mid re-key leaves is visible.
func (s *Store) Epochs() map[string][]uint64 {
	out := map[string][]uint64{}
	for _, d := range s.disks {
		ws, _ := d.wraps()
		out[d.serial] = ws
	}
	return out
}

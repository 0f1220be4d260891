package bootstrap

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/rackplane/rackplane/sledagent/ledger"
	"github.com/rackplane/rackplane/trustquorum"
)

// Where the ledger lives on each M.2: its own directory, apart from the
// artifact store's files.
const (
	LedgerDir  = "bootstrap"
	LedgerFile = "trust-quorum.json"
)

// AlarmRecord is an alarm the node raised, with the peer whose message
// caused it and when. Alarms are persisted with the state: they must
// never happen, so each one must survive restarts until someone looks.
type AlarmRecord struct {
	trustquorum.Alarm
	Time time.Time `json:"time"`
}

// ledgerValue is what the ledger holds: the node's encoded persistent
// state and the alarms.
type ledgerValue struct {
	State  json.RawMessage `json:"state"`
	Alarms []AlarmRecord   `json:"alarms"`
}

// deviceChanged is the M.2 watcher's handler. An arriving device gets its
// ledger directory and is reconciled by the node goroutine.
func (a *Agent) deviceChanged(path string, present bool) error {
	dir := filepath.Join(path, LedgerDir)
	a.devMu.Lock()
	defer a.devMu.Unlock()
	i := slices.Index(a.devices, dir)
	if !present {
		if i >= 0 {
			a.devices = slices.Delete(a.devices, i, i+1)
			a.log.Warn().Str("m2", path).Msg("M.2 gone; the trust-quorum ledger continues on the others")
		}
		return nil
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("bootstrap: ledger directory on %s: %w", path, err)
	}
	if _, err := a.ledger.RemoveTemps(dir); err != nil {
		return fmt.Errorf("bootstrap: clear interrupted ledger writes on %s: %w", path, err)
	}
	if i < 0 {
		a.devices = append(a.devices, dir)
	}
	select {
	case a.m2Ch <- struct{}{}:
	default: // a reconcile is already due
	}
	return nil
}

func (a *Agent) presentDirs() []string {
	a.devMu.Lock()
	defer a.devMu.Unlock()
	return slices.Clone(a.devices)
}

// load reads the ledger from every present M.2 (bringing stale or damaged
// copies up to date) and makes the node from it. With no M.2 the node
// stays stopped until one arrives.
func (a *Agent) load() error {
	dirs := a.presentDirs()
	if len(dirs) == 0 {
		a.stop(ErrNoM2)
		return nil
	}
	res, err := a.ledger.Read(dirs)
	for _, p := range res.Problems {
		a.devErr[p.Dir] = p.Err.Error()
		a.log.Error().Err(p.Err).Str("dir", p.Dir).Msg("trust-quorum ledger unreadable or not rewritable on this M.2")
	}
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if !res.Found && len(res.Problems) > 0 {
		return fmt.Errorf("bootstrap: the trust-quorum ledger is damaged on every M.2 that has one; refusing to start " +
			"afresh and forget the sled's shares (see the log for each device)")
	}
	nodeState := trustquorum.NewPersistentState()
	var alarms []AlarmRecord
	a.setPersisted(nil)
	if res.Found {
		nodeState, err = trustquorum.DecodeState(res.Value.State)
		a.setPersisted(res.Value.State)
		if err != nil {
			return fmt.Errorf("bootstrap: the trust-quorum ledger (generation %d, from %s) does not decode: %w",
				res.Generation, res.Source, err)
		}
		alarms = res.Value.Alarms
		for _, d := range dirs {
			if !slices.ContainsFunc(res.Problems, func(p ledger.DirError) bool { return p.Dir == d }) {
				a.devGen[d] = res.Generation
				delete(a.devErr, d)
			}
		}
		if len(res.Rewritten) > 0 {
			a.log.Info().Strs("dirs", res.Rewritten).Uint64("generation", res.Generation).
				Msg("trust-quorum ledger brought up to date on M.2s that held an older one or none")
		}
	}
	a.gen = res.Generation
	a.alarms = alarms
	a.nctx = trustquorum.NewNodeCtx(a.id, nodeState)
	a.node = trustquorum.NewNode(a.nctx, trustquorum.Config{
		Rand:      a.cfg.Rand,
		RetryBase: trustquorum.Duration(a.cfg.NodeRetryBase),
		RetryMax:  trustquorum.Duration(a.cfg.NodeRetryMax),
	})
	a.seen = 0
	a.stopped = nil
	a.metrics.stopped.Set(0)
	a.metrics.generation.Set(float64(a.gen))
	a.log.Info().Uint64("generation", a.gen).Int("m2s", len(dirs)).
		Uint64("latest_committed_epoch", uint64(nodeState.LatestCommittedEpoch())).Msg("trust-quorum node loaded")
	return nil
}

// persist writes the state and alarms as the next generation to every
// present M.2; it fails only when none took it.
//
// The encoded state is copied once, into the ledger value around it, and
// not parsed again on the way to the disk (ledger.WriteEncoded); it is then
// kept as the last persisted state rather than copied for that.
func (a *Agent) persist() error {
	dirs := a.presentDirs()
	enc, err := trustquorum.EncodeState(a.nctx.PersistentState())
	if err != nil {
		return fmt.Errorf("encode trust-quorum state: %w", err)
	}
	value, err := encodeLedgerValue(enc, a.alarms)
	if err != nil {
		clear(enc)
		return fmt.Errorf("encode trust-quorum ledger: %w", err)
	}
	defer clear(value)
	start := time.Now()
	gen := a.gen + 1
	res, err := a.ledger.WriteEncoded(dirs, gen, value)
	a.metrics.persistSeconds.Observe(time.Since(start).Seconds())
	for _, f := range res.Failed {
		a.devErr[f.Dir] = f.Err.Error()
		a.log.Error().Err(f.Err).Str("dir", f.Dir).Uint64("generation", gen).Msg("trust-quorum ledger write failed on this M.2")
	}
	if err != nil {
		clear(enc)
		a.persistFailures++
		a.lastPersistErr = err.Error()
		a.metrics.persistFailures.Inc()
		return err
	}
	for _, d := range res.Written {
		a.devGen[d] = gen
		delete(a.devErr, d)
	}
	a.gen = gen
	a.metrics.generation.Set(float64(gen))
	a.setPersisted(enc)
	return nil
}

// encodeLedgerValue encodes what json.Marshal(ledgerValue{state, alarms})
// would, byte for byte, without what Marshal does to a json.RawMessage:
// validate it and copy it into its output. state is EncodeState's output,
// compact JSON already, and the bulk of the value.
func encodeLedgerValue(state []byte, alarms []AlarmRecord) ([]byte, error) {
	al, err := json.Marshal(alarms)
	if err != nil {
		return nil, err
	}
	const head, mid = `{"state":`, `,"alarms":`
	out := make([]byte, 0, len(head)+len(state)+len(mid)+len(al)+1)
	out = append(out, head...)
	out = append(out, state...)
	out = append(out, mid...)
	out = append(out, al...)
	return append(out, '}'), nil
}

// setPersisted keeps enc, the state as stored last (for status should the
// node stop), zeroing the one it replaces: it holds shares. enc becomes
// the agent's; the caller must not use it again.
func (a *Agent) setPersisted(enc []byte) {
	clear(a.persistedEnc)
	a.persistedEnc = enc
}

// reconcile runs on the node goroutine when an M.2 arrives: a stopped node
// starts again from the ledger; a running one writes its ledger onto every
// device that holds an older generation, none, or a damaged file.
func (a *Agent) reconcile() {
	if a.stopped != nil {
		a.log.Info().Msg("an M.2 arrived; restarting the trust-quorum node from its ledger")
		if err := a.load(); err != nil {
			a.stop(err)
			return
		}
		if a.stopped != nil {
			return
		}
		for _, p := range a.peers.peers() {
			a.node.OnConnect(a.nctx, p)
		}
		_ = a.finish(nil)
		return
	}
	dirs := a.presentDirs()
	var stale []string
	for _, d := range dirs {
		res, err := a.ledger.Read([]string{d})
		switch {
		case err != nil || len(res.Problems) > 0 || !res.Found || res.Generation < a.gen:
			stale = append(stale, d)
		case res.Generation > a.gen:
			// A device holds a generation this node never wrote since
			// it started: it came from elsewhere, or from a run that
			// started without it. The running node's state is what it
			// acknowledged since; it must win any later read.
			a.log.Error().Str("dir", d).Uint64("found", res.Generation).Uint64("held", a.gen).
				Msg("an M.2 holds a newer trust-quorum ledger generation than the running node; overwriting it")
			a.gen = res.Generation
			stale = dirs
		}
		if res.Found {
			clear(res.Value.State)
		}
	}
	if len(stale) == 0 {
		return
	}
	if err := a.persist(); err != nil {
		a.stop(err)
		return
	}
	a.log.Info().Strs("dirs", stale).Uint64("generation", a.gen).Msg("trust-quorum ledger reconciled onto arriving M.2")
}

package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
)

// Defaults for the upload limits (Config fields left zero).
const (
	// DefaultUploadConcurrency: operators upload a release now and then;
	// two at once covers a retry beside a slow upload, and a third
	// client waits rather than filling the disk.
	DefaultUploadConcurrency = 2
	// DefaultUploadIdleTimeout cuts off a client that sends nothing.
	DefaultUploadIdleTimeout = time.Minute
	// uploadRetryAfter is what a refused client is told to wait: long
	// enough not to hammer, short beside an upload's minutes.
	uploadRetryAfter = 10 * time.Second
	// budgetStep is how much temp space a body of unknown length
	// reserves at a time as it arrives.
	budgetStep = 64 << 20
)

// uploadGate bounds what the uploads in progress may hold together: how
// many run at once, and how many bytes of temp files they may have on
// disk. A body with a declared length reserves all of it before its first
// byte is read; one without reserves step by step as it arrives. Either
// way no upload writes a byte the budget has not granted, so N slow or
// hostile clients hold at most the budget, never the disk.
type uploadGate struct {
	slots chan struct{}

	mu     sync.Mutex
	budget int64
	held   int64
}

func newUploadGate(concurrency int, budget int64) *uploadGate {
	return &uploadGate{slots: make(chan struct{}, concurrency), budget: budget}
}

// enter takes an upload slot, or says the uploads in progress fill them.
func (g *uploadGate) enter() (leave func(), err error) {
	select {
	case g.slots <- struct{}{}:
		return func() { <-g.slots }, nil
	default:
		return nil, fault.New(fault.Busy, api.CodeTooManyUploads,
			"%d uploads are already in progress, as many as this Nexus runs at once (see --upload-concurrency); "+
				"retry when one finishes", cap(g.slots)).After(uploadRetryAfter)
	}
}

// reserve takes n bytes of the temp-space budget.
func (g *uploadGate) reserve(n int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held+n > g.budget {
		return fault.New(fault.Busy, api.CodeUploadBudget,
			"the uploads in progress hold %d of the %d bytes of temp space this Nexus allows "+
				"(see --upload-temp-budget), and this one needs %d more; retry when one finishes",
			g.held, g.budget, n).After(uploadRetryAfter)
	}
	g.held += n
	return nil
}

func (g *uploadGate) release(n int64) {
	g.mu.Lock()
	g.held -= n
	g.mu.Unlock()
}

// heldBytes is the temp space reserved now (for tests and status).
func (g *uploadGate) heldBytes() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}

// reservation is one upload's share of the budget.
type reservation struct {
	g        *uploadGate
	reserved int64
	// limit is the most this upload may ever reserve (its declared
	// length, or the upload limit plus the byte that detects "over").
	limit int64
}

// grow makes the reservation cover total bytes.
func (r *reservation) grow(total int64) error {
	if total <= r.reserved {
		return nil
	}
	// A step at a time keeps the lock cold; near the budget's end, only
	// what is needed.
	want := max(min(max(total, r.reserved+budgetStep), r.limit), total)
	err := r.g.reserve(want - r.reserved)
	if err != nil && want > total {
		want = total
		err = r.g.reserve(want - r.reserved)
	}
	if err != nil {
		return err
	}
	r.reserved = want
	return nil
}

func (r *reservation) release() {
	r.g.release(r.reserved)
	r.reserved = 0
}

// budgetedReader hands out a body's bytes only once the reservation
// covers them, so what reaches the temp file was granted first.
type budgetedReader struct {
	r     io.Reader
	res   *reservation
	total int64
	err   error
}

func (b *budgetedReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	if n > 0 {
		if gerr := b.res.grow(b.total + int64(n)); gerr != nil {
			b.err = gerr
			return 0, gerr
		}
		b.total += int64(n)
	}
	return n, err
}

// errBudget reports whether err is the budget refusing a body part-way.
func errBudget(err error) (*fault.Error, bool) {
	var f *fault.Error
	if errors.As(err, &f) && f.Code == api.CodeUploadBudget {
		return f, true
	}
	return nil, false
}

// admitUpload checks that an upload of length bytes (-1: unknown) fits
// the depot's disk and the temp-space budget, and reserves its share.
func (a *App) admitUpload(length int64) (*reservation, error) {
	if length > a.gate.budget {
		return nil, fault.New(fault.TooLarge, api.CodeBodyTooLarge,
			"the upload is %d bytes, more than the %d bytes of temp space this Nexus allows uploads "+
				"(see --upload-temp-budget)", length, a.gate.budget)
	}
	// Each artifact is written once, where it will live, but composite
	// artifacts' parts are written too (a host image's phases beside the
	// image): a release may take up to twice its size.
	need := 2 * int64(budgetStep)
	if length >= 0 {
		need = 2 * length
	}
	if free, err := a.depot.Free(); err == nil && free < need {
		return nil, fault.New(fault.InsufficientStorage, api.CodeDepotFull,
			"this Nexus's depot disk has %d bytes free and the upload needs about %d "+
				"(the archive, then its artifacts); free space or prune old repos first", free, need)
	}
	r := &reservation{g: a.gate, limit: a.cfg.UploadMaxBytes + 1}
	if length >= 0 {
		r.limit = length
		if err := r.grow(length); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// bodyError is what a failed read of an upload's body after n bytes
// tells the client.
func (a *App) bodyError(ctx context.Context, err error, n int64) error {
	if f, ok := errBudget(err); ok {
		return f
	}
	// Before the context: a connection's read error cancels it, and a
	// stalled client is still there to be told.
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fault.Wrap(err, fault.Stalled, api.CodeUploadStalled,
			"the client sent nothing for %s after %d bytes, so the upload was cut off and nothing was kept; "+
				"send it again", a.cfg.UploadIdleTimeout, n)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fault.Wrap(err, fault.Invalid, api.CodeInvalidBody,
		"the upload ended early after %d bytes (%v); send it again", n, err)
}

// diskError is a failed write to the depot's disk: a full disk is the
// operator's to fix and says so; anything else is internal.
func diskError(err error, what string) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fault.Wrap(err, fault.InsufficientStorage, api.CodeDepotFull,
			"this Nexus's depot disk filled up during the upload; nothing was kept; free space or prune old repos first")
	}
	return fmt.Errorf("%s: %w", what, err)
}

// UploadIdleTimeout is how long an upload's client may send nothing
// before the HTTP edge cuts it off.
func (a *App) UploadIdleTimeout() time.Duration { return a.cfg.UploadIdleTimeout }

// UploadTempHeld is the temp space the uploads in progress hold now.
func (a *App) UploadTempHeld() int64 { return a.gate.heldBytes() }

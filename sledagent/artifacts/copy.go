package artifacts

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/reqid"
)

// maxCopyEntries bounds the copies remembered (finished ones are dropped
// first, oldest first).
const maxCopyEntries = 1000

// copyBackoffMax caps the wait between attempts of one copy.
const copyBackoffMax = 5 * time.Second

// After a copy from a source fails, the next copy from the same source
// waits for a cool-down: DefaultCopyCooldown at first, doubling per failed
// copy in a row up to DefaultCopyCooldownMax, at least half of it always
// waited. Without it Nexus asking again for a copy that just failed would
// send the sled at the broken source once more, attempts and all.
const (
	DefaultCopyCooldown    = time.Second
	DefaultCopyCooldownMax = time.Minute
)

func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.ResponseHeaderTimeout = 30 * time.Second
	// No overall timeout: artifacts are large; a stalled body is caught by
	// the idle timeout instead.
	return &http.Client{Transport: t}
}

// copier runs copy-from-depot requests: at most MaxConcurrentCopies at
// once, at most one per hash, each continuing after the request that
// started it has been answered.
type copier struct {
	s    *Store
	rnd  *backoff.Rand
	sem  chan struct{}
	mu   sync.Mutex
	jobs map[string]*api.ArtifactCopy // latest copy of each hash
	// stopped is set once the store stops: no copy starts after it, so
	// that the store's wait for its copies sees every one (a WaitGroup
	// must not grow from zero while it is waited on).
	stopped bool
	// cool holds the cool-downs of sources whose last copies failed, by
	// origin (scheme://host:port).
	cool map[string]*cooldown
}

// cooldown is one source's back-off between failed copies.
type cooldown struct {
	sched *backoff.Schedule
	until time.Time
}

// stop refuses new copies; the ones already started see the store's
// context cancelled.
func (c *copier) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
}

func newCopier(s *Store) *copier {
	return &copier{s: s, rnd: backoff.NewRand(s.opts.Rand), sem: make(chan struct{}, s.opts.MaxConcurrentCopies),
		jobs: map[string]*api.ArtifactCopy{}, cool: map[string]*cooldown{}}
}

// origin is the part of a source URL its cool-down is kept by: one broken
// depot fails every copy from it.
func origin(src string) string {
	u, err := url.Parse(src)
	if err != nil {
		return src
	}
	return u.Scheme + "://" + u.Host
}

// coolUntil is when copies from src may start again (zero: now).
func (c *copier) coolUntil(src string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cd := c.cool[origin(src)]; cd != nil {
		return cd.until
	}
	return time.Time{}
}

// cooled records the outcome of a copy from src: a failure starts (or
// doubles) the source's cool-down, a success ends it.
func (c *copier) cooled(src string, failed bool) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := origin(src)
	if !failed {
		delete(c.cool, key)
		return 0
	}
	cd := c.cool[key]
	if cd == nil {
		cd = &cooldown{sched: backoff.New(backoff.Policy{Initial: c.s.opts.CopyCooldown,
			Max: c.s.opts.CopyCooldownMax, Jitter: 0.5}, c.rnd)}
		c.cool[key] = cd
	}
	d := cd.sched.NextBackOff()
	cd.until = c.s.clk.Now().Add(d)
	return d
}

// busy reports whether a copy of sha is queued or running.
func (c *copier) busy(sha string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	j := c.jobs[sha]
	return j != nil && !j.Finished()
}

func (c *copier) update(sha string, fn func(*api.ArtifactCopy)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if j := c.jobs[sha]; j != nil { // only finished copies are ever pruned
		fn(j)
	}
}

func (c *copier) get(sha string) (api.ArtifactCopy, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j := c.jobs[sha]
	if j == nil {
		return api.ArtifactCopy{}, false
	}
	return cloneCopy(j), true
}

func cloneCopy(j *api.ArtifactCopy) api.ArtifactCopy {
	out := *j
	out.Written = slices.Clone(j.Written)
	out.Failed = slices.Clone(j.Failed)
	return out
}

// pruneLocked forgets finished copies older than the retention, and the
// oldest finished ones beyond maxCopyEntries.
func (c *copier) pruneLocked() {
	now := c.s.clk.Now()
	var finished []*api.ArtifactCopy
	for sha, j := range c.jobs {
		if !j.Finished() {
			continue
		}
		if now.Sub(j.TimeFinished) > c.s.opts.CopyRetention {
			delete(c.jobs, sha)
			continue
		}
		finished = append(finished, j)
	}
	if excess := len(c.jobs) - maxCopyEntries; excess > 0 {
		slices.SortFunc(finished, func(a, b *api.ArtifactCopy) int { return a.TimeFinished.Compare(b.TimeFinished) })
		for _, j := range finished[:min(excess, len(finished))] {
			delete(c.jobs, j.SHA256)
		}
	}
}

// Copies lists copies in flight and those finished within the retention,
// newest first.
func (s *Store) Copies() api.ArtifactCopyList {
	c := s.copies
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pruneLocked()
	out := api.ArtifactCopyList{Copies: make([]api.ArtifactCopy, 0, len(c.jobs))}
	for _, j := range c.jobs {
		out.Copies = append(out.Copies, cloneCopy(j))
		if !j.Finished() {
			out.InFlight++
		}
	}
	slices.SortFunc(out.Copies, func(a, b api.ArtifactCopy) int {
		if d := b.TimeQueued.Compare(a.TimeQueued); d != 0 {
			return d
		}
		return strings.Compare(a.SHA256, b.SHA256)
	})
	return out
}

// inFlight maps the hashes being copied (queued or running) at generation
// gen to their sources.
func (c *copier) inFlight(gen uint64) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out map[string]string
	for _, j := range c.jobs {
		if !j.Finished() && j.Generation == gen {
			if out == nil {
				out = map[string]string{}
			}
			out[j.SHA256] = j.SourceURL
		}
	}
	return out
}

// ErrStopped is why StartCopy refuses a copy once the store has stopped
// (the cause of an Unavailable fault).
var ErrStopped = errors.New("artifacts: the store has stopped")

// Copy returns the latest copy of sha, if one is remembered.
func (s *Store) Copy(sha string) (api.ArtifactCopy, bool) { return s.copies.get(sha) }

// StartCopy starts copying sha from a depot to every device in use that
// lacks it. It answers at once: done (started=false) when every device
// already holds it; the copy already queued or running for sha, if any
// (no second copy starts); or a new queued copy. The copy itself runs
// after the reply; Copy and Copies show its progress and outcome. Once the
// store has stopped it refuses with ErrStopped (in an Unavailable fault).
func (s *Store) StartCopy(ctx context.Context, sha string, gen uint64, req api.ArtifactCopyRequest) (api.ArtifactCopy, bool, error) {
	devs, err := s.admit(sha, gen)
	if err != nil {
		return api.ArtifactCopy{}, false, err
	}
	src := resolveSource(req.SourceURL, sha)
	_, lacking := split(devs, sha)
	c := s.copies
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return api.ArtifactCopy{}, false, fault.Wrap(ErrStopped, fault.Unavailable, api.CodeServiceUnavailable,
			"the sled agent is stopping; ask again once it is back")
	}
	c.pruneLocked()
	if j := c.jobs[sha]; j != nil && !j.Finished() {
		return cloneCopy(j), true, nil
	}
	now := s.clk.Now()
	j := &api.ArtifactCopy{SHA256: sha, Generation: gen, SourceURL: src, State: api.CopyQueued,
		RequestID: reqid.From(ctx), TimeQueued: now}
	c.jobs[sha] = j
	if len(lacking) == 0 {
		j.State, j.AlreadyPresent, j.TimeFinished = api.CopyDone, true, now
		s.metrics.copies.WithLabelValues("already_present").Inc()
		return cloneCopy(j), false, nil
	}
	s.metrics.copiesInFlight.Inc()
	s.wg.Add(1)
	go c.run(sha, src)
	return cloneCopy(j), true, nil
}

// resolveSource appends the depot path to a bare base URL.
func resolveSource(raw, sha string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = api.DepotArtifactPath(sha)
	}
	return u.String()
}

func (c *copier) run(sha, src string) {
	s := c.s
	defer s.wg.Done()
	j, _ := c.get(sha)
	log := s.log.With().Str("sha256", sha).Uint64("generation", j.Generation).Str("source_url", src).
		Str("request_id", j.RequestID).Logger()

	if until := c.coolUntil(src); until.After(s.clk.Now()) {
		// The source failed the last copies asked of it: this one stays
		// queued (and so in flight for Nexus, which does not ask again)
		// until its cool-down has passed.
		log.Info().Time("until", until).Msg("copy waits: the source failed recently")
		if err := s.clk.Sleep(s.ctx, until.Sub(s.clk.Now())); err != nil {
			c.finish(sha, commitResult{}, errors.New("the sled agent stopped before the copy started"), &log)
			return
		}
	}
	select {
	case c.sem <- struct{}{}:
		defer func() { <-c.sem }()
	case <-s.ctx.Done():
		c.finish(sha, commitResult{}, errors.New("the sled agent stopped before the copy started"), &log)
		return
	}
	c.update(sha, func(j *api.ArtifactCopy) { j.State, j.TimeStarted = api.CopyRunning, s.clk.Now() })

	s.mu.RLock()
	devs, wanted, gen := s.activeLocked(), s.wanted[sha], s.gen
	s.mu.RUnlock()
	if !wanted {
		c.finish(sha, commitResult{}, fmt.Errorf("artifact left the sled's artifact config (now generation %d) before the copy started", gen), &log)
		return
	}
	holders, lacking := split(devs, sha)
	if len(lacking) == 0 {
		c.update(sha, func(j *api.ArtifactCopy) { j.AlreadyPresent = true })
		c.finish(sha, commitResult{generation: gen}, nil, &log)
		return
	}
	if len(holders) > 0 {
		// A sibling M.2 holds it: copy locally rather than over the network.
		res, from, err := s.localCopy(s.ctx, sha, holders, lacking, func(n int64) {
			c.update(sha, func(j *api.ArtifactCopy) { j.BytesDone = n })
		})
		if err == nil {
			c.update(sha, func(j *api.ArtifactCopy) { j.LocalSource = from })
			c.finish(sha, res, nil, &log)
			return
		}
		log.Warn().Err(err).Msg("local copy from a sibling M.2 failed; fetching from the source instead")
		_, lacking = split(devs, sha)
	}
	res, err := c.fetch(sha, src, lacking, &log)
	if s.ctx.Err() == nil {
		if d := c.cooled(src, err != nil); d > 0 {
			log.Info().Dur("cooldown", d).Msg("copies from this source wait before the next one starts")
		}
	}
	c.finish(sha, res, err, &log)
}

func (c *copier) finish(sha string, res commitResult, err error, log *zerolog.Logger) {
	s := c.s
	result := "done"
	c.update(sha, func(j *api.ArtifactCopy) {
		j.TimeFinished = s.clk.Now()
		j.Written, j.Failed = res.written, res.failed
		if err != nil {
			j.State, j.Error, result = api.CopyFailed, copyErrorMessage(err, j.SourceURL), "failed"
		} else {
			j.State = api.CopyDone
		}
		if j.AlreadyPresent {
			result = "already_present"
		}
	})
	s.metrics.copiesInFlight.Dec()
	s.metrics.copies.WithLabelValues(result).Inc()
	if err != nil {
		log.Warn().Err(err).Strs("written", res.written).Msg("copy from depot failed; nothing was kept")
	} else {
		log.Info().Strs("written", res.written).Msg("copy from depot finished")
	}
	// A hash the config dropped during the copy may have been renamed in
	// just before; the reconciler removes it.
	s.TriggerReconcile()
}

func copyErrorMessage(err error, src string) string {
	var mismatch *hashMismatchError
	if errors.As(err, &mismatch) {
		return fmt.Sprintf("source %s returned the wrong bytes: %v; nothing was kept", src, mismatch)
	}
	return err.Error()
}

// terminalError is a copy failure that retrying cannot fix.
type terminalError struct{ err error }

func (e *terminalError) Error() string { return e.err.Error() }
func (e *terminalError) Unwrap() error { return e.err }

// fetch downloads src into every device in devs, resuming an interrupted
// transfer with a Range request from the last byte received (the hash
// state is kept, so resumed bytes are hashed in order), and commits it once
// the whole artifact verified.
//
// The bytes land in partial copies (partial.go) that outlive the sled
// agent: a copy that stops part-way, because the agent stops or the source
// keeps failing, leaves them for the next copy from that source to resume.
func (c *copier) fetch(sha, src string, devs []*device, log *zerolog.Logger) (commitResult, error) {
	s := c.s
	sp := s.openPartial(sha, src, devs, log)
	if sp.live() == 0 {
		return commitResult{failed: sp.failures()}, &allFailedError{sp.failures()}
	}
	total := sp.length
	if sp.n > 0 {
		c.update(sha, func(j *api.ArtifactCopy) { j.BytesDone, j.BytesTotal = sp.n, max(total, 0) })
		log.Info().Int64("bytes_done", sp.n).Int64("bytes_total", total).Strs("m2", paths(liveDevices(sp))).
			Msg("copy from depot resumes a partial copy kept from before")
	}
	failures := 0
	retry := backoff.New(backoff.Policy{Initial: s.opts.CopyBackoff, Max: copyBackoffMax, Jitter: 0.5}, c.rnd)
	var lastErr error
	for attempt := 0; ; attempt++ {
		if total >= 0 && sp.n == total {
			break // every byte is here already; the commit checks them
		}
		if attempt > 0 {
			if failures >= s.opts.CopyAttempts {
				sp.suspend()
				return commitResult{failed: sp.failures()}, fmt.Errorf("gave up after %d attempts in a row without progress: %w", failures, lastErr)
			}
			if err := s.clk.Sleep(s.ctx, retry.NextBackOff()); err != nil {
				sp.suspend()
				return commitResult{}, fmt.Errorf("the sled agent stopped during the copy: %w", err)
			}
		}
		resume := sp.n > 0
		c.update(sha, func(j *api.ArtifactCopy) {
			j.Attempts++
			if resume {
				j.Resumes++
			}
		})
		progressed, err := c.attempt(sha, src, sp, &total)
		if err == nil {
			break
		}
		if s.ctx.Err() != nil {
			sp.suspend()
			return commitResult{failed: sp.failures()}, err
		}
		var term *terminalError
		if errors.As(err, &term) {
			sp.abort()
			return commitResult{failed: sp.failures()}, err
		}
		if progressed {
			failures = 0
			retry.Reset()
		}
		failures++
		lastErr = err
		log.Warn().Err(err).Int64("bytes_done", sp.n).Int64("bytes_total", total).
			Msg("copy from depot interrupted; resuming")
	}
	res, err := sp.commit(log)
	if err == nil {
		s.metrics.resumedBytes.Add(float64(sp.resumed))
	}
	return res, err
}

// attempt makes one request for the bytes from sp.n on and writes what
// arrives into sp. It returns nil once the whole artifact has arrived.
func (c *copier) attempt(sha, src string, sp *spool, total *int64) (progressed bool, err error) {
	s := c.s
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return false, &terminalError{fmt.Errorf("bad source URL: %w", err)}
	}
	j, _ := c.get(sha)
	if j.RequestID != "" {
		req.Header.Set(reqid.Header, j.RequestID)
	}
	offset := sp.n
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return false, fmt.Errorf("request to %s: %w", src, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		if offset > 0 {
			// The source ignored the Range: take the whole artifact again.
			if err := sp.reset(); err != nil {
				return false, &terminalError{err}
			}
		}
		*total = resp.ContentLength
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		start, size, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != offset {
			if rerr := sp.reset(); rerr != nil {
				return false, &terminalError{rerr}
			}
			return false, fmt.Errorf("source answered a request for bytes %d- with Content-Range %q; starting over",
				offset, resp.Header.Get("Content-Range"))
		}
		*total = size
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		// Our offset is past what the source holds: it is not the artifact
		// we were reading. Start over.
		if err := sp.reset(); err != nil {
			return false, &terminalError{err}
		}
		return false, fmt.Errorf("source refused to resume at byte %d (HTTP 416); starting over", offset)
	case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests:
		return false, &terminalError{fmt.Errorf("source %s answered HTTP %d: %w", src, resp.StatusCode, client.DecodeError(resp))}
	default:
		return false, fmt.Errorf("source %s answered HTTP %d: %w", src, resp.StatusCode, client.DecodeError(resp))
	}
	if *total >= 0 {
		sp.setLength(*total)
		c.update(sha, func(j *api.ArtifactCopy) { j.BytesTotal = *total })
	}

	// Abort an attempt that receives nothing for CopyIdleTimeout; the next
	// attempt resumes where this one stopped.
	idle := time.AfterFunc(s.opts.CopyIdleTimeout, cancel)
	defer idle.Stop()
	before := sp.n
	body := &ctxReader{ctx: ctx, r: resp.Body, progress: func(n int64) {
		idle.Reset(s.opts.CopyIdleTimeout)
		c.update(sha, func(j *api.ArtifactCopy) { j.BytesDone = before + n })
	}}
	_, err = sp.readFrom(body)
	progressed = sp.n > before
	var allFailed *allFailedError
	switch {
	case errors.As(err, &allFailed):
		return progressed, &terminalError{err}
	case err != nil:
		return progressed, fmt.Errorf("transfer from %s interrupted after byte %d: %w", src, sp.n, err)
	case *total >= 0 && sp.n > *total:
		return progressed, &terminalError{fmt.Errorf("source sent %d bytes, more than the %d it announced", sp.n, *total)}
	case *total >= 0 && sp.n < *total:
		return progressed, fmt.Errorf("source ended the transfer at byte %d of %d", sp.n, *total)
	}
	return progressed, nil
}

func liveDevices(sp *spool) []*device {
	var out []*device
	for _, t := range sp.targets {
		if t.live() {
			out = append(out, t.dev)
		}
	}
	return out
}

// parseContentRange reads "bytes START-END/SIZE" (SIZE may be "*", given
// back as -1).
func parseContentRange(v string) (start, size int64, err error) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, fmt.Errorf("bad Content-Range %q", v)
	}
	span, sizeStr, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, fmt.Errorf("bad Content-Range %q", v)
	}
	startStr, _, ok := strings.Cut(span, "-")
	if !ok {
		return 0, 0, fmt.Errorf("bad Content-Range %q", v)
	}
	if start, err = strconv.ParseInt(startStr, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("bad Content-Range %q: %w", v, err)
	}
	if sizeStr == "*" {
		return start, -1, nil
	}
	if size, err = strconv.ParseInt(sizeStr, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("bad Content-Range %q: %w", v, err)
	}
	return start, size, nil
}

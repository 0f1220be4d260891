package main

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/internal/humanize"
)

type uploadOptions struct {
	wait        bool
	waitTimeout time.Duration
}

func repoUpload(ctx context.Context, e *env, args []string, opt uploadOptions) error {
	if len(args) != 1 {
		return usageError("repo upload takes one argument: the repository zip")
	}
	if opt.wait && opt.waitTimeout <= 0 {
		return usageError("--wait-timeout must be positive")
	}
	path := args[0]
	f, size, err := openZip(path)
	if err != nil {
		return err
	}
	defer f.Close()
	p := newProgress(e, "upload", size)
	p.start()
	res, err := e.streaming.RepoUpload(ctx, filepath.Base(path), f, size, p.sent)
	p.finish(err == nil)
	if err != nil {
		return err
	}
	if !e.json {
		fmt.Fprintln(e.out, uploadText(res))
	}
	if opt.wait {
		if err := waitReplicated(ctx, e, res.Repo.SystemVersion, res.Generation, opt.waitTimeout); err != nil {
			return err
		}
	}
	if e.json {
		return printJSON(e.out, res)
	}
	return nil
}

// uploadText is what an upload did: Nexus's own sentence, which says
// what an inserted, repeated, restored or replacing upload means and what
// may be done next.
func uploadText(res api.TufRepoUpload) string {
	if res.Message == "" {
		// A Nexus older than the message.
		return fmt.Sprintf("system version %s %s: %d artifacts, %s, generation %d", res.Repo.SystemVersion,
			strings.ReplaceAll(res.Status, "_", " "), res.Repo.ArtifactCount, humanize.Bytes(res.Repo.TotalBytes), res.Generation)
	}
	return res.Message
}

// openZip opens a release archive and checks, before a byte is sent, that
// it is a zip: a local file header first, and an end-of-central-directory
// record that archive/zip can read the directory from. Nexus checks far
// more; this only saves sending a whole file of the wrong kind.
func openZip(path string) (*os.File, int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, 0, fileProblem("repo upload", path, err)
	}
	if fi.IsDir() {
		return nil, 0, fail("is_a_directory", "repo upload: %s is a directory; give the release's zip file", path)
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fail("not_a_file", "repo upload: %s is not a regular file; give the release's zip file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fileProblem("repo upload", path, err)
	}
	size := fi.Size()
	head := make([]byte, 4)
	if _, err := io.ReadFull(f, head); err != nil || !bytes.Equal(head, []byte("PK\x03\x04")) {
		f.Close()
		return nil, 0, fail(api.CodeNotAZip, "repo upload: %s is not a zip archive (%s); a release is the .zip its build made",
			path, describeHead(head, size))
	}
	if _, err := zip.NewReader(f, size); err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		f.Close()
		return nil, 0, fail(api.CodeTruncatedArchive, "repo upload: %s starts like a zip but its central directory cannot be read "+
			"(truncated or damaged); nothing was sent", path)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, fileProblem("repo upload", path, err)
	}
	return f, size, nil
}

// describeHead says what a file that is not a zip starts like.
func describeHead(head []byte, size int64) string {
	switch {
	case size == 0:
		return "it is empty"
	case size < 4:
		return fmt.Sprintf("it is only %d bytes long", size)
	case head[0] == 0x1f && head[1] == 0x8b:
		return "it is gzip-compressed"
	case head[0] == '{' || head[0] == '[':
		return "it looks like JSON"
	}
	return fmt.Sprintf("it starts with the bytes % x, not a zip's 50 4b 03 04", head)
}

// progress shows a long operation on stderr: one line redrawn in place
// on a terminal, plain lines at milestones otherwise, nothing under
// --json (stderr then carries only errors).
type progress struct {
	w     io.Writer
	mode  progressMode
	clock clock.Clock
	what  string
	total int64
	begin time.Time

	mu        sync.Mutex
	bytes     int64
	allSent   time.Time // when the last byte went
	quarter   int64     // the last quarter reported in line mode
	lastLine  time.Time
	lineWidth int
	drawn     bool

	stop chan struct{}
	done chan struct{}
}

type progressMode int

const (
	progressNone progressMode = iota
	progressLines
	progressBar
)

// verifyingEvery is how often line mode says the server is still at it.
const verifyingEvery = 15 * time.Second

func newProgress(e *env, what string, total int64) *progress {
	mode := progressLines
	switch {
	case e.json:
		mode = progressNone
	case e.terminal:
		mode = progressBar
	}
	return &progress{w: e.errOut, mode: mode, clock: e.clock, what: what, total: total, begin: e.clock.Now(),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// start begins the redraws that show time passing while no byte moves
// (Nexus verifying what it received).
func (p *progress) start() {
	if p.mode == progressLines {
		p.mu.Lock()
		p.printLine(fmt.Sprintf("%s: sending %s", p.what, humanize.Bytes(p.total)))
		p.mu.Unlock()
	}
	go func() {
		defer close(p.done)
		if p.mode == progressNone {
			return
		}
		t := p.clock.NewTimer(time.Second)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C():
				p.tick()
				t.Reset(time.Second)
			}
		}
	}()
}

// sent is the upload's progress callback.
func (p *progress) sent(n, _ int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bytes = n
	now := p.clock.Now()
	if n >= p.total && p.allSent.IsZero() {
		p.allSent = now
	}
	switch p.mode {
	case progressBar:
		if now.Sub(p.lastLine) >= 200*time.Millisecond || n >= p.total {
			p.drawBar(now)
		}
	case progressLines:
		if p.total > 0 {
			if q := 4 * n / p.total; q > p.quarter && q < 4 {
				p.quarter = q
				p.printLine(fmt.Sprintf("%s: %d%% sent (%s of %s), %s elapsed", p.what, 25*q, humanize.Bytes(n),
					humanize.Bytes(p.total), humanize.Duration(now.Sub(p.begin))))
			}
		}
		if n >= p.total && p.quarter < 4 {
			p.quarter = 4
			p.printLine(fmt.Sprintf("%s: all %s sent in %s; Nexus is verifying the release", p.what, humanize.Bytes(p.total),
				humanize.Duration(now.Sub(p.begin))))
		}
	}
}

func (p *progress) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	switch p.mode {
	case progressBar:
		p.drawBar(now)
	case progressLines:
		if !p.allSent.IsZero() && now.Sub(p.lastLine) >= verifyingEvery {
			p.printLine(fmt.Sprintf("%s: Nexus is still verifying, %s since the last byte (%s in all)", p.what,
				humanize.Duration(now.Sub(p.allSent)), humanize.Duration(now.Sub(p.begin))))
		}
	}
}

// printLine writes one plain line; p.mu is held.
func (p *progress) printLine(s string) {
	fmt.Fprintln(p.w, s)
	p.lastLine = p.clock.Now()
}

// drawBar redraws the bar line in place; p.mu is held.
func (p *progress) drawBar(now time.Time) {
	p.lastLine = now
	elapsed := now.Sub(p.begin)
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(p.bytes) / float64(p.total)
	}
	const width = 30
	filled := int(pct / 100 * width)
	bar := strings.Repeat("#", filled) + strings.Repeat("-", width-filled)
	var line string
	if p.allSent.IsZero() {
		rate := 0.0
		if s := elapsed.Seconds(); s > 0 {
			rate = float64(p.bytes) / s
		}
		left := "--"
		if rate > 0 {
			left = humanize.Duration(time.Duration(float64(p.total-p.bytes) / rate * float64(time.Second)))
		}
		line = fmt.Sprintf("[%s] %5.1f%% %s/%s %s/s, %s elapsed, about %s left", bar, pct, humanize.Bytes(p.bytes),
			humanize.Bytes(p.total), humanize.Bytes(int64(rate)), humanize.Duration(elapsed), left)
	} else {
		line = fmt.Sprintf("[%s] %5.1f%% %s sent in %s; Nexus verifying for %s", bar, pct, humanize.Bytes(p.total),
			humanize.Duration(p.allSent.Sub(p.begin)), humanize.Duration(now.Sub(p.allSent)))
	}
	p.redraw(line)
}

// redraw replaces the current terminal line with s; p.mu is held.
func (p *progress) redraw(s string) {
	pad := ""
	if n := p.lineWidth - len(s); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprint(p.w, "\r"+s+pad)
	p.lineWidth = len(s)
	p.drawn = true
}

// finish stops the redraws and ends the bar's line.
func (p *progress) finish(ok bool) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	switch p.mode {
	case progressBar:
		if ok {
			p.drawBar(now)
		}
		if p.drawn {
			fmt.Fprintln(p.w)
		}
	case progressLines:
		if ok {
			p.printLine(fmt.Sprintf("%s: done in %s", p.what, humanize.Duration(now.Sub(p.begin))))
		}
	}
}

// waitReplicated follows a repo's replication (the per-artifact counts
// Nexus's replication task last observed) until every in-service sled
// holds every artifact on every M.2 at generation gen or later.
func waitReplicated(ctx context.Context, e *env, version string, gen int64, timeout time.Duration) error {
	begin := e.clock.Now()
	w := &waitLine{e: e}
	for {
		d, err := e.nexus.RepoGet(ctx, version)
		if err != nil {
			w.end()
			return err
		}
		c := convergence(d, gen)
		now := e.clock.Now()
		w.show(fmt.Sprintf("replication: %s, %s elapsed", c.text, humanize.Duration(now.Sub(begin))), c.text)
		if c.done {
			w.end()
			if !e.json {
				fmt.Fprintf(e.out, "system version %s replicated in %s: %s\n", version, humanize.Duration(now.Sub(begin)), c.text)
			}
			return nil
		}
		if now.Sub(begin) >= timeout {
			w.end()
			return fail("not_converged", "system version %s is not on every sled after %s (%s); "+
				"rackctl repo show %s follows it", version, humanize.Duration(timeout), c.text, version)
		}
		if err := e.clock.Sleep(ctx, time.Second); err != nil {
			w.end()
			return err
		}
	}
}

// converged is how far a repo's replication is.
type converged struct {
	done bool
	text string
}

func convergence(d api.TufRepoDetail, gen int64) converged {
	if d.Repo.TimePruned != nil {
		return converged{text: "the repo was pruned meanwhile"}
	}
	complete, unseen, copying, sleds := 0, 0, 0, 0
	for _, a := range d.Artifacts {
		rep := a.Replication
		if rep == nil || rep.Generation < gen {
			unseen++
			continue
		}
		sleds = max(sleds, rep.SledsInService)
		copying = max(copying, rep.SledsCopying)
		if rep.SledsObserved == rep.SledsInService && rep.SledsHoldingAllM2s == rep.SledsInService {
			complete++
		}
	}
	n := len(d.Artifacts)
	if unseen == n {
		return converged{text: fmt.Sprintf("waiting for Nexus's replication task to observe generation %d", gen)}
	}
	if sleds == 0 && unseen == 0 {
		return converged{done: true, text: "no sled is in service, so there is nothing to copy"}
	}
	text := fmt.Sprintf("%d of %d artifacts on every M.2 of all %d sleds", complete, n, sleds)
	if copying > 0 {
		text += fmt.Sprintf(", copying to %d sled(s)", copying)
	}
	if unseen > 0 {
		text += fmt.Sprintf(", %d not observed yet", unseen)
	}
	if d.Repo.State != api.RepoStateActive && d.Repo.StateReason != "" {
		text += "; " + d.Repo.State + ": " + d.Repo.StateReason
	}
	return converged{done: complete == n, text: text}
}

// waitLine shows the wait's progress: redrawn in place on a terminal, a
// line whenever it changes (or every verifyingEvery) otherwise, nothing
// under --json.
type waitLine struct {
	e        *env
	last     string
	lastTime time.Time
	width    int
	drawn    bool
}

func (w *waitLine) show(line, state string) {
	switch {
	case w.e.json:
	case w.e.terminal:
		pad := ""
		if n := w.width - len(line); n > 0 {
			pad = strings.Repeat(" ", n)
		}
		fmt.Fprint(w.e.errOut, "\r"+line+pad)
		w.width, w.drawn = len(line), true
	default:
		now := w.e.clock.Now()
		if state != w.last || now.Sub(w.lastTime) >= verifyingEvery {
			fmt.Fprintln(w.e.errOut, line)
			w.last, w.lastTime = state, now
		}
	}
}

func (w *waitLine) end() {
	if w.drawn {
		fmt.Fprintln(w.e.errOut)
		w.drawn = false
	}
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
)

var repoListAll bool

func repoCommands() []command {
	return []command{{
		group: "repo", verb: "upload", args: "FILE", summary: "upload a TUF repository archive (zip), showing progress",
		run: repoUpload,
	}, {
		group: "repo", verb: "list", summary: "list uploaded repositories, newest first",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&repoListAll, "all", false, "include pruned repositories")
		},
		run: repoList,
	}, {
		group: "repo", verb: "show", args: "VERSION", summary: "show a repository and its artifacts",
		run: repoShow,
	}, {
		group: "repo", verb: "delete", args: "VERSION", summary: "prune a repository: its artifacts leave the sleds",
		run: repoDelete,
	}}
}

func repoUpload(ctx context.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError("repo upload takes one argument: the repository zip")
	}
	f, err := os.Open(args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	// An upload takes as long as it takes; --timeout is for small calls.
	nx, err := client.NewNexus(e.baseURL, &http.Client{})
	if err != nil {
		return err
	}
	bar := newProgressBar(e.errOut, fi.Size(), time.Now)
	res, err := nx.RepoUpload(ctx, filepath.Base(args[0]), f, fi.Size(), bar.update)
	bar.finish()
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, res)
	}
	verb := "uploaded"
	if res.Status == api.UploadAlreadyExists {
		verb = "was already uploaded"
	}
	fmt.Fprintf(e.out, "system version %s %s: %d artifacts, %s, generation %d\n", res.Repo.SystemVersion, verb,
		res.Repo.ArtifactCount, humanBytes(res.Repo.TotalBytes), res.Generation)
	return nil
}

// progressBar draws bytes sent, rate and ETA on one terminal line.
type progressBar struct {
	w     io.Writer
	total int64
	now   func() time.Time
	start time.Time

	mu    sync.Mutex
	last  time.Time
	sent  int64
	drawn bool
}

func newProgressBar(w io.Writer, total int64, now func() time.Time) *progressBar {
	t := now()
	return &progressBar{w: w, total: total, now: now, start: t}
}

func (p *progressBar) update(sent, _ int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent = sent
	if t := p.now(); t.Sub(p.last) >= 200*time.Millisecond || sent == p.total {
		p.last = t
		p.draw(t)
	}
}

func (p *progressBar) draw(t time.Time) {
	elapsed := t.Sub(p.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(p.sent) / elapsed
	}
	eta := "--"
	if rate > 0 && p.sent < p.total {
		eta = time.Duration(float64(p.total-p.sent) / rate * float64(time.Second)).Round(time.Second).String()
	} else if p.sent >= p.total {
		eta = "verifying"
	}
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(p.sent) / float64(p.total)
	}
	const width = 30
	filled := int(pct / 100 * width)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = '-'
		if i < filled {
			bar[i] = '#'
		}
	}
	fmt.Fprintf(p.w, "\r[%s] %5.1f%% %s/%s %s/s ETA %s   ", bar, pct, humanBytes(p.sent), humanBytes(p.total),
		humanBytes(int64(rate)), eta)
	p.drawn = true
}

func (p *progressBar) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func repoList(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 {
		return usageError(fmt.Sprintf("repo list takes no arguments, got %q", args))
	}
	repos, err := e.nexus.RepoList(ctx, repoListAll)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, repos)
	}
	now := time.Now()
	rows := make([][]string, 0, len(repos))
	for _, r := range repos {
		state := r.State
		if r.TimePruned != nil {
			state = "pruned by " + r.PrunedBy
		}
		kept := ""
		if r.Kept {
			kept = "yes"
		}
		rows = append(rows, []string{r.SystemVersion, strconv.Itoa(r.ArtifactCount), humanBytes(r.TotalBytes), state,
			kept, r.ValidUntil.Format("2006-01-02"), ago(r.TimeCreated, now), r.FileName})
	}
	if err := table(e.out, []string{"VERSION", "ARTIFACTS", "SIZE", "STATE", "KEPT", "VALID UNTIL", "UPLOADED", "FILE"}, rows); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "%d repo(s)\n", len(repos))
	return nil
}

func repoShow(ctx context.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError("repo show takes one argument: the system version")
	}
	d, err := e.nexus.RepoGet(ctx, args[0])
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, d)
	}
	r := d.Repo
	fmt.Fprintf(e.out, "system version  %s\nfile            %s\nsha256          %s\nstate           %s\n", r.SystemVersion,
		r.FileName, r.SHA256, r.State)
	if r.TimePruned != nil {
		fmt.Fprintf(e.out, "pruned          %s by %s\n", r.TimePruned.Format(time.RFC3339), r.PrunedBy)
	}
	fmt.Fprintf(e.out, "uploaded        %s\nvalid until     %s\nmetadata        root v%d, timestamp v%d, snapshot v%d, targets v%d\n\n",
		r.TimeCreated.Format(time.RFC3339), r.ValidUntil.Format(time.RFC3339), r.RootVersion, r.TimestampVersion,
		r.SnapshotVersion, r.TargetsVersion)
	rows := make([][]string, 0, len(d.Artifacts))
	for _, a := range d.Artifacts {
		rows = append(rows, []string{a.Name, a.Version, a.Kind, humanBytes(a.Length), a.SHA256[:16], strconv.Itoa(a.NexusCopies)})
	}
	return table(e.out, []string{"NAME", "VERSION", "KIND", "SIZE", "SHA256", "NEXUS COPIES"}, rows)
}

func repoDelete(ctx context.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError("repo delete takes one argument: the system version")
	}
	res, err := e.nexus.RepoDelete(ctx, args[0])
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, res)
	}
	if res.AlreadyPruned {
		fmt.Fprintf(e.out, "system version %s was already pruned\n", args[0])
		return nil
	}
	fmt.Fprintf(e.out, "system version %s pruned (generation %d); upload it again to bring it back\n", args[0], res.Generation)
	return nil
}

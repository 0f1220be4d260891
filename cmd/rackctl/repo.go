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
	"strings"
	"sync"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/humanize"
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
	nx = nx.WithToken(e.token)
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
		res.Repo.ArtifactCount, humanize.Bytes(res.Repo.TotalBytes), res.Generation)
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
	fmt.Fprintf(p.w, "\r[%s] %5.1f%% %s/%s %s/s ETA %s   ", bar, pct, humanize.Bytes(p.sent), humanize.Bytes(p.total),
		humanize.Bytes(int64(rate)), eta)
	p.drawn = true
}

func (p *progressBar) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.w)
	}
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
	var troubled []api.TufRepo
	for _, r := range repos {
		state := repoStateText(r)
		if r.TimePruned != nil {
			state = "pruned by " + r.PrunedBy
		} else if r.State != api.RepoStateActive {
			troubled = append(troubled, r)
		}
		kept := ""
		if r.Kept {
			kept = "yes"
		}
		rows = append(rows, []string{r.SystemVersion, strconv.Itoa(r.ArtifactCount), humanize.Bytes(r.TotalBytes), state,
			kept, r.ValidUntil.Format("2006-01-02"), humanize.Ago(now, r.TimeCreated), r.FileName})
	}
	if err := table(e.out, []string{"VERSION", "ARTIFACTS", "SIZE", "STATE", "KEPT", "VALID UNTIL", "UPLOADED", "FILE"}, rows); err != nil {
		return err
	}
	// A repo in trouble says why below the table, where a wide table
	// cannot truncate it.
	for _, r := range troubled {
		fmt.Fprintf(e.out, "! %s is %s: %s\n", r.SystemVersion, r.State, r.StateReason)
	}
	fmt.Fprintf(e.out, "%d repo(s)\n", len(repos))
	return nil
}

// repoStateText shouts a state that needs the operator's attention.
func repoStateText(r api.TufRepo) string {
	if r.State == api.RepoStateActive {
		return r.State
	}
	return strings.ToUpper(r.State) + " (!)"
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
		r.FileName, r.SHA256, repoStateText(r))
	if r.StateReason != "" {
		fmt.Fprintf(e.out, "reason          %s\n", r.StateReason)
	}
	if r.TimePruned != nil {
		fmt.Fprintf(e.out, "pruned          %s by %s\n", r.TimePruned.Format(time.RFC3339), r.PrunedBy)
	}
	fmt.Fprintf(e.out, "uploaded        %s\nvalid until     %s\nmetadata        root v%d, timestamp v%d, snapshot v%d, targets v%d\n",
		r.TimeCreated.Format(time.RFC3339), r.ValidUntil.Format(time.RFC3339), r.RootVersion, r.TimestampVersion,
		r.SnapshotVersion, r.TargetsVersion)
	fmt.Fprintf(e.out, "replication     %s\n\n", replicationSummary(d.Artifacts, time.Now()))
	rows := make([][]string, 0, len(d.Artifacts))
	for _, a := range d.Artifacts {
		holding, full := sledCounts(a.Replication)
		rows = append(rows, []string{a.Name, a.Version, a.Kind, humanize.Bytes(a.Length), a.SHA256[:16], holding, full,
			strconv.Itoa(a.NexusCopies)})
	}
	return table(e.out, []string{"NAME", "VERSION", "KIND", "SIZE", "SHA256", "SLEDS HOLDING", "ON EVERY M.2", "NEXUS COPIES"}, rows)
}

// sledCounts renders an artifact's replication as "holding/in service"
// and "on every M.2/in service", noting copies in flight and sleds that
// did not answer; "-" when the Nexus has not observed it.
func sledCounts(rep *api.ArtifactReplication) (holding, full string) {
	if rep == nil {
		return "-", "-"
	}
	holding = fmt.Sprintf("%d/%d", rep.SledsHolding, rep.SledsInService)
	full = fmt.Sprintf("%d/%d", rep.SledsHoldingAllM2s, rep.SledsInService)
	var notes []string
	if rep.SledsCopying > 0 {
		notes = append(notes, fmt.Sprintf("%d copying", rep.SledsCopying))
	}
	if n := rep.SledsInService - rep.SledsObserved; n > 0 {
		notes = append(notes, fmt.Sprintf("%d unknown", n))
	}
	if len(notes) > 0 {
		holding += " (" + strings.Join(notes, ", ") + ")"
	}
	return holding, full
}

// replicationSummary says how many of the artifacts every sled holds on
// every M.2, and when the answering Nexus observed it.
func replicationSummary(arts []api.TufRepoArtifact, now time.Time) string {
	var seen *api.ArtifactReplication
	complete, unseen := 0, 0
	for _, a := range arts {
		rep := a.Replication
		if rep == nil {
			unseen++
			continue
		}
		seen = rep
		if rep.SledsInService > 0 && rep.SledsHoldingAllM2s == rep.SledsInService {
			complete++
		}
	}
	if seen == nil {
		return "not observed yet by this Nexus's replication task"
	}
	out := fmt.Sprintf("%d of %d artifacts on every M.2 of all %d sleds (observed %s at generation %d)",
		complete, len(arts), seen.SledsInService, humanize.Ago(now, seen.TimeObserved), seen.Generation)
	if unseen > 0 {
		out += fmt.Sprintf("; %d not observed yet", unseen)
	}
	return out
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

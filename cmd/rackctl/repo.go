package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/humanize"
)

func repoCommands() []command {
	var listAll bool
	var up uploadOptions
	return []command{{
		group: "repo", verb: "upload", args: "FILE", summary: "upload a TUF repository archive (zip), showing progress",
		long: "The file is checked to be a zip before anything is sent. Progress goes to stderr: a bar on a\n" +
			"terminal, a line per quarter otherwise, nothing under --json. With --wait, rackctl then follows\n" +
			"replication until every sled holds every artifact on each of its M.2s.",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&up.wait, "wait", false, "after the upload, wait until every sled holds the release on every M.2")
			fs.DurationVar(&up.waitTimeout, "wait-timeout", 30*time.Minute, "give up waiting for replication after this long")
		},
		run:   func(ctx context.Context, e *env, args []string) error { return repoUpload(ctx, e, args, up) },
		files: []string{"zip"},
	}, {
		group: "repo", verb: "uploads", summary: "list the uploads the answering Nexus is receiving or verifying now",
		long: "Each Nexus instance lists only the uploads it receives itself; behind a load balancer, ask each one\n" +
			"(--nexus) to see them all.",
		run: repoUploads,
	}, {
		group: "repo", verb: "list", summary: "list uploaded repositories, newest first",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&listAll, "all", false, "include pruned repositories")
		},
		run: func(ctx context.Context, e *env, args []string) error { return repoList(ctx, e, args, listAll) },
	}, {
		group: "repo", verb: "show", args: "VERSION", summary: "show a repository and its artifacts",
		run: repoShow, complete: completeRepoVersions(true),
	}, {
		group: "repo", verb: "artifacts", args: "[VERSION]", summary: "list recorded artifacts (of one repository, or all)",
		run: repoArtifacts, complete: completeRepoVersions(true),
	}, {
		group: "repo", verb: "keep", args: "VERSION", summary: "keep a repository from automatic pruning",
		run:      func(ctx context.Context, e *env, args []string) error { return repoKeep(ctx, e, args, true) },
		complete: completeRepoVersions(false),
	}, {
		group: "repo", verb: "unkeep", args: "VERSION", summary: "let the pruner prune a repository again",
		run:      func(ctx context.Context, e *env, args []string) error { return repoKeep(ctx, e, args, false) },
		complete: completeRepoVersions(false),
	}, {
		group: "repo", verb: "delete", args: "VERSION", summary: "prune a repository: its artifacts leave the sleds",
		run: repoDelete, complete: completeRepoVersions(false),
	}}
}

// expiringWithin is when repo list starts warning that signed metadata
// is about to expire.
const expiringWithin = 30 * 24 * time.Hour

// expiryText says when a TUF expiry passes: "expired 3d04h ago",
// "expires in 12d03h".
func expiryText(t, now time.Time) string {
	const year = 365 * 24 * time.Hour
	switch d := t.Sub(now); {
	case d > 2*year:
		return fmt.Sprintf("expires in %d years", d/year)
	case d > 0:
		return "expires in " + humanize.Duration(d)
	}
	return "expired " + humanize.Duration(now.Sub(t)) + " ago"
}

// validCell is an expiry date for a table, marked when it has passed or
// is within expiringWithin.
func validCell(t, now time.Time) string {
	date := t.UTC().Format("2006-01-02")
	switch d := t.Sub(now); {
	case d <= 0:
		return date + " EXPIRED (!)"
	case d < expiringWithin:
		return date + " (" + expiryText(t, now) + ")"
	}
	return date
}

// repoState is a repo's state as an operator should read it: pruned
// repos say when and by whom; a state that needs
// attention is shouted.
func repoState(r api.TufRepo, now time.Time) string {
	if r.TimePruned != nil {
		s := "pruned " + humanize.Ago(now, *r.TimePruned)
		if r.PrunedBy != "" {
			s += " by " + r.PrunedBy
		}
		return s
	}
	if r.State == api.RepoStateActive {
		return r.State
	}
	return strings.ToUpper(r.State) + " (!)"
}

func repoList(ctx context.Context, e *env, args []string, all bool) error {
	if len(args) > 0 {
		return usageError(fmt.Sprintf("repo list takes no arguments, got %q", args))
	}
	repos, err := e.nexus.RepoList(ctx, all)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, repos)
	}
	now := e.now()
	rows := make([][]string, 0, len(repos))
	var notes []string
	for _, r := range repos {
		live := r.TimePruned == nil
		if live && r.State != api.RepoStateActive {
			notes = append(notes, fmt.Sprintf("! %s is %s: %s", r.SystemVersion, r.State, r.StateReason))
		}
		if live && r.ValidUntil.Sub(now) < expiringWithin {
			notes = append(notes, fmt.Sprintf("! %s: its signed metadata %s (Nexus accepts expired metadata; a re-signed release renews it)",
				r.SystemVersion, expiryText(r.ValidUntil, now)))
		}
		kept := ""
		if r.Kept {
			kept = "yes"
		}
		rows = append(rows, []string{r.SystemVersion, strconv.Itoa(r.ArtifactCount), humanize.Bytes(r.TotalBytes), repoState(r, now),
			kept, validCell(r.ValidUntil, now), humanize.Ago(now, r.TimeCreated), r.FileName})
	}
	if err := table(e.out, []string{"VERSION", "ARTIFACTS", "SIZE", "STATE", "KEPT", "VALID UNTIL", "UPLOADED", "FILE"}, rows); err != nil {
		return err
	}
	// What needs attention is said below the table, where a wide table
	// cannot truncate it.
	for _, n := range notes {
		fmt.Fprintln(e.out, n)
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
	now := e.now()
	r := d.Repo
	rows := [][2]string{
		{"system version", r.SystemVersion},
		{"file", r.FileName},
		{"sha256", r.SHA256},
		{"state", repoState(r, now)},
	}
	if r.StateReason != "" && r.TimePruned == nil {
		rows = append(rows, [2]string{"reason", r.StateReason})
	}
	kept := "no (the pruner may prune it once it is not among the newest)"
	if r.Kept {
		kept = "yes (never pruned automatically)"
	}
	rows = append(rows,
		[2]string{"kept", kept},
		[2]string{"uploaded", agoAt(now, r.TimeCreated)},
		[2]string{"valid until", r.ValidUntil.UTC().Format(time.RFC3339) + " (" + expiryText(r.ValidUntil, now) + ")"},
		[2]string{"metadata", fmt.Sprintf("root v%d, timestamp v%d, snapshot v%d, targets v%d", r.RootVersion, r.TimestampVersion,
			r.SnapshotVersion, r.TargetsVersion)},
		[2]string{"trust root", r.TrustRootID.String()},
	)
	if r.TimePruned != nil {
		rows = append(rows, [2]string{"replication", "none wanted: pruned, its artifacts leave the sleds unless a live repo carries them"})
	} else {
		rows = append(rows, [2]string{"replication", replicationSummary(d.Artifacts, now)})
	}
	if err := facts(e.out, rows); err != nil {
		return err
	}
	fmt.Fprintln(e.out)
	tableRows := make([][]string, 0, len(d.Artifacts))
	parts := 0
	for _, a := range partsAfterComposites(d.Artifacts) {
		holding, full := sledCounts(a.Replication)
		name := a.Name
		if a.PartOf != nil {
			// A part is listed under the composite it was read out of.
			name = "  " + a.PartOf.Path
			parts++
		}
		tableRows = append(tableRows, []string{name, a.Version, a.Kind, humanize.Bytes(a.Length), a.SHA256[:16], holding, full,
			strconv.Itoa(a.NexusCopies)})
	}
	if parts > 0 {
		fmt.Fprintf(e.out, "%d of the artifacts are parts Nexus read out of composite artifacts on upload; each is "+
			"listed, by its path in the composite, under it.\n\n", parts)
	}
	return table(e.out, []string{"NAME", "VERSION", "KIND", "SIZE", "SHA256", "SLEDS HOLDING", "ON EVERY M.2", "NEXUS COPIES"}, tableRows)
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

func repoArtifacts(ctx context.Context, e *env, args []string) error {
	if len(args) > 1 {
		return usageError("repo artifacts takes at most one argument: a system version")
	}
	arts, err := e.nexus.ArtifactList(ctx)
	if err != nil {
		return err
	}
	// By name and version, as people look for them (the API lists them by id).
	sort.SliceStable(arts, func(i, j int) bool {
		a, b := arts[i], arts[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Version != b.Version {
			return a.Version < b.Version
		}
		return a.Kind < b.Kind
	})
	if len(args) == 1 {
		// The version must exist: an empty list would hide a typo.
		if _, err := e.nexus.RepoGet(ctx, args[0]); err != nil {
			return err
		}
		kept := arts[:0]
		for _, a := range arts {
			if slices.Contains(a.SystemVersions, args[0]) {
				kept = append(kept, a)
			}
		}
		arts = kept
	}
	if e.json {
		if arts == nil {
			arts = []api.ArtifactListItem{}
		}
		return printJSON(e.out, arts)
	}
	rows := make([][]string, 0, len(arts))
	var bytes int64
	for _, a := range arts {
		wanted := "yes"
		if !a.WantedOnSleds {
			wanted = "no (only pruned repos)"
		}
		bytes += a.Length
		rows = append(rows, []string{a.Name, a.Version, a.Kind, humanize.Bytes(a.Length), a.SHA256[:16],
			strings.Join(a.SystemVersions, ","), wanted})
	}
	if err := table(e.out, []string{"NAME", "VERSION", "KIND", "SIZE", "SHA256", "REPOS", "ON SLEDS"}, rows); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "%d artifact(s), %s\n", len(arts), humanize.Bytes(bytes))
	return nil
}

func repoKeep(ctx context.Context, e *env, args []string, keep bool) error {
	verb := map[bool]string{true: "keep", false: "unkeep"}[keep]
	if len(args) != 1 {
		return usageError(fmt.Sprintf("repo %s takes one argument: the system version", verb))
	}
	r, err := e.nexus.RepoSetKept(ctx, args[0], keep)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, r)
	}
	if keep {
		fmt.Fprintf(e.out, "system version %s is kept: automatic pruning leaves it alone (rackctl repo delete still prunes it)\n",
			r.SystemVersion)
	} else {
		fmt.Fprintf(e.out, "system version %s is no longer kept: the pruner may prune it once it is not among the newest\n",
			r.SystemVersion)
	}
	return nil
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
	if res.Message == "" {
		// A Nexus older than the message.
		fmt.Fprintf(e.out, "system version %s pruned (generation %d, already pruned: %t)\n", args[0], res.Generation, res.AlreadyPruned)
		return nil
	}
	fmt.Fprintln(e.out, res.Message)
	return nil
}

func repoUploads(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 {
		return usageError(fmt.Sprintf("repo uploads takes no arguments, got %q", args))
	}
	list, err := e.nexus.UploadList(ctx)
	if err != nil {
		return err
	}
	if e.json {
		if list.Items == nil {
			list.Items = []api.TufUpload{}
		}
		return printJSON(e.out, list)
	}
	return printUploads(e.out, list, e.now())
}

// printUploads renders the uploads in progress: where each is (its phase
// and for how long), how much of the body has arrived, who sends it.
func printUploads(w io.Writer, list api.TufUploadList, now time.Time) error {
	if len(list.Items) == 0 {
		_, err := fmt.Fprintf(w, "no upload in progress on Nexus %s (each Nexus lists only the uploads it receives)\n", list.NexusID)
		return err
	}
	rows := make([][]string, 0, len(list.Items))
	for _, u := range list.Items {
		received := humanize.Bytes(u.BytesReceived)
		if u.ContentLength >= 0 {
			received += " of " + humanize.Bytes(u.ContentLength)
			if u.ContentLength > 0 {
				received += fmt.Sprintf(" (%d%%)", 100*u.BytesReceived/u.ContentLength)
			}
		}
		version := u.SystemVersion
		if version == "" {
			version = "- (not verified yet)"
		}
		req := u.RequestID
		if req == "" {
			req = "-"
		}
		rows = append(rows, []string{u.FileName, u.Actor, u.Phase + " for " + humanize.Duration(now.Sub(u.TimePhaseStarted)), received,
			humanize.Ago(now, u.TimeStarted), version, req})
	}
	if err := table(w, []string{"FILE", "BY", "PHASE", "RECEIVED", "STARTED", "SYSTEM VERSION", "REQUEST"}, rows); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d upload(s) in progress on Nexus %s\n", len(list.Items), list.NexusID)
	return err
}

// completeRepoVersions offers the repos' system versions (pruned ones
// too when withPruned).
func completeRepoVersions(withPruned bool) func(ctx context.Context, e *env, args []string) ([]string, error) {
	return func(ctx context.Context, e *env, args []string) ([]string, error) {
		if len(args) > 0 {
			return nil, nil
		}
		repos, err := e.nexus.RepoList(ctx, withPruned)
		var out []string
		for _, r := range repos {
			out = append(out, r.SystemVersion)
		}
		return out, err
	}
}

// partsAfterComposites lists the parts of each composite under it.
func partsAfterComposites(arts []api.TufRepoArtifact) []api.TufRepoArtifact {
	return api.PartsAfterComposites(arts, func(a api.TufRepoArtifact) (uuid.UUID, uuid.UUID, string, bool) {
		if a.PartOf == nil {
			return a.ID, uuid.Nil, "", false
		}
		return a.ID, a.PartOf.ID, a.PartOf.Path, true
	})
}

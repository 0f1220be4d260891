package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/sledagent"
)

// goldenRack is a rack whose output is the same on every run once what
// differs (ids, ports, paths, times) is masked: two sleds with fixed
// serials, a fixed signing lineage and the demo release replicated.
type goldenRack struct {
	rk   *racktest.Rack
	env  []string
	zip  string
	root string
	// others are two more archives of the same system version, with other
	// bytes: uploaded over a pruned record, each replaces it.
	others [2]string
	m      masker
}

func startGoldenRack(t *testing.T, seed byte) *goldenRack {
	t.Helper()
	// Heartbeats often, so that bgtasks list --all shows every task run.
	rk := racktest.StartRack(t, racktest.RackConfig{Seed: seed, Nexus: racktest.FastHeartbeat()})
	for _, serial := range []string{"GOLD-0001", "GOLD-0002"} {
		rk.AddSled(sledagent.Config{Baseboard: api.Baseboard{Serial: serial}})
	}
	racktest.WaitRegistered(t, rk.Nexus.Client, rk.Sleds...)
	g := &goldenRack{rk: rk, env: []string{"RACKPLANE_NEXUS_URL=" + rk.Nexus.ExternalURL(), "RACKPLANE_TOKEN=" + rk.Nexus.AdminToken}}
	dir := t.TempDir()
	g.zip = filepath.Join(dir, "release-1.0.0.zip")
	if _, err := rk.Lineage.BuildFile(g.zip, tufgen.Demo("1.0.0")); err != nil {
		t.Fatal(err)
	}
	for i := range g.others {
		g.others[i] = filepath.Join(dir, fmt.Sprintf("rebuilt-%d-1.0.0.zip", i+1))
		if _, err := rk.Lineage.BuildFile(g.others[i], tufgen.Sized("1.0.0", 24<<10, 2, uint64(100+i))); err != nil {
			t.Fatal(err)
		}
	}
	g.root = filepath.Join(dir, "root.json")
	if err := os.WriteFile(g.root, rk.Lineage.TrustRoot(), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &g.m
	m.literalMask(rk.Nexus.ExternalURL(), "NEXUS_URL")
	m.literalMask(dir, "DIR")
	sleds, err := rk.Nexus.Client.SledList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sleds {
		m.regexpMask(`\b`+strconv.Itoa(s.RepoDepotPort)+`\b`, "PORT")
		for _, m2 := range s.M2s {
			m.literalMask(filepath.Dir(m2.Path), "SLED_DIR")
		}
	}
	// Hashes of what the lineage built are the same on every run; other
	// 16-digit hex words are request ids.
	known := map[string]bool{}
	l := rk.Lineage
	built, err := l.BuildFile(filepath.Join(dir, "probe.zip"), tufgen.Demo("1.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	known[built.SHA256[:16]] = true
	for _, a := range built.Artifacts {
		known[a.SHA256[:16]] = true
	}
	roots, err := rk.Nexus.Client.TrustRootList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range roots {
		known[r.SHA256[:16]] = true
	}
	hex16 := regexp.MustCompile(`\b[0-9a-f]{16}\b`)
	m.funcs = append(m.funcs, func(s string) string {
		return hex16.ReplaceAllStringFunc(s, func(h string) string {
			if known[h] {
				return h
			}
			return "REQID"
		})
	})
	m.common()
	return g
}

// common masks what differs from run to run on any rack: tokens, ids,
// times and spans, ports, sizes, the toolchain.
func (m *masker) common() {
	m.regexpMask(`rp_[A-Za-z0-9_-]{20,}`, "rp_TOKEN")
	m.regexpMask(`"(free_bytes|total_bytes)": \d+`, `"$1": N`)
	m.regexpMask(`"go_version": "go[^"]*"`, `"go_version": "GO"`)
	m.regexpMask(`\(default "[^"]*/rackplane/token"\)`, `(default "HOME/.config/rackplane/token")`)
	m.regexpMask(`\d+ years`, "N years")
	m.regexpMask(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`, "UUID")
	m.regexpMask(`\b[0-9a-f]{8}\b`, "UUID8")
	m.regexpMask(`\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z| UTC)?`, "TIME")
	m.regexpMask(`127\.0\.0\.1:\d+`, "127.0.0.1:PORT")
	m.regexpMask(`\b(\d+(\.\d+)?(µs|ms|s)|\d+m\d\ds|\d+h\d\dm|\d+d\d\dh)( ago)?\b|just now`, "SPAN")
	m.regexpMask(`\d+\.\d (GiB|TiB)`, "DISK")
	m.regexpMask(`\bgo\d+\.\d+(\.\d+)?[^\s),"]*`, "GO")
}

// record runs one command line through the real binary and returns what
// an operator saw: exit status, stdout and stderr, masked, with runs of
// spaces (column padding around masked values) made single.
func (g *goldenRack) record(t *testing.T, args ...string) (string, int, string, string) {
	t.Helper()
	code, out, errOut := rackctlMain(t, g.env, args...)
	for _, s := range []string{out, errOut} {
		if rawGoError.MatchString(s) {
			t.Errorf("%q: a raw Go error reached the operator:\n%s", args, s)
		}
	}
	text := fmt.Sprintf("$ rackctl %s\nexit %d\n--- stdout\n%s--- stderr\n%s", g.m.apply(strings.Join(args, " ")), code,
		g.squeeze(out), g.squeeze(errOut))
	return text, code, out, errOut
}

// padding is the space between columns (not indentation).
var padding = regexp.MustCompile(`(\S)  +`)

func (g *goldenRack) squeeze(s string) string { return padding.ReplaceAllString(g.m.apply(s), "$1  ") }

// shape renders JSON whose values vary from run to run by their shape:
// keys, types and masked strings; numbers become 0 and lists keep their
// first element.
func (g *goldenRack) shape(t *testing.T, raw string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, raw)
	}
	var walk func(any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				x[k] = walk(e)
			}
		case []any:
			if len(x) > 1 {
				x = x[:1]
			}
			for i, e := range x {
				x[i] = walk(e)
			}
			return x
		case float64:
			return 0
		case string:
			return g.m.apply(x)
		}
		return v
	}
	// What the scheduler decides: why and when a task ran, and whether
	// it is running now (a running task's current state has more fields,
	// and so has its summary).
	var drop func(any)
	drop = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			delete(x, "running_since")
			delete(x, "requester")
			if _, ok := x["current"].(map[string]any); ok {
				x["current"] = map[string]any{"state": "STATE"}
			}
			for _, e := range x {
				drop(e)
			}
		case []any:
			for _, e := range x {
				drop(e)
			}
		}
	}
	drop(v)
	for _, k := range []string{"reason", "run_id", "state", "pending"} {
		var mask func(any)
		mask = func(v any) {
			switch x := v.(type) {
			case map[string]any:
				for key, e := range x {
					if _, ok := e.(string); ok && key == k {
						x[key] = strings.ToUpper(k)
					} else {
						mask(e)
					}
				}
			case []any:
				for _, e := range x {
					mask(e)
				}
			}
		}
		mask(v)
	}
	b, err := json.MarshalIndent(walk(v), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

// Every command's normal output, as a table and as JSON, on a real rack,
// against testdata/output/*.golden (-update rewrites them). Background
// tasks run on their own schedule, so their outputs are compared by
// shape (numbers and history masked).
func TestOutputsGolden(t *testing.T) {
	t.Parallel()
	g := startGoldenRack(t, 11)
	nx := g.rk.Nexus
	ctx := context.Background()
	roots, err := nx.Client.TrustRootList(ctx)
	if err != nil || len(roots) != 1 {
		t.Fatal(roots, err)
	}
	rootID := roots[0].ID.String()
	covered := map[string]bool{}

	type step struct {
		name string
		args []string
		// volatile outputs are compared after numbers are masked too, and
		// JSON by shape.
		volatile bool
		// noJSON: the command's output is the same with --json (help).
		noJSON bool
		// before waits for the rack to be where the step expects it.
		before func()
		// filter drops what depends on timing from the recorded text.
		filter func(string) string
		// keys, when set, are the only fields of a volatile JSON object
		// compared (the rest is the scheduler's).
		keys []string
	}
	// The sleds report their holdings when they change; wait for the
	// report that follows replication.
	sledsReported := func() {
		racktest.WaitFor(t, 20*time.Second, "the sleds to report the replicated release", func() error {
			sleds, err := nx.Client.SledList(ctx)
			if err != nil {
				return err
			}
			for _, s := range sleds {
				if s.ArtifactsComplete == nil || *s.ArtifactsComplete != 4 {
					return fmt.Errorf("sled %s reports %v complete", s.Baseboard.Serial, s.ArtifactsComplete)
				}
			}
			return nil
		})
	}
	// The heartbeat reports every task once each has run.
	heartbeatShowsRuns := func() {
		racktest.WaitFor(t, 20*time.Second, "a heartbeat with every task run", func() error {
			list, err := nx.Client.BackgroundTaskList(ctx)
			if err != nil {
				return err
			}
			for _, hb := range list.Instances {
				for _, task := range hb.Tasks {
					if task.LastStart == nil || task.LastOutcome != api.TaskOutcomeOK {
						return fmt.Errorf("heartbeat: %s last ran %v (%s)", task.Name, task.LastStart, task.LastOutcome)
					}
				}
			}
			if len(list.Instances) != 1 {
				return fmt.Errorf("%d heartbeats", len(list.Instances))
			}
			return nil
		})
	}
	// The pruner runs when asked (and at start and on uploads): wait for
	// the explicit activation to finish.
	prunerRan := func() {
		racktest.WaitFor(t, 20*time.Second, "the pruner's explicit run", func() error {
			task, err := nx.Client.BackgroundTaskGet(ctx, "tuf_repo_pruner")
			if err != nil {
				return err
			}
			if l := task.LastActivation; l == nil || l.Reason != "explicit" || task.Current.State != api.TaskStateIdle ||
				task.Current.Pending != "" {
				return fmt.Errorf("pruner: %+v, last %+v", task.Current, task.LastActivation)
			}
			return nil
		})
	}
	// --wait prints a line whenever replication moves: how many is the
	// scheduler's; the last one is kept.
	lastReplicationLine := func(s string) string {
		var out, last []string
		for _, l := range strings.SplitAfter(s, "\n") {
			if strings.HasPrefix(l, "replication: ") {
				last = []string{l}
				continue
			}
			out = append(out, last...)
			last = nil
			out = append(out, l)
		}
		return strings.Join(append(out, last...), "")
	}
	steps := []step{
		{name: "help", args: []string{"help"}, noJSON: true},
		{name: "version", args: []string{"--version"}},
		{name: "health", args: []string{"health"}},
		{name: "trust-root_add", args: []string{"trust-root", "add", g.root}},
		{name: "trust-root_list", args: []string{"trust-root", "list"}},
		{name: "trust-root_show", args: []string{"trust-root", "show", rootID}},
		{name: "repo_upload", args: []string{"repo", "upload", "--wait", g.zip}, filter: lastReplicationLine},
		{name: "repo_upload_again", args: []string{"repo", "upload", g.zip}},
		{name: "repo_uploads", args: []string{"repo", "uploads"}},
		{name: "sleds_list", args: []string{"sleds", "list"}, before: sledsReported},
		{name: "sleds_show", args: []string{"sleds", "show", "GOLD-0002"}},
		{name: "repo_list", args: []string{"repo", "list"}},
		{name: "repo_show", args: []string{"repo", "show", "1.0.0"}},
		{name: "repo_artifacts", args: []string{"repo", "artifacts"}},
		{name: "repo_artifacts_version", args: []string{"repo", "artifacts", "1.0.0"}},
		{name: "repo_keep", args: []string{"repo", "keep", "1.0.0"}},
		{name: "repo_unkeep", args: []string{"repo", "unkeep", "1.0.0"}},
		{name: "bgtasks_list", args: []string{"bgtasks", "list"}, volatile: true, before: heartbeatShowsRuns},
		{name: "bgtasks_list_all", args: []string{"bgtasks", "list", "--all"}, volatile: true, before: heartbeatShowsRuns},
		{name: "bgtasks_activate", args: []string{"bgtasks", "activate", "sled_liveness", "tuf_repo_pruner"}},
		{name: "bgtasks_show", args: []string{"bgtasks", "show", "tuf_repo_pruner"}, volatile: true, before: prunerRan},
		{name: "bgtasks_disable", args: []string{"bgtasks", "disable", "tuf_repo_pruner"}, volatile: true, keys: []string{"name", "enabled"}},
		{name: "bgtasks_enable", args: []string{"bgtasks", "enable", "tuf_repo_pruner"}, volatile: true, keys: []string{"name", "enabled"}},
		{name: "token_create", args: []string{"token", "create", "--role", "viewer", "--ttl", "24h", "dashboards"}},
		{name: "token_list", args: []string{"token", "list"}},
		{name: "token_revoke", args: []string{"token", "revoke", "dashboards"}},
		{name: "repo_delete", args: []string{"repo", "delete", "1.0.0"}},
		{name: "repo_delete_again", args: []string{"repo", "delete", "1.0.0"}},
		{name: "repo_list_all", args: []string{"repo", "list", "--all"}},
		// The same archive again brings the pruned repo back; another
		// archive of its version takes the pruned record's place.
		{name: "repo_upload_restore", args: []string{"repo", "upload", g.zip}},
		{name: "repo_upload_replace", args: []string{"repo", "upload", g.others[0]}, before: func() {
			if _, err := nx.Client.RepoDelete(ctx, "1.0.0"); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "trust-root_delete", args: []string{"trust-root", "delete", "--force", rootID}},
		{name: "audit_list", args: []string{"audit", "list", "--limit", "12"}},
	}
	for _, st := range steps {
		for _, asJSON := range []bool{false, true} {
			if asJSON && st.noJSON {
				continue
			}
			args := st.args
			name := st.name
			if asJSON {
				args = append([]string{"--json"}, args...)
				name += "_json"
				// A change made once: its --json twin must find the world
				// as the text form left it.
				switch st.name {
				case "trust-root_delete":
					if _, _, err := nx.Client.TrustRootAdd(ctx, g.rk.Lineage.TrustRoot()); err != nil {
						t.Fatal(err)
					}
					roots, err := nx.Client.TrustRootList(ctx)
					if err != nil || len(roots) != 1 {
						t.Fatal(roots, err)
					}
					args[len(args)-1] = roots[0].ID.String()
				case "repo_upload_restore":
					if _, err := nx.Client.RepoDelete(ctx, "1.0.0"); err != nil {
						t.Fatal(err)
					}
				case "repo_upload_replace":
					// Pruned by the step's before; another archive again.
					args[len(args)-1] = g.others[1]
				case "token_revoke":
					args = []string{"--json", "token", "revoke", "dashboards-json"}
				case "token_create":
					args = []string{"--json", "token", "create", "--role", "viewer", "--ttl", "24h", "dashboards-json"}
				}
			}
			if st.before != nil {
				st.before()
			}
			text, code, out, _ := g.record(t, args...)
			if st.filter != nil {
				text = st.filter(text)
			}
			if code != 0 {
				t.Errorf("%s: exit %d\n%s", name, code, text)
				continue
			}
			covered[strings.Join(commandWords(st.args), " ")] = true
			switch {
			case asJSON && st.volatile:
				if st.keys != nil {
					var obj map[string]any
					if err := json.Unmarshal([]byte(out), &obj); err != nil {
						t.Fatalf("%s: %v\n%s", name, err, out)
					}
					kept := map[string]any{}
					for _, k := range st.keys {
						kept[k] = obj[k]
					}
					b, _ := json.Marshal(kept)
					out = string(b)
				}
				text = fmt.Sprintf("$ rackctl %s\nexit 0\n--- stdout (shape)\n%s", strings.Join(args, " "), g.shape(t, out))
			case asJSON:
				if !json.Valid([]byte(out)) {
					t.Errorf("%s: stdout is not JSON:\n%s", name, out)
				}
			case st.volatile:
				text = regexp.MustCompile(`\b\d+\b`).ReplaceAllString(text, "N")
				text = strings.Replace(text, "\nexit N\n", "\nexit 0\n", 1)
				text = regexp.MustCompile(`  (idle|running SPAN)  `).ReplaceAllString(text, "  STATE  ")
				// The history's length is the scheduler's: one row shown.
				if i := strings.Index(text, "history (newest first):\n"); i >= 0 {
					lines := strings.SplitAfter(text[i:], "\n")
					text = text[:i] + strings.Join(lines[:min(3, len(lines))], "") + "…\n"
				}
			}
			golden(t, filepath.Join("output", name), text)
		}
	}

	// Every command of the table has its golden output here, but the
	// trust-quorum group's, which needs a rack set up over the bootstrap
	// network: TestTrustQuorumCommands records status and show against
	// testdata/trustquorum and checks what add, remove, abort and
	// upgrade-from-lrtq print (their steps are the task's timing).
	var missing []string
	for _, c := range commandNames() {
		if !covered[c] && !strings.HasPrefix(c, "trust-quorum") {
			missing = append(missing, c)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("no golden output for %s: add them to TestOutputsGolden", strings.Join(missing, ", "))
	}
}

// commandWords is the "group verb" a command line names.
func commandWords(args []string) []string {
	var words []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			continue
		}
		words = append(words, a)
		if len(words) == 2 {
			break
		}
	}
	for _, c := range commands() {
		if c.verb == "" && len(words) > 0 && words[0] == c.group {
			return words[:1]
		}
	}
	return words
}

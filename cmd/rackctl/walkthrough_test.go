package main

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/sledagent"
)

// readmeCommands returns the lines of the README's shell blocks.
func readmeCommands(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	in, release := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		switch {
		// The release example runs offline, on a signing machine; the
		// rackrelease tests run it as written.
		case l == "<!-- release-example -->":
			release = true
		case l == "<!-- /release-example -->":
			release = false
		case release:
		case strings.HasPrefix(l, "```sh"):
			in = true
		case strings.HasPrefix(l, "```"):
			in = false
		case in:
			if i := strings.Index(l, " # "); i >= 0 {
				l = l[:i]
			}
			if l = strings.TrimSpace(l); l != "" {
				lines = append(lines, l)
			}
		}
	}
	return lines
}

// A newcomer's session: the README's commands on a rack laid out as
// rackdev lays it out, then every rackctl command (its help, without
// arguments, with a wrong flag, against no Nexus, and with real
// arguments, as text and JSON). Nothing any of them prints may be a raw
// Go error.
func TestNewcomerWalkthrough(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rk := racktest.StartRack(t, racktest.RackConfig{Seed: 12})
	for _, serial := range []string{"SIM-0001", "SIM-0002"} {
		rk.AddSled(sledagent.Config{Baseboard: api.Baseboard{Serial: serial}})
	}
	racktest.WaitRegistered(t, rk.Nexus.Client, rk.Sleds...)
	nx := rk.Nexus
	rk.Upload(nx, tufgen.Demo("1.0.0"), "demo-repo-1.0.0.zip") // rackdev's demo release
	dataDir := t.TempDir()
	tokenFile := filepath.Join(dataDir, "admin-token")
	if err := os.WriteFile(tokenFile, []byte(nx.AdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	zip := func(v string) string {
		p := filepath.Join(dataDir, "release-"+v+".zip")
		repo := tufgen.Demo(v)
		for i := range repo.Artifacts {
			repo.Artifacts[i].Seed += 1000 * uint64(v[0])
		}
		if _, err := rk.Lineage.BuildFile(p, repo); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rootFile := filepath.Join(dataDir, "root.json")
	if err := os.WriteFile(rootFile, rk.Lineage.TrustRoot(), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"RACKPLANE_NEXUS_URL=" + nx.ExternalURL()}
	var ran int
	check := func(args []string, code int, out, errOut string) {
		t.Helper()
		ran++
		for _, s := range []string{out, errOut} {
			if m := rawGoError.FindString(s); m != "" {
				t.Errorf("rackctl %q printed a raw Go error (%q):\n%s", args, m, s)
			}
		}
		if code != 0 && code != 1 && code != 2 {
			t.Errorf("rackctl %q: exit %d\n%s%s", args, code, out, errOut)
		}
		if code != 0 && strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("rackctl %q: exit %d with more than one line on stderr:\n%s", args, code, errOut)
		}
	}

	// The README, line by line.
	curlPath := regexp.MustCompile(`localhost:12220(/\S*)`)
	readme := 0
	for _, line := range readmeCommands(t) {
		switch {
		case strings.HasPrefix(line, "export RACKPLANE_TOKEN_FILE="):
			env = append(env, "RACKPLANE_TOKEN_FILE="+tokenFile)
		case strings.HasPrefix(line, "go run ./cmd/rackctl "):
			args := strings.Fields(strings.TrimPrefix(line, "go run ./cmd/rackctl "))
			for i, a := range args {
				switch a {
				case "FILE.zip":
					args[i] = zip("2.0.0")
				case "release-1.0.0.zip":
					// What the release example made: a release signed by
					// the root this rack trusts.
					args[i] = zip("3.0.0")
				case "root.json":
					args[i] = rootFile
				}
			}
			code, out, errOut := rackctlMain(t, env, args...)
			check(args, code, out, errOut)
			// This rack has no rack setup (no bootstrap agents), so the
			// trust-quorum commands can only explain why they fail.
			if code != 0 && (args[0] != "trust-quorum" || code != 1) {
				t.Errorf("README: %s: exit %d\n%s%s", line, code, out, errOut)
			}
			readme++
		case strings.HasPrefix(line, "curl "):
			m := curlPath.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("README: cannot follow %q", line)
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, nx.ExternalURL()+m[1], nil)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(line, "Authorization: Bearer") {
				req.Header.Set("Authorization", "Bearer "+nx.AdminToken)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("README: %s: %v", line, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("README: %s: HTTP %d", line, resp.StatusCode)
			}
		case strings.HasPrefix(line, "go run ./cmd/rackdev"), strings.HasPrefix(line, "go test"):
			// The rack is this test's; the tests are running.
		case strings.HasPrefix(line, "go run ./cmd/rackbench "), strings.HasPrefix(line, "pkill -9 "):
			// The chaos test (cmd/rackbench's TestChaosShort) and killing a
			// rackdev --processes sled (cmd/rackdev's
			// TestProcessesKilledSledComesBack) run in their own tests.
		default:
			t.Errorf("README: the walkthrough does not know how to follow %q", line)
		}
	}
	if readme < 10 {
		t.Fatalf("only %d rackctl commands found in the README", readme)
	}

	// Then every command.
	roots, err := nx.Client.TrustRootList(ctx)
	if err != nil || len(roots) != 1 {
		t.Fatal(roots, err)
	}
	real := map[string][]string{
		"sleds list": nil, "sleds show": {"SIM-0002"},
		"bgtasks list": nil, "bgtasks show": {"tuf_artifact_replication"}, "bgtasks activate": {"sled_liveness"},
		"bgtasks enable": {"tuf_repo_pruner"}, "bgtasks disable": {"tuf_repo_pruner"},
		"repo upload": {"--wait", zip("3.0.0")}, "repo list": {"--all"}, "repo show": {"1.0.0"}, "repo artifacts": {"1.0.0"},
		"repo keep": {"1.0.0"}, "repo unkeep": {"1.0.0"}, "repo delete": {"1.0.0"},
		"trust-root add": {rootFile}, "trust-root list": nil, "trust-root show": {roots[0].ID.String()},
		// Refused: the root signs live repos.
		"trust-root delete": {roots[0].ID.String()},
		"token create":      {"walkthrough", "--role", "viewer"}, "token list": nil, "token revoke": {"walkthrough"},
		"audit list": nil, "health": nil,
	}
	closed := "http://" + closedPort(t)
	for _, c := range commands() {
		words := strings.Fields(c.group + " " + c.verb)
		name := strings.Join(words, " ")
		lines := [][]string{
			append(append([]string{}, words...), "--help"),
			words,
			append(append([]string{}, words...), "--no-such-flag"),
			append([]string{"--nexus", closed}, words...),
		}
		if args, ok := real[name]; ok {
			lines = append(lines, append(append([]string{}, words...), args...))
			if name != "token create" && name != "token revoke" && name != "repo upload" {
				lines = append(lines, append(append([]string{"--json"}, words...), args...))
			}
		} else {
			t.Logf("%s: no real arguments known; its help and errors are checked", name)
		}
		for _, args := range lines {
			code, out, errOut := rackctlMain(t, env, args...)
			check(args, code, out, errOut)
			if args[len(args)-1] == "--help" && (code != 0 || !strings.Contains(out, "Global Flags:")) {
				t.Errorf("%q: exit %d\n%s", args, code, out)
			}
		}
	}
	t.Logf("%d command lines, %d of them from the README", ran, readme)
}

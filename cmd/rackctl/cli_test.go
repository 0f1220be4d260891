package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/buildinfo"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus"
)

// Global flags are accepted wherever they stand on the line: before the
// group, between group and verb, after the verb and among the arguments.
func TestGlobalFlagsAnywhere(t *testing.T) {
	t.Parallel()
	nx := racktest.StartNexus(t, testdb.New(t).URL, nexus.Config{})
	url, tok := nx.ExternalURL(), nx.AdminToken
	for _, args := range [][]string{
		{"--nexus", url, "--token", tok, "sleds", "list"},
		{"sleds", "list", "--nexus", url, "--token", tok},
		{"sleds", "--nexus", url, "list", "--token=" + tok},
		{"--token", tok, "sleds", "list", "--timeout", "5s", "--nexus=" + url},
	} {
		code, out, errOut := rackctlMain(t, nil, args...)
		if code != 0 || out != "ID  SERIAL  PART  ADDRESS  DEPOT PORT  POLICY  STATE  HEALTH  M.2  LAST SEEN\n0 sled(s)\n" || errOut != "" {
			t.Errorf("%q: exit %d, %q %q", args, code, out, errOut)
		}
	}
	for _, args := range [][]string{
		{"--json", "sleds", "list", "--nexus", url, "--token", tok},
		{"sleds", "list", "--json", "--nexus", url, "--token", tok},
		{"sleds", "list", "--nexus", url, "--json", "--token", tok},
	} {
		code, out, errOut := rackctlMain(t, nil, args...)
		var sleds []api.Sled
		if code != 0 || json.Unmarshal([]byte(out), &sleds) != nil || len(sleds) != 0 || errOut != "" {
			t.Errorf("%q: exit %d, %q %q", args, code, out, errOut)
		}
	}
	// A command's own flag after its argument, as people type it.
	code, out, errOut := rackctlMain(t, nil, "--nexus", url, "--token", tok, "token", "create", "ci", "--role", "viewer")
	if code != 0 || !strings.HasPrefix(out, "rp_") || !strings.Contains(errOut, "made viewer token \"ci\"") {
		t.Errorf("token create NAME --role: exit %d, %q %q", code, out, errOut)
	}
	// The environment stands in for the flags.
	code, out, errOut = rackctlMain(t, []string{"RACKPLANE_NEXUS_URL=" + url, "RACKPLANE_TOKEN=" + tok, "RACKPLANE_TIMEOUT=5s"},
		"sleds", "list")
	if code != 0 || !strings.HasSuffix(out, "0 sled(s)\n") || errOut != "" {
		t.Errorf("from the environment: exit %d, %q %q", code, out, errOut)
	}
	code, _, errOut = rackctlMain(t, []string{"RACKPLANE_TIMEOUT=soon"}, "sleds", "list")
	if code != 2 || errOut != "rackctl: $RACKPLANE_TIMEOUT \"soon\" is not a positive duration (like 30s or 5m)\n" {
		t.Errorf("bad $RACKPLANE_TIMEOUT: exit %d, %q", code, errOut)
	}
}

// Help goes to stdout and exits 0, at every level, and a command's help
// shows the global flags as well as its own.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"Commands:", "sleds list", "repo upload FILE", "trust-root show ID", "completion SHELL", "--nexus string"}},
		{[]string{"--help"}, []string{"Commands:", "bgtasks show NAME", "--timeout duration", "--version"}},
		{[]string{"help"}, []string{"Commands:", "repo keep VERSION"}},
		{[]string{"sleds", "--help"}, []string{"rackctl sleds [command]", "list ", "show ", "Global Flags:", "--nexus string"}},
		{[]string{"help", "repo"}, []string{"rackctl repo [command]", "upload ", "keep ", "unkeep ", "artifacts ", "--token-file string"}},
		{[]string{"help", "repo", "upload"}, []string{"rackctl repo upload FILE [flags]", "--wait ", "--wait-timeout duration",
			"Global Flags:", "--nexus string", "--timeout duration", "--json"}},
		{[]string{"sleds", "list", "--help"}, []string{"rackctl sleds list [flags]", "Global Flags:", "--nexus string",
			"--timeout duration", "--token string", "--token-file string", "--ca-cert string", "--json"}},
		{[]string{"bgtasks", "list", "-h"}, []string{"--all ", "Global Flags:"}},
		{[]string{"trust-root", "delete", "--help"}, []string{"--force ", "the last root"}},
	} {
		code, out, errOut := rackctlMain(t, nil, tc.args...)
		if code != 0 || errOut != "" {
			t.Errorf("%q: exit %d, stderr %q", tc.args, code, errOut)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%q: help lacks %q:\n%s", tc.args, w, out)
			}
		}
		if strings.Contains(out, "rackctl sleds [flags]") || strings.Contains(out, "rackctl repo [flags]") {
			t.Errorf("%q: a group's usage offers to run it without a command:\n%s", tc.args, out)
		}
	}
	// Every command in the table is listed in the top-level help.
	_, out, _ := rackctlMain(t, nil, "help")
	for _, name := range commandNames() {
		if !strings.Contains(out, "\n  "+name) {
			t.Errorf("top-level help does not list %q:\n%s", name, out)
		}
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	// The child is this test binary, so it reads the same build record.
	code, out, errOut := rackctlMain(t, nil, "--version")
	if want := buildinfo.Line("rackctl") + "\n"; code != 0 || out != want || errOut != "" ||
		!strings.Contains(out, runtime.Version()) {
		t.Errorf("--version: exit %d, %q %q; want %q", code, out, errOut, want)
	}
	code, out, _ = rackctlMain(t, nil, "--version", "--json")
	var v api.BuildInfo
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.GoVersion != runtime.Version() || v.Version != buildinfo.Read().Version {
		t.Errorf("--json --version: exit %d, %q", code, out)
	}
}

// Shell completion: the scripts, the values cobra's __complete asks the
// running Nexus for, and bash completing a real command line with the
// script and the binary.
func TestCompletion(t *testing.T) {
	t.Parallel()
	rk := racktest.StartRack(t, racktest.RackConfig{Sleds: 1, Seed: 3})
	nx := rk.Nexus
	env := []string{"RACKPLANE_NEXUS_URL=" + nx.ExternalURL(), "RACKPLANE_TOKEN=" + nx.AdminToken}
	sleds, err := nx.Client.SledList(t.Context())
	if err != nil || len(sleds) != 1 {
		t.Fatal(sleds, err)
	}
	serial := sleds[0].Baseboard.Serial
	list, err := nx.Client.BackgroundTaskList(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var tasks, tufTasks string
	for _, task := range list.Tasks {
		tasks += task.Name + "\n"
		if strings.HasPrefix(task.Name, "tuf_") {
			tufTasks += task.Name + "\n"
		}
	}
	if !strings.Contains(tufTasks, "tuf_artifact_replication\n") {
		t.Fatalf("tasks: %s", tasks)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "bgtasks", "show", ""}, tasks + ":4\n"},
		{[]string{"__complete", "bgtasks", "show", "tuf_"}, tufTasks + ":4\n"},
		{[]string{"__complete", "bgtasks", "show", "sled_liveness", ""}, ":4\n"},
		{[]string{"__complete", "sleds", "show", ""}, serial + "\n:4\n"},
		{[]string{"__complete", "repo", "upload", ""}, "zip\n:8\n"},
		{[]string{"__complete", "token", "revoke", ""}, "racktest-admin\n:4\n"},
		{[]string{"__complete", "trust-root", "add", ""}, "json\n:8\n"},
		{[]string{"__complete", "sl"}, "sleds\tthe rack's sleds\n:4\n"},
		{[]string{"__complete", "repo", "k"}, "keep\tkeep a repository from automatic pruning\n:4\n"},
		// Nexus unreachable: nothing to offer, and nothing said.
		{[]string{"__complete", "--nexus", "http://" + closedPort(t), "bgtasks", "show", ""}, ":4\n"},
	} {
		code, out, _ := rackctlMain(t, env, tc.args...)
		if code != 0 || out != tc.want {
			t.Errorf("%q: exit %d, %q; want %q", tc.args, code, out, tc.want)
		}
	}

	for shell, want := range map[string]string{"bash": "# bash completion V2 for rackctl", "zsh": "#compdef rackctl",
		"fish": "# fish completion for rackctl", "powershell": "# powershell completion for rackctl"} {
		code, out, errOut := rackctlMain(t, nil, "completion", shell)
		if code != 0 || !strings.HasPrefix(out, want) || !strings.Contains(out, "__complete") || errOut != "" {
			t.Errorf("completion %s: exit %d, %.80q %q", shell, code, out, errOut)
		}
	}

	// bash itself: the script sourced, the binary on PATH as rackctl.
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is needed to test the bash completion: %v", err)
	}
	bin := t.TempDir()
	if err := os.Symlink(os.Args[0], filepath.Join(bin, "rackctl")); err != nil {
		t.Fatal(err)
	}
	_, script, _ := rackctlMain(t, nil, "completion", "bash")
	scriptFile := filepath.Join(t.TempDir(), "rackctl.bash")
	if err := os.WriteFile(scriptFile, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(line string) string {
		t.Helper()
		cmd := exec.Command(bash, "--norc", "-c", `
# The script uses the bash-completion package (CI installs it); without
# it, the one function the script needs, for lines without quotes.
if [[ -r /usr/share/bash-completion/bash_completion ]]; then
	source /usr/share/bash-completion/bash_completion
else
	_get_comp_words_by_ref() { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}; words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }
fi
source "$1"
read -ra COMP_WORDS <<< "$2"
[[ "$2" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMP_LINE="$2"; COMP_POINT=${#COMP_LINE}
__start_rackctl
printf '%s\n' "${COMPREPLY[@]}"`, "bash", scriptFile, line)
		cmd.Env = append([]string{asMain + "=1", "PATH=" + bin + ":" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		// compopt works only when the shell itself asked for completion;
		// called from a script, it says so and does nothing else.
		for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
			if l != "" && !strings.Contains(l, "compopt: not currently executing completion function") {
				t.Errorf("bash completing %q said: %s", line, l)
			}
		}
		if err != nil {
			t.Fatalf("bash completing %q: %v\n%s", line, err, out)
		}
		return string(out)
	}
	if got := complete("rackctl bgtasks show tuf_"); got != tufTasks {
		t.Errorf("bash completes bgtasks show tuf_ to %q", got)
	}
	if got := complete("rackctl sleds show "); got != serial+"\n" {
		t.Errorf("bash completes sleds show to %q, want %s", got, serial)
	}
	if got := complete("rackctl trust-r"); got != "trust-root\n" {
		t.Errorf("bash completes trust-r to %q", got)
	}
}

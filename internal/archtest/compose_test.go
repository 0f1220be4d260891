package archtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// helpTexts builds the binaries docker-compose.yml runs and returns the
// --help output of each command it runs, keyed by the command's words
// ("nexus", "nexus migrate up", "sled-agent", ...).
func helpTexts(t *testing.T, root string) map[string]string {
	t.Helper()
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/nexus", "./cmd/sled-agent", "./cmd/rackctl")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out := map[string]string{}
	for _, args := range [][]string{
		{"nexus", "--help"},
		{"nexus", "migrate", "up", "--help"},
		{"nexus", "healthcheck", "--help"},
		{"nexus", "pki", "init", "--help"},
		{"nexus", "pki", "issue", "--help"},
		{"sled-agent", "--help"},
		{"sled-agent", "rack-setup", "--help"},
		{"rackctl", "help"},
	} {
		b, _ := exec.Command(filepath.Join(bin, args[0]), args[1:]...).CombinedOutput()
		if !strings.Contains(string(b), "-") {
			t.Fatalf("%v printed no flags:\n%s", args, b)
		}
		out[strings.Join(args[:len(args)-1], " ")] = string(b)
	}
	return out
}

var (
	// command: [...] of a service, and test: [...] of a health check.
	argvLine  = regexp.MustCompile(`(?m)^\s*(?:command|test):\s*\[(.*)\]\s*$`)
	flagToken = regexp.MustCompile(`(?:^|[\s"])(--[a-z0-9-]+)`)
	envKey    = regexp.MustCompile(`(?m)^\s*(RACKPLANE_[A-Z0-9_]+):`)
	// Lines of the pki service's script: `nexus pki init ...`, and calls
	// of its `issue DIR FLAGS...` helper around `nexus pki issue`.
	pkiInit   = regexp.MustCompile(`(?m)nexus pki init (.*)$`)
	pkiIssue  = regexp.MustCompile(`(?m)nexus pki issue (.*)$`)
	pkiHelper = regexp.MustCompile(`(?m)^\s*issue \S+ (.*)$`)
)

// knows reports whether help documents flag, written --flag by envflag
// and -flag by the standard flag package.
func knows(help, flag string) bool {
	for _, f := range []string{flag, strings.TrimPrefix(flag, "-")} {
		if strings.Contains(help, f+" ") || strings.Contains(help, f+"\n") {
			return true
		}
	}
	return false
}

// docker-compose.yml cannot be run here (no Docker engine), so check what
// can be checked: every flag and environment variable it passes to our
// binaries exists (in service commands, health checks and the pki
// script), and docker-compose accepts the file when it is installed.
func TestComposeFileMatchesBinaries(t *testing.T) {
	root := repoRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	compose := string(raw)
	help := helpTexts(t, root)

	checked := 0
	for _, m := range argvLine.FindAllStringSubmatch(compose, -1) {
		var words []string
		for _, f := range strings.Split(m[1], ",") {
			words = append(words, strings.Trim(strings.TrimSpace(f), `"`))
		}
		if len(words) > 0 && words[0] == "CMD" {
			words = words[1:]
		}
		// The longest run of leading words that names one of our
		// commands; CockroachDB's and curl's lines name none.
		key := ""
		for n := len(words); n > 0 && key == ""; n-- {
			if _, ok := help[strings.Join(words[:n], " ")]; ok {
				key = strings.Join(words[:n], " ")
			}
		}
		if key == "" {
			continue
		}
		checked++
		for _, f := range flagToken.FindAllStringSubmatch(m[1], -1) {
			if !knows(help[key], f[1]) {
				t.Errorf("docker-compose.yml passes %s to %s, which has no such flag", f[1], key)
			}
		}
	}
	// Three sleds, two Nexus instances, the migration, the health check,
	// rack setup.
	if checked < 8 {
		t.Fatalf("found %d commands of ours in docker-compose.yml, want at least 8", checked)
	}
	scripted := 0
	for _, c := range []struct {
		key string
		re  *regexp.Regexp
	}{{"nexus pki init", pkiInit}, {"nexus pki issue", pkiIssue}, {"nexus pki issue", pkiHelper}} {
		key := c.key
		for _, m := range c.re.FindAllStringSubmatch(compose, -1) {
			scripted++
			for _, f := range flagToken.FindAllStringSubmatch(m[1], -1) {
				if !knows(help[key], f[1]) {
					t.Errorf("docker-compose.yml's pki script passes %s to %s, which has no such flag", f[1], key)
				}
			}
		}
	}
	if scripted < 5 {
		t.Fatalf("found %d pki commands in docker-compose.yml's script, want at least 5", scripted)
	}

	var all strings.Builder
	for _, h := range help {
		all.WriteString(h)
	}
	keys := envKey.FindAllStringSubmatch(compose, -1)
	if len(keys) < 5 {
		t.Fatalf("found only %d RACKPLANE_ variables in docker-compose.yml", len(keys))
	}
	for _, k := range keys {
		if !strings.Contains(all.String(), "$"+k[1]+"]") {
			t.Errorf("docker-compose.yml sets %s, which no binary reads", k[1])
		}
	}
	// A deployment publishes nothing beyond the host itself, and Nexus
	// never changes the schema (the migrate service does).
	for _, p := range regexp.MustCompile(`(?m)^\s*- "?([0-9.]*:?[0-9]+:[0-9]+)"?\s*$`).FindAllStringSubmatch(compose, -1) {
		if !strings.HasPrefix(p[1], "127.0.0.1:") {
			t.Errorf("docker-compose.yml publishes %s beyond 127.0.0.1", p[1])
		}
	}
	for _, bad := range []string{"--auto-migrate", "RACKPLANE_AUTO_MIGRATE", "--insecure"} {
		if strings.Contains(compose, bad) {
			t.Errorf("docker-compose.yml uses %s", bad)
		}
	}

	tool, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Skip("docker-compose is not installed, so `docker-compose config` was not run (the flag and variable checks above did run); .ci/run installs it")
	}
	cmd := exec.Command(tool, "-f", "docker-compose.yml", "config", "--quiet")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
}

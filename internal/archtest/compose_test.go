package archtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// helpTexts builds the binaries docker-compose.yml runs and returns each
// one's --help output.
func helpTexts(t *testing.T, root string) map[string]string {
	t.Helper()
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/nexus", "./cmd/sled-agent", "./cmd/rackctl")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out := map[string]string{}
	for name, args := range map[string][]string{"nexus": {"--help"}, "sled-agent": {"--help"}, "rackctl": {"help"}} {
		b, _ := exec.Command(filepath.Join(bin, name), args...).CombinedOutput()
		if !strings.Contains(string(b), "--") {
			t.Fatalf("%s %v printed no flags:\n%s", name, args, b)
		}
		out[name] = string(b)
	}
	return out
}

var (
	commandLine = regexp.MustCompile(`(?m)^\s*command:\s*\[(.*)\]\s*$`)
	flagToken   = regexp.MustCompile(`"(--[a-z0-9-]+)`)
	envKey      = regexp.MustCompile(`(?m)^\s*(RACKPLANE_[A-Z0-9_]+):`)
)

// docker-compose.yml cannot be run here (no Docker engine), so check what
// can be checked: every flag and environment variable it passes to our
// binaries exists, and docker-compose accepts the file when it is installed.
func TestComposeFileMatchesBinaries(t *testing.T) {
	root := repoRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	compose := string(raw)
	help := helpTexts(t, root)

	commands := commandLine.FindAllStringSubmatch(compose, -1)
	checked := 0
	for _, m := range commands {
		fields := strings.Split(m[1], ",")
		bin := strings.Trim(strings.TrimSpace(fields[0]), `"`)
		text, ours := help[bin]
		if !ours {
			continue // not one of our binaries (CockroachDB)
		}
		checked++
		for _, f := range flagToken.FindAllStringSubmatch(m[1], -1) {
			if !strings.Contains(text, f[1]+" ") && !strings.Contains(text, f[1]+"\n") {
				t.Errorf("docker-compose.yml passes %s to %s, which has no such flag", f[1], bin)
			}
		}
	}
	if checked < 4 {
		t.Fatalf("found %d commands of ours in docker-compose.yml, want nexus and 3 sled agents", checked)
	}
	all := help["nexus"] + help["sled-agent"] + help["rackctl"]
	keys := envKey.FindAllStringSubmatch(compose, -1)
	if len(keys) < 5 {
		t.Fatalf("found only %d RACKPLANE_ variables in docker-compose.yml", len(keys))
	}
	for _, k := range keys {
		if !strings.Contains(all, "$"+k[1]+"]") {
			t.Errorf("docker-compose.yml sets %s, which no binary reads", k[1])
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

package archtest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// unit is a parsed systemd unit file: its settings by section, each key
// with every value it was given, in order.
type unit struct {
	name     string
	sections map[string]map[string][]string
}

func (u unit) get(section, key string) []string { return u.sections[section][key] }

func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u.get(section, key)
	if len(v) != 1 {
		t.Fatalf("%s: [%s] %s is set %d times, want once", u.name, section, key, len(v))
	}
	return v[0]
}

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{name: filepath.Base(path), sections: map[string]map[string][]string{}}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u.sections[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, "\\") {
				t.Fatalf("%s:%d: not a setting this test understands: %q", u.name, n, line)
			}
			k = strings.TrimSpace(k)
			u.sections[section][k] = append(u.sections[section][k], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// envFile reads the RACKPLANE_ settings of an EnvironmentFile.
func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not KEY=VALUE: %q", path, line)
		}
		out[k] = v
	}
	return out
}

// binaries builds nexus and sled-agent into a temp dir.
func binaries(t *testing.T, root string) string {
	t.Helper()
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/nexus", "./cmd/sled-agent")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// helpOf is the --help text of a command line (binary and subcommand).
func helpOf(t *testing.T, bin string, args []string) string {
	t.Helper()
	b, _ := exec.Command(filepath.Join(bin, filepath.Base(args[0])), append(slices.Clone(args[1:]), "--help")...).CombinedOutput()
	if !strings.Contains(string(b), "--") {
		t.Fatalf("%v --help printed no flags:\n%s", args, b)
	}
	return string(b)
}

var unitFlag = regexp.MustCompile(`^--([a-z0-9-]+)`)

// The systemd units in deploy/systemd pass only flags and variables the
// binaries have, from environment files that are in the repository beside
// them; every unit restarts on failure within limits, runs unprivileged
// and hardened, and is given exactly the directories it writes; Nexus
// starts only after the one-shot migration; and systemd itself accepts
// the files and rates their exposure low.
func TestSystemdUnitsMatchBinaries(t *testing.T) {
	root := repoRoot(t)
	dir := filepath.Join(root, "deploy", "systemd")
	paths, err := filepath.Glob(filepath.Join(dir, "*.service"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(paths)
	want := []string{"nexus-migrate.service", "nexus.service", "rack-setup.service", "sled-agent.service"}
	var names []string
	for _, p := range paths {
		names = append(names, filepath.Base(p))
	}
	if !slices.Equal(names, want) {
		t.Fatalf("units %v, want %v", names, want)
	}
	bin := binaries(t, root)
	units := map[string]unit{}
	for _, p := range paths {
		u := parseUnit(t, p)
		units[u.name] = u
		checkUnit(t, u, dir, bin)
	}

	nx, migrate := units["nexus.service"], units["nexus-migrate.service"]
	for _, key := range []string{"Requires", "After"} {
		if !slices.Contains(strings.Fields(strings.Join(nx.get("Unit", key), " ")), "nexus-migrate.service") {
			t.Errorf("nexus.service: %s= does not name nexus-migrate.service", key)
		}
	}
	if migrate.one(t, "Service", "Type") != "oneshot" || migrate.one(t, "Service", "RemainAfterExit") != "yes" ||
		migrate.one(t, "Unit", "PartOf") != "nexus.service" {
		t.Errorf("nexus-migrate.service is not a one-shot part of nexus.service")
	}
	if got := migrate.one(t, "Service", "ExecStart"); !strings.HasSuffix(strings.Fields(got)[0], "/nexus") ||
		!strings.Contains(got, " migrate up") {
		t.Errorf("nexus-migrate.service runs %q, want nexus migrate up", got)
	}
	// The sled's M.2s are where it may write.
	sled := units["sled-agent.service"]
	env := envFile(t, filepath.Join(dir, "sled-agent.env"))
	rw := strings.Fields(strings.Join(sled.get("Service", "ReadWritePaths"), " "))
	m2s := strings.Split(env["RACKPLANE_SLED_M2"], ",")
	if len(m2s) != 2 {
		t.Fatalf("sled-agent.env names %d M.2s, want 2", len(m2s))
	}
	for _, m2 := range m2s {
		if !slices.ContainsFunc(rw, func(p string) bool { return strings.HasPrefix(m2, strings.TrimPrefix(p, "-")+"/") }) {
			t.Errorf("sled-agent.service may not write M.2 %s (ReadWritePaths %v)", m2, rw)
		}
	}
	// And its data disks: without them the sled would start unlocked,
	// the trust quorum protecting nothing.
	disks := strings.Split(env["RACKPLANE_SLED_DATA_DISK"], ",")
	if env["RACKPLANE_SLED_DATA_DISK"] == "" || len(disks) < 1 {
		t.Fatal("sled-agent.env names no data disk: the sled would start without storage unlock")
	}
	for _, d := range disks {
		if !slices.ContainsFunc(rw, func(p string) bool { return strings.HasPrefix(d, strings.TrimPrefix(p, "-")+"/") }) {
			t.Errorf("sled-agent.service may not write data disk %s (ReadWritePaths %v)", d, rw)
		}
	}

	verifyWithSystemd(t, dir, bin, paths)
}

// checkUnit checks one unit's command line, environment, restart policy,
// hardening and directories.
func checkUnit(t *testing.T, u unit, dir, bin string) {
	t.Helper()
	exec := strings.Fields(u.one(t, "Service", "ExecStart"))
	if !strings.HasPrefix(exec[0], "/usr/local/bin/") {
		t.Errorf("%s runs %s, not a binary installed in /usr/local/bin", u.name, exec[0])
	}
	cmdline := []string{exec[0]}
	for _, f := range exec[1:] {
		if strings.HasPrefix(f, "-") {
			break
		}
		cmdline = append(cmdline, f) // a subcommand: nexus migrate up
	}
	help := helpOf(t, bin, cmdline)
	for _, f := range exec[len(cmdline):] {
		if m := unitFlag.FindStringSubmatch(f); m != nil && !strings.Contains(help, "--"+m[1]+" ") &&
			!strings.Contains(help, "--"+m[1]+"\n") {
			t.Errorf("%s passes --%s to %v, which has no such flag", u.name, m[1], cmdline)
		}
	}
	files := u.get("Service", "EnvironmentFile")
	if len(files) != 1 || !strings.HasPrefix(files[0], "/etc/rackplane/") {
		t.Fatalf("%s: EnvironmentFile %v, want one file in /etc/rackplane", u.name, files)
	}
	env := envFile(t, filepath.Join(dir, filepath.Base(files[0])))
	for _, e := range u.get("Service", "Environment") {
		k, v, _ := strings.Cut(e, "=")
		env[k] = v
	}
	// One file may serve several commands of a binary (nexus and nexus
	// migrate up): each variable must be one the binary reads, and the
	// unit's own command must read some of them.
	binHelp := help
	if len(cmdline) > 1 {
		binHelp += helpOf(t, bin, cmdline[:1])
	}
	ours, read := 0, 0
	for k := range env {
		if !strings.HasPrefix(k, "RACKPLANE_") {
			continue
		}
		ours++
		if strings.Contains(help, "$"+k+"]") {
			read++
		}
		if !strings.Contains(binHelp, "$"+k+"]") {
			t.Errorf("%s sets %s, which %s does not read", u.name, k, filepath.Base(cmdline[0]))
		}
	}
	if ours < 3 || read == 0 {
		t.Errorf("%s: %d RACKPLANE_ settings in %s, %d of them read by %v", u.name, ours, files[0], read, cmdline)
	}

	need := map[string]string{
		"Restart": "on-failure", "User": "rackplane", "Group": "rackplane",
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"PrivateDevices": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "", "RestrictSUIDSGID": "yes",
		"ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
		"MemoryDenyWriteExecute": "yes", "LockPersonality": "yes", "SystemCallArchitectures": "native",
	}
	for k, v := range need {
		if got := u.get("Service", k); len(got) != 1 || got[0] != v {
			t.Errorf("%s: %s=%q, want %q", u.name, k, got, v)
		}
	}
	for _, k := range []string{"StartLimitIntervalSec", "StartLimitBurst"} {
		if len(u.get("Unit", k)) != 1 {
			t.Errorf("%s restarts without a limit: no %s in [Unit]", u.name, k)
		}
	}
	if len(u.get("Service", "RestartSec")) != 1 {
		t.Errorf("%s: no RestartSec", u.name)
	}
	if u.one(t, "Service", "Type") == "oneshot" {
		return
	}
	// Long-running services get their own state and runtime directories,
	// and their data directory is the state directory.
	state := u.one(t, "Service", "StateDirectory")
	if !strings.HasPrefix(state, "rackplane/") || len(u.get("Service", "RuntimeDirectory")) != 1 {
		t.Errorf("%s: StateDirectory %q and RuntimeDirectory %v", u.name, state, u.get("Service", "RuntimeDirectory"))
	}
	if !slices.Contains(exec, "--data-dir=${STATE_DIRECTORY}") {
		t.Errorf("%s does not keep its data in its state directory: %v", u.name, exec)
	}
	if len(u.get("Service", "TimeoutStopSec")) != 1 {
		t.Errorf("%s: no TimeoutStopSec", u.name)
	}
}

// verifyWithSystemd runs systemd-analyze on copies of the units whose
// binaries and environment files are the ones just built and the
// repository's: it must accept them without a word, and rate their
// exposure at most 2.0 (of 10).
func verifyWithSystemd(t *testing.T, dir, bin string, paths []string) {
	t.Helper()
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed: the units were checked against the binaries, not by systemd; " +
			".ci/run installs it")
		return
	}
	tmp := t.TempDir()
	var copies []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "/usr/local/bin/", bin+"/")
		s = regexp.MustCompile(`/etc/rackplane/([a-z-]+\.env)`).ReplaceAllString(s, dir+"/$1")
		c := filepath.Join(tmp, filepath.Base(p))
		if err := os.WriteFile(c, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		copies = append(copies, c)
	}
	out, err := exec.Command(tool, append([]string{"verify", "--man=no"}, copies...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, p := range paths {
		out, err := exec.Command(tool, "security", "--offline=yes", "--threshold=20", p).CombinedOutput()
		if err != nil {
			t.Errorf("systemd-analyze security %s: exposure above 2.0 (%v):\n%s", filepath.Base(p), err, out)
		}
	}
}

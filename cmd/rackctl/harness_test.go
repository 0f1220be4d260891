package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/internal/testdb"
)

// update rewrites the golden files under testdata/ with what the tests
// now produce (go test ./cmd/rackctl -update), for review in the diff.
var update = flag.Bool("update", false, "rewrite testdata/*.golden with the current output")

// asMain makes the test binary run rackctl's main instead of the tests,
// so tests can run the real binary (its exit status, its own stderr, a
// terminal or not) without building it separately.
const asMain = "RACKCTL_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		main()
		return
	}
	testdb.Main(m)
}

// rackctl runs a command line in-process.
func rackctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// rackctlMain runs a command line through the real binary's main, with
// only the environment given (plus a HOME of its own, so no token file
// of the machine's is read).
func rackctlMain(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append([]string{asMain + "=1", "HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String(), errOut.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), out.String(), errOut.String()
	}
	t.Fatalf("run rackctl %q: %v", args, err)
	return 0, "", ""
}

// golden compares got with testdata/name.golden (or rewrites it under
// -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/rackctl -update to write it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from what the command printed (go test ./cmd/rackctl -update rewrites it):\n--- want\n%s\n--- got\n%s",
			path, want, got)
	}
}

// masker replaces what differs from run to run (addresses, paths, ids)
// with stable names, longest first so one name cannot eat another.
type masker struct {
	literal [][2]string
	regexps []maskRegexp
	funcs   []func(string) string
}

type maskRegexp struct {
	re   *regexp.Regexp
	with string
}

func (m *masker) literalMask(from, to string) { m.literal = append(m.literal, [2]string{from, to}) }

func (m *masker) regexpMask(re, with string) {
	m.regexps = append(m.regexps, maskRegexp{regexp.MustCompile(re), with})
}

func (m *masker) apply(s string) string {
	lits := append([][2]string(nil), m.literal...)
	for i := range lits {
		for j := i + 1; j < len(lits); j++ {
			if len(lits[j][0]) > len(lits[i][0]) {
				lits[i], lits[j] = lits[j], lits[i]
			}
		}
	}
	for _, l := range lits {
		if l[0] != "" {
			s = strings.ReplaceAll(s, l[0], l[1])
		}
	}
	for _, r := range m.regexps {
		s = r.re.ReplaceAllString(s, r.with)
	}
	for _, f := range m.funcs {
		s = f(s)
	}
	return s
}

// rawGoError matches what must never reach an operator: Go's own error
// texts and formatting slips.
var rawGoError = regexp.MustCompile(`dial tcp|x509:|\bEOF\b|json: cannot|invalid character|%!|tls: |read tcp|write tcp|` +
	`net/http:|context deadline exceeded|connection reset by peer|no such host|\blookup \S+( on |: )|Get "|Put "|Post "|Delete "|panic:|goroutine `)

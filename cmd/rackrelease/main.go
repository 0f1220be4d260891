// Command rackrelease makes signed rackplane releases: the TUF repository
// archives an operator uploads with `rackctl repo upload`.
//
//	rackrelease keygen --dir keys
//	rackrelease root --keys keys --out root.json
//	rackrelease assemble release.toml --keys keys --root root.json --out release.zip
//	rackrelease inspect release.zip --root root.json
//
// It is a command of its own, not a part of rackctl, on purpose: signing is
// an offline job on a signing machine that holds the release keys, needs no
// rack and should not carry the operator CLI (or its tokens) along, and the
// operator CLI should not carry signing code onto every operator's laptop.
// It builds releases with package release, the same code rackdev's demo
// repo and the tests use.
//
// Commands:
//
//	keygen       make ed25519 keys for the four TUF roles
//	root         write root.json, the trust root an operator registers
//	assemble     build and sign a release from a TOML or JSON manifest
//	sign         sign an existing release again (later expiry, new keys)
//	rotate-root  write the next root version, signed by the old and new keys
//	inspect      show what a release holds, who signed it, and whether
//	             Nexus would accept it
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// env is what a command may use of the world: output, randomness for
// keys, and the time expiries are counted from.
type env struct {
	stdout, stderr io.Writer
	rng            io.Reader
	now            func() time.Time
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env, args []string) error
}

func commands() []command {
	return []command{
		{"keygen", "make ed25519 keys for the TUF roles (--dir, --threshold role=N, --keys role=N)", runKeygen},
		{"root", "write root version 1 from the keys (--keys, --out, --expires, --consistent)", runRoot},
		{"assemble", "build and sign a release: assemble MANIFEST --keys DIR --root FILE... --out ZIP", runAssemble},
		{"sign", "sign a release again: sign ZIP --keys DIR --root FILE... --out ZIP", runSign},
		{"rotate-root", "write the next root version: --root CURRENT --old-keys DIR --keys DIR --out FILE", runRotateRoot},
		{"inspect", "show a release's artifacts, parts, signers and expiry: inspect ZIP [--root FILE]", runInspect},
	}
}

const usage = `rackrelease: make signed rackplane releases (TUF repositories in a zip).

Usage: rackrelease COMMAND [ARGS]; rackrelease COMMAND --help for its flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, env{stdout: os.Stdout, stderr: os.Stderr, rng: rand.Reader, now: time.Now}, os.Args[1:])
	stop()
	os.Exit(code)
}

// errUsage marks a mistake in the command line (exit status 2).
var errUsage = errors.New("usage")

func run(ctx context.Context, e env, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(e.stdout, usage)
		for _, c := range commands() {
			fmt.Fprintf(e.stdout, "  %-12s %s\n", c.name, c.summary)
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(e.stderr, "rackrelease %s: %v\n", c.name, err)
			return 2
		}
		fmt.Fprintf(e.stderr, "rackrelease %s: %v\n", c.name, err)
		return 1
	}
	fmt.Fprintf(e.stderr, "rackrelease: unknown command %q (run rackrelease help)\n", args[0])
	return 2
}

// flags is a command's flag set; parse takes positional arguments from
// anywhere on the line (flags may follow them).
func flags(e env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("rackrelease "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string, positional int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != positional {
		return nil, fmt.Errorf("%w: want %d argument(s), got %d (%s)", errUsage, positional, len(pos), strings.Join(pos, " "))
	}
	return pos, nil
}

// roleCounts is a repeatable role=N flag.
type roleCounts map[string]int

func (r roleCounts) String() string { return fmt.Sprint(map[string]int(r)) }

func (r roleCounts) Set(s string) error {
	role, n, ok := strings.Cut(s, "=")
	v, err := strconv.Atoi(n)
	if !ok || err != nil || v < 1 {
		return fmt.Errorf("want role=N with N ≥ 1, got %q", s)
	}
	switch role {
	case "root", "timestamp", "snapshot", "targets":
	default:
		return fmt.Errorf("unknown role %q (root, timestamp, snapshot or targets)", role)
	}
	r[role] = v
	return nil
}

// files is a repeatable file flag.
type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(s string) error { *f = append(*f, s); return nil }

// parseExpires reads an expiry: an RFC 3339 time, a date (YYYY-MM-DD,
// midnight UTC), or a span from now (90d, 12h).
func parseExpires(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(d); err == nil && n > 0 {
			return now.Add(time.Duration(n) * 24 * time.Hour).UTC().Truncate(time.Second), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(d).UTC().Truncate(time.Second), nil
	}
	return time.Time{}, fmt.Errorf("%w: --expires %q: want an RFC 3339 time, a date (2030-01-01) or a span (90d, 48h)", errUsage, s)
}

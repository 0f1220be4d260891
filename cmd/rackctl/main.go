// Command rackctl is the operator's command-line client of Nexus's external
// API. Output is a human table by default and JSON with --json; errors are
// one sentence on stderr (a JSON object under --json), exit status 1 for a
// failed operation and 2 for a command-line mistake.
package main

import (
	"context"
	"flag"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/clock"
)

// command is one "rackctl GROUP VERB" command (or "rackctl GROUP" when
// verb is empty). Each group lives in its own file, which returns its
// commands; commands() lists the groups. The parser (cli.go) turns the
// table into the command tree, so adding a command is adding a row.
type command struct {
	group, verb string
	args        string // usage of positional arguments, e.g. "NAME..."
	summary     string
	// flags adds the command's own flags (besides the global ones).
	flags func(fs *flag.FlagSet)
	run   func(ctx context.Context, env *env, args []string) error

	// Optional.

	// long is more help, shown by --help below the summary.
	long string
	// complete offers the values of the next positional argument to shell
	// completion (args are those already on the line); it asks Nexus, so
	// it runs with the line's global flags and a short timeout.
	complete func(ctx context.Context, env *env, args []string) ([]string, error)
	// files makes shell completion offer files with these extensions.
	files []string
	// noToken marks a command that needs no operator token; with
	// tokenIfAny it sends one when one is given (Nexus then says more).
	noToken, tokenIfAny bool
}

// commands lists every command; each group lives in its own file.
func commands() []command {
	var all []command
	all = append(all, healthCommands()...)
	all = append(all, sledCommands()...)
	all = append(all, bgtaskCommands()...)
	all = append(all, repoCommands()...)
	all = append(all, trustRootCommands()...)
	all = append(all, accessCommands()...)
	all = append(all, trustQuorumCommands()...)
	return all
}

// groupSummaries describe the groups in the top-level help; a group not
// listed is described by its verbs.
var groupSummaries = map[string]string{
	"sleds":      "the rack's sleds",
	"bgtasks":    "Nexus's background tasks",
	"repo":       "uploaded releases (TUF repos) and their artifacts",
	"trust-root": "the TUF roots releases are verified against",
	"token":      "operator tokens",
	"audit":      "the audit log",
}

// env is what a command runs with.
type env struct {
	nexus   client.Nexus
	out     io.Writer
	errOut  io.Writer
	json    bool
	baseURL string
	token   string

	// clock paces progress lines and waits; humanized times are relative
	// to its Now.
	clock clock.Clock
	// terminal is set when errOut is a terminal, so progress may redraw
	// one line in place.
	terminal bool
	// streaming is a client of the same Nexus without --timeout, for
	// calls that take as long as they take (uploads).
	streaming client.Nexus
	// timeout is --timeout, for messages that name it.
	timeout time.Duration
}

// now is the time humanized output is relative to.
func (e *env) now() time.Time { return e.clock.Now() }

const defaultNexusURL = "http://127.0.0.1:12220"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs one command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, stdout, stderr, clock.Real())
}

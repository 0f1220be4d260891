// Command rackctl is the operator's command-line client of Nexus's external
// API. Output is a human table by default and JSON with --json.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/envflag"
)

// command is one "rackctl GROUP VERB" command.
type command struct {
	group, verb string
	args        string // usage of positional arguments, e.g. "NAME..."
	summary     string
	// flags adds the command's own flags (besides the global ones).
	flags func(fs *flag.FlagSet)
	run   func(ctx context.Context, env *env, args []string) error
}

// commands lists every command; each group lives in its own file.
func commands() []command {
	var all []command
	all = append(all, sledCommands()...)
	all = append(all, bgtaskCommands()...)
	all = append(all, repoCommands()...)
	all = append(all, trustRootCommands()...)
	all = append(all, accessCommands()...)
	all = append(all, trustQuorumCommands()...)
	return all
}

// env is what a command runs with.
type env struct {
	nexus   client.Nexus
	out     io.Writer
	errOut  io.Writer
	json    bool
	baseURL string
	token   string
}

const defaultNexusURL = "http://127.0.0.1:12220"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var nexusURL, token, tokenFile string
	var asJSON bool
	var timeout time.Duration
	global := envflag.New("rackctl", "")
	global.SetOutput(stderr)
	global.String(&nexusURL, "nexus", "RACKPLANE_NEXUS_URL", defaultNexusURL, "base URL of Nexus's external API")
	global.Bool(&asJSON, "json", "", false, "print JSON instead of tables")
	global.Duration(&timeout, "timeout", "RACKPLANE_TIMEOUT", 30*time.Second, "timeout of each API call (uploads excepted)")
	global.String(&token, "token", "RACKPLANE_TOKEN", "", "operator token (rp_...); see --token-file")
	global.String(&tokenFile, "token-file", "RACKPLANE_TOKEN_FILE", defaultTokenFile(),
		"file holding the operator token, used when --token and $RACKPLANE_TOKEN are unset")
	global.Usage = func() { printUsage(stderr, global) }
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rest := global.Args()
	if len(rest) == 0 || rest[0] == "help" {
		printUsage(stdout, global)
		return 0
	}
	var cmd *command
	var groupKnown bool
	all := commands()
	for i := range all {
		if all[i].group == rest[0] {
			groupKnown = true
			if len(rest) > 1 && all[i].verb == rest[1] {
				cmd = &all[i]
			}
		}
	}
	if cmd == nil {
		if groupKnown {
			fmt.Fprintf(stderr, "rackctl: %s needs one of: %s\n", rest[0], strings.Join(verbs(all, rest[0]), ", "))
		} else {
			fmt.Fprintf(stderr, "rackctl: unknown command %q (run rackctl help)\n", rest[0])
		}
		return 2
	}
	fs := flag.NewFlagSet("rackctl "+cmd.group+" "+cmd.verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&asJSON, "json", asJSON, "print JSON instead of tables")
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: rackctl %s %s [flags] %s\n  %s\n", cmd.group, cmd.verb, cmd.args, cmd.summary)
		fs.PrintDefaults()
	}
	if err := fs.Parse(rest[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	hc := *client.DefaultHTTPClient
	hc.Timeout = timeout
	nexus, err := client.NewNexus(nexusURL, &hc)
	if err != nil {
		fmt.Fprintln(stderr, "rackctl: --nexus:", err)
		return 2
	}
	if token == "" {
		if token, err = readTokenFile(tokenFile, stderr); err != nil {
			fmt.Fprintln(stderr, "rackctl:", err)
			return 2
		}
	}
	if token == "" {
		fmt.Fprintln(stderr, "rackctl: "+noTokenHint)
		return 2
	}
	nexus = nexus.WithToken(token)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{nexus: nexus, out: stdout, errOut: stderr, json: asJSON, baseURL: nexusURL, token: token}
	if err := cmd.run(ctx, e, fs.Args()); err != nil {
		fmt.Fprintln(stderr, "rackctl:", describe(err, nexusURL))
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

// usageError is a command-line mistake (exit status 2).
type usageError string

func (u usageError) Error() string { return string(u) }

func describe(err error, nexusURL string) string {
	var apiErr *api.Error
	var urlErr *url.Error
	var opErr *net.OpError
	switch {
	case errors.As(err, &apiErr):
		return apiErr.Error()
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Sprintf("cannot reach Nexus at %s: %v (is it running? set --nexus or $RACKPLANE_NEXUS_URL)", nexusURL, opErr.Err)
	case errors.As(err, &urlErr) && urlErr.Timeout():
		return fmt.Sprintf("Nexus at %s did not answer in time (see --timeout)", nexusURL)
	}
	return err.Error()
}

func verbs(all []command, group string) []string {
	var out []string
	for _, c := range all {
		if c.group == group {
			out = append(out, c.verb)
		}
	}
	return out
}

func printUsage(w io.Writer, global *envflag.Set) {
	fmt.Fprintln(w, "rackctl: operate a rackplane rack through Nexus's external API.")
	fmt.Fprintln(w, "\nUsage: rackctl [global flags] GROUP VERB [flags] [args]")
	fmt.Fprintln(w, "\nCommands:")
	all := commands()
	sort.SliceStable(all, func(i, j int) bool { return all[i].group < all[j].group })
	for _, c := range all {
		fmt.Fprintf(w, "  %-34s %s\n", strings.TrimSpace(c.group+" "+c.verb+" "+c.args), c.summary)
	}
	fmt.Fprintln(w, "\nGlobal flags:")
	global.PrintDefaults(w)
}

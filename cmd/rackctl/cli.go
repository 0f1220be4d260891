package main

// The parser is cobra (github.com/spf13/cobra), built from the command
// table rather than written by hand. Why cobra and not kong or our own:
// cobra's persistent flags are what "global flags anywhere on the line"
// means; it generates bash, zsh, fish and PowerShell completion, including
// values computed at completion time (task names, repo versions) through
// its hidden __complete command; its help shows a command's own flags and
// the global ones. Kong derives the command tree from struct tags, which
// fits one big grammar struct, not a table that each group's file extends
// on its own, and its completion lives in a third-party module. Every
// command stays a row of the table (one file per group returning its
// []command), and the rows' flags stay standard-library flag.FlagSets,
// which pflag adopts as they are.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/clock"
)

// globals are the flags every command takes, anywhere on the line.
type globals struct {
	nexusURL  string
	token     string
	tokenFile string
	caCert    string
	timeout   time.Duration
	json      bool
	version   bool

	// envErr is a malformed environment variable, reported when a command
	// runs (help still works).
	envErr error
	// tokenSource says where the token came from, for messages about it.
	tokenSource string
	// tokenFlag is --token, which says whether it was on the line.
	tokenFlag *pflag.Flag
}

// Environment variables behind the global flags.
const (
	envNexusURL  = "RACKPLANE_NEXUS_URL"
	envToken     = "RACKPLANE_TOKEN"
	envTokenFile = "RACKPLANE_TOKEN_FILE"
	envCACert    = "RACKPLANE_CA_CERT"
	envTimeout   = "RACKPLANE_TIMEOUT"
)

func (g *globals) register(fs *pflag.FlagSet) {
	timeout := 30 * time.Second
	if v, ok := os.LookupEnv(envTimeout); ok {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			g.envErr = usageError(fmt.Sprintf("$%s %q is not a positive duration (like 30s or 5m)", envTimeout, v))
		} else {
			timeout = d
		}
	}
	fs.StringVar(&g.nexusURL, "nexus", envOr(envNexusURL, defaultNexusURL),
		"base URL of Nexus's external API [$"+envNexusURL+"]")
	// The token's default is not shown in --help (it is a secret), so
	// $RACKPLANE_TOKEN is read when a command runs.
	fs.StringVar(&g.token, "token", "", "operator token (rp_...) [$"+envToken+"]; see --token-file")
	fs.StringVar(&g.tokenFile, "token-file", envOr(envTokenFile, defaultTokenFile()),
		"file holding the operator token, read when --token and $"+envToken+" are unset [$"+envTokenFile+"]")
	fs.StringVar(&g.caCert, "ca-cert", envOr(envCACert, ""),
		"PEM file of the CA that signed Nexus's HTTPS certificate (default: the system's roots) [$"+envCACert+"]")
	fs.DurationVar(&g.timeout, "timeout", timeout, "timeout of each API call (uploads excepted) [$"+envTimeout+"]")
	fs.BoolVar(&g.json, "json", false, "print JSON instead of tables, and errors as JSON on stderr")
	g.tokenFlag = fs.Lookup("token")
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// runWith runs one command line with the given clock.
func runWith(ctx context.Context, args []string, stdout, stderr io.Writer, clk clock.Clock) int {
	b := &builder{g: &globals{}, stdout: stdout, stderr: stderr, clock: clk}
	root := b.root()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	r := describe(ctx, err, b.g)
	r.print(stderr, b.g.json || jsonOnLine(args))
	return r.exit
}

// jsonOnLine reports whether --json is on the line, for an error found
// before the parser reached it.
func jsonOnLine(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "--json", "--json=true":
			return true
		}
	}
	return false
}

// builder makes the command tree and, for the command that runs, its env.
type builder struct {
	g              *globals
	stdout, stderr io.Writer
	clock          clock.Clock
}

func (b *builder) root() *cobra.Command {
	g := b.g
	root := &cobra.Command{
		Use:   "rackctl",
		Short: "rackctl operates a rackplane rack through Nexus's external API.",
		Long: "rackctl operates a rackplane rack through Nexus's external API.\n\n" +
			"Every command needs an operator token (--token, $RACKPLANE_TOKEN or a token file); global flags\n" +
			"may come anywhere on the line. `rackctl GROUP --help` lists a group's commands.",
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknownCommand(c, args[0])
			}
			return nil
		},
		RunE: func(c *cobra.Command, _ []string) error {
			if g.version {
				return printVersion(b.stdout, g.json)
			}
			return c.Help()
		},
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	root.SetOut(b.stdout)
	root.SetErr(b.stderr)
	// A group runs only to say it needs a verb: its usage shows the
	// "[command]" line alone.
	// The top level lists every command itself (rootHelp), not only the
	// groups.
	tmpl := strings.Replace(root.UsageTemplate(), "{{if .Runnable}}", "{{if and .Runnable (not .HasAvailableSubCommands)}}", 1)
	tmpl = strings.Replace(tmpl, "{{if .HasAvailableSubCommands}}{{$cmds := .Commands}}",
		"{{if and .HasAvailableSubCommands .HasParent}}{{$cmds := .Commands}}", 1)
	root.SetUsageTemplate(tmpl)
	g.register(root.PersistentFlags())
	root.Flags().BoolVar(&g.version, "version", false, "print rackctl's version")
	root.SetFlagErrorFunc(flagError)
	root.SetHelpCommand(b.helpCommand(root))

	groups := map[string]*cobra.Command{}
	for _, c := range commands() {
		if c.verb == "" {
			root.AddCommand(b.leaf(c))
			continue
		}
		gc := groups[c.group]
		if gc == nil {
			gc = b.group(c.group)
			groups[c.group] = gc
			root.AddCommand(gc)
		}
		gc.AddCommand(b.leaf(c))
	}
	for name, gc := range groups {
		if gc.Short == "" {
			gc.Short = name + " commands: " + strings.Join(subcommandNames(gc), ", ")
		}
	}
	b.completionCommand(root)
	root.InitDefaultHelpCmd()
	root.Long += "\n\n" + rootHelp(root)
	return root
}

// rootHelp lists every command with its summary.
func rootHelp(root *cobra.Command) string {
	var rows [][2]string
	width := 0
	add := func(c *cobra.Command) {
		use := strings.TrimPrefix(c.UseLine(), "rackctl ")
		use = strings.TrimSuffix(use, " [flags]")
		rows = append(rows, [2]string{use, c.Short})
		width = max(width, len(use))
	}
	for _, c := range root.Commands() {
		if !c.IsAvailableCommand() && c.Name() != "help" {
			continue
		}
		subs := 0
		for _, s := range c.Commands() {
			if s.IsAvailableCommand() {
				add(s)
				subs++
			}
		}
		if subs == 0 || c.Name() == "completion" {
			if subs > 0 {
				rows = rows[:len(rows)-subs]
			}
			add(c)
		}
	}
	var sb strings.Builder
	sb.WriteString("Commands:")
	for _, r := range rows {
		fmt.Fprintf(&sb, "\n  %-*s  %s", width, r[0], r[1])
	}
	return sb.String()
}

// group is the command of a group: it only says which verbs it has.
func (b *builder) group(name string) *cobra.Command {
	return &cobra.Command{
		Use:   name,
		Short: groupSummaries[name],
		Args:  cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			verbs := strings.Join(subcommandNames(c), ", ")
			if len(args) == 0 {
				return usageError(fmt.Sprintf("%s needs one of: %s (see rackctl %s --help)", name, verbs, name))
			}
			return usageError(fmt.Sprintf("%s has no command %q; it has %s (see rackctl %s --help)", name, args[0], verbs, name))
		},
	}
}

func subcommandNames(c *cobra.Command) []string {
	var out []string
	for _, s := range c.Commands() {
		if s.IsAvailableCommand() {
			out = append(out, s.Name())
		}
	}
	return out
}

// leaf is the command of one row of the table.
func (b *builder) leaf(c command) *cobra.Command {
	use := c.verb
	if use == "" {
		use = c.group
	}
	if c.args != "" {
		use += " " + c.args
	}
	long := c.summary
	if c.long != "" {
		long += "\n\n" + c.long
	}
	cc := &cobra.Command{
		Use:   use,
		Short: c.summary,
		Long:  long,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cc *cobra.Command, args []string) error {
			e, err := b.env(c, b.stderr)
			if err != nil {
				return err
			}
			return c.run(cc.Context(), e, args)
		},
		ValidArgsFunction: func(cc *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return b.completeArgs(cc.Context(), c, args, toComplete)
		},
	}
	if c.flags != nil {
		fs := flag.NewFlagSet(use, flag.ContinueOnError)
		c.flags(fs)
		cc.Flags().AddGoFlagSet(fs)
	}
	return cc
}

// completeArgs offers the next positional argument's values: files of the
// command's extensions, or what its complete function asks Nexus for.
func (b *builder) completeArgs(ctx context.Context, c command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(c.files) > 0 {
		return c.files, cobra.ShellCompDirectiveFilterFileExt
	}
	if c.complete == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	// Completion must not hang the shell, nor print into it.
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	e, err := b.env(c, io.Discard)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	values, err := c.complete(ctx, e, args)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, v := range values {
		if strings.HasPrefix(v, toComplete) && !slices.Contains(args, v) {
			out = append(out, v)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// helpCommand is "rackctl help [GROUP [VERB]]": the named command's help,
// and a usage error for a name no command has.
func (b *builder) helpCommand(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "help [GROUP [VERB]]",
		Short: "show help for rackctl, a group or a command",
		Args:  cobra.ArbitraryArgs,
		RunE: func(_ *cobra.Command, args []string) error {
			target, rest, err := root.Find(args)
			if err != nil || len(rest) > 0 {
				return usageError(fmt.Sprintf("no command %q (run rackctl help)", strings.Join(args, " ")))
			}
			return target.Help()
		},
		ValidArgsFunction: func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			target, rest, err := root.Find(args)
			if err != nil || len(rest) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []cobra.Completion
			for _, s := range target.Commands() {
				if s.IsAvailableCommand() && strings.HasPrefix(s.Name(), toComplete) {
					out = append(out, cobra.CompletionWithDesc(s.Name(), s.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
	}
}

// completionCommand adds cobra's "completion bash|zsh|fish|powershell",
// with our exit status for a shell it does not know.
func (b *builder) completionCommand(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() != "completion" {
			continue
		}
		shells := strings.Join(subcommandNames(c), ", ")
		c.Use = "completion SHELL"
		c.Short = "print a shell completion script (" + shells + ")"
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError("completion needs a shell: " + shells + " (see rackctl completion --help)")
			}
			return usageError(fmt.Sprintf("no completion for shell %q; rackctl has it for %s", args[0], shells))
		}
		for _, sh := range c.Commands() {
			sh.Args = func(c *cobra.Command, args []string) error {
				if len(args) > 0 {
					return usageError(fmt.Sprintf("%s takes no arguments, got %q", c.CommandPath(), args))
				}
				return nil
			}
		}
	}
}

// unknownCommand is the usage error for a first word no group has.
func unknownCommand(c *cobra.Command, name string) error {
	hint := "run rackctl --help"
	if s := c.SuggestionsFor(name); len(s) > 0 {
		hint = "did you mean " + strings.Join(s, " or ") + "?"
	}
	return usageError(fmt.Sprintf("unknown command %q (%s)", name, hint))
}

// flagError rewrites the parser's flag errors as one line that says what
// to do.
func flagError(c *cobra.Command, err error) error {
	path := c.CommandPath()
	name := strings.TrimPrefix(path, "rackctl ")
	var notExist *pflag.NotExistError
	var needs *pflag.ValueRequiredError
	var invalid *pflag.InvalidValueError
	switch {
	case errors.As(err, &notExist):
		if short := notExist.GetSpecifiedShortnames(); len(short) > 1 {
			return usageError(fmt.Sprintf("-%s is not a flag: long flags take two dashes (--%s)", short, short))
		}
		flag := "--" + notExist.GetSpecifiedName()
		if len(flag) == 3 {
			flag = flag[1:]
		}
		return usageError(fmt.Sprintf("%s has no flag %s (see %s --help)", name, flag, path))
	case errors.As(err, &needs):
		return usageError(fmt.Sprintf("--%s needs a value (see %s --help)", needs.GetFlag().Name, path))
	case errors.As(err, &invalid):
		f := invalid.GetFlag()
		want := map[string]string{
			"duration": "a duration (like 30s or 5m)", "int": "a whole number", "bool": "true or false",
		}[f.Value.Type()]
		if want == "" {
			want = "a valid value"
		}
		return usageError(fmt.Sprintf("--%s %q is not %s", f.Name, invalid.GetValue(), want))
	}
	return usageError(fmt.Sprintf("%s (see %s --help)", err, path))
}

// env resolves the global flags for command c, which is about to run: the
// Nexus URL, the HTTP clients, and the token when the command needs one
// (or, for one that needs none, when one is at hand). warn receives
// warnings (a token file others can read).
func (b *builder) env(c command, warn io.Writer) (*env, error) {
	g := b.g
	if g.envErr != nil {
		return nil, g.envErr
	}
	if g.timeout <= 0 {
		return nil, usageError("--timeout must be positive")
	}
	base, err := checkNexusURL(g.nexusURL)
	if err != nil {
		return nil, err
	}
	g.nexusURL = base
	tr, err := transport(g.caCert)
	if err != nil {
		return nil, err
	}
	nx, err := client.NewNexus(base, &http.Client{Timeout: g.timeout, Transport: tr})
	if err != nil {
		return nil, usageError(fmt.Sprintf("--nexus %q is not a URL like %s", base, defaultNexusURL))
	}
	// An upload takes as long as it takes; --timeout is for small calls.
	stream, _ := client.NewNexus(base, &http.Client{Transport: tr})
	e := &env{out: b.stdout, errOut: b.stderr, json: g.json, baseURL: base, clock: b.clock, timeout: g.timeout,
		terminal: isTerminal(b.stderr) && !g.json}
	switch {
	case !c.noToken:
		token, err := g.resolveToken(warn, g.json)
		if err != nil {
			return nil, err
		}
		e.token = token
		nx, stream = nx.WithToken(token), stream.WithToken(token)
	case c.tokenIfAny:
		// Without a token the command still works; with one Nexus says
		// more. A token that cannot be found is no error here.
		if token, err := g.resolveToken(warn, g.json); err == nil {
			e.token = token
			nx, stream = nx.WithToken(token), stream.WithToken(token)
		}
	}
	e.nexus, e.streaming = nx, stream
	return e, nil
}

// resolveToken finds the operator token: --token, then $RACKPLANE_TOKEN,
// then the token file.
func (g *globals) resolveToken(warn io.Writer, asJSON bool) (string, error) {
	switch {
	case g.tokenFlag != nil && g.tokenFlag.Changed:
		g.tokenSource = "--token"
		if g.token == "" {
			return "", usageError("--token is empty; " + noTokenHint)
		}
		return g.token, nil
	case os.Getenv(envToken) != "":
		g.tokenSource = "$" + envToken
		return os.Getenv(envToken), nil
	}
	token, err := readTokenFile(g.tokenFile, warn, asJSON)
	if err != nil {
		return "", err
	}
	if token == "" {
		return "", usageError(noTokenHint)
	}
	g.tokenSource = "the token file " + g.tokenFile
	return token, nil
}

// checkNexusURL refuses a --nexus that cannot be Nexus's external API, so
// a mistake is named before anything is sent: no scheme, another scheme,
// or a path into the API (".../v1") rather than the server's base URL.
func checkNexusURL(raw string) (string, error) {
	raw = strings.TrimRight(raw, "/")
	if raw == "" {
		return "", usageError("--nexus is empty; give Nexus's external API, like " + defaultNexusURL)
	}
	if !strings.Contains(raw, "://") {
		return "", usageError(fmt.Sprintf("--nexus %q has no scheme: use http://%s (or https:// when Nexus serves HTTPS)", raw, raw))
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", usageError(fmt.Sprintf("--nexus %q is not a URL like %s", raw, defaultNexusURL))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", usageError(fmt.Sprintf("--nexus %q: the scheme must be http or https, not %s", raw, u.Scheme))
	}
	for _, seg := range strings.Split(strings.Trim(u.Path, "/"), "/") {
		if seg == "v1" || seg == "ui" || seg == "openapi.json" || seg == "healthz" {
			base := *u
			base.Path = u.Path[:strings.Index(u.Path, "/"+seg)]
			return "", usageError(fmt.Sprintf("--nexus %q is a path inside the API; give the server's base URL: --nexus %s",
				raw, base.String()))
		}
	}
	return raw, nil
}

// transport is the HTTP transport of every call, trusting caFile's CAs
// for HTTPS when given.
func transport(caFile string) (*http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// An upload asks for 100 Continue (api/client sets Expect when the
	// length is known) and waits this long for it, so a refusal Nexus
	// makes before reading (no trust roots, too big, no upload slot)
	// costs no body; past the wait the body goes anyway, for a server
	// or proxy that never answers 100.
	tr.ExpectContinueTimeout = 2 * time.Second
	if caFile == "" {
		return tr, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fileProblem("--ca-cert", caFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, usageError(fmt.Sprintf("--ca-cert %s holds no PEM certificate", caFile))
	}
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr, nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// commandNames lists "group verb" of every command, for tests and help.
func commandNames() []string {
	var out []string
	for _, c := range commands() {
		out = append(out, strings.TrimSpace(c.group+" "+c.verb))
	}
	sort.Strings(out)
	return out
}

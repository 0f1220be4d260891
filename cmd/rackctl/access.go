package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/humanize"
)

// noTokenHint is the one line rackctl says when it has no token.
const noTokenHint = "no operator token: pass --token, set $RACKPLANE_TOKEN, or put one in the --token-file " +
	"(rackdev prints its admin token and writes it to <data-dir>/admin-token; an admin makes more with " +
	"`rackctl token create`, and the first comes from `nexus token create` on a Nexus host)"

// defaultTokenFile is where rackctl looks for a token when told nothing.
func defaultTokenFile() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "rackplane", "token")
}

// readTokenFile reads a token file. A missing file at the default path is
// no token; one named by --token-file or $RACKPLANE_TOKEN_FILE must exist.
// A file others can read is used, with a warning.
func readTokenFile(path string, warnTo io.Writer, asJSON bool) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && path == defaultTokenFile() {
		return "", nil
	}
	if err != nil {
		return "", fileProblem("--token-file", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		warn(warnTo, asJSON, fmt.Sprintf("%s can be read by other users (mode %o); chmod 600 it", path, fi.Mode().Perm()))
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", usageError(fmt.Sprintf("--token-file %s is empty; %s", path, noTokenHint))
	}
	return tok, nil
}

func accessCommands() []command {
	var role string
	var ttl time.Duration
	var limit int
	return []command{{
		group: "token", verb: "create", args: "NAME", summary: "make an operator token (shown once)",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&role, "role", api.RoleViewer, "viewer (reads) or admin (reads and changes)")
			fs.DurationVar(&ttl, "ttl", 0, "how long the token works (0: until revoked)")
		},
		run: func(ctx context.Context, e *env, args []string) error { return tokenCreate(ctx, e, args, role, ttl) },
	}, {
		group: "token", verb: "list", summary: "list operator tokens (never their secrets)",
		run: tokenList,
	}, {
		group: "token", verb: "revoke", args: "ID|NAME", summary: "revoke an operator token at once",
		run: tokenRevoke, complete: completeTokenNames,
	}, {
		group: "audit", verb: "list", summary: "show the audit log, newest first",
		flags: func(fs *flag.FlagSet) { fs.IntVar(&limit, "limit", 50, "show at most this many entries (0: all)") },
		run:   func(ctx context.Context, e *env, args []string) error { return auditList(ctx, e, args, limit) },
	}}
}

func tokenCreate(ctx context.Context, e *env, args []string, role string, ttl time.Duration) error {
	if len(args) != 1 {
		return usageError("token create takes one argument: the token's name (who or what will use it)")
	}
	if ttl < 0 {
		return usageError("--ttl must not be negative")
	}
	made, err := e.nexus.TokenCreate(ctx, api.OperatorTokenCreate{Name: args[0], Role: role, TTLSeconds: int64(ttl / time.Second)})
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, made)
	}
	fmt.Fprintln(e.out, made.Token)
	until := "until revoked"
	if made.TimeExpires != nil {
		until = "until " + made.TimeExpires.Format(time.RFC3339)
	}
	fmt.Fprintf(e.errOut, "made %s token %q (id %s), valid %s; it is shown only now\n", made.Role, made.Name, made.ID, until)
	return nil
}

func tokenState(t api.OperatorToken, now time.Time) string {
	switch {
	case t.TimeRevoked != nil:
		return "revoked " + humanize.Ago(now, *t.TimeRevoked)
	case t.TimeExpires != nil && !now.Before(*t.TimeExpires):
		return "expired " + humanize.Ago(now, *t.TimeExpires)
	case t.TimeExpires != nil:
		return "active, expires " + humanize.Ago(now, *t.TimeExpires)
	}
	return "active"
}

func tokenList(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 {
		return usageError(fmt.Sprintf("token list takes no arguments, got %q", args))
	}
	toks, err := e.nexus.TokenList(ctx)
	if err != nil {
		return err
	}
	// Oldest first, as they were made (the API lists them by id).
	sort.SliceStable(toks, func(i, j int) bool {
		if !toks[i].TimeCreated.Equal(toks[j].TimeCreated) {
			return toks[i].TimeCreated.Before(toks[j].TimeCreated)
		}
		return toks[i].Name < toks[j].Name
	})
	if e.json {
		return printJSON(e.out, toks)
	}
	now := e.now()
	rows := make([][]string, 0, len(toks))
	for _, t := range toks {
		used := "never"
		if t.TimeLastUsed != nil {
			used = humanize.Ago(now, *t.TimeLastUsed)
		}
		rows = append(rows, []string{t.ID.String(), t.Name, t.Role, tokenState(t, now), used,
			t.TimeCreated.Format("2006-01-02 15:04"), t.CreatedBy})
	}
	if err := table(e.out, []string{"ID", "NAME", "ROLE", "STATE", "LAST USED", "CREATED", "BY"}, rows); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "%d token(s)\n", len(toks))
	return nil
}

func tokenRevoke(ctx context.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError("token revoke takes one argument: the token's ID or name (see rackctl token list)")
	}
	id, err := uuid.Parse(args[0])
	if err != nil {
		// A name: it must name exactly one token that still works.
		toks, err := e.nexus.TokenList(ctx)
		if err != nil {
			return err
		}
		var match []api.OperatorToken
		for _, t := range toks {
			if t.Name == args[0] && t.TimeRevoked == nil {
				match = append(match, t)
			}
		}
		switch len(match) {
		case 0:
			return fail(api.CodeNotFound, "no working token is named %q (see rackctl token list)", args[0])
		case 1:
			id = match[0].ID
		default:
			return fail("ambiguous_name", "%d working tokens are named %q; revoke one by its ID (see rackctl token list)", len(match), args[0])
		}
	}
	t, err := e.nexus.TokenRevoke(ctx, id)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, t)
	}
	fmt.Fprintf(e.out, "token %q (%s) revoked\n", t.Name, t.ID)
	return nil
}

func auditList(ctx context.Context, e *env, args []string, limit int) error {
	if len(args) > 0 {
		return usageError(fmt.Sprintf("audit list takes no arguments, got %q", args))
	}
	if limit < 0 || limit > 1000 {
		return usageError("--limit must be 0 (all) to 1000")
	}
	entries, err := e.nexus.AuditLog(ctx, limit)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, entries)
	}
	now := e.now()
	rows := make([][]string, 0, len(entries))
	for _, a := range entries {
		outcome := a.Outcome
		if a.ErrorCode != "" {
			outcome += " (" + a.ErrorCode + ")"
		}
		rows = append(rows, []string{humanize.Ago(now, a.Time), a.Actor, a.Action, a.Target, outcome, a.RequestID})
	}
	if err := table(e.out, []string{"WHEN", "WHO", "ACTION", "TARGET", "OUTCOME", "REQUEST"}, rows); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "%d entr%s\n", len(entries), map[bool]string{true: "y", false: "ies"}[len(entries) == 1])
	return nil
}

// completeTokenNames offers the names of the tokens that still work.
func completeTokenNames(ctx context.Context, e *env, args []string) ([]string, error) {
	if len(args) > 0 {
		return nil, nil
	}
	toks, err := e.nexus.TokenList(ctx)
	var out []string
	for _, t := range toks {
		if t.TimeRevoked == nil && !slices.Contains(out, t.Name) {
			out = append(out, t.Name)
		}
	}
	return out, err
}

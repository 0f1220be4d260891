package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
)

func trustRootCommands() []command {
	var force bool
	return []command{{
		group: "trust-root", verb: "add", args: "FILE", summary: "register a TUF root.json that uploads are verified against",
		run: trustRootAdd, files: []string{"json"},
	}, {
		group: "trust-root", verb: "list", summary: "list the registered trust roots",
		run: trustRootList,
	}, {
		group: "trust-root", verb: "show", args: "ID", summary: "show a trust root: its roles, keys and the repos it signs",
		run: trustRootShow, complete: completeTrustRoots,
	}, {
		group: "trust-root", verb: "delete", args: "ID", summary: "remove a trust root",
		long: "Nexus refuses to remove a root that live repos were verified against unless --force is given:\n" +
			"uploading those releases again (to restore a pruned repo or a lost copy) would be refused once it\n" +
			"is gone. Removing the last root is allowed; every upload is then refused until a root is added.",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&force, "force", false, "remove it even if live repos were verified against it")
		},
		run:      func(ctx context.Context, e *env, args []string) error { return trustRootDelete(ctx, e, args, force) },
		complete: completeTrustRoots,
	}}
}

func trustRootAdd(ctx context.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError("trust-root add takes one argument: the root.json file")
	}
	body, err := os.ReadFile(args[0])
	if err != nil {
		return fileProblem("trust-root add", args[0], err)
	}
	if !json.Valid(body) {
		return fail(api.CodeInvalidTrustRoot, "trust-root add: %s is not JSON; give the release's root.json", args[0])
	}
	root, created, err := e.nexus.TrustRootAdd(ctx, body)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, root)
	}
	verb := "registered"
	if !created {
		verb = "already registered as"
	}
	fmt.Fprintf(e.out, "trust root %s %s (root version %d, %s)\n", verb, root.ID, root.Version, expiryText(root.Expires, e.now()))
	return nil
}

func trustRootList(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 {
		return usageError(fmt.Sprintf("trust-root list takes no arguments, got %q", args))
	}
	roots, err := e.nexus.TrustRootList(ctx)
	if err != nil {
		return err
	}
	sort.SliceStable(roots, func(i, j int) bool { return roots[i].TimeCreated.Before(roots[j].TimeCreated) })
	if e.json {
		return printJSON(e.out, roots)
	}
	now := e.now()
	rows := make([][]string, 0, len(roots))
	for _, r := range roots {
		rows = append(rows, []string{r.ID.String(), strconv.FormatInt(r.Version, 10), validCell(r.Expires, now),
			r.SHA256[:16], r.TimeCreated.Format("2006-01-02 15:04")})
	}
	if err := table(e.out, []string{"ID", "VERSION", "EXPIRES", "SHA256", "ADDED"}, rows); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "%d trust root(s)\n", len(roots))
	return nil
}

func parseRootID(verb, arg string) (uuid.UUID, error) {
	id, err := uuid.Parse(arg)
	if err != nil {
		return uuid.Nil, usageError(fmt.Sprintf("trust-root %s: %q is not a trust root ID (a UUID; see rackctl trust-root list)", verb, arg))
	}
	return id, nil
}

// rootDocument is the part of a TUF root.json that says who may sign what.
type rootDocument struct {
	Signed struct {
		Roles map[string]struct {
			KeyIDs    []string `json:"keyids"`
			Threshold int      `json:"threshold"`
		} `json:"roles"`
		Keys map[string]struct {
			KeyType string `json:"keytype"`
			Scheme  string `json:"scheme"`
		} `json:"keys"`
	} `json:"signed"`
}

// liveReposSignedBy lists the system versions of live repos verified
// against root.
func liveReposSignedBy(ctx context.Context, e *env, root uuid.UUID) ([]string, error) {
	repos, err := e.nexus.RepoList(ctx, false)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range repos {
		if r.TrustRootID == root && r.TimePruned == nil {
			out = append(out, r.SystemVersion)
		}
	}
	return out, nil
}

func trustRootShow(ctx context.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError("trust-root show takes one argument: the trust root's ID")
	}
	id, err := parseRootID("show", args[0])
	if err != nil {
		return err
	}
	root, err := e.nexus.TrustRootGet(ctx, id)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, root)
	}
	signs, err := liveReposSignedBy(ctx, e, id)
	if err != nil {
		return err
	}
	var doc rootDocument
	_ = json.Unmarshal(root.Root, &doc)
	now := e.now()
	signed := "no live repo"
	if len(signs) > 0 {
		signed = strings.Join(signs, ", ")
	}
	rows := [][2]string{
		{"id", root.ID.String()},
		{"root version", strconv.FormatInt(root.Version, 10)},
		{"expires", root.Expires.UTC().Format("2006-01-02 15:04 UTC") + " (" + expiryText(root.Expires, now) + ")"},
		{"sha256", root.SHA256},
		{"added", agoAt(now, root.TimeCreated)},
		{"signs", signed},
	}
	names := make([]string, 0, len(doc.Signed.Roles))
	for name := range doc.Signed.Roles {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		role := doc.Signed.Roles[name]
		kinds := map[string]bool{}
		for _, k := range role.KeyIDs {
			if key, ok := doc.Signed.Keys[k]; ok {
				kinds[key.KeyType] = true
			}
		}
		kindList := make([]string, 0, len(kinds))
		for k := range kinds {
			kindList = append(kindList, k)
		}
		sort.Strings(kindList)
		rows = append(rows, [2]string{"role " + name, fmt.Sprintf("%d of %d key(s) (%s)", role.Threshold, len(role.KeyIDs),
			strings.Join(kindList, ", "))})
	}
	return facts(e.out, rows)
}

func trustRootDelete(ctx context.Context, e *env, args []string, force bool) error {
	if len(args) != 1 {
		return usageError("trust-root delete takes one argument: the trust root's ID")
	}
	id, err := parseRootID("delete", args[0])
	if err != nil {
		return err
	}
	// Nexus refuses, without --force, a root that live repos were verified
	// against (trust_root_in_use, naming them), in the same transaction
	// as the deletion: no check here could be as current.
	res, err := e.nexus.TrustRootRemove(ctx, id, force)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, res)
	}
	fmt.Fprintln(e.out, res.Message)
	return nil
}

func completeTrustRoots(ctx context.Context, e *env, args []string) ([]string, error) {
	if len(args) > 0 {
		return nil, nil
	}
	roots, err := e.nexus.TrustRootList(ctx)
	var out []string
	for _, r := range roots {
		out = append(out, r.ID.String())
	}
	return out, err
}

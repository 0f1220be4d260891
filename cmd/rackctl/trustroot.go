package main

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/google/uuid"
)

func trustRootCommands() []command {
	return []command{{
		group: "trust-root", verb: "add", args: "FILE", summary: "register a TUF root.json that uploads are verified against",
		run: trustRootAdd,
	}, {
		group: "trust-root", verb: "list", summary: "list the registered trust roots",
		run: trustRootList,
	}, {
		group: "trust-root", verb: "delete", args: "ID", summary: "remove a trust root",
		run: trustRootDelete,
	}}
}

func trustRootAdd(ctx context.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError("trust-root add takes one argument: the root.json file")
	}
	body, err := os.ReadFile(args[0])
	if err != nil {
		return err
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
	fmt.Fprintf(e.out, "trust root %s %s (root version %d, expires %s)\n", verb, root.ID, root.Version,
		root.Expires.Format("2006-01-02"))
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
	if e.json {
		return printJSON(e.out, roots)
	}
	rows := make([][]string, 0, len(roots))
	for _, r := range roots {
		rows = append(rows, []string{r.ID.String(), strconv.FormatInt(r.Version, 10), r.Expires.Format("2006-01-02"),
			r.SHA256[:16], r.TimeCreated.Format("2006-01-02 15:04")})
	}
	if err := table(e.out, []string{"ID", "VERSION", "EXPIRES", "SHA256", "ADDED"}, rows); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "%d trust root(s)\n", len(roots))
	return nil
}

func trustRootDelete(ctx context.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError("trust-root delete takes one argument: the trust root's ID")
	}
	id, err := uuid.Parse(args[0])
	if err != nil {
		return usageError(fmt.Sprintf("%q is not a trust root ID (a UUID; see rackctl trust-root list)", args[0]))
	}
	if err := e.nexus.TrustRootDelete(ctx, id); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "trust root %s deleted\n", id)
	return nil
}

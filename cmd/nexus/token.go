package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/envflag"
	"github.com/rackplane/rackplane/migrations"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/model"
)

// tokenOptions are what nexus token create's own flags set.
type tokenOptions struct {
	name, role string
	ttl        time.Duration
}

// tokenFlags are nexus token create's flags.
func tokenFlags(o *options, t *tokenOptions) *envflag.Set {
	fs := flags("nexus token create", o)
	fs.String(&t.name, "name", "RACKPLANE_TOKEN_NAME", "", "who or what will use the token (shown in the audit log; required)")
	fs.String(&t.role, "role", "RACKPLANE_TOKEN_ROLE", "admin", "viewer (reads) or admin (reads and changes)")
	fs.Duration(&t.ttl, "ttl", "RACKPLANE_TOKEN_TTL", 0, "how long the token works (0: until revoked)")
	return fs
}

// runToken is `nexus token create`: the console's way to the first admin
// token. It talks to the database directly (whoever can run it there can
// already change anything), prints the token once on stdout and records
// the creation in the audit log as done at the console.
func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const usage = "usage: nexus token create --name NAME [--role viewer|admin] [--ttl DURATION] [--database-url URL]"
	if len(args) == 0 || args[0] != "create" {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	var o options
	var t tokenOptions
	fs := tokenFlags(&o, &t)
	fs.SetOutput(stderr)
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage(err, stderr)
	}
	name, role, ttl := t.name, t.role, t.ttl
	if name == "" {
		fmt.Fprintln(stderr, "nexus: --name is required:", usage)
		return 2
	}
	cfg, err := datastore.PoolConfig(o.DatabaseURL)
	if err != nil {
		fmt.Fprintln(stderr, "nexus:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "nexus:", err)
		return 1
	}
	defer pool.Close()
	st, err := migrations.Check(ctx, pool)
	if err == nil {
		err = st.Err()
	}
	if err != nil {
		fmt.Fprintln(stderr, "nexus: token create:", err)
		return 1
	}
	a, err := app.New(app.Config{}, app.Deps{DS: datastore.New(pool, zerolog.Nop(), datastore.Options{}), Log: zerolog.Nop()})
	if err != nil {
		fmt.Fprintln(stderr, "nexus token create:", err)
		return 1
	}
	tok, err := a.CreateToken(app.WithActor(ctx, app.ConsoleActor()), name, model.Role(role), ttl)
	if err != nil {
		fmt.Fprintln(stderr, "nexus: token create:", err)
		return 1
	}
	fmt.Fprintln(stdout, tok.Secret)
	fmt.Fprintf(stderr, "made %s token %q (id %s); it is shown only now: keep it where rackctl can read it "+
		"(--token, $RACKPLANE_TOKEN or --token-file)\n", tok.Token.Role, name, tok.Token.ID)
	return 0
}

package main

import (
	"flag"
	"testing"

	"github.com/rackplane/rackplane/internal/configdoc"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite nexus's section of docs/configuration.md from its flags")

// docs/configuration.md lists exactly the flags nexus defines (go generate
// ./cmd/... rewrites the section).
func TestConfigurationReference(t *testing.T) {
	var server, migrate, token options
	var tok tokenOptions
	section := configdoc.Section(
		configdoc.Command{Usage: "nexus [flags]", About: "The Nexus server: the external (operator) API and status " +
			"pages, the internal API for sled agents, and the background tasks.", Flags: serverFlags(&server)},
		configdoc.Command{Usage: "nexus migrate up|status [flags]", About: "Brings the database schema to this build's " +
			"version, or says where it stands (exit 0 when current, 3 when it needs `migrate up`).",
			Flags: flags("nexus migrate", &migrate)},
		configdoc.Command{Usage: "nexus token create [flags]", About: "Makes an operator token at the console (the " +
			"first admin token comes from here) and prints it once.", Flags: tokenFlags(&token, &tok)},
	)
	diff, err := configdoc.Check(configdoc.File(), "nexus", section, *updateDocs)
	if err != nil {
		t.Fatal(err)
	}
	if diff != "" {
		t.Fatalf("docs/configuration.md is not what nexus's flags say (run go generate ./cmd/...): %s", diff)
	}
}

package main

import (
	"flag"
	"testing"

	"github.com/rackplane/rackplane/internal/configdoc"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite rackdev's section of docs/configuration.md from its flags")

// docs/configuration.md lists exactly the flags rackdev defines (go
// generate ./cmd/... rewrites the section).
func TestConfigurationReference(t *testing.T) {
	var o options
	section := configdoc.Section(configdoc.Command{Usage: "rackdev [flags]", About: "A whole development rack on " +
		"this machine (PostgreSQL, Nexus, sleds, a rack CA, an admin token), kept in its data dir.", Flags: newFlags(&o)})
	diff, err := configdoc.Check(configdoc.File(), "rackdev", section, *updateDocs)
	if err != nil {
		t.Fatal(err)
	}
	if diff != "" {
		t.Fatalf("docs/configuration.md is not what rackdev's flags say (run go generate ./cmd/...): %s", diff)
	}
}

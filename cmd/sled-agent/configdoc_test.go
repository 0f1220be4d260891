package main

import (
	"flag"
	"testing"

	"github.com/rackplane/rackplane/internal/configdoc"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite sled-agent's section of docs/configuration.md from its flags")

// docs/configuration.md lists exactly the flags sled-agent defines (go
// generate ./cmd/... rewrites the section).
func TestConfigurationReference(t *testing.T) {
	var o options
	section := configdoc.Section(configdoc.Command{Usage: "sled-agent [flags]", About: "One sled: its bootstrap " +
		"agent (the trust quorum, on the bootstrap network) and its sled agent (the sled API, the artifact store on " +
		"its M.2s, the repo depot, registration with Nexus).", Flags: newFlags(&o)})
	diff, err := configdoc.Check(configdoc.File(), "sled-agent", section, *updateDocs)
	if err != nil {
		t.Fatal(err)
	}
	if diff != "" {
		t.Fatalf("docs/configuration.md is not what sled-agent's flags say (run go generate ./cmd/...): %s", diff)
	}
}

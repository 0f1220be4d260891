package main

import (
	"fmt"
	"io"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/buildinfo"
)

// printVersion prints the build as every rackplane binary does; --json
// gives it in the shape /healthz reports Nexus's build in.
func printVersion(w io.Writer, asJSON bool) error {
	if asJSON {
		b := buildinfo.Read()
		return printJSON(w, api.BuildInfo{Version: b.Version, Commit: b.Commit, CommitTime: b.CommitTime, Modified: b.Modified,
			GoVersion: b.GoVersion})
	}
	_, err := fmt.Fprintln(w, buildinfo.Line("rackctl"))
	return err
}

// Package configdoc keeps docs/configuration.md, the configuration
// reference, generated from the binaries' own flag definitions. Each
// binary's tests render its section (Section) and hold the document to it
// (Check); run with -update-docs (go generate ./cmd/... does), they
// rewrite the section instead. The document's text between sections is
// written by hand.
package configdoc

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/rackplane/rackplane/internal/envflag"
)

// Command is one command line whose flags a section lists.
type Command struct {
	// Usage is how it is run ("nexus [flags]").
	Usage string
	// About is a sentence on what it is for.
	About string
	Flags *envflag.Set
}

// Section renders the Markdown of commands: each command's usage, what it
// is for and a table of its flags, environment variables and defaults.
func Section(commands ...Command) []byte {
	var b bytes.Buffer
	for i, c := range commands {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "#### `%s`\n\n%s\n\n", c.Usage, strings.TrimSpace(c.About))
		envflag.Markdown(&b, c.Flags.Docs())
	}
	return b.Bytes()
}

// File is the configuration reference's path, from this source file.
func File() string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", "docs", "configuration.md")
}

// markers delimit a generated section.
func markers(name string) (begin, end string) {
	return "<!-- BEGIN " + name + " (generated: go generate ./cmd/...) -->\n", "<!-- END " + name + " -->\n"
}

// Check compares section name of the document at path with want and
// returns what differs ("" when nothing does). With update it rewrites
// the section instead.
func Check(path, name string, want []byte, update bool) (string, error) {
	doc, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	begin, end := markers(name)
	i := bytes.Index(doc, []byte(begin))
	j := bytes.Index(doc, []byte(end))
	if i < 0 || j < i {
		return "", fmt.Errorf("%s has no section %q: add the lines %q and %q where it goes", path, name,
			strings.TrimSpace(begin), strings.TrimSpace(end))
	}
	got := doc[i+len(begin) : j]
	if bytes.Equal(got, want) {
		return "", nil
	}
	if update {
		out := append(append(append([]byte{}, doc[:i+len(begin)]...), want...), doc[j:]...)
		return "", os.WriteFile(path, out, 0o644)
	}
	return firstDifference(got, want), nil
}

// firstDifference names the first line that differs, for a failing test.
func firstDifference(got, want []byte) string {
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < max(len(g), len(w)); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d of the section:\n  the document: %q\n  the flags:    %q", i+1, gl, wl)
		}
	}
	return "the sections differ"
}

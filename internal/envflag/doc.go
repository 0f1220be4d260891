package envflag

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// Doc is one flag as the configuration reference shows it.
type Doc struct {
	Name string
	// Value names the flag's value ("string", "duration"; "" for a
	// boolean).
	Value string
	// Env is the environment variable that sets it ("" for none).
	Env string
	// Default is the default the program declares (not one the
	// environment of the process that asked supplied).
	Default string
	Usage   string
}

// Docs lists the set's flags in name order.
func (s *Set) Docs() []Doc {
	var out []Doc
	s.VisitAll(func(f *flag.Flag) {
		def, ok := s.declared[f.Name]
		if !ok {
			def = f.DefValue // defined on the FlagSet directly
		}
		out = append(out, Doc{Name: f.Name, Value: placeholder(f), Env: s.envs[f.Name], Default: def, Usage: f.Usage})
	})
	return out
}

// Markdown writes docs as a Markdown table: flag, environment variable,
// default and meaning. Back-quoted text in a usage stays code.
func Markdown(w io.Writer, docs []Doc) {
	fmt.Fprintln(w, "| flag | environment | default | meaning |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, d := range docs {
		name := "`--" + d.Name
		if d.Value != "" {
			name += " " + strings.ToUpper(d.Value)
		}
		name += "`"
		env := ""
		if d.Env != "" {
			env = "`" + d.Env + "`"
		}
		def := ""
		if d.Default != "" && !(d.Value == "" && d.Default == "false") {
			def = "`" + d.Default + "`"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", name, env, def, cell(d.Usage))
	}
}

// cell makes text safe inside a table cell: pipes escaped, one line, and
// angle brackets outside code spans written as entities (so that
// "<data-dir>" shows rather than vanishing as an HTML tag).
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "\n", " ")
	parts := strings.Split(s, "`")
	for i := 0; i < len(parts); i += 2 {
		parts[i] = strings.NewReplacer("<", "&lt;", ">", "&gt;").Replace(parts[i])
	}
	return strings.Join(parts, "`")
}

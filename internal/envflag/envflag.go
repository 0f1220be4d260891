// Package envflag defines command-line flags whose defaults can come from
// environment variables, so every daemon setting can be given either way
// (flags win). Usage output names the variable next to each flag.
package envflag

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Set wraps a flag.FlagSet and remembers environment parse errors, which
// Parse reports before anything runs.
type Set struct {
	*flag.FlagSet
	envErrs []error
	envs    map[string]string // flag name → env var
	// declared holds each flag's default as the program declares it,
	// before the environment changed it: what documentation shows.
	declared map[string]string
}

// New returns a Set named for the command; usage describes the command in
// the --help output.
func New(name, usage string) *Set {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	s := &Set{FlagSet: fs, envs: map[string]string{}, declared: map[string]string{}}
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "%s\n\nFlags (each may also be set by the environment variable shown):\n", strings.TrimSpace(usage))
		s.PrintDefaults(out)
	}
	return s
}

// PrintDefaults lists the flags with their env vars and defaults.
func (s *Set) PrintDefaults(out io.Writer) {
	s.VisitAll(func(f *flag.Flag) {
		name, usage := placeholder(f), strings.ReplaceAll(f.Usage, "`", "")
		fmt.Fprintf(out, "  --%s", f.Name)
		if name != "" {
			fmt.Fprintf(out, " %s", name)
		}
		if env := s.envs[f.Name]; env != "" {
			fmt.Fprintf(out, "   [$%s]", env)
		}
		fmt.Fprintf(out, "\n      %s", strings.ReplaceAll(usage, "\n", "\n      "))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
			fmt.Fprintf(out, " (default %q)", f.DefValue)
		}
		fmt.Fprintln(out)
	})
}

// placeholder names a flag's value in usage: the type (string, duration,
// int), or nothing for a boolean. Back-quoted text in a usage string is
// a command to run, not a placeholder (flag.UnquoteUsage would take it
// for one).
func placeholder(f *flag.Flag) string {
	switch f.Value.(type) {
	case *stringList:
		return "string"
	}
	if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
		return ""
	}
	name, _ := flag.UnquoteUsage(&flag.Flag{Name: f.Name, Value: f.Value})
	return name
}

// Parse parses args, failing first on any malformed environment value.
func (s *Set) Parse(args []string) error {
	if len(s.envErrs) > 0 {
		return s.envErrs[0]
	}
	return s.FlagSet.Parse(args)
}

func (s *Set) env(name, env string) (string, bool) {
	if env == "" {
		return "", false
	}
	s.envs[name] = env
	return os.LookupEnv(env)
}

// String defines a string flag.
func (s *Set) String(p *string, name, env, def, usage string) {
	s.declared[name] = def
	if v, ok := s.env(name, env); ok {
		def = v
	}
	s.StringVar(p, name, def, usage)
}

// Bool defines a boolean flag.
func (s *Set) Bool(p *bool, name, env string, def bool, usage string) {
	s.declared[name] = fmt.Sprint(def)
	if v, ok := s.env(name, env); ok {
		switch strings.ToLower(v) {
		case "1", "true", "yes", "on":
			def = true
		case "0", "false", "no", "off", "":
			def = false
		default:
			s.envErrs = append(s.envErrs, fmt.Errorf("$%s: %q is not a boolean (use true or false)", env, v))
		}
	}
	s.BoolVar(p, name, def, usage)
}

// Int defines an integer flag.
func (s *Set) Int(p *int, name, env string, def int, usage string) {
	s.declared[name] = fmt.Sprint(def)
	if v, ok := s.env(name, env); ok {
		if _, err := fmt.Sscanf(v, "%d", &def); err != nil {
			s.envErrs = append(s.envErrs, fmt.Errorf("$%s: %q is not an integer", env, v))
		}
	}
	s.IntVar(p, name, def, usage)
}

// Duration defines a duration flag ("30s", "5m").
func (s *Set) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	s.declared[name] = def.String()
	if v, ok := s.env(name, env); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			s.envErrs = append(s.envErrs, fmt.Errorf("$%s: %q is not a duration (like 30s or 5m)", env, v))
		} else {
			def = d
		}
	}
	s.DurationVar(p, name, def, usage)
}

// Strings defines a repeatable string flag; the environment variable holds
// a comma-separated list.
func (s *Set) Strings(p *[]string, name, env string, usage string) {
	s.declared[name] = ""
	if v, ok := s.env(name, env); ok && v != "" {
		*p = strings.Split(v, ",")
	}
	s.Var((*stringList)(p), name, usage)
}

type stringList []string

func (l *stringList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

// Set appends; the first flag on the command line replaces a value that
// came from the environment.
func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// Package logging builds the zerolog loggers the daemons pass down to every
// component. There is no global logger: each process makes one here and
// hands it on.
package logging

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"
)

// Options choose a logger's level and format.
type Options struct {
	// Level is trace, debug, info, warn or error.
	Level string
	// Format is "json" (the default, for machines) or "pretty" (for a
	// person at a terminal); "auto" picks pretty when Out is a terminal.
	Format string
}

// New returns a logger writing to out, with a "component" field.
func New(out io.Writer, component string, opts Options) (zerolog.Logger, error) {
	lvl := zerolog.InfoLevel
	if opts.Level != "" {
		l, err := zerolog.ParseLevel(opts.Level)
		if err != nil {
			return zerolog.Nop(), fmt.Errorf("log level %q: want trace, debug, info, warn or error", opts.Level)
		}
		lvl = l
	}
	switch opts.Format {
	case "", "json":
	case "pretty":
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly}
	case "auto":
		if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly}
		}
	default:
		return zerolog.Nop(), fmt.Errorf("log format %q: want json, pretty or auto", opts.Format)
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Str("component", component).Logger(), nil
}

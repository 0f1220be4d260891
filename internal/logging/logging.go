// Package logging builds the zerolog loggers the daemons pass down to every
// component. There is no global logger: each process makes one here and
// hands it on.
//
// Every rackplane log line follows one convention, which a test holds real
// lines to:
//
//   - "time" is RFC 3339 in UTC with milliseconds (TimeFormat).
//   - "component" names the process ("nexus", "sled-agent", or a dev
//     rack's "sled-0") and appears once; a part inside a process adds
//     "subsystem" ("bgtasks", "m2", "bootnet"), never a second component.
//   - "message" is the line's own message only; an error body's message
//     is "error_message".
//   - every duration is a number of milliseconds in a field whose name
//     ends in "_ms" (Millis), never zerolog's unit-less Dur.
//   - "status" is always an HTTP status code, as an integer; other
//     outcomes go in "outcome".
package logging

import (
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"
)

// TimeFormat is the "time" field's format: RFC 3339, milliseconds, UTC.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// Options choose a logger's level and format.
type Options struct {
	// Level is trace, debug, info, warn or error.
	Level string
	// Format is "json" (the default, for machines) or "pretty" (for a
	// person at a terminal); "auto" picks pretty when Out is a terminal.
	Format string
	// Now is the clock the "time" field is read from (nil: the real one).
	Now func() time.Time
}

// New returns a logger writing to out, with a "component" field.
func New(out io.Writer, component string, opts Options) (zerolog.Logger, error) {
	base, err := Base(out, opts)
	if err != nil {
		return base, err
	}
	return base.With().Str("component", component).Logger(), nil
}

// Base returns a logger writing to out with the convention's timestamp but
// no component, for a process that runs several components and names each
// (a benchmark running Nexus and sled agents in one process).
func Base(out io.Writer, opts Options) (zerolog.Logger, error) {
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
	return zerolog.New(out).Level(lvl).Hook(Timestamp(opts.Now)), nil
}

// Timestamp is the hook that writes the "time" field in TimeFormat. It is
// a hook rather than zerolog's Timestamp() because that one's format is a
// process-wide global, which this package leaves alone.
func Timestamp(now func() time.Time) zerolog.Hook {
	if now == nil {
		now = time.Now
	}
	return zerolog.HookFunc(func(e *zerolog.Event, _ zerolog.Level, _ string) {
		e.Str("time", now().UTC().Format(TimeFormat))
	})
}

// Millis is d in milliseconds, to the microsecond, for a "*_ms" field.
func Millis(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

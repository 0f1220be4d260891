// Package humanize renders quantities for people: the CLI's tables and
// Nexus's status pages show sizes, spans and "time ago" the same way.
package humanize

import (
	"fmt"
	"math"
	"time"
)

// Bytes renders a size in binary units with one decimal: "512 B",
// "48.0 KiB", "1.5 GiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Duration renders a span coarsely, to at most two units: "350ms", "4s",
// "3m05s", "2h07m", "3d04h". Spans of 48 hours and more count days.
func Duration(d time.Duration) string {
	if d < 0 {
		return "-" + Duration(-max(d, -math.MaxInt64))
	}
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours()/24), int(d.Hours())%24)
}

// Ago renders how long before now t was: "5s ago", "3m05s ago". The
// arguments come in the order of now.Sub(t). The zero time reads "never".
// A time after now (another machine's clock running ahead) reads "in 5s",
// or "just now" within a second, never as something past.
func Ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d >= 0:
		return Duration(d) + " ago"
	case d > -time.Second:
		return "just now"
	}
	return "in " + Duration(-d)
}

// Package humanize renders quantities for people: the CLI's tables and
// Nexus's status pages show sizes the same way.
package humanize

import "fmt"

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

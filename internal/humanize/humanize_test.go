package humanize

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 48 << 10: "48.0 KiB", 3<<20 + 1<<19: "3.5 MiB",
		1 << 30: "1.0 GiB", math.MaxInt64: "8.0 EiB",
	} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0ms", 350 * time.Millisecond: "350ms", 4 * time.Second: "4s", 59*time.Second + 999*time.Millisecond: "59s",
		3*time.Minute + 5*time.Second: "3m05s", 2*time.Hour + 7*time.Minute: "2h07m", 47*time.Hour + 59*time.Minute: "47h59m",
		76 * time.Hour: "3d04h", -90 * time.Second: "-1m30s", time.Duration(math.MinInt64): "-106751d23h",
	} {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%s) = %q, want %q", d, got, want)
		}
	}
}

// Ago takes (now, t), in the order of now.Sub(t): a time five seconds
// before now reads "5s ago", one five seconds after it does not read as
// past at all. The two callers used to take the arguments in opposite
// orders; this pins the one order.
func TestAgoArgumentOrder(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	if got := Ago(now, now.Add(-5*time.Second)); got != "5s ago" {
		t.Fatalf("Ago(now, now-5s) = %q, want \"5s ago\"", got)
	}
	future := Ago(now, now.Add(5*time.Second))
	if strings.Contains(future, "ago") || future != "in 5s" {
		t.Fatalf("Ago(now, now+5s) = %q, want \"in 5s\"", future)
	}
	for t0, want := range map[time.Time]string{
		{}:                                   "never",
		now:                                  "0ms ago",
		now.Add(-90 * time.Second):           "1m30s ago",
		now.Add(-50 * time.Hour):             "2d02h ago",
		now.Add(300 * time.Millisecond):      "just now",
		now.Add(3*time.Hour + 4*time.Minute): "in 3h04m",
	} {
		if got := Ago(now, t0); got != want {
			t.Errorf("Ago(now, %s) = %q, want %q", t0, got, want)
		}
	}
}

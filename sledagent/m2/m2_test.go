package m2_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/sledagent/m2"
)

type event struct {
	path    string
	present bool
}

func TestWatcherReportsArrivalsAndDepartures(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	if err := os.Mkdir(a, 0o755); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	w, err := m2.NewWatcher([]string{a, b}, zerolog.Nop(), m2.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	var events []event
	w.Handle(func(p string, present bool) error { events = append(events, event{p, present}); return nil })

	if !w.Poll() || !slices.Equal(events, []event{{a, true}}) || !slices.Equal(w.Present(), []string{a}) {
		t.Fatalf("first poll: events %v, present %v", events, w.Present())
	}
	if w.Poll() || len(events) != 1 {
		t.Fatalf("a poll with no change reported %v", events)
	}
	devs := w.Devices()
	if !devs[0].Present || devs[0].TotalBytes == 0 || devs[0].FreeBytes == 0 || devs[1].Present || devs[1].TotalBytes != 0 {
		t.Fatalf("inventory %+v", devs)
	}
	if gauge(t, reg, "rackplane_sled_m2_present", a) != 1 || gauge(t, reg, "rackplane_sled_m2_free_bytes", a) == 0 {
		t.Fatal("present gauge for a")
	}

	os.Mkdir(b, 0o755)
	os.RemoveAll(a)
	if !w.Poll() || !slices.Equal(events[1:], []event{{a, false}, {b, true}}) {
		t.Fatalf("events %v", events)
	}
	if !slices.Equal(w.Present(), []string{b}) {
		t.Fatalf("present %v", w.Present())
	}

	// A path that is a file is not a device, and says why.
	if err := os.WriteFile(a, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.Poll()
	if d := w.Devices()[0]; d.Present || !strings.Contains(d.Error, "not a directory") {
		t.Fatalf("file as device: %+v", d)
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name, m2 string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == name && m.GetLabel()[0].GetValue() == m2 {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s{m2=%q}", name, m2)
	return 0
}

// A handler that refuses an arrival leaves the device absent (and the
// handlers that accepted it are told it left); the next poll retries.
func TestFailedArrivalIsRetried(t *testing.T) {
	dir := t.TempDir()
	w, err := m2.NewWatcher([]string{dir}, zerolog.Nop(), m2.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var first []event
	fail := true
	w.Handle(func(p string, present bool) error { first = append(first, event{p, present}); return nil })
	w.Handle(func(p string, present bool) error {
		if fail {
			return errors.New("not today")
		}
		return nil
	})
	if w.Poll() || len(w.Present()) != 0 || !strings.Contains(w.Devices()[0].Error, "not today") {
		t.Fatalf("refused arrival: present %v, %+v", w.Present(), w.Devices())
	}
	if !slices.Equal(first, []event{{dir, true}, {dir, false}}) {
		t.Fatalf("first handler saw %v", first)
	}
	fail = false
	if !w.Poll() || len(w.Present()) != 1 || w.Devices()[0].Error != "" {
		t.Fatalf("retry: present %v %+v", w.Present(), w.Devices())
	}
}

func TestNewWatcherRefusesBadPaths(t *testing.T) {
	for _, paths := range [][]string{{""}, {"/x", "/x/"}} {
		if _, err := m2.NewWatcher(paths, zerolog.Nop(), m2.Options{}); err == nil {
			t.Errorf("%q accepted", paths)
		}
	}
}

func TestBudget(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 600), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m2.CheckBudget(dir, 1000, 400); err != nil {
		t.Fatalf("400 more bytes fit in 1000 with 600 used: %v", err)
	}
	err := m2.CheckBudget(dir, 1000, 401)
	if !m2.IsNoSpace(err) || !errors.Is(err, m2.ErrNoSpace) {
		t.Fatalf("401 more bytes: %v", err)
	}
	if err := m2.CheckBudget(dir, 0, 1<<40); err != nil {
		t.Fatalf("no budget: %v", err)
	}
	free, total, err := m2.Space(dir, 1000)
	if err != nil || free != 400 || total != 1000 {
		t.Fatal(fmt.Sprint(free, total, err))
	}
}

// A handler added after polling began (the sled agent joining a watcher the
// bootstrap agent already uses) hears about the devices already present;
// one that refuses a device makes it absent for every handler until the
// next poll brings it back to all of them.
func TestLateHandlerHearsPresentDevices(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w, err := m2.NewWatcher([]string{a, b}, zerolog.Nop(), m2.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var early, late []event
	w.Handle(func(p string, present bool) error { early = append(early, event{p, present}); return nil })
	w.Poll()
	refuse := b
	w.Handle(func(p string, present bool) error {
		late = append(late, event{p, present})
		if present && p == refuse {
			return errors.New("not yet")
		}
		return nil
	})
	if !slices.Equal(late, []event{{a, true}, {b, true}, {b, false}}) {
		t.Fatalf("late handler saw %v", late)
	}
	if !slices.Equal(early, []event{{a, true}, {b, true}, {b, false}}) {
		t.Fatalf("early handler saw %v", early)
	}
	if !slices.Equal(w.Present(), []string{a}) || !strings.Contains(w.Devices()[1].Error, "not yet") {
		t.Fatalf("present %v, devices %+v", w.Present(), w.Devices())
	}
	refuse = ""
	if !w.Poll() || !slices.Equal(w.Present(), []string{a, b}) {
		t.Fatalf("retry: present %v", w.Present())
	}
	if early[len(early)-1] != (event{b, true}) || late[len(late)-1] != (event{b, true}) {
		t.Fatalf("retry not seen by both: early %v late %v", early, late)
	}
}

// What OnChange triggers sees the change: it runs after the poll has
// recorded the arrival or departure, where a handler runs before (a sled
// registering from inside a handler reported a returned M.2 as absent).
func TestOnChangeSeesTheNewState(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m2-a")
	w, err := m2.NewWatcher([]string{dir}, zerolog.Nop(), m2.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var inHandler, inOnChange []bool
	w.Handle(func(string, bool) error {
		inHandler = append(inHandler, w.Devices()[0].Present)
		return nil
	})
	w.OnChange(func() { inOnChange = append(inOnChange, w.Devices()[0].Present) })
	w.Poll()
	if len(inOnChange) != 0 {
		t.Fatalf("OnChange ran on a poll that changed nothing: %v", inOnChange)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w.Poll()
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	w.Poll()
	if !slices.Equal(inOnChange, []bool{true, false}) {
		t.Fatalf("OnChange saw present %v over an arrival and a departure, want [true false]", inOnChange)
	}
	// The handler, for comparison, runs before the state changes.
	if !slices.Equal(inHandler, []bool{false, false}) {
		t.Fatalf("the handler saw present %v", inHandler)
	}
}

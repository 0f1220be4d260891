package configdoc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/internal/envflag"
)

func TestCheckAndUpdate(t *testing.T) {
	var addr string
	fs := envflag.New("t", "t")
	fs.String(&addr, "addr", "T_ADDR", ":1", "listen address")
	want := Section(Command{Usage: "t [flags]", About: "runs t.", Flags: fs})
	if !strings.Contains(string(want), "#### `t [flags]`\n\nruns t.\n\n| flag |") ||
		!strings.Contains(string(want), "| `--addr STRING` | `T_ADDR` | `:1` | listen address |") {
		t.Fatalf("section:\n%s", want)
	}
	path := filepath.Join(t.TempDir(), "configuration.md")
	begin, end := markers("t")
	doc := "# Reference\n\nintro\n\n" + begin + "stale\n" + end + "\nafter\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	diff, err := Check(path, "t", want, false)
	if err != nil || !strings.Contains(diff, `the document: "stale"`) {
		t.Fatalf("a stale section: %q, %v", diff, err)
	}
	if _, err := Check(path, "t", want, true); err != nil {
		t.Fatal(err)
	}
	if diff, err := Check(path, "t", want, false); err != nil || diff != "" {
		t.Fatalf("after the update: %q, %v", diff, err)
	}
	got, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(got), "# Reference\n\nintro\n\n"+begin) || !strings.HasSuffix(string(got), end+"\nafter\n") {
		t.Fatalf("the hand-written text moved:\n%s", got)
	}
	if _, err := Check(path, "other", want, false); err == nil || !strings.Contains(err.Error(), "no section") {
		t.Fatalf("a missing section: %v", err)
	}
}

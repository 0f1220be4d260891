package envflag

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestEnvironmentSetsDefaultsAndFlagsWin(t *testing.T) {
	t.Setenv("T_ADDR", ":9")
	t.Setenv("T_WAIT", "3s")
	t.Setenv("T_ON", "yes")
	t.Setenv("T_N", "7")
	t.Setenv("T_LIST", "a,b")
	var addr string
	var wait time.Duration
	var on bool
	var n int
	var list []string
	s := New("t", "t: test")
	s.String(&addr, "addr", "T_ADDR", ":1", "address")
	s.Duration(&wait, "wait", "T_WAIT", time.Second, "wait")
	s.Bool(&on, "on", "T_ON", false, "on")
	s.Int(&n, "n", "T_N", 1, "n")
	s.Strings(&list, "item", "T_LIST", "items")
	if err := s.Parse([]string{"--addr", ":2"}); err != nil {
		t.Fatal(err)
	}
	if addr != ":2" || wait != 3*time.Second || !on || n != 7 || strings.Join(list, ",") != "a,b" {
		t.Fatalf("addr %q wait %s on %v n %d list %v", addr, wait, on, n, list)
	}
	var out bytes.Buffer
	s.PrintDefaults(&out)
	for _, want := range []string{"--addr string   [$T_ADDR]", "--wait duration   [$T_WAIT]"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
}

func TestMalformedEnvironmentIsAnError(t *testing.T) {
	for env, def := range map[string]func(*Set){
		"T_BAD_DUR":  func(s *Set) { var d time.Duration; s.Duration(&d, "d", "T_BAD_DUR", 0, "") },
		"T_BAD_BOOL": func(s *Set) { var b bool; s.Bool(&b, "b", "T_BAD_BOOL", false, "") },
		"T_BAD_INT":  func(s *Set) { var n int; s.Int(&n, "n", "T_BAD_INT", 0, "") },
	} {
		t.Setenv(env, "nonsense")
		s := New("t", "t")
		def(s)
		if err := s.Parse(nil); err == nil || !strings.Contains(err.Error(), env) {
			t.Errorf("%s=nonsense: got %v, want an error naming the variable", env, err)
		}
	}
}

// The reference shows what the program declares, whatever the
// environment of the process that renders it says, and keeps a command
// in back quotes as code rather than taking it for the value's name.
func TestDocs(t *testing.T) {
	t.Setenv("T_ADDR", ":9")
	var addr, dir string
	var on bool
	var list []string
	s := New("t", "t: test")
	s.String(&addr, "addr", "T_ADDR", ":1", "address | port")
	s.String(&dir, "dir", "", "", "a directory in <root> (`tool init --dir <DIR>` makes one)")
	s.Bool(&on, "on", "T_ON", false, "switch")
	s.Strings(&list, "item", "T_LIST", "items")
	docs := s.Docs()
	want := []Doc{
		{Name: "addr", Value: "string", Env: "T_ADDR", Default: ":1", Usage: "address | port"},
		{Name: "dir", Value: "string", Usage: "a directory in <root> (`tool init --dir <DIR>` makes one)"},
		{Name: "item", Value: "string", Env: "T_LIST", Usage: "items"},
		{Name: "on", Env: "T_ON", Default: "false", Usage: "switch"},
	}
	if len(docs) != len(want) {
		t.Fatalf("%+v", docs)
	}
	for i := range want {
		if docs[i] != want[i] {
			t.Errorf("doc %d: %+v, want %+v", i, docs[i], want[i])
		}
	}
	var md bytes.Buffer
	Markdown(&md, docs)
	for _, line := range []string{"| `--addr STRING` | `T_ADDR` | `:1` | address \\| port |",
		"| `--dir STRING` |  |  | a directory in &lt;root&gt; (`tool init --dir <DIR>` makes one) |", "| `--on` | `T_ON` |  | switch |"} {
		if !strings.Contains(md.String(), line+"\n") {
			t.Errorf("markdown lacks %q:\n%s", line, md.String())
		}
	}
	var help bytes.Buffer
	s.PrintDefaults(&help)
	if !strings.Contains(help.String(), "--dir string\n      a directory in <root> (tool init --dir <DIR> makes one)") {
		t.Errorf("help:\n%s", help.String())
	}
}

package openapi_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/api/openapi"
)

// TestGeneratedCodeIsCurrent runs the generator go generate runs (the
// oapi-codegen pinned as a tool in go.mod) into a temp dir and compares
// with the checked-in code, so a document edited without regenerating
// fails here rather than at run time.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to run the pinned oapi-codegen: %v", err)
	}
	tmp := t.TempDir()
	for _, d := range openapi.Documents() {
		t.Run(d.Package, func(t *testing.T) {
			cfg, checkedIn := generatorConfig(t, d.Package+".codegen.yaml")
			cfgPath := filepath.Join(tmp, d.Package+".codegen.yaml")
			out := filepath.Join(tmp, d.Package+".gen.go")
			if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(goBin, "tool", "oapi-codegen", "-config", cfgPath, "-o", out, d.File)
			if msg, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("oapi-codegen: %v\n%s", err, msg)
			}
			want, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(checkedIn)
			if err != nil {
				t.Fatalf("%v (run go generate ./api/...)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s is not what %s generates: run go generate ./api/...", checkedIn, d.File)
			}
		})
	}
}

// generatorConfig returns the config file without its output line (the
// test passes -o instead, which oapi-codegen honours only when the config
// names none) and the output path it named, relative to this directory.
func generatorConfig(t *testing.T, name string) (cfg []byte, output string) {
	t.Helper()
	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "output:"); ok {
			output = strings.TrimSpace(v)
			continue
		}
		b.WriteString(line + "\n")
	}
	if output == "" {
		t.Fatalf("%s names no output file", name)
	}
	return b.Bytes(), output
}

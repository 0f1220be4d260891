package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/rackplane/rackplane"

// pkg is one directory's non-test Go files.
type pkg struct {
	dir   string // relative to the repo root
	name  string
	files []*ast.File
	fset  *token.FileSet
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("repo root not found from %s: %v", dir, err)
	}
	return dir
}

// packages parses every package in the module (test files excluded).
func packages(t *testing.T) map[string]*pkg {
	t.Helper()
	root := repoRoot(t)
	out := map[string]*pkg{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		p := out[rel]
		if p == nil {
			p = &pkg{dir: filepath.ToSlash(rel), fset: token.NewFileSet()}
			out[rel] = p
		}
		f, err := parser.ParseFile(p.fset, path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		p.name = f.Name.Name
		p.files = append(p.files, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 10 {
		t.Fatalf("found only %d packages; is the walk broken?", len(out))
	}
	return out
}

func TestEveryPackageHasADocComment(t *testing.T) {
	var missing []string
	for _, p := range packages(t) {
		want := "Package " + p.name + " "
		if p.name == "main" {
			want = "Command " + filepath.Base(p.dir) + " "
		}
		found := false
		for _, f := range p.files {
			if f.Doc != nil && strings.HasPrefix(f.Doc.Text(), want) {
				found = true
			}
		}
		if !found {
			missing = append(missing, p.dir+` (want a comment starting "`+want+`")`)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("packages without a doc comment:\n  %s", strings.Join(missing, "\n  "))
	}
}

// forbiddenForProtocol reports why the sans-io trust-quorum code may not
// import path, or "" when it may.
func forbiddenForProtocol(path string) string {
	switch {
	case path == "net" || strings.HasPrefix(path, "net/"):
		return "networking"
	case path == "os" || strings.HasPrefix(path, "os/") || path == "io/ioutil" || path == "io/fs" ||
		path == "path/filepath" || path == "syscall" || strings.HasPrefix(path, "golang.org/x/sys"):
		return "disk or process access"
	case path == "database/sql" || strings.HasPrefix(path, "github.com/jackc/") ||
		strings.HasPrefix(path, "github.com/golang-migrate/"):
		return "database"
	case path == "math/rand" || path == "math/rand/v2":
		return "global randomness (inject an io.Reader or a seeded source)"
	case strings.HasPrefix(path, module+"/") && !strings.HasPrefix(path, module+"/trustquorum") &&
		!strings.HasPrefix(path, module+"/internal/"):
		return "a rackplane package outside trustquorum"
	}
	return ""
}

// clockFuncs are the time package's ways of reading or waiting on the
// clock; the protocol gets time only from Tick.
var clockFuncs = map[string]bool{
	"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true, "AfterFunc": true,
	"Tick": true, "NewTimer": true, "NewTicker": true,
}

func TestTrustQuorumIsSansIO(t *testing.T) {
	all := packages(t)
	// Start from trustquorum's packages and follow their imports of our
	// own packages, so helpers they pull in obey the same rule.
	var queue []string
	for dir := range all {
		if dir == "trustquorum" || strings.HasPrefix(dir, "trustquorum/") {
			queue = append(queue, dir)
		}
	}
	if len(queue) == 0 {
		t.Fatal("no trustquorum package found")
	}
	seen := map[string]bool{}
	var problems []string
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		if seen[dir] {
			continue
		}
		seen[dir] = true
		p := all[dir]
		if p == nil {
			continue
		}
		for _, f := range p.files {
			probs, imports := checkProtocolFile(p.fset, f)
			problems = append(problems, probs...)
			queue = append(queue, imports...)
		}
	}
	sort.Strings(problems)
	if len(problems) > 0 {
		t.Fatalf("trustquorum must stay free of I/O:\n  %s", strings.Join(problems, "\n  "))
	}
}

// checkProtocolFile returns f's violations of the sans-io rule and the
// rackplane packages it imports (relative to the module root).
func checkProtocolFile(fset *token.FileSet, f *ast.File) (problems, ours []string) {
	fname := fset.Position(f.Package).Filename
	timeName := ""
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		if why := forbiddenForProtocol(path); why != "" {
			problems = append(problems, fname+": imports "+path+" ("+why+")")
		}
		if path == "time" {
			timeName = "time"
			if imp.Name != nil {
				timeName = imp.Name.Name
			}
		}
		if strings.HasPrefix(path, module+"/") {
			ours = append(ours, strings.TrimPrefix(path, module+"/"))
		}
	}
	if timeName == "" {
		return problems, ours
	}
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if id, ok := sel.X.(*ast.Ident); ok && id.Name == timeName && clockFuncs[sel.Sel.Name] {
			problems = append(problems, fset.Position(sel.Pos()).String()+": uses time."+sel.Sel.Name+
				" (the clock arrives through Tick)")
		}
		return true
	})
	return problems, ours
}

func TestCheckProtocolFileCatchesClockAndIO(t *testing.T) {
	src := `package p
import (
	clock "time"
	"net/http"
	"github.com/rackplane/rackplane/trustquorum/internal/x"
)
var _ = http.Get
var _ = x.Y
func f() clock.Duration { return clock.Since(clock.Now()) }
func g(d clock.Duration) clock.Duration { return d * 2 }
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	problems, ours := checkProtocolFile(fset, f)
	joined := strings.Join(problems, "\n")
	for _, want := range []string{"imports net/http", "time.Since", "time.Now"} {
		if !strings.Contains(joined, want) {
			t.Errorf("missed %q in:\n%s", want, joined)
		}
	}
	if len(problems) != 3 {
		t.Errorf("want exactly 3 problems (Duration is fine), got:\n%s", joined)
	}
	if len(ours) != 1 || ours[0] != "trustquorum/internal/x" {
		t.Errorf("own imports = %v", ours)
	}
}

// The rule itself must catch what it is meant to catch.
func TestForbiddenImportRule(t *testing.T) {
	for path, bad := range map[string]bool{
		"net": true, "net/http": true, "os": true, "os/exec": true, "io/fs": true, "path/filepath": true,
		"database/sql": true, "github.com/jackc/pgx/v5": true, "math/rand/v2": true,
		module + "/nexus/datastore": true, module + "/sledagent": true,
		"crypto/sha3": false, "errors": false, "fmt": false, "github.com/hashicorp/vault/shamir": false,
		module + "/trustquorum/internal/wire": false,
	} {
		if got := forbiddenForProtocol(path) != ""; got != bad {
			t.Errorf("forbiddenForProtocol(%q) = %v, want %v", path, got, bad)
		}
	}
}

// imports returns the import paths of a package's non-test files.
func (p *pkg) imports() map[string]bool {
	out := map[string]bool{}
	for _, f := range p.files {
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			out[path] = true
		}
	}
	return out
}

// The application layer holds the rules; how they are reached (HTTP, a
// task) is someone else's business.
func TestAppLayerHasNoHTTP(t *testing.T) {
	p := packages(t)["nexus/app"]
	if p == nil {
		t.Fatal("nexus/app not found")
	}
	for path := range p.imports() {
		if path == "net/http" || strings.HasPrefix(path, "net/http/") || path == "github.com/go-chi/chi/v5" ||
			path == module+"/internal/httpx" {
			t.Errorf("nexus/app imports %s: HTTP belongs in nexus/httpapi", path)
		}
	}
}

// taskPackage reports whether path is one background task's package (the
// driver, its storage and the registry of Nexus's tasks are not tasks).
func taskPackage(path string) bool {
	rest, ok := strings.CutPrefix(path, module+"/bgtasks/")
	if !ok {
		return false
	}
	switch strings.Split(rest, "/")[0] {
	case "taskdb", "nexustasks":
		return rest == "nexustasks" // the registry wires tasks: nexus must not import it either
	}
	return true
}

// Nexus's packages never import a task: the composition root (cmd/nexus,
// through bgtasks/nexustasks) wires tasks to the application layer, so a
// task can use nexus/app and the datastore without an import cycle and
// without the server knowing which tasks exist.
func TestNexusImportsNoTask(t *testing.T) {
	for dir, p := range packages(t) {
		if dir != "nexus" && !strings.HasPrefix(dir, "nexus/") {
			continue
		}
		for path := range p.imports() {
			if taskPackage(path) {
				t.Errorf("%s imports %s; wire tasks in bgtasks/nexustasks instead", dir, path)
			}
		}
	}
}

func TestTaskPackageRule(t *testing.T) {
	for path, want := range map[string]bool{
		module + "/bgtasks":                false, // the driver
		module + "/bgtasks/tufreplication": true,
		module + "/bgtasks/heartbeat":      true,
		module + "/bgtasks/nexustasks":     true,
		module + "/bgtasks/taskdb":         false,
		module + "/nexus/app":              false,
	} {
		if got := taskPackage(path); got != want {
			t.Errorf("taskPackage(%q) = %v, want %v", path, got, want)
		}
	}
}

// testImports returns the rackplane packages (relative to the module root)
// that dir's test files import.
func testImports(t *testing.T, dir string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(repoRoot(t), dir, "*_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fset := token.NewFileSet()
	for _, m := range matches {
		f, err := parser.ParseFile(fset, m, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if rest, ok := strings.CutPrefix(path, module+"/"); ok {
				out = append(out, rest)
			}
		}
	}
	return out
}

// The sled agent's tests build only the sled: helpers are layered so that
// a sled test never compiles Nexus or its tasks (internal/sledtest below
// internal/racktest).
func TestSledTestsDoNotCompileNexus(t *testing.T) {
	all := packages(t)
	for dir := range all {
		if dir != "sledagent" && !strings.HasPrefix(dir, "sledagent/") {
			continue
		}
		seen := map[string]bool{}
		queue := append(testImports(t, dir), dir)
		for len(queue) > 0 {
			p := queue[0]
			queue = queue[1:]
			if seen[p] {
				continue
			}
			seen[p] = true
			if p == "nexus" || strings.HasPrefix(p, "nexus/") || p == "bgtasks" || strings.HasPrefix(p, "bgtasks/") ||
				p == "internal/racktest" {
				t.Errorf("the tests of %s compile %s", dir, p)
				continue
			}
			if pk := all[p]; pk != nil {
				for imp := range pk.imports() {
					if rest, ok := strings.CutPrefix(imp, module+"/"); ok {
						queue = append(queue, rest)
					}
				}
			}
		}
	}
}

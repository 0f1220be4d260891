package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// statusFreeDirs are the packages (with their subpackages) that hold
// rules rather than serve HTTP: they return faults or sentinels, and the
// HTTP edges (internal/httpx's one status table, nexus/httpapi, nexus/ui,
// the sled agent's server files, cmd/...) choose statuses.
var statusFreeDirs = []string{
	"nexus/app", "nexus/datastore", "nexus/tufrepo", "nexus/depot", "nexus/model",
	"sledagent/artifacts", "sledagent/bootstrap", "bgtasks",
}

// statusEdgeFiles are the HTTP handlers that live inside a status-free
// package, next to the domain code they serve.
var statusEdgeFiles = map[string]bool{
	"sledagent/artifacts/handlers.go": true,
}

// statusFree reports whether the package in dir (relative to the module
// root) may not choose HTTP statuses.
func statusFree(dir string) bool {
	for _, d := range statusFreeDirs {
		if dir == d || strings.HasPrefix(dir, d+"/") {
			return true
		}
	}
	return false
}

// checkStatusFile returns the places where f chooses an HTTP status or
// writes an HTTP error: any net/http Status* name (a constant or
// StatusText), http.Error, or an import of internal/httpx. Reading a
// status a server sent is not choosing one, so a Status* constant
// compared with a StatusCode field (resp.StatusCode == http.StatusOK, or
// a case of switch resp.StatusCode) is allowed.
func checkStatusFile(fset *token.FileSet, f *ast.File) []string {
	var problems []string
	at := func(n ast.Node) string { return fset.Position(n.Pos()).String() }
	httpName := ""
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		switch path {
		case "net/http":
			httpName = "http"
			if imp.Name != nil {
				httpName = imp.Name.Name
			}
			if httpName == "." {
				problems = append(problems, at(imp)+": dot-imports net/http, which hides its status names")
			}
		case module + "/internal/httpx":
			problems = append(problems, at(imp)+": imports internal/httpx (HTTP answers belong to the edge; return a fault)")
		}
	}
	if httpName == "" || httpName == "_" || httpName == "." {
		return problems
	}
	isStatusCode := func(e ast.Expr) bool {
		sel, ok := e.(*ast.SelectorExpr)
		return ok && sel.Sel.Name == "StatusCode"
	}
	// Status names that only read a received status.
	reading := map[*ast.SelectorExpr]bool{}
	mark := func(e ast.Expr) {
		if sel, ok := ast.Unparen(e).(*ast.SelectorExpr); ok {
			reading[sel] = true
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BinaryExpr:
			switch n.Op {
			case token.EQL, token.NEQ, token.LSS, token.LEQ, token.GTR, token.GEQ:
				if isStatusCode(ast.Unparen(n.X)) {
					mark(n.Y)
				}
				if isStatusCode(ast.Unparen(n.Y)) {
					mark(n.X)
				}
			}
		case *ast.SwitchStmt:
			if n.Tag == nil || !isStatusCode(ast.Unparen(n.Tag)) {
				return true
			}
			for _, s := range n.Body.List {
				for _, e := range s.(*ast.CaseClause).List {
					mark(e)
				}
			}
		}
		return true
	})
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		id, ok := sel.X.(*ast.Ident)
		if !ok || id.Name != httpName {
			return true
		}
		switch name := sel.Sel.Name; {
		case strings.HasPrefix(name, "Status") && !reading[sel]:
			problems = append(problems, at(sel)+": uses http."+name+" (return a fault; the edge picks the status)")
		case name == "Error":
			problems = append(problems, at(sel)+": uses http.Error (return a fault; the edge writes it)")
		}
		return true
	})
	return problems
}

// Domain packages never choose an HTTP status: they return faults or
// sentinels, and each edge maps them once.
func TestDomainPackagesChooseNoHTTPStatus(t *testing.T) {
	all := packages(t)
	root := repoRoot(t)
	// A rule over packages that no longer exist would pass on nothing.
	for _, d := range statusFreeDirs {
		if all[d] == nil {
			t.Errorf("status-free package %s not found; update statusFreeDirs", d)
		}
	}
	for f := range statusEdgeFiles {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("edge file %s: %v; update statusEdgeFiles", f, err)
		}
	}
	var problems []string
	checked := 0
	for dir, p := range all {
		if !statusFree(dir) {
			continue
		}
		for _, f := range p.files {
			name, _ := filepath.Rel(root, p.fset.Position(f.Package).Filename)
			if statusEdgeFiles[filepath.ToSlash(name)] {
				continue
			}
			checked++
			problems = append(problems, checkStatusFile(p.fset, f)...)
		}
	}
	if checked < 20 {
		t.Fatalf("checked only %d files; is the walk broken?", checked)
	}
	sort.Strings(problems)
	if len(problems) > 0 {
		t.Fatalf("domain code chooses HTTP statuses:\n  %s", strings.Join(problems, "\n  "))
	}
}

func TestCheckStatusFileCatchesChosenStatuses(t *testing.T) {
	src := `package p
import (
	web "net/http"
	"github.com/rackplane/rackplane/internal/httpx"
)
type E struct{ Status int }
var _ = httpx.WriteJSON
func chosen() error { return &E{Status: web.StatusConflict} }
func written(w web.ResponseWriter) { web.Error(w, "no", 500) }
var text = web.StatusText(404)
func compared(resp *web.Response) bool {
	return resp.StatusCode == web.StatusOK || (web.StatusPartialContent) == resp.StatusCode ||
		resp.StatusCode >= web.StatusBadRequest
}
func switched(resp *web.Response) int {
	switch resp.StatusCode {
	case web.StatusNotFound, web.StatusGone:
		return 1
	}
	switch code := 3; code {
	case web.StatusTeapot:
		return 2
	}
	return 0
}
func assignedNotCompared(resp *web.Response) { resp.StatusCode = web.StatusAccepted }
var client = web.Client{}
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	problems := checkStatusFile(fset, f)
	joined := strings.Join(problems, "\n")
	for _, want := range []string{"internal/httpx", "http.StatusConflict", "http.Error", "http.StatusText",
		"http.StatusTeapot", "http.StatusAccepted"} {
		if !strings.Contains(joined, want) {
			t.Errorf("missed %q in:\n%s", want, joined)
		}
	}
	for _, allowed := range []string{"StatusOK", "StatusPartialContent", "StatusBadRequest", "StatusNotFound",
		"StatusGone", "Client"} {
		if strings.Contains(joined, "http."+allowed+" ") {
			t.Errorf("flagged the permitted http.%s in:\n%s", allowed, joined)
		}
	}
	if len(problems) != 6 {
		t.Errorf("want exactly 6 problems, got:\n%s", joined)
	}

	dot := `package p
import . "net/http"
var _ = StatusConflict
`
	f, err = parser.ParseFile(fset, "dot.go", dot, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkStatusFile(fset, f); len(got) != 1 || !strings.Contains(got[0], "dot-imports") {
		t.Errorf("dot import: %v", got)
	}
}

func TestStatusFreeRule(t *testing.T) {
	for dir, want := range map[string]bool{
		"nexus/app": true, "nexus/datastore": true, "nexus/tufrepo": true, "nexus/depot": true,
		"sledagent/artifacts": true, "sledagent/bootstrap": true, "sledagent/bootstrap/bootnet": true,
		"bgtasks/tufreplication": true, "nexus/httpapi": false, "nexus/ui": false, "nexus": false,
		"sledagent": false, "internal/httpx": false, "cmd/nexus": false, "nexus/application": false,
		"api/client": false,
	} {
		if got := statusFree(dir); got != want {
			t.Errorf("statusFree(%q) = %v, want %v", dir, got, want)
		}
	}
}

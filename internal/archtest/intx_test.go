package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"sort"
	"strings"
	"testing"
)

// checkInTxFile returns the calls of an InTx method in f that pass only
// a name and a body: datastore.InTx needs one option more (ReadOnly,
// Idempotent or AppliedIf) to know what to do when a commit's outcome is
// unknown (CockroachDB's 40003); without one such a commit becomes
// ErrAmbiguous, a 503 for a change that may have been made.
func checkInTxFile(fset *token.FileSet, f *ast.File) []string {
	var problems []string
	ast.Inspect(f, func(n ast.Node) bool {
		c, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		if sel, ok := c.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "InTx" && len(c.Args) == 3 && !c.Ellipsis.IsValid() {
			problems = append(problems, fset.Position(c.Pos()).String()+
				": InTx without ReadOnly, Idempotent or AppliedIf (say what an unknown commit outcome means)")
		}
		return true
	})
	return problems
}

// Every transaction says what an unknown commit outcome means for it.
func TestEveryTransactionDeclaresItsAmbiguity(t *testing.T) {
	var problems []string
	calls := 0
	for dir, p := range packages(t) {
		if strings.HasPrefix(dir, "internal/archtest") {
			continue
		}
		for _, f := range p.files {
			ast.Inspect(f, func(n ast.Node) bool {
				if c, ok := n.(*ast.CallExpr); ok {
					if sel, ok := c.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "InTx" {
						calls++
					}
				}
				return true
			})
			problems = append(problems, checkInTxFile(p.fset, f)...)
		}
	}
	if calls < 20 {
		t.Fatalf("found only %d InTx calls; is the walk broken?", calls)
	}
	sort.Strings(problems)
	if len(problems) > 0 {
		t.Fatalf("transactions that do not declare their ambiguity:\n  %s", strings.Join(problems, "\n  "))
	}
}

func TestCheckInTxFileCatchesABareCall(t *testing.T) {
	src := `package p
func f(d D) {
	d.InTx(ctx, "bare", func(ctx C, tx T) error { return nil })
	d.InTx(ctx, "declared", func(ctx C, tx T) error { return nil }, Idempotent)
	d.InTx(ctx, "passed on", fn, opts...)
}`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkInTxFile(fset, f); len(got) != 1 || !strings.Contains(got[0], "p.go:3") {
		t.Fatalf("problems %v, want exactly the bare call on line 3", got)
	}
}

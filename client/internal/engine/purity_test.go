package engine

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestNoIO checks over the engine's source what its design promises: no
// goroutine, lock, timer, clock read, channel or I/O. Everything that
// happens in time comes in as an input, so a simulation can replay any
// interleaving from a seed.
func TestNoIO(t *testing.T) {
	forbiddenImports := map[string]bool{
		"net": true, "sync": true, "sync/atomic": true, "os": true, "io": true, "bufio": true,
		"os/exec": true, "syscall": true, "unsafe": true, "context": true, "math/rand": true,
		"math/rand/v2": true, "crypto/rand": true, "runtime": true,
	}
	clock := map[string]bool{"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true,
		"AfterFunc": true, "NewTimer": true, "NewTicker": true, "Tick": true}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	files := 0
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		files++
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if forbiddenImports[path] || strings.HasPrefix(path, "net/") {
				t.Errorf("%s imports %s", fset.Position(imp.Pos()), path)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.GoStmt:
				t.Errorf("%s: go statement", fset.Position(n.Pos()))
			case *ast.SelectStmt:
				t.Errorf("%s: select statement", fset.Position(n.Pos()))
			case *ast.SendStmt:
				t.Errorf("%s: channel send", fset.Position(n.Pos()))
			case *ast.ChanType:
				t.Errorf("%s: channel type", fset.Position(n.Pos()))
			case *ast.UnaryExpr:
				if n.Op == token.ARROW {
					t.Errorf("%s: channel receive", fset.Position(n.Pos()))
				}
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && x.Name == "time" && clock[n.Sel.Name] {
					t.Errorf("%s: time.%s reads the clock or starts a timer", fset.Position(n.Pos()), n.Sel.Name)
				}
			}
			return true
		})
	}
	if files < 5 {
		t.Fatalf("checked %d files: the test no longer sees the engine's source", files)
	}
}

package packet

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the package a leaf of the datapath: the standard
// library's byte order, formatting and addresses, nothing else (DESIGN.md
// §4: datapath packages never import control-plane packages).
func TestImports(t *testing.T) {
	allowed := map[string]bool{"encoding/binary": true, "fmt": true, "net/netip": true}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !allowed[path] {
				t.Errorf("%s imports %q; packet may import only %v", name, path, allowed)
			}
		}
	}
}

// Package importtest checks, from a package's own tests, which packages its
// non-test files import: the datapath's leaf packages keep to the standard
// library and a few named siblings (DESIGN.md §4).
package importtest

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Check reports a test error for every import of the Go files (tests
// excluded) in the current directory for which ok is false; want says what
// pkg may import, for the message.
func Check(t testing.TB, pkg string, ok func(path string) bool, want string) {
	t.Helper()
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
			if !ok(path) {
				t.Errorf("%s imports %q; %s may import only %s", name, path, pkg, want)
			}
		}
	}
}

// Only is Check with a list of the packages pkg may import.
func Only(t testing.TB, pkg string, allowed ...string) {
	t.Helper()
	Check(t, pkg, func(path string) bool { return slices.Contains(allowed, path) }, strings.Join(allowed, ", "))
}

// StandardLibrary reports whether path is a standard-library package (its
// first element has no dot).
func StandardLibrary(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

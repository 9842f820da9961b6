package packet

import (
	"testing"

	"github.com/sluicelb/sluice/internal/importtest"
)

// TestImports keeps the package a leaf of the datapath: the standard
// library's byte order, formatting and addresses, nothing else (DESIGN.md
// §4: datapath packages never import control-plane packages).
func TestImports(t *testing.T) {
	importtest.Only(t, "packet", "encoding/binary", "fmt", "net/netip")
}

package quiclb

import (
	"testing"

	"github.com/sluicelb/sluice/internal/importtest"
)

// TestImports keeps the package on the standard library: the datapath
// imports it, and quic-go belongs in the quicgo subpackage only.
func TestImports(t *testing.T) {
	importtest.Check(t, "quiclb", importtest.StandardLibrary, "the standard library")
}

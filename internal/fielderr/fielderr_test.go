package fielderr_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/sluicelb/sluice/internal/fielderr"
)

var errBad = errors.New("bad thing")

func TestError(t *testing.T) {
	e := &fielderr.Error{Path: "vips[2].backends[0].weight", Value: -1, Reason: "must be >= 0", Err: errBad}
	if e.Error() != "vips[2].backends[0].weight: -1 must be >= 0" {
		t.Fatal(e.Error())
	}
	if fielderr.New("node.interfaces", nil, "at least one interface is required").Error() != "node.interfaces: at least one interface is required" {
		t.Fatal("without a value")
	}
	wrapped := fmt.Errorf("loading: %w", errors.Join(e, fielderr.New("node.mtu", 10, "is too small")))
	if !errors.Is(wrapped, errBad) {
		t.Fatal("Is through the sentinel")
	}
	var fe *fielderr.Error
	if !errors.As(wrapped, &fe) || fe != e {
		t.Fatal("As")
	}
	all := fielderr.All(wrapped)
	if len(all) != 2 || all[0] != e || all[1].Path != "node.mtu" {
		t.Fatalf("All = %v", all)
	}
}

func ExampleError() {
	err := fmt.Errorf("apply: %w", fielderr.New("vips[0].port", 70000, "is not a port (1..65535)"))
	var fe *fielderr.Error
	if errors.As(err, &fe) {
		fmt.Println(fe.Path, "=", fe.Value)
	}
	fmt.Println(err)
	// Output:
	// vips[0].port = 70000
	// apply: vips[0].port: 70000 is not a port (1..65535)
}

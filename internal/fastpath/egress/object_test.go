package egress

import (
	"testing"
	"unsafe"

	"github.com/sluicelb/sluice/internal/bpfgen"
)

// TestLayout: the Go view of the program's maps matches the object.
func TestLayout(t *testing.T) {
	spec, err := loadEgress()
	if err != nil {
		t.Fatal(err)
	}
	if got := spec.Maps[egressMapSluiceEgressFlows].KeySize; got != 40 || unsafe.Sizeof(egressFlowKey{}) != 40 {
		t.Errorf("flow key: %d bytes, want 40", got)
	}
	if got := spec.Maps[egressMapSluiceEgressFlows].ValueSize; got != 56 || unsafe.Sizeof(egressFlowValue{}) != 56 {
		t.Errorf("flow value: %d bytes, want 56", got)
	}
	if got := spec.Maps[egressMapSluiceEgressCtr].MaxEntries; got != uint32(egressCtrCTR_NUM) {
		t.Errorf("counters: %d entries, want %d", got, egressCtrCTR_NUM)
	}
}

// TestEgressObjectFresh fails when the committed object is stale (bpfgen.CheckFresh).
func TestEgressObjectFresh(t *testing.T) {
	bpfgen.CheckFresh(t, "egress", "egress")
}

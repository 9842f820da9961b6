package packet

import "testing"

// allFrames returns every test frame: sound and malformed, every verdict.
func allFrames(t testing.TB) [][]byte {
	var frames [][]byte
	for _, tc := range verdictCases() {
		frames = append(frames, tc.frame)
	}
	for _, gc := range goldenCases(t) {
		frames = append(frames, gc.frame)
	}
	for _, bf := range benchFrames {
		frames = append(frames, bf.frame)
	}
	return frames
}

// TestDecodeZeroAllocs proves Decode allocates on no path, errors included,
// and that a Parsed on the caller's stack stays there.
func TestDecodeZeroAllocs(t *testing.T) {
	frames := allFrames(t)
	verdicts := make(map[Verdict]bool)
	for _, f := range frames {
		var p Parsed
		p.Decode(f)
		verdicts[p.Verdict] = true
	}
	if len(verdicts) != int(NumVerdicts) {
		t.Fatalf("frames cover %d verdicts, want all %d", len(verdicts), NumVerdicts)
	}

	var sink int
	allocs := testing.AllocsPerRun(100, func() {
		for _, f := range frames {
			var p Parsed // must not escape
			p.Decode(f)
			sink += len(p.Verdict.String()) + int(p.Tuple.SrcPort) + p.PayloadOff
			if p.IsTCPSYN() || p.IsICMPError() || p.InnerComplete() {
				sink++
			}
		}
	})
	if allocs != 0 {
		t.Errorf("Decode over %d frames: %v allocations per run, want 0", len(frames), allocs)
	}
	_ = sink
}

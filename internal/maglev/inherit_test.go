package maglev

import "testing"

// A slot keeps its last previous owner across builds that do not change
// it; a slot that changes again gets its new previous owner.
func TestInherit(t *testing.T) {
	be := func(names ...string) []Backend {
		var out []Backend
		for _, n := range names {
			out = append(out, Backend{Name: n, Weight: 1})
		}
		return out
	}
	opts := Options{M: 1009}
	a, _ := Build(be("a", "b", "c"), opts, nil)
	b, _ := Build(be("a", "b", "c", "d"), opts, a) // d added: its slots remember a, b or c
	name := func(tb *Table, i uint16) string {
		if i == NoBackend {
			return ""
		}
		return tb.Backend(i).Name
	}
	// The same set again, inheriting: the previous owners stay.
	c, err := Build(be("a", "b", "c", "d"), Options{M: 1009, Inherit: b}, nil)
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for s := range uint32(1009) {
		if got, want := name(c, c.Previous(s)), name(b, b.Previous(s)); got != want && !(want == name(b, b.Owner(s))) {
			t.Fatalf("slot %d: previous %q, want %q", s, got, want)
		}
		if name(b, b.Previous(s)) != name(b, b.Owner(s)) {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("adding d moved no slot")
	}
	// Remove a, with c as the previous table and inheriting from c: slots a
	// owned get a as previous owner; the others keep what c had.
	d, err := Build(be("b", "c", "d"), Options{M: 1009, Inherit: c}, c)
	if err != nil {
		t.Fatal(err)
	}
	for s := range uint32(1009) {
		owner, prev := name(d, d.Owner(s)), name(d, d.Previous(s))
		switch {
		case name(c, c.Owner(s)) != owner:
			if prev != name(c, c.Owner(s)) {
				t.Fatalf("slot %d changed: previous %q, want %q", s, prev, name(c, c.Owner(s)))
			}
		case name(c, c.Previous(s)) != "" && name(c, c.Previous(s)) != owner:
			if prev != name(c, c.Previous(s)) {
				t.Fatalf("slot %d unchanged: previous %q, want the inherited %q", s, prev, name(c, c.Previous(s)))
			}
		}
	}
	if _, err := Build(be("a"), Options{M: 1013, Inherit: a}, nil); err == nil {
		t.Fatal("inheriting from a table of another size")
	}
}

package health

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	tgt = netip.MustParseAddrPort("198.18.2.2:80")
	vip = netip.MustParseAddrPort("198.18.0.10:80")
)

func TestSpecValidate(t *testing.T) {
	for _, s := range []Spec{
		{Kind: TCP, Target: tgt},
		{Kind: HTTP, Target: tgt, Path: "/healthz?x=1", Host: "example.com:8080", ExpectStatus: 204},
		{Kind: HTTPS, Target: netip.MustParseAddrPort("[2001:db8::2]:443"), InsecureSkipVerify: true},
		{Kind: UDP, Target: tgt, Send: []byte("ping"), Expect: []byte("pong")},
		{Kind: VIP, Target: netip.MustParseAddrPort("198.18.2.2:6080"), VIP: vip, Proto: "udp"},
		{Kind: TCP, Target: tgt, Interval: 500 * time.Millisecond}, // default timeout 250 ms
		{Kind: TCP, Target: tgt, Interval: time.Second, Timeout: 999 * time.Millisecond, Rise: 1, Fall: 10},
	} {
		if err := s.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", s, err)
		}
	}

	for _, c := range []struct {
		s            Spec
		field, value string
	}{
		{Spec{Target: tgt}, "Kind", "kind(0)"},
		{Spec{Kind: 9, Target: tgt}, "Kind", "kind(9)"},
		{Spec{Kind: TCP}, "Target", "invalid"},
		{Spec{Kind: TCP, Target: netip.MustParseAddrPort("198.18.2.2:0")}, "Target", "198.18.2.2:0"},
		{Spec{Kind: TCP, Target: netip.MustParseAddrPort("0.0.0.0:80")}, "Target", "0.0.0.0:80"},
		{Spec{Kind: TCP, Target: netip.MustParseAddrPort("[::ffff:198.18.2.2]:80")}, "Target", "[::ffff:198.18.2.2]:80"},
		{Spec{Kind: TCP, Target: tgt, Interval: -time.Second}, "Interval", "-1s"},
		{Spec{Kind: TCP, Target: tgt, Timeout: -time.Second}, "Timeout", "-1s"},
		{Spec{Kind: TCP, Target: tgt, Timeout: 2 * time.Second}, "Timeout", "2s"},
		{Spec{Kind: TCP, Target: tgt, Interval: time.Second, Timeout: time.Second}, "Timeout", "1s"},
		{Spec{Kind: TCP, Target: tgt, Rise: -1}, "Rise", "-1"},
		{Spec{Kind: TCP, Target: tgt, Fall: -2}, "Fall", "-2"},
		{Spec{Kind: TCP, Target: tgt, Path: "/x"}, "Path", `"/x"`},
		{Spec{Kind: TCP, Target: tgt, VIP: vip}, "VIP", "198.18.0.10:80"},
		{Spec{Kind: UDP, Target: tgt, Send: []byte("a"), Proto: "tcp"}, "Proto", `"tcp"`},
		{Spec{Kind: HTTP, Target: tgt, InsecureSkipVerify: true}, "InsecureSkipVerify", "true"},
		{Spec{Kind: HTTP, Target: tgt, Send: []byte("x")}, "Send", `"x"`},
		{Spec{Kind: TCP, Target: tgt, Expect: []byte("y")}, "Expect", `"y"`},
		{Spec{Kind: VIP, Target: tgt, VIP: vip, Proto: "tcp", Host: "h"}, "Host", `"h"`},
		{Spec{Kind: UDP, Target: tgt, Send: []byte("a"), ExpectStatus: 200}, "ExpectStatus", "200"},
		{Spec{Kind: HTTP, Target: tgt, Path: "healthz"}, "Path", `"healthz"`},
		{Spec{Kind: HTTP, Target: tgt, Path: "/a b"}, "Path", `"/a b"`},
		{Spec{Kind: HTTP, Target: tgt, Host: "a/b"}, "Host", `"a/b"`},
		{Spec{Kind: HTTPS, Target: tgt, ExpectStatus: 99}, "ExpectStatus", "99"},
		{Spec{Kind: HTTP, Target: tgt, ExpectStatus: 600}, "ExpectStatus", "600"},
		{Spec{Kind: UDP, Target: tgt}, "Send", `""`},
		{Spec{Kind: UDP, Target: tgt, Send: make([]byte, MaxUDPPayload+1)}, "Send", "1401 bytes"},
		{Spec{Kind: UDP, Target: tgt, Send: []byte("a"), Expect: make([]byte, MaxUDPPayload+1)}, "Expect", "1401 bytes"},
		{Spec{Kind: VIP, Target: tgt, Proto: "tcp"}, "VIP", "invalid"},
		{Spec{Kind: VIP, Target: tgt, VIP: netip.MustParseAddrPort("198.18.0.10:0"), Proto: "tcp"}, "VIP", "198.18.0.10:0"},
		{Spec{Kind: VIP, Target: tgt, VIP: vip}, "Proto", `""`},
		{Spec{Kind: VIP, Target: tgt, VIP: vip, Proto: "sctp"}, "Proto", `"sctp"`},
	} {
		err := c.s.Validate()
		var se *SpecError
		if !errors.As(err, &se) || !errors.Is(err, ErrSpec) {
			t.Errorf("Validate(%+v) = %v, want a *SpecError for %s", c.s, err, c.field)
			continue
		}
		if se.Path != "spec."+c.field || se.Value != c.value ||
			!strings.Contains(err.Error(), "spec."+c.field+": "+c.value+" ") {
			t.Errorf("Validate(%+v) = %q (path %q, value %q), want field %q value %q",
				c.s, err, se.Path, se.Value, c.field, c.value)
		}
	}
}

func TestSpecDefaults(t *testing.T) {
	d := Spec{Kind: HTTP, Target: tgt}.withDefaults()
	if d.Interval != 2*time.Second || d.Timeout != time.Second || d.Rise != 2 || d.Fall != 3 ||
		d.Path != "/" || d.ExpectStatus != 200 {
		t.Errorf("defaults: %+v", d)
	}
	if d := (Spec{Kind: TCP, Target: tgt, Interval: 600 * time.Millisecond}).withDefaults(); d.Timeout != 300*time.Millisecond || d.Path != "" {
		t.Errorf("short interval: %+v", d)
	}
}

// TestSpecEqualCoversEveryField changes each field of a Spec in turn (by
// reflection, so that a new field cannot be forgotten) and expects equal to
// notice.
func TestSpecEqualCoversEveryField(t *testing.T) {
	base := Spec{Kind: UDP, Target: tgt, Send: []byte("a"), Expect: []byte("b")}
	if !base.equal(Spec{Kind: UDP, Target: tgt, Send: []byte("a"), Expect: []byte("b")}) {
		t.Fatal("equal specs differ")
	}
	typ := reflect.TypeOf(base)
	for i := range typ.NumField() {
		o := base
		o.Send, o.Expect = []byte("a"), []byte("b") // private copies
		f := reflect.ValueOf(&o).Elem().Field(i)
		switch f.Kind() {
		case reflect.Uint8, reflect.Uint16:
			f.SetUint(f.Uint() + 1)
		case reflect.Int, reflect.Int64:
			f.SetInt(f.Int() + 1)
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Bool:
			f.SetBool(!f.Bool())
		case reflect.Slice:
			f.SetBytes(append(f.Bytes(), 'x'))
		case reflect.Struct: // netip.AddrPort
			f.Set(reflect.ValueOf(netip.MustParseAddrPort("192.0.2.1:1")))
		default:
			t.Fatalf("field %s of kind %s: extend this test", typ.Field(i).Name, f.Kind())
		}
		if base.equal(o) || o.equal(base) {
			t.Errorf("equal ignores Spec.%s", typ.Field(i).Name)
		}
	}
}

func TestStrings(t *testing.T) {
	for v, want := range map[any]string{
		TCP: "tcp", HTTP: "http", HTTPS: "https", UDP: "udp", VIP: "vip", Kind(0): "kind(0)",
		Unknown: "unknown", Up: "up", Down: "down", State(7): "state(7)",
	} {
		if got := v.(interface{ String() string }).String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", v, got, want)
		}
	}
}

package health

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/sluicelb/sluice/internal/fielderr"
)

// Kind is the kind of a health check.
type Kind uint8

const (
	// TCP: a TCP connection to Target is established (and closed at once).
	TCP Kind = iota + 1
	// HTTP: GET Path from Target answers ExpectStatus.
	HTTP
	// HTTPS: as HTTP, over TLS.
	HTTPS
	// UDP: Send to Target is answered with a datagram that starts with
	// Expect.
	UDP
	// VIP: the agent at Target (its GUE address and port) reports that a
	// service answers on VIP with protocol Proto on the backend itself; see
	// the package documentation for the probe.
	VIP
)

var kindNames = [...]string{TCP: "tcp", HTTP: "http", HTTPS: "https", UDP: "udp", VIP: "vip"}

// String returns "tcp", "http", "https", "udp", "vip" or "kind(N)".
func (k Kind) String() string {
	if k >= TCP && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Defaults applied to the zero fields of a Spec.
const (
	DefaultInterval = 2 * time.Second
	// DefaultTimeout is the timeout when Spec.Timeout is 0 and the interval
	// is longer than DefaultTimeout; otherwise the default is half the
	// interval.
	DefaultTimeout      = 1 * time.Second
	DefaultRise         = 2
	DefaultFall         = 3
	DefaultExpectStatus = 200
	DefaultPath         = "/"
)

// MaxUDPPayload bounds Spec.Send and Spec.Expect.
const MaxUDPPayload = 1400

// Spec describes one health check. The zero value of Interval, Timeout,
// Rise, Fall, Path and ExpectStatus selects the default. Fields that do not
// belong to the Kind must be left zero (Validate says which).
type Spec struct {
	Kind Kind
	// Target is the address and port checked: the backend's service for
	// TCP, HTTP, HTTPS and UDP; the agent's GUE address and port for VIP.
	Target netip.AddrPort
	// VIP (VIP checks only) is the service address and port the agent must
	// find answering on the backend itself.
	VIP netip.AddrPort
	// Proto (VIP checks only) is "tcp" or "udp": the service's protocol.
	Proto string
	// HTTP and HTTPS: GET Path (DefaultPath when empty, must start with
	// "/") with Host as the Host header and TLS server name (Target's
	// address when empty); the check succeeds when the status equals
	// ExpectStatus (DefaultExpectStatus when 0). Redirects are not
	// followed.
	Path         string
	Host         string
	ExpectStatus int
	// InsecureSkipVerify (HTTPS only) accepts any server certificate.
	// Without it the certificate must be valid for Host (or the Target
	// address) and chain to the system roots.
	InsecureSkipVerify bool
	// UDP only: the request datagram (required) and the prefix the reply
	// must start with (empty: any reply). At most MaxUDPPayload bytes each.
	Send, Expect []byte
	// Interval between the starts of two checks (DefaultInterval when 0)
	// and the bound on each check (DefaultTimeout when 0, see there);
	// Timeout < Interval.
	Interval, Timeout time.Duration
	// Rise consecutive successes make the check Up, Fall consecutive
	// failures make it Down (DefaultRise, DefaultFall when 0).
	Rise, Fall int
}

// ErrSpec is matched (errors.Is) by every *SpecError.
var ErrSpec = errors.New("health: invalid spec")

// SpecError is a Spec validation error (fielderr.Error, matching
// ErrSpec): its path is "spec." and the field, its value the offending
// value.
type SpecError = fielderr.Error

func specErr(field string, value any, format string, args ...any) *SpecError {
	return &fielderr.Error{Path: "spec." + field, Value: fmt.Sprint(value), Reason: fmt.Sprintf(format, args...), Err: ErrSpec}
}

// withDefaults returns s with the defaults applied to its zero fields.
func (s Spec) withDefaults() Spec {
	if s.Interval == 0 {
		s.Interval = DefaultInterval
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
		if s.Interval > 0 && s.Interval <= DefaultTimeout {
			s.Timeout = s.Interval / 2
		}
	}
	if s.Rise == 0 {
		s.Rise = DefaultRise
	}
	if s.Fall == 0 {
		s.Fall = DefaultFall
	}
	if s.Kind == HTTP || s.Kind == HTTPS {
		if s.Path == "" {
			s.Path = DefaultPath
		}
		if s.ExpectStatus == 0 {
			s.ExpectStatus = DefaultExpectStatus
		}
	}
	return s
}

// Validate reports the first problem of s, with its defaults applied, as a
// *SpecError naming the field and the value.
func (s Spec) Validate() error {
	d := s.withDefaults()
	if d.Kind < TCP || d.Kind > VIP {
		return specErr("Kind", d.Kind, "must be tcp, http, https, udp or vip")
	}
	if err := checkAddrPort("Target", d.Target); err != nil {
		return err
	}
	switch {
	case d.Interval < 0:
		return specErr("Interval", d.Interval, "must not be negative")
	case d.Timeout <= 0:
		return specErr("Timeout", d.Timeout, "must be positive")
	case d.Timeout >= d.Interval:
		return specErr("Timeout", d.Timeout, "must be shorter than the interval %s", d.Interval)
	case d.Rise < 0:
		return specErr("Rise", d.Rise, "must be at least 1")
	case d.Fall < 0:
		return specErr("Fall", d.Fall, "must be at least 1")
	}

	// Fields of other kinds must be zero: a typo in the kind must not
	// silently turn an HTTP check into a bare TCP connect.
	http := d.Kind == HTTP || d.Kind == HTTPS
	for _, f := range []struct {
		name  string
		set   bool
		value any
		ok    bool
	}{
		{"VIP", d.VIP.IsValid(), d.VIP, d.Kind == VIP},
		{"Proto", d.Proto != "", fmt.Sprintf("%q", d.Proto), d.Kind == VIP},
		{"Path", d.Path != "", fmt.Sprintf("%q", d.Path), http},
		{"Host", d.Host != "", fmt.Sprintf("%q", d.Host), http},
		{"ExpectStatus", d.ExpectStatus != 0, d.ExpectStatus, http},
		{"InsecureSkipVerify", d.InsecureSkipVerify, true, d.Kind == HTTPS},
		{"Send", len(d.Send) != 0, fmt.Sprintf("%q", d.Send), d.Kind == UDP},
		{"Expect", len(d.Expect) != 0, fmt.Sprintf("%q", d.Expect), d.Kind == UDP},
	} {
		if f.set && !f.ok {
			return specErr(f.name, f.value, "does not apply to a %s check", d.Kind)
		}
	}

	switch d.Kind {
	case HTTP, HTTPS:
		switch {
		case !strings.HasPrefix(d.Path, "/") || strings.ContainsAny(d.Path, " \t\r\n#"):
			return specErr("Path", fmt.Sprintf("%q", d.Path), "must start with '/' and hold no spaces or fragment")
		case strings.ContainsAny(d.Host, " \t\r\n/"):
			return specErr("Host", fmt.Sprintf("%q", d.Host), "must be a host name or address, optionally with a port")
		case d.ExpectStatus < 100 || d.ExpectStatus > 599:
			return specErr("ExpectStatus", d.ExpectStatus, "must be an HTTP status code (100-599)")
		}
	case UDP:
		switch {
		case len(d.Send) == 0:
			return specErr("Send", `""`, "a UDP check needs a request datagram")
		case len(d.Send) > MaxUDPPayload:
			return specErr("Send", fmt.Sprintf("%d bytes", len(d.Send)), "must be at most %d bytes", MaxUDPPayload)
		case len(d.Expect) > MaxUDPPayload:
			return specErr("Expect", fmt.Sprintf("%d bytes", len(d.Expect)), "must be at most %d bytes", MaxUDPPayload)
		}
	case VIP:
		if err := checkAddrPort("VIP", d.VIP); err != nil {
			return err
		}
		if d.Proto != "tcp" && d.Proto != "udp" {
			return specErr("Proto", fmt.Sprintf("%q", d.Proto), `must be "tcp" or "udp"`)
		}
	}
	return nil
}

func checkAddrPort(field string, ap netip.AddrPort) error {
	a := ap.Addr()
	switch {
	case !ap.IsValid():
		return specErr(field, "invalid", "an address and port are required")
	case a.Zone() != "" || a.Is4In6():
		return specErr(field, ap, "must be a plain IPv4 or IPv6 address (no zone, no IPv4-mapped form)")
	case a.IsUnspecified() || a.IsMulticast():
		return specErr(field, ap, "must be a unicast address")
	case ap.Port() == 0:
		return specErr(field, ap, "port must not be 0")
	}
	return nil
}

// equal reports whether s and o describe the same check. Every field is
// compared (TestSpecEqualCoversEveryField keeps it so).
func (s Spec) equal(o Spec) bool {
	return s.Kind == o.Kind && s.Target == o.Target && s.VIP == o.VIP && s.Proto == o.Proto &&
		s.Path == o.Path && s.Host == o.Host && s.ExpectStatus == o.ExpectStatus &&
		s.InsecureSkipVerify == o.InsecureSkipVerify &&
		bytes.Equal(s.Send, o.Send) && bytes.Equal(s.Expect, o.Expect) &&
		s.Interval == o.Interval && s.Timeout == o.Timeout && s.Rise == o.Rise && s.Fall == o.Fall
}

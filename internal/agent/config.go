package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
)

// Defaults applied by New to the zero fields of a Config.
const (
	// DefaultPort is the GUE UDP port (encap.DefaultGUEPort).
	DefaultPort = 6080
	// DefaultTUN is the name of the TUN device the agent creates.
	DefaultTUN = "sluice0"
	// DefaultBatch is the number of datagrams read per recvmmsg call.
	DefaultBatch = 64
	// MaxBatch bounds Config.Batch; each slot owns a 64 KiB buffer.
	MaxBatch = 1024
)

// DefaultListen is 0.0.0.0:6080. The socket New opens on an unspecified
// address is dual stack: it receives GUE over IPv4 and IPv6 alike (so does
// [::]:6080).
var DefaultListen = netip.AddrPortFrom(netip.IPv4Unspecified(), DefaultPort)

// Config is the agent's configuration. The zero value of every field but
// VIPs selects its default.
type Config struct {
	// Listen is the local UDP address GUE arrives on (DefaultListen when
	// invalid, i.e. the zero AddrPort). An unspecified address (0.0.0.0
	// or ::) opens one dual-stack socket; a specific address opens a socket
	// of its family only. Port 0 picks a free port (see Agent.LocalAddr).
	Listen netip.AddrPort
	// TUN is the name of the TUN device (DefaultTUN when empty). New fails
	// if a device of that name exists.
	TUN string
	// VIPs are the service addresses this backend serves, IPv4 and/or
	// IPv6. New adds each one to lo (/32, /128) unless it is there already,
	// so that the kernel accepts packets to it and replies from it. Only
	// inner packets addressed to one of them are delivered. At least one is
	// required.
	VIPs []netip.Addr
	// Batch is the number of datagrams read per system call (DefaultBatch
	// when 0, at most MaxBatch).
	Batch int
	// AcceptLocal lets inner packets whose source is an address of this
	// host in (sysctl accept_local=1 on the TUN device). Off by default: a
	// client never shares an address with its backend, except in a lab
	// where both live in one namespace, and a spoofed local source is a
	// way to reach services that trust the host's own addresses.
	AcceptLocal bool
	// Logger receives the setup and teardown steps (nil: discard). The
	// receive loop never logs per packet; it counts.
	Logger *slog.Logger
}

// ErrConfig is matched (errors.Is) by every *ConfigError New returns.
var ErrConfig = errors.New("agent: invalid config")

// ConfigError is a validation error from New. It names the Config field and
// shows the offending value.
type ConfigError struct {
	Field  string // e.g. "VIPs[2]"
	Value  string
	Reason string
}

// Error implements error.
func (e *ConfigError) Error() string {
	return "agent: config." + e.Field + ": " + e.Reason + " (" + e.Value + ")"
}

// Is reports whether target is ErrConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

var _ error = (*ConfigError)(nil)

// withDefaults returns c with its defaults applied, or the first problem.
func (c Config) withDefaults() (Config, error) {
	if !c.Listen.IsValid() {
		c.Listen = DefaultListen
	}
	if a := c.Listen.Addr(); a.Zone() != "" || a.Is4In6() {
		return c, &ConfigError{Field: "Listen", Value: c.Listen.String(),
			Reason: "must be a plain IPv4 or IPv6 address (no zone, no IPv4-mapped form)"}
	}
	if c.TUN == "" {
		c.TUN = DefaultTUN
	}
	if len(c.TUN) > 15 || strings.ContainsAny(c.TUN, "/: \t\n%") || c.TUN == "." || c.TUN == ".." {
		return c, &ConfigError{Field: "TUN", Value: fmt.Sprintf("%q", c.TUN),
			Reason: "not a valid interface name (at most 15 bytes, no '/', ':', '%' or spaces)"}
	}
	switch {
	case c.Batch == 0:
		c.Batch = DefaultBatch
	case c.Batch < 0 || c.Batch > MaxBatch:
		return c, &ConfigError{Field: "Batch", Value: fmt.Sprint(c.Batch),
			Reason: fmt.Sprintf("must be between 1 and %d", MaxBatch)}
	}
	if len(c.VIPs) == 0 {
		return c, &ConfigError{Field: "VIPs", Value: "[]",
			Reason: "at least one VIP is required (every packet would be dropped)"}
	}
	seen := make(map[netip.Addr]int, len(c.VIPs))
	for i, v := range c.VIPs {
		field := fmt.Sprintf("VIPs[%d]", i)
		switch {
		case !v.IsValid():
			return c, &ConfigError{Field: field, Value: "invalid", Reason: "not an address"}
		case v.Zone() != "" || v.Is4In6():
			return c, &ConfigError{Field: field, Value: v.String(),
				Reason: "must be a plain IPv4 or IPv6 address (no zone, no IPv4-mapped form)"}
		case v.IsUnspecified() || v.IsLoopback() || v.IsMulticast() ||
			v.IsLinkLocalUnicast() || v == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return c, &ConfigError{Field: field, Value: v.String(),
				Reason: "must be a unicast address that is not loopback or link-local"}
		}
		if j, dup := seen[v]; dup {
			return c, &ConfigError{Field: field, Value: v.String(),
				Reason: fmt.Sprintf("duplicate of VIPs[%d]", j)}
		}
		seen[v] = i
	}
	c.VIPs = append([]netip.Addr(nil), c.VIPs...)
	return c, nil
}

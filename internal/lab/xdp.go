package lab

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouterPassXDP attaches an XDP program that passes every packet, in native
// (driver) mode, to the router's end of LB node n's veth. A veth transmits
// the frames its peer's XDP program sends back with XDP_TX (the offload,
// node.offload) only when it has an XDP program itself: without it they are
// dropped silently. The program is attached the legacy way (netlink), so it
// stays after this process and goes with the lab's namespaces.
func (l *Lab) RouterPassXDP(n *Node) error {
	port := strings.TrimPrefix(n.Name, l.Cfg.Prefix)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "lab_xdp_pass", Type: ebpf.XDP, License: "Dual MIT/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("lab: XDP pass program: %w", err)
	}
	defer prog.Close()
	return l.Router.Do(func() error {
		link, err := netlink.LinkByName(port)
		if err != nil {
			return fmt.Errorf("lab: router port %s: %w", port, err)
		}
		if err := netlink.LinkSetXdpFdWithFlags(link, prog.FD(), unix.XDP_FLAGS_DRV_MODE); err != nil {
			return fmt.Errorf("lab: XDP pass program on router port %s: %w", port, err)
		}
		return nil
	})
}

// RouterXDPOff detaches what RouterPassXDP attached.
func (l *Lab) RouterXDPOff(n *Node) error {
	port := strings.TrimPrefix(n.Name, l.Cfg.Prefix)
	return l.Router.Do(func() error {
		link, err := netlink.LinkByName(port)
		if err != nil {
			return fmt.Errorf("lab: router port %s: %w", port, err)
		}
		return netlink.LinkSetXdpFdWithFlags(link, -1, unix.XDP_FLAGS_DRV_MODE)
	})
}

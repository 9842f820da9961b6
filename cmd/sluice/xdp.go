package main

import (
	"fmt"
	"net/netip"

	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/afxdp"
)

// openXDP opens an AF_XDP link on one queue and steers the VIPs to it.
func openXDP(ifname string, queue int, vips []netip.Addr, mode string) (link.Link, string, error) {
	c := afxdp.Config{Queue: queue}
	switch mode {
	case "native":
		c.Mode = afxdp.Native
	case "generic":
		c.Mode = afxdp.Generic
	default:
		c.Mode = afxdp.Auto
	}
	l, err := afxdp.New(ifname, c)
	if err != nil {
		return nil, "", err
	}
	if err := l.SetVIPs(vips); err != nil {
		l.Close()
		return nil, "", err
	}
	desc := "afxdp " + l.AttachMode()
	if c.Mode == afxdp.Auto && l.NativeError() != nil {
		desc += fmt.Sprintf(" (native unavailable: %v)", l.NativeError())
	}
	return l, desc, nil
}

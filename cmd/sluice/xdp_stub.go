package main

import (
	"errors"
	"net/netip"

	"github.com/sluicelb/sluice/internal/link"
)

func openXDP(ifname string, queue int, vips []netip.Addr, mode string) (link.Link, string, error) {
	return nil, "", errors.New("AF_XDP is not built into this binary")
}

// Package tuntap opens Linux TUN and TAP devices.
package tuntap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/gopacket/gopacket/pcapgo"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Open creates the TUN device name (IFF_TUN: IP packets, no Ethernet
// header) or, with tap, the TAP device name (IFF_TAP: Ethernet frames).
// IFF_NO_PI: no 4-byte packet-information prefix, so one write is exactly
// one packet (a TUN device reads its protocol from the version nibble).
// The device is not persistent: it disappears when the returned file, its
// only descriptor, is closed. Needs CAP_NET_ADMIN.
//
// The descriptor is non-blocking and registered with the Go poller, so
// Close is safe while a write is in flight. Writes never wait in practice
// (the device's socket send buffer is unlimited).
func Open(name string, tap bool) (*os.File, error) {
	kind, flag := "TUN", uint16(unix.IFF_TUN)
	if tap {
		kind, flag = "TAP", unix.IFF_TAP
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("create %s %q: open /dev/net/tun: %w", kind, name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(flag | unix.IFF_NO_PI)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create %s %q: TUNSETIFF: %w", kind, name, err)
	}
	if got := ifr.Name(); got != name {
		unix.Close(fd)
		return nil, fmt.Errorf("create %s %q: the kernel named it %q", kind, name, got)
	}
	return os.NewFile(uintptr(fd), kind+":"+name), nil
}

// PcapToTAP creates the TAP device name, sets it up, and writes to it every
// packet of the pcapng stream r (Ethernet frames) until r ends or ctx is
// done, so that tools that open interfaces (tcpdump -i name) see them. The
// device goes when it returns. It returns how many packets it wrote.
func PcapToTAP(ctx context.Context, r io.Reader, name string) (int, error) {
	tap, err := Open(name, true)
	if err != nil {
		return 0, err
	}
	defer tap.Close()
	// The host must not act on what is written: no ARP, no IPv6 (no
	// neighbour discovery or multicast listener answers), no address.
	l, err := netlink.LinkByName(name)
	if err == nil {
		err = netlink.LinkSetARPOff(l)
	}
	if err == nil {
		if werr := os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0); werr != nil && !errors.Is(werr, os.ErrNotExist) {
			err = werr
		}
	}
	if err == nil {
		err = netlink.LinkSetUp(l)
	}
	if err != nil {
		return 0, fmt.Errorf("set %s up: %w", name, err)
	}
	context.AfterFunc(ctx, func() { tap.Close() })
	pr, err := pcapgo.NewNgReader(r, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		data, _, err := pr.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if _, err := tap.Write(data); err != nil {
			return n, fmt.Errorf("write to %s: %w", name, err)
		}
		n++
	}
}

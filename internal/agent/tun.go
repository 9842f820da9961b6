package agent

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openTUN creates the TUN device name (IFF_TUN: IP packets, no Ethernet
// header; IFF_NO_PI: no 4-byte packet-information prefix, so one write is
// exactly one IP packet, whose version nibble tells the kernel the
// protocol). The device is not persistent: it disappears when the returned
// file, its only descriptor, is closed. Needs CAP_NET_ADMIN.
//
// The descriptor is non-blocking and registered with the Go poller, so
// Close is safe while a write is in flight. Writes to a TUN device never
// wait in practice (its socket send buffer is unlimited).
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("agent: create TUN %q: open /dev/net/tun: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("agent: create TUN %q: TUNSETIFF: %w", name, err)
	}
	if got := ifr.Name(); got != name {
		unix.Close(fd)
		return nil, fmt.Errorf("agent: create TUN %q: the kernel named it %q", name, got)
	}
	return os.NewFile(uintptr(fd), "tun:"+name), nil
}

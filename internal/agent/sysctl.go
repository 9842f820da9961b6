package agent

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const procSys = "/proc/sys/"

// errAddrNotAvail is what the kernel answers when an address to delete is
// not there.
var errAddrNotAvail = unix.EADDRNOTAVAIL

// sysctls makes the kernel accept the packets written to the TUN device:
//
//   - Reverse-path filtering off for the TUN device. Clients are not routed
//     through it, so strict filtering (1) would drop every packet, and so
//     would loose filtering (2): the kernel's loose check rejects every
//     packet arriving on a device without an IPv4 address, and the TUN
//     device has none. The kernel applies max(conf.all, conf.<dev>), so
//     net.ipv4.conf.<tun>.rp_filter = 0 is only effective with
//     conf.all.rp_filter = 0. When "all" is nonzero (v), New first raises
//     every other device's own value (and "default", for devices created
//     later) from below v to v, then sets "all" to 0: every other
//     interface filters exactly as before. Close restores each value.
//   - net.ipv4.conf.<tun>.accept_local = 1 when Config.AcceptLocal.
//   - net.ipv6.conf.<tun>.addr_gen_mode = 1 (no link-local address, so the
//     kernel sends nothing into the device), and disable_ipv6 = 0 when there
//     is an IPv6 VIP (IPv6 has no rp_filter).
//
// The per-device settings of the TUN device vanish with it. Writing net.*
// sysctls needs CAP_NET_ADMIN in the namespace's user namespace (the kernel
// then grants the file owner's access), not uid 0.
func (a *Agent) sysctls() error {
	tun := a.cfg.TUN
	if err := a.writeSysctl("net/ipv4/conf/"+tun+"/rp_filter", "0"); err != nil {
		return err
	}
	if a.cfg.AcceptLocal {
		if err := a.writeSysctl("net/ipv4/conf/"+tun+"/accept_local", "1"); err != nil {
			return err
		}
	}
	if err := a.rpFilterAllOff(); err != nil {
		return err
	}
	if _, err := os.Stat(procSys + "net/ipv6/conf/" + tun); err != nil {
		for _, v := range a.cfg.VIPs {
			if v.Is6() {
				return fmt.Errorf("agent: VIP %s: IPv6 is disabled on this host (%w)", v, err)
			}
		}
		return nil
	}
	// No IPv6 link-local address, hence no router solicitations or MLD
	// reports queued on a device nobody reads.
	if err := a.writeSysctl("net/ipv6/conf/"+tun+"/addr_gen_mode", "1"); err != nil {
		return err
	}
	for _, v := range a.cfg.VIPs {
		if v.Is6() {
			return a.writeSysctl("net/ipv6/conf/"+tun+"/disable_ipv6", "0")
		}
	}
	return nil
}

func (a *Agent) writeSysctl(path, v string) error {
	if err := os.WriteFile(procSys+path, []byte(v), 0); err != nil {
		return fmt.Errorf("agent: sysctl %s = %s: %w", dotted(path), v, err)
	}
	a.log.Debug("sysctl set", "key", dotted(path), "value", v)
	return nil
}

// sysctlFile is one sysctl opened for reading and later rewriting. The
// file stays open until Close restores the value: a sysctl file belongs to
// the network namespace it was opened in, and Close may run on a thread in
// another one.
type sysctlFile struct {
	f   *os.File
	key string
	val string // as read
}

func openSysctl(path string) (*sysctlFile, error) {
	s := &sysctlFile{key: dotted(path)}
	var err error
	if s.f, err = os.OpenFile(procSys+path, os.O_RDWR, 0); err != nil {
		return nil, fmt.Errorf("agent: sysctl %s: %w", s.key, err)
	}
	var buf [32]byte
	n, err := s.f.ReadAt(buf[:], 0)
	if n == 0 && err != nil {
		s.f.Close()
		return nil, fmt.Errorf("agent: sysctl %s: read: %w", s.key, err)
	}
	s.val = strings.TrimSpace(string(buf[:n]))
	return s, nil
}

func (s *sysctlFile) write(v string) error {
	if _, err := s.f.WriteAt([]byte(v), 0); err != nil {
		return fmt.Errorf("sysctl %s = %s (was %s): %w", s.key, v, s.val, err)
	}
	return nil
}

// rpFilterAllOff sets net.ipv4.conf.all.rp_filter to 0 without making any
// other interface less strict (see sysctls), arranging for Close to restore
// every value it changes.
func (a *Agent) rpFilterAllOff() error {
	all, err := openSysctl("net/ipv4/conf/all/rp_filter")
	if err != nil {
		return err
	}
	v, err := strconv.Atoi(all.val)
	if err != nil || v == 0 {
		all.f.Close()
		if err != nil {
			return fmt.Errorf("agent: sysctl %s: unexpected value %q", all.key, all.val)
		}
		return nil
	}
	ents, err := os.ReadDir(procSys + "net/ipv4/conf")
	if err != nil {
		all.f.Close()
		return fmt.Errorf("agent: list net.ipv4.conf: %w", err)
	}
	raised := 0
	for _, e := range ents {
		if name := e.Name(); name == "all" || name == a.cfg.TUN {
			continue
		}
		d, err := openSysctl("net/ipv4/conf/" + e.Name() + "/rp_filter")
		if errors.Is(err, os.ErrNotExist) {
			continue // the device went away meanwhile
		}
		if err != nil {
			all.f.Close()
			return err
		}
		if dv, err := strconv.Atoi(d.val); err != nil || dv >= v {
			d.f.Close()
			continue
		}
		if err := d.write(all.val); err != nil {
			d.f.Close()
			all.f.Close()
			return fmt.Errorf("agent: %w", err)
		}
		raised++
		a.push("restore sysctl "+d.key+" = "+d.val, d.restore)
	}
	if err := all.write("0"); err != nil {
		all.f.Close()
		return fmt.Errorf("agent: %w", err)
	}
	a.push("restore sysctl "+all.key+" = "+all.val, all.restore)
	a.log.Info("sysctl changed until exit", "key", all.key, "from", all.val, "to", "0",
		"interfaces_raised_to_keep_their_filtering", raised)
	return nil
}

// restore writes the value read at open back and closes the file. A device
// that went away takes its sysctl with it: not an error.
func (s *sysctlFile) restore() error {
	err := s.write(s.val)
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return errors.Join(err, s.f.Close())
}

// dotted turns a /proc/sys path into the sysctl key (the device name may
// not contain '/', so every '/' is a separator).
func dotted(path string) string { return strings.ReplaceAll(path, "/", ".") }

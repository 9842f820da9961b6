// Package netnsdir prepares the directory of named network namespaces
// (/run/netns) the way iproute2 does, once, before a namespace is named in
// it.
//
// `ip netns add` makes /run/netns a shared mount point of its own (a bind
// mount of the directory on itself) the first time it runs on a machine.
// Namespaces named there before that, by bind-mounting their nsfs file
// without iproute2 (as the lab does), end up under that new mount: their
// names then resolve to plain files, and they cannot be removed ("device or
// resource busy"). Share makes the mount point before any namespace is
// named, under a lock that every caller in this repository takes, so that
// iproute2 finds it made and stacks nothing.
package netnsdir

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Dir is where named namespaces live (iproute2's NETNS_RUN_DIR).
const Dir = "/run/netns"

// lockPath serialises Share across processes (test binaries run in
// parallel).
const lockPath = "/run/sluice-netns.lock"

var (
	once sync.Once
	err  error
)

// Share makes Dir exist and be a shared mount point of its own. It does
// the work once per process; later calls return the first call's result.
// It needs CAP_SYS_ADMIN.
func Share() error {
	once.Do(func() { err = share() })
	return err
}

func share() error {
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close() // releases the lock
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", lockPath, err)
	}
	err = unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err := unix.Mount(Dir, Dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind mount %s on itself: %w", Dir, err)
		}
		err = unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s shared: %w", Dir, err)
	}
	return nil
}

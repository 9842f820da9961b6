package lab

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/netnsdir"
)

// netnsDir is where named namespaces live (iproute2's NETNS_RUN_DIR; the
// netns package uses it too), so `ip netns exec` finds the lab's.
const netnsDir = netnsdir.Dir

// createNS creates the named network namespace. The unshare happens on a
// throwaway thread that exits with its goroutine, so no thread of the
// process is ever left in a namespace it did not ask for.
func createNS(name string) error {
	if err := netnsdir.Share(); err != nil {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	path := filepath.Join(netnsDir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind mount %s: %w", path, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	return nil
}

// deleteNS kills what still runs in the namespace and removes its name.
// The kernel destroys the namespace, and with it its interfaces (which
// takes the veth peers in other namespaces along), once nothing refers to
// it any more.
func deleteNS(name string) error {
	path := filepath.Join(netnsDir, name)
	killIn(path)
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("namespace %s: unmount: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	return nil
}

// killGrace is how long processes left in a namespace get between
// SIGTERM and SIGKILL when the lab goes down.
const killGrace = time.Second

// killIn stops every other process whose network namespace is the one
// bound at path: a process left running would keep the namespace, and its
// half of each veth, alive after the name is gone. Children of this
// process are reaped by whoever started them (Process.Stop, exec.Cmd.Wait).
func killIn(path string) {
	pids := pidsIn(path)
	if len(pids) == 0 {
		return
	}
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGTERM)
	}
	deadline := time.Now().Add(killGrace)
	for time.Now().Before(deadline) {
		alive := false
		for _, pid := range pids {
			if running(pid) {
				alive = true
				break
			}
		}
		if !alive {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGKILL)
	}
}

// running reports whether pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// pidsIn lists the processes (not this one) that run in the namespace
// bound at path, like `ip netns pids`.
func pidsIn(path string) []int {
	var want unix.Stat_t
	if unix.Stat(path, &want) != nil {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil {
			continue
		}
		if st.Dev == want.Dev && st.Ino == want.Ino && running(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// roleRE matches what follows the prefix in the name of a lab namespace.
var roleRE = regexp.MustCompile(`^(client|router|lb[0-9]+|be[0-9]+)$`)

// listNS returns the names of the existing namespaces that belong to the
// lab with this prefix, sorted.
func listNS(prefix string) ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if rest, ok := strings.CutPrefix(e.Name(), prefix); ok && roleRE.MatchString(rest) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// inNS runs fn on the calling goroutine's thread switched into the named
// namespace and switches it back. If switching back fails the thread stays
// locked, so the runtime retires it when the goroutine exits instead of
// reusing it in the wrong namespace.
func inNS(name string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	h, err := netns.GetFromPath(filepath.Join(netnsDir, name))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("namespace %s: setns: %w", name, err)
	}
	defer func() {
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return fn()
}

// sysctl writes a /proc/sys value; in inNS it applies to that namespace's
// net.* settings (they are looked up by the writing thread's namespace).
func sysctl(key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// offloadsOff turns off TX checksum offload, TSO, GSO and GRO on the
// interface in the namespace of the calling thread, as
// `ethtool -K IF tx off tso off gso off gro off` does: by feature name
// (ETHTOOL_SFEATURES), since the old per-offload ioctls miss the newer TSO
// flavours (tx-tcp-accecn-segmentation).
func offloadsOff(ifname string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ioctl := func(buf []byte) error {
		// struct ifreq with ifr_data pointing at buf.
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data unsafe.Pointer
			_    [24 - unsafe.Sizeof(uintptr(0))]byte
		}
		copy(ifr.name[:unix.IFNAMSIZ-1], ifname)
		ifr.data = unsafe.Pointer(&buf[0])
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		runtime.KeepAlive(buf)
		if e != 0 {
			return e
		}
		return nil
	}
	ne := binary.NativeEndian
	// How many features: struct ethtool_sset_info {cmd, reserved u32; sset_mask u64; data []u32}.
	info := make([]byte, 20)
	ne.PutUint32(info[0:], unix.ETHTOOL_GSSET_INFO)
	ne.PutUint64(info[8:], 1<<ethSSFeatures)
	if err := ioctl(info); err != nil {
		return fmt.Errorf("%s: ethtool feature count: %w", ifname, err)
	}
	count := int(ne.Uint32(info[16:]))
	// Their names: struct ethtool_gstrings {cmd, string_set, len u32; data [len][32]byte}.
	strs := make([]byte, 12+count*ethGStringLen)
	ne.PutUint32(strs[0:], unix.ETHTOOL_GSTRINGS)
	ne.PutUint32(strs[4:], ethSSFeatures)
	ne.PutUint32(strs[8:], uint32(count))
	if err := ioctl(strs); err != nil {
		return fmt.Errorf("%s: ethtool feature names: %w", ifname, err)
	}
	// struct ethtool_sfeatures {cmd, size u32; features [size]{valid, requested u32}}:
	// valid bits to change, requested all zero (off).
	blocks := (count + 31) / 32
	set := make([]byte, 8+8*blocks)
	ne.PutUint32(set[0:], unix.ETHTOOL_SFEATURES)
	ne.PutUint32(set[4:], uint32(blocks))
	for i := range count {
		raw := strs[12+i*ethGStringLen : 12+(i+1)*ethGStringLen]
		if j := bytes.IndexByte(raw, 0); j >= 0 {
			raw = raw[:j]
		}
		if offloadOff(string(raw)) {
			off := 8 + 8*(i/32)
			ne.PutUint32(set[off:], ne.Uint32(set[off:])|1<<(i%32))
		}
	}
	if err := ioctl(set); err != nil {
		return fmt.Errorf("ethtool -K %s tx off tso off gso off gro off: %w", ifname, err)
	}
	return nil
}

// offloadOff reports whether the named netdev feature is one that ethtool's
// "tx", "tso", "gso" or "gro" switch covers.
func offloadOff(feature string) bool {
	switch {
	case strings.HasPrefix(feature, "tx-checksum-"): // tx
		return true
	case strings.HasPrefix(feature, "tx-tcp") && strings.HasSuffix(feature, "-segmentation"): // tso
		return true
	}
	return feature == "tx-generic-segmentation" || feature == "rx-gro" // gso, gro
}

// From linux/ethtool.h (not in x/sys/unix).
const (
	ethSSFeatures = 4  // ETH_SS_FEATURES, the string set of netdev features
	ethGStringLen = 32 // ETH_GSTRING_LEN
)

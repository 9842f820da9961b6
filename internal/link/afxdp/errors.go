package afxdp

import "errors"

var (
	// ErrUnsupported is wrapped in the error New returns when the kernel or
	// the driver cannot do AF_XDP (no AF_XDP sockets, no BPF, no XDP on the
	// interface in the requested mode). The caller may fall back to
	// AF_PACKET and log the error as the reason.
	ErrUnsupported = errors.New("AF_XDP not supported")

	// ErrNoInterface is wrapped when the interface does not exist in the
	// caller's network namespace.
	ErrNoInterface = errors.New("no such interface")

	// ErrBusy is wrapped when the interface or queue is taken: an XDP
	// program held by another process's bpf_link, a queue another link of
	// this process uses, or a mode that conflicts with the program already
	// attached by this process.
	ErrBusy = errors.New("interface or queue busy")
)

package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/scenario"
)

// labRunFlags are the flags of `sluice lab up --run`.
type labRunFlags struct {
	run, bgp, bfd bool
	io            string
}

func addLabRunFlags(cmd *cobra.Command) *labRunFlags {
	r := &labRunFlags{}
	f := cmd.Flags()
	f.BoolVar(&r.run, "run", false, "also run Sluice in it as the demo does (sluice lb on every LB node, 3 by default; sluice agent and servers on every backend; BIRD on the router), print how to reach it, and keep it until SIGINT/SIGTERM or until a process dies, then remove it")
	f.BoolVar(&r.bgp, "bgp", true, "with --run: LB nodes announce the VIPs over BGP to BIRD on the router (else: static ECMP routes)")
	f.BoolVar(&r.bfd, "bfd", true, "with --run: BFD on the BGP sessions")
	f.StringVar(&r.io, "io", "auto", "with --run: LB packet I/O: afxdp, afpacket or auto")
	return r
}

// labRun is `sluice lab up --run`: it starts the scenario with every
// process logging to scenario.RunDir, writes the state `lab status`
// reads, prints how to reach the lab and keeps it until a signal or a
// process's death; it removes the lab on the way out in every case.
func labRun(cmd *cobra.Command, o scenario.Options) (err error) {
	out := cmd.OutOrStdout()
	for _, f := range []string{"vip4", "vip6", "vip-routing", "print", "wait"} {
		if cmd.Flags().Changed(f) {
			return fmt.Errorf("--%s does not go with --run (the running lab has its own VIPs and routes, and waits)", f)
		}
	}
	if o.Binary, err = os.Executable(); err != nil {
		return err
	}
	if o.LogDir, err = scenario.PrepareRunDir(o.Prefix); err != nil {
		return err
	}
	ctx, stop := labSignalContext(cmd)
	defer stop()
	fmt.Fprintf(out, "starting lab %s (%d LB node(s), %d backends, io %s, BGP %v); logs in %s\n", o.Prefix, o.LBs, o.Backends, o.IO, o.BGP, o.LogDir)
	s, err := scenario.Start(ctx, o) // removes what it built if it fails
	if err != nil {
		return err
	}
	defer func() {
		s.Stop()
		scenario.RemoveState(o.Prefix)
		fmt.Fprintf(out, "lab %s removed (logs kept in %s)\n", o.Prefix, o.LogDir)
	}()
	s.Lab.WritePlan(out)
	if err := s.WaitUp(ctx, 30*time.Second); err != nil {
		return err
	}
	st := scenario.State{Prefix: o.Prefix, Supervisor: os.Getpid(), Started: time.Now(), Procs: s.Procs()}
	if err := scenario.WriteState(o.LogDir, st); err != nil {
		return err
	}
	s.WriteAccess(out, o.Binary)
	fmt.Fprintf(out, "\nlab %s is running; SIGINT (Ctrl-C) or SIGTERM removes it\n", o.Prefix)
	if err := s.Watch(ctx); err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "lab %s: %v\nremoving the lab\n", o.Prefix, err)
		return fmt.Errorf("lab %s: a process exited (above); the lab is removed", o.Prefix)
	}
	fmt.Fprintln(out, "signal received: removing the lab")
	return nil
}

// labWriteProcs writes the processes of the lab kept by `lab up --run`
// with this prefix, if there is one.
func labWriteProcs(w io.Writer, prefix string) error {
	st, err := scenario.ReadState(prefix)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := st.WriteStatus(w); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return nil
}

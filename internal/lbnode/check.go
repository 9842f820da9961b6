package lbnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// NotChecked is what CheckFile cannot check, because it needs the node's
// network or the running node.
const NotChecked = "the interfaces, the backends' next hops and source addresses, whether bypass VIPs' backends share a subnet with the BGP peers (they need the node's network), and changes a reload refuses without a restart (they depend on the running node)"

// CheckResult describes a configuration that passed CheckFile.
type CheckResult struct {
	Path       string
	VIPs       int
	Backends   int // distinct backend addresses
	Interfaces []string
	IO         string
	BGPPeers   int
}

// String is the one-line summary `sluice lb --check` prints.
func (r CheckResult) String() string {
	bgp := "no BGP"
	if r.BGPPeers > 0 {
		bgp = fmt.Sprintf("BGP with %d peer(s)", r.BGPPeers)
	}
	return fmt.Sprintf("%s: OK: %d VIP(s), %d backend(s), interfaces %s (io %s), %s; not checked: %s",
		r.Path, r.VIPs, r.Backends, strings.Join(r.Interfaces, ","), r.IO, bgp, NotChecked)
}

// CheckError is a configuration CheckFile rejected: one problem per line,
// each prefixed with the file, as a reload would report them.
type CheckError struct {
	Path     string
	Problems []string
}

func (e *CheckError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = e.Path + ": " + p
	}
	return strings.Join(lines, "\n")
}

// CheckFile validates the configuration file at path as a reload would,
// without opening any interface or needing privileges: it parses and
// validates the document (config.Parse, every problem) and builds the
// datapath generation from it (the Maglev tables, QUIC-LB codecs and
// service checks of the pipeline builder), with every backend's next hop
// left unresolved. It does not check NotChecked.
func CheckFile(path string) (CheckResult, error) {
	r := CheckResult{Path: path}
	doc, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	cfg, err := config.Parse(doc)
	if err != nil {
		return r, &CheckError{Path: path, Problems: problems(err)}
	}
	n := &Node{st: state{cfg: cfg}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	spec, _ := n.spec(context.Background())
	if _, err := pipeline.NewBuilder().Build(spec); err != nil {
		return r, &CheckError{Path: path, Problems: []string{err.Error()}}
	}
	seen := map[string]bool{}
	for _, v := range cfg.VIPs {
		for _, b := range v.Backends {
			seen[b.Address] = true
		}
	}
	r.VIPs, r.Backends = len(cfg.VIPs), len(seen)
	r.Interfaces, r.IO = cfg.Node.Interfaces, cfg.Node.IO
	if cfg.Node.BGP != nil {
		r.BGPPeers = len(cfg.Node.BGP.Peers)
	}
	return r, nil
}

// problems splits config.Parse's error into its problems: the field errors
// of config.Errors, or the lines of a decoding error (YAML lists one
// problem per line under a header line, which is left out).
func problems(err error) []string {
	var errs config.Errors
	if errors.As(err, &errs) {
		ps := make([]string, len(errs))
		for i, e := range errs {
			ps[i] = e.Error()
		}
		return ps
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) == 1 {
		return lines
	}
	var ps []string
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" && !strings.HasSuffix(l, ":") {
			ps = append(ps, l)
		}
	}
	return ps
}

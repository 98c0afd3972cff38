package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tcpstate/tcpstate/internal/termsafe"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

type lsOptions struct {
	filterFlags
	output  string
	summary bool
	verbose bool
}

func newLsCmd() *cobra.Command {
	o := &lsOptions{}
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List every TCP socket of the host, like ss -tanp, in every network namespace",
		Long: `List every TCP socket that exists now, one line each: its state, local and
remote address, the process that owns it and the network namespace it is in.
Host-wide by default: tcpstate reads the TCP tables of every network
namespace and every process's open files (the processes that hold each
socket). Its own namespace and the open files need only CAP_BPF and
CAP_PERFMON; finding the namespaces of other users' processes needs
CAP_SYS_PTRACE, entering them CAP_SYS_ADMIN. Without those, ls lists only
the sockets processes hold there (no TIME_WAIT, orphans or connections not
yet accepted), and says so.

Timewait sockets show their substate, as ss does (one closed in FIN_WAIT2
stays FIN_WAIT2 until the peer's FIN); connections still in their handshake
(request sockets) show SYN_RECV. Sockets in CLOSE are in no table and are
not listed, as ss does not list them.

--state takes the kernel's names and ss's (ESTABLISHED or ESTAB,
FIN-WAIT-1, TIME-WAIT, ...), and ss's groups: all, connected (all but
LISTEN and CLOSE), synchronized (connected but SYN_SENT), bucket
(TIME_WAIT and SYN_RECV: the states of minisockets) and big (all but
bucket). The other filters are trace's, applied to the listed sockets;
--pid matches any process that holds the socket.

The owner is the socket's first holder in pid order (a master before its
workers, unless pids wrapped between them); -o wide and JSON list every
holder. ls needs no tracefs and leaves nothing behind.

ls shows no time in state: the kernel keeps no record of when a socket
entered its state, so only a tracer that saw the transition knows it
(trace --stuck and stats list the sockets stuck in a state, with that
time, or "at least" that long for the sockets older than the tracer).

A socket's cgroup is the cgroup v2 its creator was in (a request
socket's: its listener's, which the connection will have); -o wide shows
it as trace does: the container its path names (docker:ID, podman:ID,
systemd:UNIT, ...), else the path, else id:N when it could not be
resolved. A timewait socket keeps no cgroup: "-", absent from JSON, and
--cgroup and --container leave it out.

JSON (-o json): one object per socket: state, kind (full, timewait,
request), family, saddr, sport, daddr, dport, netns, cgroup_id, cgroup,
container, container_runtime, pod_uid (as in trace's record: each absent
when none or not known), skaddr, uid, inode, pid and comm (0 and "" when
no process holds it), holders ([{pid, comm, fd}], [] when none).
--summary prints only the count per state.`,
		Example: `  sudo tcpstate ls
  sudo tcpstate ls --state established --port 443
  sudo tcpstate ls --netns /run/netns/blue -o wide
  sudo tcpstate ls --state bucket --summary
  sudo tcpstate ls -o json | jq 'select(.state == "CLOSE_WAIT")'`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLs(o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	o.filterFlags.listing = true // --state and --pid worded for a listing
	o.filterFlags.register(f)
	choiceVarP(f, &o.output, "output", "o", outTable, []string{outTable, outWide, outJSON}, "output: table, wide (adds kind, uid, inode, skaddr, cgroup or container, and every holder) or json (one object per line)")
	f.BoolVar(&o.summary, "summary", false, "print only the number of sockets in each state")
	f.BoolVar(&o.verbose, "verbose", false, "print the verifier's full log if the kernel rejects a program, the namespaces read, and where socket cgroups are resolved")
	return cmd
}

// lsStateGroups are ss's state groups.
var lsStateGroups = map[string]func(s model.State, k model.SocketKind) bool{
	"all":       func(model.State, model.SocketKind) bool { return true },
	"connected": func(s model.State, _ model.SocketKind) bool { return s != model.Listen && s != model.Close },
	"synchronized": func(s model.State, _ model.SocketKind) bool {
		return s != model.Listen && s != model.Close && s != model.SynSent
	},
	// As ss defines them, by the state shown: a timewait socket shows its
	// substate (FIN_WAIT2 or TIME_WAIT), a request socket SYN_RECV.
	"bucket": func(s model.State, _ model.SocketKind) bool { return s == model.TimeWait || s == model.SynRecv },
	"big":    func(s model.State, _ model.SocketKind) bool { return s != model.TimeWait && s != model.SynRecv },
}

// lsStates parses --state for ls: state names and ss's groups. nil: all.
func lsStates(vals []string) (func(model.State, model.SocketKind) bool, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	var preds []func(model.State, model.SocketKind) bool
	for _, v := range vals {
		if g, ok := lsStateGroups[strings.ToLower(strings.TrimSpace(v))]; ok {
			preds = append(preds, g)
			continue
		}
		st, err := model.ParseState(v)
		if err != nil {
			return nil, usagef("--state: %v, or one of ss's groups: all, connected, synchronized, bucket, big", err)
		}
		preds = append(preds, func(s model.State, _ model.SocketKind) bool { return s == st })
	}
	return func(s model.State, k model.SocketKind) bool {
		for _, p := range preds {
			if p(s, k) {
				return true
			}
		}
		return false
	}, nil
}

func runLs(o *lsOptions, stdout, stderr io.Writer) error {
	var topts tracer.Options
	o.filterFlags.listing = true
	if err := o.filterFlags.apply(&topts); err != nil {
		return err
	}
	wantState, err := lsStates(o.filterFlags.states)
	if err != nil {
		return err
	}
	netns := topts.Netns // --netns, resolved to inodes by the filter flags
	topts.ListOnly = true
	topts.Verbose = o.verbose
	topts.Warn = func(msg string) { fmt.Fprintf(stderr, "tcpstate: warning: %s\n", termsafe.String(msg)) }
	t, err := tracer.Load(topts)
	if err != nil {
		return err
	}
	defer t.Close()
	// -o wide and JSON name each socket's cgroup: say so when the host
	// has no cgroup2 mount to name them from.
	cgroupNotes(stderr, t, o.output != outTable && !o.summary, o.verbose)
	snap, err := t.Snapshot(tracer.SnapshotOptions{Netns: netns})
	if err != nil {
		return err
	}
	for _, want := range netns {
		if !slices.ContainsFunc(snap.Namespaces, func(n tracer.NetnsScan) bool { return n.Inode == want }) {
			hint := ""
			if snap.ProcessesUnasked > 0 {
				hint = " that this process may look at (without CAP_SYS_PTRACE, other users' /proc/PID/ns/net are closed to it)"
			}
			fmt.Fprintf(stderr, "tcpstate: warning: no process or name (/run/netns) leads to network namespace %d%s: only its sockets that a process holds are listed\n", want, hint)
		}
	}
	// What could not be read, one line per cause, naming the capability;
	// each namespace with --verbose.
	for _, l := range snap.Limits(tracer.LostListed) {
		fmt.Fprintf(stderr, "tcpstate: warning: %s\n", termsafe.String(l))
	}
	if o.verbose {
		for _, n := range snap.Namespaces {
			if n.Err != "" {
				fmt.Fprintf(stderr, "tcpstate: network namespace %d not read: %s\n", n.Inode, termsafe.String(n.Err))
			} else {
				fmt.Fprintf(stderr, "tcpstate: network namespace %d (%s): %d sockets\n", n.Inode, n.Path, n.Sockets)
			}
		}
	}

	socks := lsSelect(snap.Sockets, &topts.Filter, wantState)
	out := bufio.NewWriterSize(stdout, 64<<10)
	switch {
	case o.summary:
		writeLsSummary(out, socks)
	case o.output == outJSON:
		var buf []byte
		for i := range socks {
			buf = appendLsJSON(buf[:0], &socks[i])
			if _, err := out.Write(buf); err != nil {
				return fmt.Errorf("writing output: %w", err)
			}
		}
	default:
		writeLsTable(out, socks, o.output == outWide)
		fmt.Fprintln(out)
		writeLsSummary(out, socks)
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// lsSelect applies the filters and sorts the sockets: by namespace, state in
// the order of a connection's life, local then remote address.
func lsSelect(all []model.SocketInfo, f *model.Filter, wantState func(model.State, model.SocketKind) bool) []model.SocketInfo {
	var out []model.SocketInfo
	for _, s := range all {
		if s.State == model.Close && wantState == nil {
			continue
		}
		if wantState != nil && !wantState(s.State, s.Kind) {
			continue
		}
		facts := s.Facts()
		match := f.MatchSocket(facts)
		// --pid: any process that holds it.
		for _, h := range s.Holders {
			if match {
				break
			}
			facts.Pid, facts.OwnerKnown = h.Pid, true
			match = f.MatchSocket(facts)
		}
		if match {
			out = append(out, s)
		}
	}
	order := map[model.State]int{}
	for i, s := range model.LifeOrder {
		order[s] = i
	}
	slices.SortFunc(out, func(a, b model.SocketInfo) int {
		return cmp.Or(cmp.Compare(a.Netns, b.Netns), cmp.Compare(order[a.State], order[b.State]),
			a.Saddr.Compare(b.Saddr), cmp.Compare(a.Sport, b.Sport), a.Daddr.Compare(b.Daddr), cmp.Compare(a.Dport, b.Dport))
	})
	return out
}

func lsAddr(a netip.Addr, port uint16) string {
	if !a.IsValid() {
		return "-"
	}
	return netip.AddrPortFrom(a, port).String()
}

// lsCell is one table cell: its text, safe to print, and its width on a
// terminal.
type lsCell struct {
	text  string
	width int
}

func plainCell(s string) lsCell { return lsCell{s, len(s)} }

// nameCell escapes a name another user controls (termsafe).
func nameCell(s string) lsCell {
	b, w := termsafe.Append(nil, s)
	return lsCell{string(b), w}
}

// cgroupCell is the socket's cgroup as trace's CGROUP column shows it
// (appendCgroupLabel): its container, else its path, else its id, "-"
// when it has none (a timewait socket).
func cgroupCell(s *model.SocketInfo) lsCell {
	b, w := appendCgroupLabel(nil, s.Cgroup, s.CgroupID)
	return lsCell{string(b), w}
}

// writeLsTable prints the sockets in aligned columns: every row is known
// before the first is printed, so each column is as wide as its widest cell.
func writeLsTable(w io.Writer, socks []model.SocketInfo, wide bool) {
	header := []string{"STATE", "LOCAL", "REMOTE", "PID", "COMM", "NETNS"}
	right := []bool{false, false, false, true, false, true}
	if wide {
		header = append(header, "KIND", "UID", "INODE", "SKADDR", "CGROUP", "HOLDERS")
		right = append(right, false, true, true, false, false, false)
	}
	rows := make([][]lsCell, 0, len(socks)+1)
	hdr := make([]lsCell, len(header))
	for i, h := range header {
		hdr[i] = plainCell(h)
	}
	rows = append(rows, hdr)
	for i := range socks {
		s := &socks[i]
		pid, comm := plainCell("-"), plainCell("-")
		if s.OwnerKnown {
			pid, comm = plainCell(strconv.FormatUint(uint64(s.Pid), 10)), nameCell(s.Comm)
		}
		row := []lsCell{plainCell(s.State.String()), plainCell(lsAddr(s.Saddr, s.Sport)), plainCell(lsAddr(s.Daddr, s.Dport)),
			pid, comm, plainCell(strconv.FormatUint(uint64(s.Netns), 10))}
		if wide {
			var hs []string
			for _, h := range s.Holders {
				hs = append(hs, strconv.FormatUint(uint64(h.Pid), 10)+"/"+h.Comm)
			}
			holders := nameCell(strings.Join(hs, ","))
			if len(hs) == 0 {
				holders = plainCell("-")
			}
			row = append(row, plainCell(s.Kind.String()), plainCell(strconv.FormatUint(uint64(s.Uid), 10)),
				plainCell(strconv.FormatUint(s.Inode, 10)), plainCell("0x"+strconv.FormatUint(s.Skaddr, 16)), cgroupCell(s), holders)
		}
		rows = append(rows, row)
	}
	widths := make([]int, len(header))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], c.width)
		}
	}
	var buf []byte
	for _, r := range rows {
		buf = buf[:0]
		for i, c := range r {
			pad := widths[i] - c.width
			if i == len(r)-1 && !right[i] {
				pad = 0
			}
			if right[i] {
				buf = append(buf, strings.Repeat(" ", pad)...)
			}
			buf = append(buf, c.text...)
			if !right[i] {
				buf = append(buf, strings.Repeat(" ", pad)...)
			}
			if i < len(r)-1 {
				buf = append(buf, "  "...)
			}
		}
		buf = append(buf, '\n')
		w.Write(buf)
	}
}

// writeLsSummary prints the count per state, as ss -s counts TCP sockets.
func writeLsSummary(w io.Writer, socks []model.SocketInfo) {
	counts := map[model.State]int{}
	for _, s := range socks {
		counts[s.State]++
	}
	var parts []string
	for _, st := range model.LifeOrder {
		if n := counts[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", st, n))
		}
	}
	if len(parts) == 0 {
		parts = append(parts, "none")
	}
	fmt.Fprintf(w, "%s: %s\n", plural(uint64(len(socks)), "TCP socket", "TCP sockets"), strings.Join(parts, ", "))
}

// lsJSON is one socket of ls -o json.
type lsJSON struct {
	State  string `json:"state"`
	Kind   string `json:"kind"`
	Family string `json:"family"`
	Saddr  string `json:"saddr"`
	Sport  uint16 `json:"sport"`
	Daddr  string `json:"daddr"`
	Dport  uint16 `json:"dport"`
	Netns  uint32 `json:"netns"`
	// The socket's own cgroup, as in trace's record: its id (absent when
	// the kernel recorded none: a timewait socket), its path (absent when
	// not resolved), the container and pod the path names (absent when
	// none).
	CgroupID         uint64         `json:"cgroup_id,omitempty"`
	Cgroup           string         `json:"cgroup,omitempty"`
	Container        string         `json:"container,omitempty"`
	ContainerRuntime string         `json:"container_runtime,omitempty"`
	PodUID           string         `json:"pod_uid,omitempty"`
	Skaddr           string         `json:"skaddr"`
	Uid              uint32         `json:"uid"`
	Inode            uint64         `json:"inode"`
	Pid              uint32         `json:"pid"`
	Comm             string         `json:"comm"`
	Holders          []model.Holder `json:"holders"`
}

func appendLsJSON(buf []byte, s *model.SocketInfo) []byte {
	j := lsJSON{
		State: s.State.String(), Kind: s.Kind.String(), Family: s.Family.String(),
		Saddr: s.Saddr.String(), Sport: s.Sport, Daddr: s.Daddr.String(), Dport: s.Dport,
		Netns: s.Netns, Skaddr: "0x" + strconv.FormatUint(s.Skaddr, 16), Uid: s.Uid, Inode: s.Inode,
		Holders: s.Holders, CgroupID: s.CgroupID,
	}
	if cg := s.Cgroup; cg != nil {
		j.Cgroup, j.Container, j.ContainerRuntime, j.PodUID = cg.Path, cg.Container.ID, cg.Container.Runtime, cg.Container.PodUID
	}
	if j.Holders == nil {
		j.Holders = []model.Holder{}
	}
	if s.OwnerKnown {
		j.Pid, j.Comm = s.Pid, s.Comm
	}
	b, _ := json.Marshal(j)
	return append(append(buf, b...), '\n')
}

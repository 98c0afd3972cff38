package tracer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/link"

	"github.com/tcpstate/tcpstate/model"
)

// Snapshot is every TCP socket that existed when it was taken, as the
// kernel's own tables and the processes' open files show them.
type Snapshot struct {
	Start, End time.Time
	// StartNs is the kernel's CLOCK_MONOTONIC when the snapshot began: events
	// with a smaller timestamp happened before it.
	StartNs uint64
	Sockets []model.SocketInfo
	// Namespaces lists the network namespaces read (Err set for those that
	// could not be entered: their sockets held by a process are still in
	// Sockets, from the process's files).
	Namespaces []NetnsScan
	// ProcessesUnasked counts the processes whose network namespace could
	// not be looked up (another user's /proc/PID/ns/net, without
	// CAP_SYS_PTRACE): a namespace only they are in was not walked.
	// Limits says what that loses.
	ProcessesUnasked int
	// ProcessesRefused counts the processes whose namespace could not be
	// looked up although this process has CAP_SYS_PTRACE (a security
	// module's refusal; no capability helps).
	ProcessesRefused int
	// Seeded counts the sockets whose kernel state this snapshot seeded
	// (SnapshotOptions.Seed).
	Seeded int
	// OutOfStep lists the sockets whose state the programs last saw is not
	// the socket's own: transitions the kernel never delivered.
	OutOfStep []OutOfStep
}

// NetnsScan is one namespace of a snapshot.
type NetnsScan struct {
	Netns
	Sockets int    `json:"sockets"`
	Err     string `json:"error,omitempty"`
	// NeedsCap names the capability whose lack made Err, if that was it.
	NeedsCap string `json:"needs_cap,omitempty"`
}

// OutOfStep is one socket whose state the programs last saw (Tracked) is not
// its state now (Actual).
type OutOfStep struct {
	Socket  model.SocketInfo
	Tracked model.State
	Actual  model.State
	// Reconciled: the snapshot corrected the kernel's state to Actual
	// (SnapshotOptions.Reconcile). LossSince: a loss was counted since
	// the socket's last event, which may explain the difference.
	Reconciled, LossSince bool
}

// SnapshotOptions says what a snapshot does besides reading.
type SnapshotOptions struct {
	// Seed gives every socket without kernel state its current state and,
	// from the processes that hold it, an owner (tracing: the programs are
	// attached first, so nothing that changes meanwhile is lost).
	Seed bool
	// Netns limits the per-namespace walk to these inodes (empty: every
	// namespace ListNetns finds).
	Netns []uint32
	// Reconcile corrects the kernel's state of every socket found out of
	// step to the socket's own (serve's periodic snapshots), so that its
	// next transition is not a gap: each missed transition is found once.
	Reconcile bool
	// Visit, when set, is given each socket of the tables' walk instead of
	// the snapshot keeping it in Sockets, so that memory does not grow with
	// the host's sockets (serve's counts). The processes' files are then
	// read only if Seed asks (no holders, no owners from them). The
	// SocketInfo is reused for the next socket.
	Visit func(*model.SocketInfo)
}

// errNoSnapshot is returned when the kernel lacks the snapshot iterators.
var errNoSnapshot = errors.New("the kernel lacks the iterators a snapshot needs (iter/tcp, iter/task_file with bpf_sock_from_file: Linux 5.11)")

// Snapshot reads every TCP socket: iter/task_file once (every process's
// socket files, in every namespace: the holders), then iter/tcp in each
// network namespace (every socket of its tables, timewait and request
// sockets and orphans included). It takes about the time the kernel takes
// to walk them (tracer/snapshot_test.go measures it).
func (t *Tracer) Snapshot(o SnapshotOptions) (*Snapshot, error) {
	if t.snapTCP == nil || t.snapFiles == nil {
		return nil, errNoSnapshot
	}
	seed := uint8(0)
	if o.Seed {
		seed = 1
	}
	if err := t.vars.SnapSeed.Set(seed); err != nil {
		return nil, fmt.Errorf("setting up the snapshot: %w", err)
	}
	defer t.vars.SnapSeed.Set(uint8(0))
	if err := t.vars.SnapReconcile.Set(b2u(o.Reconcile)); err != nil {
		return nil, fmt.Errorf("setting up the snapshot: %w", err)
	}
	defer t.vars.SnapReconcile.Set(uint8(0))

	s := &Snapshot{Start: time.Now(), StartNs: uint64(monotonicNow())}
	var holders []tcpstateHolderRecord
	if o.Visit == nil || o.Seed {
		var files bytes.Buffer
		if err := runIter(t.snapFiles, &files); err != nil {
			return nil, fmt.Errorf("reading the processes' sockets: %w", err)
		}
		if o.Visit == nil {
			holders = decodeHolders(files.Bytes())
		}
	}

	found, err := listNetns()
	if err != nil {
		return nil, err
	}
	namespaces := found.found
	s.ProcessesUnasked, s.ProcessesRefused = found.denied, found.deniedAnyway
	if len(o.Netns) > 0 {
		namespaces = slices.DeleteFunc(namespaces, func(n Netns) bool { return !slices.Contains(o.Netns, n.Inode) })
		if len(namespaces) == len(o.Netns) {
			s.ProcessesUnasked, s.ProcessesRefused = 0, 0 // every namespace asked for was found
		}
	}
	l, err := link.AttachIter(link.IterOptions{Program: t.snapTCP})
	if err != nil {
		return nil, fmt.Errorf("attaching the socket iterator: %w", err)
	}
	defer l.Close()
	// skaddr -> index in s.Sockets; with Visit, the namespace's sockets seen
	// (a repeat comes from the same walk).
	bySk := map[uint64]int{}
	rec := make([]byte, snapRecordSize)
	var visited model.SocketInfo
	for _, ns := range namespaces {
		scan := NetnsScan{Netns: ns}
		if o.Visit != nil {
			clear(bySk)
		}
		err := inNetns(ns.Path, func() error {
			r, err := l.Open()
			if err != nil {
				return err
			}
			defer r.Close()
			// The walk is read as it comes, a record at a time from a
			// buffer: a namespace of 100,000 sockets is never held whole.
			br := bufio.NewReaderSize(r, 64<<10)
			for {
				if _, err := io.ReadFull(br, rec); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
				r := (*tcpstateSnapRecord)(unsafe.Pointer(&rec[0]))
				// Before 6.17 iter/tcp may repeat a socket when the tables
				// change under it: the first record wins.
				if _, dup := bySk[r.Skaddr]; dup {
					continue
				}
				si := snapSocket(r)
				if r.Flags&uint8(tcpstateSnapFlagSNAPF_SEEDED) != 0 {
					s.Seeded++
				}
				if r.Kind == uint8(tcpstateSnapKindSNAP_FULL) && r.Flags&uint8(tcpstateSnapFlagSNAPF_TRACKED) != 0 &&
					r.TrackedState != 0 && r.TrackedState != r.State {
					s.OutOfStep = append(s.OutOfStep, OutOfStep{Socket: si, Tracked: model.State(r.TrackedState), Actual: model.State(r.State),
						Reconciled: r.Flags&uint8(tcpstateSnapFlagSNAPF_RECONCILED) != 0, LossSince: r.Flags&uint8(tcpstateSnapFlagSNAPF_LOSS_SINCE) != 0})
				}
				scan.Sockets++
				if o.Visit != nil {
					bySk[r.Skaddr] = 0
					visited = si
					o.Visit(&visited)
					continue
				}
				bySk[r.Skaddr] = len(s.Sockets)
				s.Sockets = append(s.Sockets, si)
			}
		})
		if err != nil {
			scan.Err = err.Error()
			if errors.Is(err, errSetnsDenied) {
				scan.NeedsCap = "CAP_SYS_ADMIN"
			}
		}
		s.Namespaces = append(s.Namespaces, scan)
	}
	// Holders: attach to their sockets; a socket held by a process but in a
	// namespace not walked (or not in the tables: CLOSE) comes from the
	// holder's record alone.
	for _, h := range holders {
		i, ok := bySk[h.Skaddr]
		if !ok {
			if len(o.Netns) > 0 && !slices.Contains(o.Netns, h.Netns) {
				continue
			}
			bySk[h.Skaddr] = len(s.Sockets)
			s.Sockets = append(s.Sockets, holderSocket(&h))
			i = len(s.Sockets) - 1
		}
		so := &s.Sockets[i]
		so.Holders = append(so.Holders, model.Holder{Pid: h.Tgid, Comm: cString(h.Comm[:]), Fd: h.Fd})
	}
	for i := range s.Sockets {
		so := &s.Sockets[i]
		slices.SortFunc(so.Holders, func(a, b model.Holder) int {
			if a.Pid != b.Pid {
				return int(int64(a.Pid) - int64(b.Pid))
			}
			return int(int64(a.Fd) - int64(b.Fd))
		})
		so.Holders = slices.CompactFunc(so.Holders, func(a, b model.Holder) bool { return a.Pid == b.Pid })
		so.Cgroup = t.cgroups.Lookup(so.CgroupID)
		if !so.OwnerKnown && len(so.Holders) > 0 {
			so.Pid, so.Comm, so.OwnerKnown = so.Holders[0].Pid, so.Holders[0].Comm, true
		}
	}
	s.End = time.Now()
	return s, nil
}

var (
	snapRecordSize   = int(unsafe.Sizeof(tcpstateSnapRecord{}))
	holderRecordSize = int(unsafe.Sizeof(tcpstateHolderRecord{}))
)

func decodeHolders(b []byte) []tcpstateHolderRecord {
	out := make([]tcpstateHolderRecord, 0, len(b)/holderRecordSize)
	for i := 0; i+holderRecordSize <= len(b); i += holderRecordSize {
		out = append(out, *(*tcpstateHolderRecord)(unsafe.Pointer(&b[i])))
	}
	return out
}

func addrs(family uint16, s, d *[16]uint8) (netip.Addr, netip.Addr) {
	if family == uint16(model.AFInet) {
		return netip.AddrFrom4([4]byte(s[:4])), netip.AddrFrom4([4]byte(d[:4]))
	}
	return netip.AddrFrom16(*s), netip.AddrFrom16(*d)
}

func snapSocket(r *tcpstateSnapRecord) model.SocketInfo {
	st := model.State(r.State)
	if st == model.NewSynRecv {
		st = model.SynRecv // a request socket: ss shows SYN-RECV
	}
	si := model.SocketInfo{
		Skaddr: r.Skaddr,
		Kind:   model.SocketKind(r.Kind),
		State:  st,
		Family: model.Family(r.Family),
		Sport:  r.Sport,
		Dport:  r.Dport,
		Netns:  r.Netns,
		Uid:    r.Uid,
		Inode:  r.Ino,
		// The socket's own cgroup (a request socket's: its listener's).
		CgroupID: r.CgroupId,
	}
	si.Saddr, si.Daddr = addrs(r.Family, &r.Saddr, &r.Daddr)
	if r.Flags&uint8(tcpstateSnapFlagSNAPF_OWNER) != 0 {
		si.Pid, si.Comm, si.OwnerKnown = r.OwnerPid, cString(r.OwnerComm[:]), true
	}
	// What the programs know of the time in state (a tracing command's
	// snapshot): from when they saw it enter, or, seeded, a lower bound.
	if r.StateTs != 0 && r.TrackedState == r.State {
		si.Since = since(uint64(monotonicNow()), r.StateTs)
		si.SinceAtLeast = r.Flags&uint8(tcpstateSnapFlagSNAPF_SEEDED) != 0
	}
	return si
}

func holderSocket(h *tcpstateHolderRecord) model.SocketInfo {
	si := model.SocketInfo{
		Skaddr: h.Skaddr,
		Kind:   model.KindFull,
		State:  model.State(h.State),
		Family: model.Family(h.Family),
		Sport:  h.Sport,
		Dport:  h.Dport,
		Netns:  h.Netns,
		// The socket's cgroup, not its holder's: they differ for a socket
		// passed to (or inherited by) a process in another cgroup.
		CgroupID: h.CgroupId,
	}
	si.Saddr, si.Daddr = addrs(h.Family, &h.Saddr, &h.Daddr)
	return si
}

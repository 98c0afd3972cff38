package model

import (
	"net/netip"
	"time"
)

// Family is an address family as the kernel numbers it.
type Family uint16

// The two families tcpstate reports.
const (
	AFInet  Family = 2
	AFInet6 Family = 10
)

// String returns "ipv4", "ipv6" or "af(n)"; these are the JSON record's values.
func (f Family) String() string {
	switch f {
	case AFInet:
		return "ipv4"
	case AFInet6:
		return "ipv6"
	}
	return "af(" + itoa(uint64(f)) + ")"
}

// Comm is a task name as the kernel stores it: up to 16 bytes, NUL padded.
// A fixed array keeps the event free of heap allocations.
type Comm [16]byte

// String returns the name up to its first NUL.
func (c Comm) String() string {
	for i, b := range c {
		if b == 0 {
			return string(c[:i])
		}
	}
	return string(c[:])
}

// Bytes returns the name up to its first NUL without copying.
func (c *Comm) Bytes() []byte {
	for i, b := range c {
		if b == 0 {
			return c[:i]
		}
	}
	return c[:]
}

// CommFrom makes a Comm from a string, cut to 16 bytes.
func CommFrom(s string) Comm {
	var c Comm
	copy(c[:], s)
	return c
}

// Event flags, as the BPF program sets them (enum event_flag in
// bpf/event.h; tracer's tests pin these against bpf2go's generated copy).
const (
	// FlagOwnerKnown: Pid/Comm name the socket's owner.
	FlagOwnerKnown uint16 = 1 << 0
	// FlagOwnerInherited: the owner is the listener's, not yet confirmed by accept().
	FlagOwnerInherited uint16 = 1 << 1
	// FlagDurationKnown: OldStateNs is the measured time in the old state.
	FlagDurationKnown uint16 = 1 << 2
	// FlagHeld: the event was held back in the kernel until its socket
	// matched the filters, and delivered late (its TsNs is still the original).
	FlagHeld uint16 = 1 << 3
	// FlagKernelIllegal and FlagKernelGap: the BPF program's own model check
	// (the anomalies-only path) found the edge illegal or a gap.
	FlagKernelIllegal uint16 = 1 << 4
	FlagKernelGap     uint16 = 1 << 5
	// FlagActive: the socket connect()ed (it went through SYN_SENT).
	FlagActive uint16 = 1 << 6
	// FlagCPUTask: CPUPid/CPUComm were read for this event.
	FlagCPUTask uint16 = 1 << 7
	// FlagAgeAtLeast: AgeNs counts from when tracing began (the socket
	// existed before): a lower bound.
	FlagAgeAtLeast uint16 = 1 << 8
	// FlagCounts: BytesAcked, BytesReceived, TotalRetrans and SrttUs were
	// read: every ->CLOSE but a listener's, on every kernel (probe reads
	// before Linux 6.2).
	FlagCounts uint16 = 1 << 9
)

// Event is one TCP state transition: the single record that trace, check,
// stats and every later command share. Its JSON form (record.go) is a public
// format: fields are added, never renamed.
type Event struct {
	// TsNs is the kernel's CLOCK_MONOTONIC time of the transition.
	TsNs uint64
	// Time is the wall-clock time of the transition (TsNs moved to the realtime clock).
	Time time.Time
	// Skaddr is the kernel address of the struct sock. It is reused after the
	// socket is freed; one incarnation ends at ->CLOSE.
	Skaddr uint64
	// Pid and Comm are the socket's owner (see the FlagOwner* flags); 0 when unknown.
	Pid  uint32
	Comm Comm
	// CPUPid and CPUComm are the task on the CPU when the transition fired; in
	// softirq this is whoever was interrupted.
	CPUPid  uint32
	CPUComm Comm
	Family  Family
	Saddr   netip.Addr
	Daddr   netip.Addr
	Sport   uint16
	Dport   uint16
	Old     State
	New     State
	// OldStateNs is the time spent in Old, valid when FlagDurationKnown is set.
	OldStateNs uint64
	Flags      uint16
	// LossSeq is how many events the kernel had counted lost, host-wide,
	// when it handled this one: two events of a socket with the same
	// LossSeq had no counted loss between them.
	LossSeq uint64
	// PrevLossSeq is LossSeq at the socket's previous event as the kernel
	// remembers it (0: it saw none): LossSeq - PrevLossSeq events were
	// counted lost between the two, on any socket.
	PrevLossSeq uint64
	// At ->CLOSE only: how the connection ended. CloseFacts.Cause says
	// why; CloseErr is the socket error (an errno, 0: none); ResetReason
	// names the reason of a reset the kernel sent before the close (6.10+,
	// from its BTF; the resets of SO_LINGER 0, connect(AF_UNSPEC) and a
	// close with unread data follow the ->CLOSE transition: none).
	CloseFacts  CloseFacts
	CloseErr    uint16
	ResetReason string
	// BytesAcked and BytesReceived are the data bytes sent and
	// acknowledged, and received (FlagCounts: they were read). The kernel
	// counts sequence space (tcp_sock.bytes_acked, bytes_received, as
	// TCP_INFO reports them), where a SYN and a FIN count one byte each;
	// the BPF side takes our SYN (an active open), our acknowledged FIN and
	// the peer's FIN out (bpf/cause.h).
	BytesAcked    uint64
	BytesReceived uint64
	TotalRetrans  uint32 // segments retransmitted
	SrttUs        uint32 // smoothed round-trip time, microseconds
	AgeNs         uint64 // since birth (0: born before tracing)
	// LossKnown says LossSeq and PrevLossSeq were recorded (always, for
	// events from the kernel; for records read back, when they carry them).
	LossKnown bool
	// LastState is the new state of the socket's previous event as the
	// kernel remembers it (0: the kernel saw none). With only anomalies
	// crossing to user space, it is what a gap is checked against.
	LastState State
	// CgroupID is the socket's own cgroup v2 id (the inode of its directory
	// in the cgroup2 file system): the cgroup of the task that created it,
	// not of whoever was on the CPU. 0 when the kernel records none.
	CgroupID uint64
	// Cgroup is what CgroupID resolved to (its path, the container it
	// names), or, in a record read back, what the record says; nil when
	// not known. Resolvers share one CgroupInfo between all the events of
	// a cgroup: never modify it.
	Cgroup *CgroupInfo
	// Netns is the inode number of the socket's network namespace (as in
	// /proc/PID/ns/net); 0 when not recorded.
	Netns uint32
}

// OwnerKnown reports whether Pid/Comm name an owner.
func (e *Event) OwnerKnown() bool { return e.Flags&FlagOwnerKnown != 0 }

// DurationKnown reports whether OldStateNs was measured.
func (e *Event) DurationKnown() bool { return e.Flags&FlagDurationKnown != 0 }

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

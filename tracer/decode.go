package tracer

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/model"
)

// EventSize is the size of struct event in bpf/event.h.
const EventSize = int(unsafe.Sizeof(tcpstateEvent{}))

// Offsets of struct event's fields, from the type bpf2go generated from the
// C struct: they cannot drift from the BPF side.
const (
	offTsNs       = unsafe.Offsetof(tcpstateEvent{}.TsNs)
	offSkaddr     = unsafe.Offsetof(tcpstateEvent{}.Skaddr)
	offOldStateNs = unsafe.Offsetof(tcpstateEvent{}.OldStateNs)
	offLossSeq    = unsafe.Offsetof(tcpstateEvent{}.LossSeq)
	offPrevLoss   = unsafe.Offsetof(tcpstateEvent{}.PrevLossSeq)
	offCgroup     = unsafe.Offsetof(tcpstateEvent{}.CgroupId)
	offBytesAcked = unsafe.Offsetof(tcpstateEvent{}.BytesAcked)
	offBytesRecv  = unsafe.Offsetof(tcpstateEvent{}.BytesReceived)
	offAge        = unsafe.Offsetof(tcpstateEvent{}.AgeNs)
	offRetrans    = unsafe.Offsetof(tcpstateEvent{}.TotalRetrans)
	offSrtt       = unsafe.Offsetof(tcpstateEvent{}.SrttUs)
	offFacts      = unsafe.Offsetof(tcpstateEvent{}.CloseFacts)
	offCloseErr   = unsafe.Offsetof(tcpstateEvent{}.CloseErr)
	offRstReason  = unsafe.Offsetof(tcpstateEvent{}.RstReason)
	offPid        = unsafe.Offsetof(tcpstateEvent{}.Pid)
	offCPUPid     = unsafe.Offsetof(tcpstateEvent{}.CpuPid)
	offNetns      = unsafe.Offsetof(tcpstateEvent{}.Netns)
	offFamily     = unsafe.Offsetof(tcpstateEvent{}.Family)
	offSport      = unsafe.Offsetof(tcpstateEvent{}.Sport)
	offDport      = unsafe.Offsetof(tcpstateEvent{}.Dport)
	offFlags      = unsafe.Offsetof(tcpstateEvent{}.Flags)
	offOldState   = unsafe.Offsetof(tcpstateEvent{}.Oldstate)
	offNewState   = unsafe.Offsetof(tcpstateEvent{}.Newstate)
	offLastState  = unsafe.Offsetof(tcpstateEvent{}.LastState)
	offSaddr      = unsafe.Offsetof(tcpstateEvent{}.Saddr)
	offDaddr      = unsafe.Offsetof(tcpstateEvent{}.Daddr)
	offComm       = unsafe.Offsetof(tcpstateEvent{}.Comm)
	offCPUComm    = unsafe.Offsetof(tcpstateEvent{}.CpuComm)
)

// Clock turns the kernel's CLOCK_MONOTONIC timestamps (bpf_ktime_get_ns)
// into wall-clock time, with one offset between the two clocks. The read
// loop takes a new one from its ClockSource at every poll, so wall-clock
// times follow a step of CLOCK_REALTIME (NTP, date -s) within a poll
// interval.
type Clock struct{ offset int64 }

// ClockSource reads the two clocks a Clock relates, in nanoseconds:
// CLOCK_REALTIME and the host's CLOCK_MONOTONIC, the clock of
// bpf_ktime_get_ns. A Clock is a source too: a fixed one.
type ClockSource interface {
	Read() (realtime, monotonic int64)
}

// SystemClock is the running system's clocks. Its monotonic clock is the
// host's, also when tcpstate runs in a time namespace (unshare -T), whose
// CLOCK_MONOTONIC is shifted by the namespace's offset while
// bpf_ktime_get_ns is not.
func SystemClock() ClockSource { return systemClock{} }

type systemClock struct{}

func (systemClock) Read() (realtime, monotonic int64) {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_REALTIME, &ts)
	return ts.Nano(), monotonicNow()
}

// ClockFrom measures the offset between the source's two clocks now.
func ClockFrom(src ClockSource) Clock {
	rt, mono := src.Read()
	return Clock{offset: rt - mono}
}

// NewClock measures the offset between CLOCK_REALTIME and the host's
// CLOCK_MONOTONIC now.
func NewClock() Clock { return ClockFrom(systemClock{}) }

// ClockWithOffset is for tests and replays: wall = monotonic + offset.
func ClockWithOffset(offset int64) Clock { return Clock{offset: offset} }

// Read makes a Clock a ClockSource that never moves: realtime is the
// offset when monotonic is 0.
func (c Clock) Read() (realtime, monotonic int64) { return c.offset, 0 }

// Wall returns the wall-clock time of a kernel timestamp.
func (c Clock) Wall(tsNs uint64) time.Time { return time.Unix(0, int64(tsNs)+c.offset) }

// Decode fills e from one ring buffer sample. The BPF program writes every
// integer in host byte order (the object is built for little-endian targets
// only: bpfel), ports included (it converts them with bpf_ntohs); addresses
// are the kernel's network-order bytes. It allocates nothing.
func Decode(raw []byte, clock Clock, e *model.Event) error {
	if len(raw) != EventSize {
		return fmt.Errorf("decoding event: sample is %d bytes, want %d", len(raw), EventSize)
	}
	le := binary.LittleEndian
	old, nw := model.State(raw[offOldState]), model.State(raw[offNewState])
	if !old.Valid() || !nw.Valid() {
		return fmt.Errorf("decoding event: invalid TCP states %d -> %d", raw[offOldState], raw[offNewState])
	}
	e.TsNs = le.Uint64(raw[offTsNs:])
	e.Time = clock.Wall(e.TsNs)
	e.Skaddr = le.Uint64(raw[offSkaddr:])
	e.OldStateNs = le.Uint64(raw[offOldStateNs:])
	e.LossSeq = le.Uint64(raw[offLossSeq:])
	e.PrevLossSeq = le.Uint64(raw[offPrevLoss:])
	e.LossKnown = true
	e.CgroupID = le.Uint64(raw[offCgroup:])
	e.CloseFacts = model.CloseFacts(le.Uint16(raw[offFacts:]))
	e.CloseErr = le.Uint16(raw[offCloseErr:])
	e.BytesAcked = le.Uint64(raw[offBytesAcked:])
	e.BytesReceived = le.Uint64(raw[offBytesRecv:])
	e.AgeNs = le.Uint64(raw[offAge:])
	e.TotalRetrans = le.Uint32(raw[offRetrans:])
	e.SrttUs = le.Uint32(raw[offSrtt:])
	e.ResetReason = ""
	if e.CloseFacts&model.FactRstSent != 0 {
		e.ResetReason = resetReasonName(le.Uint16(raw[offRstReason:]))
	}
	e.Pid = le.Uint32(raw[offPid:])
	e.CPUPid = le.Uint32(raw[offCPUPid:])
	e.Family = model.Family(le.Uint16(raw[offFamily:]))
	e.Sport = le.Uint16(raw[offSport:])
	e.Dport = le.Uint16(raw[offDport:])
	e.Old, e.New = old, nw
	switch e.Family {
	case model.AFInet:
		e.Saddr = netip.AddrFrom4([4]byte(raw[offSaddr : offSaddr+4]))
		e.Daddr = netip.AddrFrom4([4]byte(raw[offDaddr : offDaddr+4]))
	case model.AFInet6:
		e.Saddr = netip.AddrFrom16([16]byte(raw[offSaddr : offSaddr+16]))
		e.Daddr = netip.AddrFrom16([16]byte(raw[offDaddr : offDaddr+16]))
	default:
		return fmt.Errorf("decoding event: unknown address family %d", e.Family)
	}
	copy(e.Comm[:], raw[offComm:offComm+16])
	copy(e.CPUComm[:], raw[offCPUComm:offCPUComm+16])
	e.Flags = le.Uint16(raw[offFlags:])
	e.LastState = model.State(raw[offLastState])
	e.Netns = le.Uint32(raw[offNetns:])
	return nil
}

// Encode is Decode's inverse, for tests and benchmarks that feed the reader
// without a kernel.
func Encode(e *model.Event) []byte {
	raw := make([]byte, EventSize)
	le := binary.LittleEndian
	le.PutUint64(raw[offTsNs:], e.TsNs)
	le.PutUint64(raw[offSkaddr:], e.Skaddr)
	le.PutUint64(raw[offOldStateNs:], e.OldStateNs)
	le.PutUint64(raw[offLossSeq:], e.LossSeq)
	le.PutUint64(raw[offPrevLoss:], e.PrevLossSeq)
	le.PutUint64(raw[offCgroup:], e.CgroupID)
	le.PutUint16(raw[offFacts:], uint16(e.CloseFacts))
	le.PutUint16(raw[offCloseErr:], e.CloseErr)
	le.PutUint64(raw[offBytesAcked:], e.BytesAcked)
	le.PutUint64(raw[offBytesRecv:], e.BytesReceived)
	le.PutUint64(raw[offAge:], e.AgeNs)
	le.PutUint32(raw[offRetrans:], e.TotalRetrans)
	le.PutUint32(raw[offSrtt:], e.SrttUs)
	le.PutUint16(raw[offRstReason:], resetReasonCode(e.ResetReason))
	le.PutUint32(raw[offPid:], e.Pid)
	le.PutUint32(raw[offCPUPid:], e.CPUPid)
	le.PutUint16(raw[offFamily:], uint16(e.Family))
	le.PutUint16(raw[offSport:], e.Sport)
	le.PutUint16(raw[offDport:], e.Dport)
	raw[offOldState] = byte(e.Old)
	raw[offNewState] = byte(e.New)
	if e.Family == model.AFInet {
		a4 := e.Saddr.As4()
		copy(raw[offSaddr:], a4[:])
		a4 = e.Daddr.As4()
		copy(raw[offDaddr:], a4[:])
	} else {
		a16 := e.Saddr.As16()
		copy(raw[offSaddr:], a16[:])
		a16 = e.Daddr.As16()
		copy(raw[offDaddr:], a16[:])
	}
	copy(raw[offComm:offComm+16], e.Comm[:])
	copy(raw[offCPUComm:offCPUComm+16], e.CPUComm[:])
	le.PutUint16(raw[offFlags:], e.Flags)
	raw[offLastState] = byte(e.LastState)
	le.PutUint32(raw[offNetns:], e.Netns)
	return raw
}

// resetReasons names enum sk_rst_reason's values as the running kernel
// numbers them (they differ between kernels: never a fixed table), read
// from its BTF once (loadResetReasons); nil before 6.10.
var resetReasons []string

// loadResetReasons reads enum sk_rst_reason from the kernel's BTF.
func loadResetReasons(spec *btf.Spec) {
	var e *btf.Enum
	if spec == nil || spec.TypeByName("sk_rst_reason", &e) != nil {
		return
	}
	var names []string
	for _, v := range e.Values {
		if v.Value > 1024 {
			continue // SK_RST_REASON_MAX and the like
		}
		for uint64(len(names)) <= v.Value {
			names = append(names, "")
		}
		names[v.Value] = strings.TrimPrefix(v.Name, "SK_RST_REASON_")
	}
	resetReasons = names
}

func resetReasonName(code uint16) string {
	if int(code) < len(resetReasons) && resetReasons[code] != "" {
		return resetReasons[code]
	}
	if resetReasons == nil {
		return ""
	}
	return "reason " + strconv.Itoa(int(code))
}

func resetReasonCode(name string) uint16 {
	for i, n := range resetReasons {
		if n == name && n != "" {
			return uint16(i)
		}
	}
	return 0
}

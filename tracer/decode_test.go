package tracer

// Unit tests (tier 2): decoding ring buffer samples, without a kernel.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/tcpstate/tcpstate/model"
)

// TestEventLayout: Decode reads every field of the struct bpf2go generated
// from the C struct event (its offsets come from that struct, so they
// cannot drift), with the sizes it assumes. A field added to the C struct
// and not to Decode fails here.
func TestEventLayout(t *testing.T) {
	var ev tcpstateEvent
	if got := int(unsafe.Sizeof(ev)); got != EventSize {
		t.Errorf("EventSize %d, generated struct event is %d bytes", EventSize, got)
	}
	read := map[string]uintptr{
		"TsNs": 8, "Skaddr": 8, "OldStateNs": 8, "LossSeq": 8, "PrevLossSeq": 8, "CgroupId": 8, "BytesAcked": 8, "BytesReceived": 8, "AgeNs": 8, "TotalRetrans": 4, "SrttUs": 4, "CloseFacts": 2, "CloseErr": 2, "RstReason": 2, "Pid": 4, "CpuPid": 4, "Netns": 4,
		"Family": 2, "Sport": 2, "Dport": 2, "Flags": 2, "Oldstate": 1, "Newstate": 1, "LastState": 1,
		"Saddr": 16, "Daddr": 16, "Comm": 16, "CpuComm": 16,
	}
	rt := reflect.TypeOf(ev)
	for i := range rt.NumField() {
		f := rt.Field(i)
		if f.Name == "_" || strings.HasPrefix(f.Name, "Pad") {
			continue
		}
		want, ok := read[f.Name]
		if !ok {
			t.Errorf("generated struct event has field %s (offset %d) that Decode does not read", f.Name, f.Offset)
		} else if f.Type.Size() != want {
			t.Errorf("field %s is %d bytes, Decode reads %d", f.Name, f.Type.Size(), want)
		}
	}
}

// TestSharedConstants pins the model package's copies of the C enums (it
// imports nothing kernel-specific, so it cannot use bpf2go's types) against
// the types bpf2go generated from bpf/event.h and bpf/common.h.
func TestSharedConstants(t *testing.T) {
	flags := map[string][2]uint64{
		"owner known":     {uint64(model.FlagOwnerKnown), uint64(tcpstateEventFlagEVF_OWNER_KNOWN)},
		"owner inherited": {uint64(model.FlagOwnerInherited), uint64(tcpstateEventFlagEVF_OWNER_INHERITED)},
		"duration known":  {uint64(model.FlagDurationKnown), uint64(tcpstateEventFlagEVF_DURATION_KNOWN)},
		"held":            {uint64(model.FlagHeld), uint64(tcpstateEventFlagEVF_HELD)},
		"illegal":         {uint64(model.FlagKernelIllegal), uint64(tcpstateEventFlagEVF_ILLEGAL)},
		"gap":             {uint64(model.FlagKernelGap), uint64(tcpstateEventFlagEVF_GAP)},
		"active":          {uint64(model.FlagActive), uint64(tcpstateEventFlagEVF_ACTIVE)},
		"cpu task":        {uint64(model.FlagCPUTask), uint64(tcpstateEventFlagEVF_CPU_TASK)},
		"age at least":    {uint64(model.FlagAgeAtLeast), uint64(tcpstateEventFlagEVF_AGE_AT_LEAST)},
		"counts":          {uint64(model.FlagCounts), uint64(tcpstateEventFlagEVF_COUNTS)},
		"port either":     {uint64(model.PortEither), uint64(tcpstatePortKindPORT_EITHER)},
		"port local":      {uint64(model.PortLocal), uint64(tcpstatePortKindPORT_LOCAL)},
		"port remote":     {uint64(model.PortRemote), uint64(tcpstatePortKindPORT_REMOTE)},
		"hist active":     {uint64(model.HistActiveOpen), uint64(tcpstateHistKindHIST_ACTIVE_OPEN)},
		"hist passive":    {uint64(model.HistPassiveOpen), uint64(tcpstateHistKindHIST_PASSIVE_OPEN)},
		"hist lifetime":   {uint64(model.HistLifetime), uint64(tcpstateHistKindHIST_LIFETIME)},
		"hist kinds":      {uint64(model.NumHistKinds), uint64(tcpstateHistKindHIST_KINDS)},
	}
	for name, v := range map[string][2]uint64{
		"fact state mask":   {uint64(model.FactStateMask), uint64(tcpstateCloseFactCF_STATE_MASK)},
		"fact err shift":    {model.FactErrShift, uint64(tcpstateCloseFactCF_ERR_SHIFT)},
		"fact err mask":     {uint64(model.FactErrMask), uint64(tcpstateCloseFactCF_ERR_MASK)},
		"fact rst sent":     {uint64(model.FactRstSent), uint64(tcpstateCloseFactCF_RST_SENT)},
		"fact rst received": {uint64(model.FactRstReceived), uint64(tcpstateCloseFactCF_RST_RECEIVED)},
		"fact closing":      {uint64(model.FactClosing), uint64(tcpstateCloseFactCF_CLOSING)},
		"fact timer shift":  {model.FactTimerShift, uint64(tcpstateCloseFactCF_TIMER_SHIFT)},
		"fact timer mask":   {uint64(model.FactTimerMask), uint64(tcpstateCloseFactCF_TIMER_MASK)},
		"fact live":         {uint64(model.FactLive), uint64(tcpstateCloseFactCF_LIVE)},
		"fact values":       {model.FactValues, uint64(tcpstateCloseFactCF_VALUES)},
		"err none":          {uint64(model.ErrNone), uint64(tcpstateCloseErrCE_NONE)},
		"err refused":       {uint64(model.ErrRefused), uint64(tcpstateCloseErrCE_REFUSED)},
		"err reset":         {uint64(model.ErrReset), uint64(tcpstateCloseErrCE_RESET)},
		"err pipe":          {uint64(model.ErrPipe), uint64(tcpstateCloseErrCE_PIPE)},
		"err timedout":      {uint64(model.ErrTimedOut), uint64(tcpstateCloseErrCE_TIMEDOUT)},
		"err other":         {uint64(model.ErrOther), uint64(tcpstateCloseErrCE_OTHER)},
		"err aborted":       {uint64(model.ErrAborted), uint64(tcpstateCloseErrCE_ABORTED)},
		"timer none":        {uint64(model.TimerNone), uint64(tcpstateCloseTimerCT_NONE)},
		"timer retrans":     {uint64(model.TimerRetrans), uint64(tcpstateCloseTimerCT_RETRANS)},
		"timer probe0":      {uint64(model.TimerProbe0), uint64(tcpstateCloseTimerCT_PROBE0)},
		"timer keepalive":   {uint64(model.TimerKeepalive), uint64(tcpstateCloseTimerCT_KEEPALIVE)},
	} {
		flags[name] = v
	}
	for name, v := range flags {
		if v[0] != v[1] {
			t.Errorf("%s: model has %#x, the BPF object %#x", name, v[0], v[1])
		}
	}
	if model.HistBuckets != int(tcpstateHistSizeHIST_BUCKETS) {
		t.Errorf("model.HistBuckets %d, bpf/event.h HIST_BUCKETS %d", model.HistBuckets, tcpstateHistSizeHIST_BUCKETS)
	}
}

func sampleEvents() []model.Event {
	v4 := model.Event{
		TsNs:       123456789012345,
		Skaddr:     0xffff888102cca500,
		Pid:        4242,
		Comm:       model.CommFrom("curl"),
		CPUPid:     17,
		CPUComm:    model.CommFrom("ksoftirqd/1"),
		Family:     model.AFInet,
		Saddr:      netip.MustParseAddr("10.1.2.3"),
		Daddr:      netip.MustParseAddr("192.168.100.200"),
		Sport:      54321,
		Dport:      443,
		Old:        model.SynSent,
		New:        model.Established,
		OldStateNs: 987654,
		Flags:      model.FlagOwnerKnown | model.FlagDurationKnown,
		LastState:  model.SynSent,
		Netns:      4026531840,
		LossSeq:    9, PrevLossSeq: 7, LossKnown: true,
	}
	v6 := model.Event{
		TsNs:    1,
		Skaddr:  0xffff8881000000c0,
		Pid:     1,
		Comm:    model.CommFrom("exactly16bytes!!"), // no NUL
		CPUPid:  0,
		Family:  model.AFInet6,
		Saddr:   netip.MustParseAddr("2001:db8::1"),
		Daddr:   netip.MustParseAddr("::ffff:127.0.0.1"),
		Sport:   65535,
		Dport:   1,
		Old:     model.Listen,
		New:     model.SynRecv,
		Flags:   model.FlagOwnerKnown | model.FlagOwnerInherited | model.FlagHeld | model.FlagKernelGap,
		Netns:   0xffffffff,
		CPUComm: model.CommFrom("swapper/0"),
		LossSeq: 1 << 40, LossKnown: true,
	}
	return []model.Event{v4, v6}
}

func TestDecodeRoundTrip(t *testing.T) {
	clock := ClockWithOffset(1_700_000_000_000_000_000)
	for _, want := range sampleEvents() {
		raw := Encode(&want)
		if len(raw) != EventSize {
			t.Fatalf("Encode: %d bytes, want %d", len(raw), EventSize)
		}
		var got model.Event
		if err := Decode(raw, clock, &got); err != nil {
			t.Fatalf("Decode(Encode(%v)): %v", want, err)
		}
		want.Time = time.Unix(0, int64(want.TsNs)+1_700_000_000_000_000_000)
		if !got.Time.Equal(want.Time) {
			t.Errorf("time %v, want %v", got.Time, want.Time)
		}
		got.Time, want.Time = time.Time{}, time.Time{}
		if got != want {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
		}
	}
}

// TestDecodeBytes builds a sample byte by byte as the BPF program writes
// it: integers in host (little-endian) order, ports already converted
// from network order, addresses as the kernel's network-order bytes.
func TestDecodeBytes(t *testing.T) {
	raw := make([]byte, EventSize)
	le := binary.LittleEndian
	le.PutUint64(raw[offTsNs:], 5_000_000_000)
	le.PutUint64(raw[offSkaddr:], 0xffff8881deadbeef)
	le.PutUint64(raw[offOldStateNs:], 1500)
	le.PutUint32(raw[offPid:], 0x01020304)
	le.PutUint32(raw[offCPUPid:], 7)
	raw[offFamily], raw[offFamily+1] = 2, 0 // AF_INET
	raw[offSport], raw[offSport+1] = 0x50, 0x00
	raw[offDport], raw[offDport+1] = 0xbb, 0x01
	raw[offOldState], raw[offNewState] = 1, 4 // ESTABLISHED -> FIN_WAIT1
	copy(raw[offSaddr:], []byte{127, 0, 0, 1, 0xaa, 0xaa})
	copy(raw[offDaddr:], []byte{10, 0, 0, 2})
	copy(raw[offComm:], "nginx\x00garbage")
	copy(raw[offCPUComm:], "swapper/1")
	le.PutUint16(raw[offFlags:], model.FlagOwnerKnown|model.FlagDurationKnown|0x100) // a flag from the future is kept
	le.PutUint64(raw[offLossSeq:], 42)
	raw[offLastState] = 1
	le.PutUint32(raw[offNetns:], 4026531993)

	var e model.Event
	if err := Decode(raw, ClockWithOffset(0), &e); err != nil {
		t.Fatal(err)
	}
	want := model.Event{
		TsNs:       5_000_000_000,
		Time:       time.Unix(5, 0),
		Skaddr:     0xffff8881deadbeef,
		OldStateNs: 1500,
		Pid:        0x01020304,
		Comm:       model.CommFrom("nginx\x00garbage"),
		CPUPid:     7,
		CPUComm:    model.CommFrom("swapper/1"),
		Family:     model.AFInet,
		Saddr:      netip.MustParseAddr("127.0.0.1"), // only the first 4 bytes
		Daddr:      netip.MustParseAddr("10.0.0.2"),
		Sport:      80,
		Dport:      443,
		Old:        model.Established,
		New:        model.FinWait1,
		Flags:      model.FlagOwnerKnown | model.FlagDurationKnown | 0x100,
		LossSeq:    42,
		LossKnown:  true, // every event from the kernel carries its loss sequence
		LastState:  model.Established,
		Netns:      4026531993,
	}
	if !e.Time.Equal(want.Time) {
		t.Errorf("time %v, want %v", e.Time, want.Time)
	}
	e.Time, want.Time = time.Time{}, time.Time{}
	if e != want {
		t.Errorf("decoded\n %+v\nwant\n %+v", e, want)
	}
	if e.Comm.String() != "nginx" {
		t.Errorf("comm %q, want %q", e.Comm.String(), "nginx")
	}

	// IPv6: all 16 bytes, in order.
	raw[offFamily] = 10
	a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 0x01}
	copy(raw[offSaddr:], a[:])
	copy(raw[offDaddr:], netip.IPv6Loopback().AsSlice())
	if err := Decode(raw, ClockWithOffset(0), &e); err != nil {
		t.Fatal(err)
	}
	if e.Family != model.AFInet6 || e.Saddr != netip.MustParseAddr("2001:db8::1") || e.Daddr != netip.IPv6Loopback() {
		t.Errorf("IPv6: family %v saddr %v daddr %v", e.Family, e.Saddr, e.Daddr)
	}
}

func TestDecodeErrors(t *testing.T) {
	good := Encode(&sampleEvents()[0])
	mutate := func(f func(raw []byte) []byte) []byte {
		raw := append([]byte(nil), good...)
		return f(raw)
	}
	for _, c := range []struct {
		name string
		raw  []byte
		want string
	}{
		{"empty", nil, fmt.Sprintf("sample is 0 bytes, want %d", EventSize)},
		{"short", good[:EventSize-1], fmt.Sprintf("sample is %d bytes, want %d", EventSize-1, EventSize)},
		{"long", append(append([]byte(nil), good...), 0, 0, 0, 0, 0, 0, 0, 0), fmt.Sprintf("sample is %d bytes, want %d", EventSize+8, EventSize)},
		{"old state 0", mutate(func(r []byte) []byte { r[offOldState] = 0; return r }), "invalid TCP states 0 -> 1"},
		{"new state 13", mutate(func(r []byte) []byte { r[offNewState] = 13; return r }), "invalid TCP states 2 -> 13"},
		{"state 255", mutate(func(r []byte) []byte { r[offOldState], r[offNewState] = 255, 255; return r }), "invalid TCP states 255 -> 255"},
		{"family 0", mutate(func(r []byte) []byte { r[offFamily] = 0; return r }), "unknown address family 0"},
		{"family AF_UNIX", mutate(func(r []byte) []byte { r[offFamily] = 1; return r }), "unknown address family 1"},
	} {
		var e model.Event
		err := Decode(c.raw, ClockWithOffset(0), &e)
		if err == nil {
			t.Errorf("%s: Decode accepted it: %+v", c.name, e)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "decoding event: ") {
			t.Errorf("%s: error %q, want \"decoding event: ...%s...\"", c.name, err, c.want)
		}
	}
	// Every state number the kernel defines decodes.
	for s := model.Established; s < model.NumStates; s++ {
		raw := mutate(func(r []byte) []byte { r[offOldState], r[offNewState] = byte(s), byte(s); return r })
		var e model.Event
		if err := Decode(raw, ClockWithOffset(0), &e); err != nil || e.Old != s || e.New != s {
			t.Errorf("state %v: %v (decoded %v -> %v)", s, err, e.Old, e.New)
		}
	}
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	raws := [][]byte{Encode(&sampleEvents()[0]), Encode(&sampleEvents()[1])}
	clock := ClockWithOffset(0)
	var e model.Event
	if n := testing.AllocsPerRun(100, func() {
		for _, raw := range raws {
			if err := Decode(raw, clock, &e); err != nil {
				t.Fatal(err)
			}
		}
	}); n != 0 {
		t.Errorf("Decode allocates %v times per call", n)
	}
}

func TestClock(t *testing.T) {
	c := ClockWithOffset(-500)
	if got := c.Wall(1500); !got.Equal(time.Unix(0, 1000)) {
		t.Errorf("Wall(1500) with offset -500 = %v, want 1000ns after the epoch", got)
	}
	// NewClock maps "now" on the monotonic clock to about now.
	now := NewClock().Wall(uint64(monotonicNow()))
	if d := time.Since(now); d < -time.Second || d > time.Second {
		t.Errorf("NewClock: the monotonic now is %v away from the wall-clock now", d)
	}
}

package tracer

import (
	"os"
	"strings"
	"testing"
	"unsafe"

	"github.com/tcpstate/tcpstate/model"
)

// TestMemory: the estimate is the kernel's own accounting. The figures
// were read from bpftool map show (memlock) for tcpstate trace
// --max-sockets 1048576 --ring-size 4194304 on Linux 6.18: accepted
// 109,052,992 bytes (the estimate leaves out 1,088 bytes of map header and
// per-CPU extra entries), held 16,778,112 before any entry is used, events
// 4,223,304 (the ring and its page table).
func TestMemory(t *testing.T) {
	o := Options{MaxSockets: 1 << 20, RingSize: 4 << 20}
	m := o.Memory()
	if m.Accepted != 109_051_904 || m.HeldIndex != 16<<20 || m.Ring != 4<<20 || m.Held != 0 {
		t.Errorf("no filters: %+v", m)
	}
	o.Filter = model.Filter{Pids: []uint32{1}}
	// A held-back entry: the hash element (48 bytes of overhead, the key,
	// the value: struct held, whose size follows struct event) and the
	// list node of a map that is not preallocated.
	heldEntry := uint64(48 + 8 + unsafe.Sizeof(tcpstateHeld{}) + 8)
	if m := o.Memory(); m.Held != (1<<20)*heldEntry || m.AtMost() != m.AtStart()+m.Held {
		t.Errorf("--pid: %+v; want every held-back queue counted (%d bytes each)", m, heldEntry)
	}
	// Not a power of two: the buckets round up.
	o = Options{MaxSockets: 100_000, RingSize: 1 << 20}
	if m := o.Memory(); m.HeldIndex != 16*131072 || m.Accepted != 100_000*88+16*131072 {
		t.Errorf("100000 sockets: %+v", m)
	}
	// stats sends nothing: its ring is one page, whatever RingSize says.
	o = Options{Mode: ModeAggregate, RingSize: 1 << 30}
	if m := o.Memory(); m.Ring != uint64(os.Getpagesize()) || m.Accepted != DefaultMaxSockets*88+16*DefaultMaxSockets {
		t.Errorf("stats defaults: %+v", m)
	}
	if start, held := SocketMemory(); start != 88+32 || held != heldEntry {
		t.Errorf("SocketMemory = %d, %d; want 120, %d", start, held, heldEntry)
	}
	if want := uint64(EventSize+7)&^7 + 8; RingRecordBytes != want {
		t.Errorf("RingRecordBytes = %d, want %d: the event and the 8-byte header", RingRecordBytes, want)
	}
}

func TestParseMemTotal(t *testing.T) {
	n, err := parseMemTotal(strings.NewReader("MemFree:  100 kB\nMemTotal:       24684084 kB\n"))
	if err != nil || n != 24684084<<10 {
		t.Errorf("parseMemTotal = %d, %v", n, err)
	}
	for _, bad := range []string{"", "MemTotal: lots\n", "MemTotal: 5 MB\n"} {
		if _, err := parseMemTotal(strings.NewReader(bad)); err == nil {
			t.Errorf("parseMemTotal(%q): no error", bad)
		}
	}
	if n, err := HostMemTotal(); err != nil || n < 64<<20 {
		t.Errorf("HostMemTotal on this machine: %d, %v", n, err)
	}
}

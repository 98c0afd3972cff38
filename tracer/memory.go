package tracer

import (
	"bufio"
	"fmt"
	"io"
	"math/bits"
	"os"
	"strconv"
	"strings"
	"unsafe"
)

// What the kernel's maps cost, as the kernel accounts them (the "memlock"
// that bpftool shows: htab_map_mem_usage() and ringbuf_map_mem_usage() in
// kernel/bpf). The sizes of keys and values come from the BPF object's
// types through bpf2go, so they follow bpf/maps.h.
const (
	// htabElemOverhead is struct htab_elem without its key and value: the
	// hash node, the hash and the free-list link (48 bytes on 64-bit
	// kernels). Measured: the accept map of 1,048,576 entries (key 8,
	// value 32) is 109,052,992 bytes, 104 per entry with the bucket.
	htabElemOverhead = 48
	// htabBucket is one struct bucket (list head and lock), one per
	// entry rounded up to a power of two, allocated with the map.
	htabBucket = 16
	// llistNode is added to each entry of a map that is not preallocated
	// (BPF_F_NO_PREALLOC), allocated when the entry is inserted.
	llistNode = 8
	// ringRecordHeader is BPF_RINGBUF_HDR_SZ, in front of every record.
	ringRecordHeader = 8
)

var (
	heldEntryBytes     = htabEntry(8, uint64(unsafe.Sizeof(tcpstateHeld{}))) + llistNode
	acceptedEntryBytes = htabEntry(8, uint64(unsafe.Sizeof(tcpstateAccepted{})))
	// RingRecordBytes is what one event takes in the ring buffer.
	RingRecordBytes = roundUp8(uint64(unsafe.Sizeof(tcpstateEvent{}))) + ringRecordHeader
)

func roundUp8(n uint64) uint64 { return (n + 7) &^ 7 }

func htabEntry(key, value uint64) uint64 {
	return htabElemOverhead + roundUp8(key) + roundUp8(value)
}

// htabBuckets is the bucket array of a hash map of n entries.
func htabBuckets(n uint64) uint64 {
	if n <= 1 {
		return htabBucket
	}
	return htabBucket << bits.Len64(n-1)
}

// Memory is what the maps that the options size cost in kernel memory, in
// bytes. The maps of fixed size (filters, counters, the stats tables) are a
// few hundred KiB at most and are left out.
type Memory struct {
	// Ring is the ring buffer: locked kernel memory, which tcpstate also
	// maps into its own address space to read it.
	Ring uint64
	// Accepted is the accept map: preallocated, so paid in full at start.
	Accepted uint64
	// HeldIndex is the held-back map's bucket array, paid at start.
	HeldIndex uint64
	// Held is the held-back map's entries when every one is in use: only
	// sockets that wait for a port or pid filter's decision take one, so
	// it is 0 without such filters.
	Held uint64
}

// AtStart is what the maps take as soon as they are created.
func (m Memory) AtStart() uint64 { return m.Ring + m.Accepted + m.HeldIndex }

// AtMost is what they take with every entry in use.
func (m Memory) AtMost() uint64 { return m.AtStart() + m.Held }

// Memory says what the maps sized by o will cost: the same sizes Load
// gives them (configure).
func (o *Options) Memory() Memory {
	n := uint64(o.MaxSockets)
	if n == 0 {
		n = DefaultMaxSockets
	}
	ring := uint64(o.RingSize)
	if ring == 0 {
		ring = DefaultRingSize
	}
	if o.Mode == ModeAggregate {
		ring = uint64(os.Getpagesize()) // nothing is sent
	}
	m := Memory{
		Ring:      ring,
		Accepted:  n*acceptedEntryBytes + htabBuckets(n),
		HeldIndex: htabBuckets(n),
	}
	if o.Filter.Sticky() {
		m.Held = n * heldEntryBytes
	}
	return m
}

// SocketMemory is what one --max-sockets entry costs: at start (the
// preallocated accept map and the held-back index; the index grows by
// powers of two, this is its share per entry) and, for a socket whose
// events are held back, while they wait.
func SocketMemory() (atStart, held uint64) {
	return acceptedEntryBytes + 2*htabBucket, heldEntryBytes
}

// HostMemTotal reads the host's memory size (MemTotal in /proc/meminfo),
// in bytes.
func HostMemTotal() (uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("reading the host's memory size: %w", err)
	}
	defer f.Close()
	return parseMemTotal(f)
}

func parseMemTotal(r io.Reader) (uint64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			break
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			break
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading /proc/meminfo: %w", err)
	}
	return 0, fmt.Errorf("no MemTotal line in /proc/meminfo")
}

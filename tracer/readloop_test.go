package tracer

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/model"
)

// fakeRing plays the ring buffer: each Drain delivers the next batch, what
// was pending when the reader looked.
type fakeRing struct {
	batches [][][]byte
	pending []int // Pending's answers, one per call (then 0)
	err     error // returned by Drain once the batches are used up
}

func (f *fakeRing) Drain(fn func([]byte) error) (int, error) {
	if len(f.batches) == 0 {
		return 0, f.err
	}
	b := f.batches[0]
	f.batches = f.batches[1:]
	for i, s := range b {
		if err := fn(s); err != nil {
			return i + 1, err
		}
	}
	return len(b), nil
}

func (f *fakeRing) Pending() int {
	if len(f.pending) == 0 {
		return 0
	}
	p := f.pending[0]
	f.pending = f.pending[1:]
	return p
}

func (f *fakeRing) Size() int { return 1 << 20 }

type recordingHandler struct {
	events []model.Event
	// atFlush is the number of events seen at each flush.
	atFlush  []int
	stopAt   int
	cancel   context.CancelFunc
	cancelAt int // flushes before cancel
}

func (h *recordingHandler) Event(e *model.Event) error {
	h.events = append(h.events, *e)
	if h.stopAt > 0 && len(h.events) == h.stopAt {
		return ErrStop
	}
	return nil
}

func (h *recordingHandler) Flush() error {
	h.atFlush = append(h.atFlush, len(h.events))
	if h.cancel != nil && len(h.atFlush) == h.cancelAt {
		h.cancel()
	}
	return nil
}

func sample(skaddr uint64, old, new model.State) []byte {
	lo := netip.MustParseAddr("127.0.0.1")
	return Encode(&model.Event{
		TsNs: 1000, Skaddr: skaddr, Family: model.AFInet, Saddr: lo, Daddr: lo,
		Sport: 1, Dport: 2, Old: old, New: new,
	})
}

func TestReadLoopDeliversInOrderAndFlushesWhenDrained(t *testing.T) {
	r := &fakeRing{batches: [][][]byte{
		{sample(1, model.Close, model.SynSent), sample(1, model.SynSent, model.Established)},
		{},
		{sample(2, model.Close, model.Listen)},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := &recordingHandler{cancel: cancel, cancelAt: 3}
	if err := readLoop(ctx, r, ClockWithOffset(0), time.Millisecond, h); err != nil {
		t.Fatal(err)
	}
	if len(h.events) != 3 || h.events[0].New != model.SynSent || h.events[1].New != model.Established || h.events[2].New != model.Listen {
		t.Fatalf("events %+v, want the three samples in order", h.events)
	}
	if len(h.atFlush) != 3 || h.atFlush[0] != 2 || h.atFlush[1] != 2 || h.atFlush[2] != 3 {
		t.Errorf("events seen at each flush %v, want [2 2 3]: a flush comes after each drained batch", h.atFlush)
	}
}

// A busy ring (more than a quarter pending after a drain) is read again at
// once, not after a poll interval.
func TestReadLoopReadsABusyRingAtOnce(t *testing.T) {
	r := &fakeRing{
		batches: [][][]byte{{sample(1, model.Close, model.SynSent)}, {sample(1, model.SynSent, model.Established)}},
		pending: []int{1 << 19},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := &recordingHandler{cancel: cancel, cancelAt: 2}
	start := time.Now()
	if err := readLoop(ctx, r, ClockWithOffset(0), time.Hour, h); err != nil {
		t.Fatal(err)
	}
	if len(h.events) != 2 {
		t.Fatalf("%d events, want 2", len(h.events))
	}
	if d := time.Since(start); d > time.Minute {
		t.Errorf("the loop waited %v between two batches of a busy ring", d)
	}
}

func TestReadLoopStops(t *testing.T) {
	t.Run("ErrStop from the handler is a clean end", func(t *testing.T) {
		r := &fakeRing{batches: [][][]byte{{sample(1, model.Close, model.SynSent), sample(1, model.SynSent, model.Close), sample(2, model.Close, model.SynSent)}}}
		h := &recordingHandler{stopAt: 2}
		if err := readLoop(context.Background(), r, ClockWithOffset(0), time.Millisecond, h); err != nil {
			t.Fatalf("got %v, want nil", err)
		}
		if len(h.events) != 2 {
			t.Errorf("%d events, want 2: nothing after ErrStop", len(h.events))
		}
	})
	t.Run("a cancelled context ends the loop within a poll interval", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		r := &fakeRing{}
		done := make(chan error, 1)
		go func() { done <- readLoop(ctx, r, ClockWithOffset(0), 10*time.Millisecond, &recordingHandler{}) }()
		time.Sleep(30 * time.Millisecond)
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("got %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the loop did not end after its context was cancelled")
		}
	})
	t.Run("a corrupt sample is an error", func(t *testing.T) {
		r := &fakeRing{batches: [][][]byte{{make([]byte, EventSize-8)}}}
		if err := readLoop(context.Background(), r, ClockWithOffset(0), time.Millisecond, &recordingHandler{}); err == nil {
			t.Fatal("a short sample was accepted")
		}
	})
	t.Run("a ring error is an error", func(t *testing.T) {
		boom := errors.New("boom")
		r := &fakeRing{err: boom}
		if err := readLoop(context.Background(), r, ClockWithOffset(0), time.Millisecond, &recordingHandler{}); !errors.Is(err, boom) {
			t.Fatalf("got %v, want the ring's error", err)
		}
	})
}

func TestDrainReadsWhatIsPending(t *testing.T) {
	r := &fakeRing{batches: [][][]byte{{sample(1, model.Close, model.Listen), sample(1, model.Listen, model.Close)}, {sample(3, model.Close, model.SynSent)}}}
	h := &recordingHandler{}
	if err := drain(r, ClockWithOffset(0), h); err != nil {
		t.Fatal(err)
	}
	if len(h.events) != 2 || len(h.atFlush) != 1 {
		t.Errorf("drain delivered %d events and flushed %d times, want the 2 pending ones and one flush", len(h.events), len(h.atFlush))
	}
}

// memRing lays a ring out in plain memory, as the kernel does in the
// mapping: consumer page, producer page, data twice.
type memRing struct {
	*ring
	size int
	prod uint64
}

func newMemRing(size int) *memRing {
	const page = 64
	cons := make([]byte, page)
	prod := make([]byte, page+2*size)
	r := ringOver(cons, prod, page, size)
	r.unmapped = true
	return &memRing{ring: r, size: size}
}

// put writes a record at the producer position (both copies of the data)
// and moves the producer past it.
func (m *memRing) put(sample []byte, flags uint32) {
	le := binary.LittleEndian
	rec := make([]byte, ringHeaderSize+(len(sample)+7)&^7)
	le.PutUint32(rec, uint32(len(sample))|flags)
	copy(rec[ringHeaderSize:], sample)
	for i, b := range rec {
		off := (m.prod + uint64(i)) & uint64(m.size-1)
		m.data[off] = b
		m.data[off+uint64(m.size)] = b
	}
	m.prod += uint64(len(rec))
	le.PutUint64(m.ring.prod, m.prod)
}

func TestRingDrain(t *testing.T) {
	m := newMemRing(1024)
	var got []uint64
	collect := func(s []byte) error {
		var e model.Event
		if err := Decode(s, ClockWithOffset(0), &e); err != nil {
			return err
		}
		got = append(got, e.Skaddr)
		return nil
	}
	// Enough records to wrap around the 1 KiB ring several times, read in
	// several drains; a discarded record is skipped; a busy one stops the
	// drain until it is committed.
	next := uint64(1)
	for round := 0; round < 20; round++ {
		m.put(sample(next, model.Close, model.SynSent), 0)
		m.put(sample(999, model.Close, model.SynSent), ringDiscardBit)
		m.put(sample(next+1, model.Close, model.SynSent), 0)
		n, err := m.Drain(collect)
		if err != nil || n != 2 {
			t.Fatalf("round %d: Drain read %d records (%v), want 2", round, n, err)
		}
		next += 2
	}
	for i, sk := range got {
		if sk != uint64(i+1) {
			t.Fatalf("record %d has skaddr %d, want %d: order or wrap-around broken (%v)", i, sk, i+1, got)
		}
	}
	if m.Pending() != 0 {
		t.Errorf("%d bytes pending after the drains, want 0", m.Pending())
	}
	busyAt := m.prod
	m.put(sample(100, model.Close, model.SynSent), ringBusyBit)
	if n, err := m.Drain(collect); n != 0 || err != nil {
		t.Fatalf("Drain read %d records (%v) past a record still being written", n, err)
	}
	// The kernel commits it: the busy bit goes.
	le := binary.LittleEndian
	off := busyAt & uint64(m.size-1)
	for _, o := range []uint64{off, off + uint64(m.size)} {
		le.PutUint32(m.data[o:], le.Uint32(m.data[o:])&^ringBusyBit)
	}
	if n, err := m.Drain(collect); n != 1 || err != nil || got[len(got)-1] != 100 {
		t.Fatalf("Drain read %d records (%v) after the commit, want the committed one", n, err)
	}
}

// steppingClock is a ClockSource whose realtime clock is stepped by step
// after its first reading, as NTP or date -s steps the host's clock while
// tcpstate runs; its monotonic clock stands still.
type steppingClock struct {
	base, step int64
	reads      int
}

func (c *steppingClock) Read() (realtime, monotonic int64) {
	c.reads++
	if c.reads > 1 {
		return c.base + c.step, 0
	}
	return c.base, 0
}

// TestReadLoopFollowsAClockStep: the loop takes the offset between the
// clocks again before every drain, so the wall-clock time of events read
// after a step of the realtime clock follows the step (before, the offset
// was taken once at Attach: every time after the step was off by it).
func TestReadLoopFollowsAClockStep(t *testing.T) {
	base := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano()
	src := &steppingClock{base: base, step: int64(time.Hour)}
	r := &fakeRing{batches: [][][]byte{
		{sample(1, model.Close, model.SynSent)},
		{sample(1, model.SynSent, model.Established)},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := &recordingHandler{cancel: cancel, cancelAt: 2}
	if err := readLoop(ctx, r, src, time.Millisecond, h); err != nil {
		t.Fatal(err)
	}
	if len(h.events) != 2 {
		t.Fatalf("%d events, want 2", len(h.events))
	}
	// Both samples have the kernel time 1000 ns.
	want0, want1 := time.Unix(0, base+1000), time.Unix(0, base+int64(time.Hour)+1000)
	if !h.events[0].Time.Equal(want0) || !h.events[1].Time.Equal(want1) {
		t.Errorf("times %v and %v, want %v before the step and %v after it", h.events[0].Time, h.events[1].Time, want0, want1)
	}
}

func TestParseTimensOffsets(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"monotonic           0         0\nboottime            0         0\n", 0, true},
		{"monotonic       86400         0\nboottime            0         0\n", 86400e9, true},
		{"boottime 5 0\nmonotonic -3600 500\n", -3600e9 + 500, true},
		{"1 7 3\n7 0 0\n", 7e9 + 3, true}, // clocks by number
		{"", 0, false},
		{"monotonic x 0\n", 0, false},
	} {
		got, ok := parseTimensOffsets([]byte(c.in))
		if got != c.want || ok != c.ok {
			t.Errorf("parseTimensOffsets(%q) = %d %v, want %d %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

package main

import (
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// benchCgroups makes a cgroup tree in a temporary directory, with paths as
// container runtimes lay them out, and a resolver of it warmed up: the
// hot path then finds every event's cgroup in the cache, as it does on a
// host whose sockets live in a few hundred cgroups at most. It returns
// the cgroups' ids.
func benchCgroups(tb testing.TB) (*tracer.CgroupResolver, []uint64) {
	tb.Helper()
	dir := tb.TempDir()
	var ids []uint64
	for _, p := range []string{
		"system.slice/docker-4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970.scope",
		"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3a9f5c2e_7d41_4b8e_9c06_51f2e8a7d3b4.slice/cri-containerd-9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08.scope",
		"machine.slice/libpod-b6e375cfe46efa5cd90d095603dec2de888c28b203285819233040b5cf1212ac.scope/container",
		"system.slice/nginx.service",
		"user.slice/user-1000.slice/session-3.scope",
	} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			tb.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, p), &st); err != nil {
			tb.Fatal(err)
		}
		ids = append(ids, st.Ino)
	}
	r := tracer.NewCgroupResolver(tracer.CgroupFS{Mount: dir, Root: "/"}, 0, 0)
	tb.Cleanup(r.Close)
	for _, id := range ids {
		if r.Lookup(id) == nil {
			tb.Fatalf("the bench cgroup %d did not resolve", id)
		}
	}
	return r, ids
}

// connectionSamples encodes n loopback connections as the BPF program sends
// them: 10 transitions each (client and accepted child), in ring order.
// cgroups, if given, are the sockets' cgroup ids, a connection's in turn.
func connectionSamples(n int, cgroups ...uint64) [][]byte {
	lo := netip.MustParseAddr("127.0.0.1")
	steps := []struct {
		child    bool
		old, new model.State
	}{
		{false, model.Close, model.SynSent},
		{false, model.SynSent, model.Established},
		{true, model.Listen, model.SynRecv},
		{true, model.SynRecv, model.Established},
		{false, model.Established, model.FinWait1},
		{true, model.Established, model.CloseWait},
		{true, model.CloseWait, model.LastAck},
		{false, model.FinWait1, model.FinWait2},
		{false, model.FinWait2, model.Close},
		{true, model.LastAck, model.Close},
	}
	var out [][]byte
	ts := uint64(1_000_000_000)
	for i := range n {
		client := 0xffff888100000000 + uint64(i%512)*0x1000
		child := client + 0x800
		cport := uint16(30000 + i%30000)
		for _, s := range steps {
			ts += 5000
			e := model.Event{
				TsNs: ts, Pid: 4242, CPUPid: 4242, Family: model.AFInet,
				Saddr: lo, Daddr: lo, Old: s.old, New: s.new, OldStateNs: 5000,
				Comm: model.CommFrom("loadgen"), CPUComm: model.CommFrom("loadgen"),
				Flags: model.FlagOwnerKnown | model.FlagDurationKnown, Netns: 4026531833,
			}
			if len(cgroups) > 0 {
				e.CgroupID = cgroups[i%len(cgroups)]
			}
			if s.child {
				e.Skaddr, e.Sport, e.Dport = child, 18080, cport
			} else {
				e.Skaddr, e.Sport, e.Dport = client, cport, 18080
			}
			if s.old == model.Close || s.old == model.Listen {
				e.Flags &^= model.FlagDurationKnown
			}
			out = append(out, tracer.Encode(&e))
		}
	}
	return out
}

// newBenchHandler makes the handler runTrace makes for mode, with the
// resolver cg for the modes that show cgroups (nil: none, as before the
// resolution).
func newBenchHandler(mode string, w io.Writer, cg *tracer.CgroupResolver) *traceHandler {
	p, err := newPrinter(mode, true)
	if err != nil {
		panic(err)
	}
	m, _ := model.ModelByName("linux")
	h := &traceHandler{
		out: newAsyncOut(w, 64<<10, nil), p: p, buf: outBuf{b: make([]byte, 0, 64<<10)},
		tracker: model.NewTracker(m, 0),
	}
	if mode != outTable {
		h.cgroups = cg
	}
	h.buf.b = p.header(h.buf.b) // as runTrace does
	return h
}

// hotPath is what tracer.Run does per ring buffer record: decode, then the
// handler checks and formats.
func hotPath(h *traceHandler, clock tracer.Clock, samples [][]byte, ev *model.Event, i int) {
	if err := tracer.Decode(samples[i%len(samples)], clock, ev); err != nil {
		panic(err)
	}
	if err := h.Event(ev); err != nil {
		panic(err)
	}
}

// BenchmarkHotPath measures the user-space cost of one event: decode ->
// check -> resolve the socket's cgroup (json and wide; a cache hit) ->
// format -> buffered write, per output mode.
func BenchmarkHotPath(b *testing.B) {
	cg, ids := benchCgroups(b)
	samples := connectionSamples(2000, ids...)
	clock := tracer.ClockWithOffset(time.Now().UnixNano())
	for _, mode := range []string{outJSON, outTable, outWide} {
		b.Run(mode, func(b *testing.B) {
			h := newBenchHandler(mode, io.Discard, cg)
			var ev model.Event
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				hotPath(h, clock, samples, &ev, i)
			}
		})
	}
}

// BenchmarkHotPathNoCgroups is BenchmarkHotPath's load as it was before
// sockets had cgroups (no ids, nothing resolved): with BenchmarkHotPath
// it separates the resolution and its longer output from the rest.
func BenchmarkHotPathNoCgroups(b *testing.B) {
	samples := connectionSamples(2000)
	clock := tracer.ClockWithOffset(time.Now().UnixNano())
	for _, mode := range []string{outJSON, outTable, outWide} {
		b.Run(mode, func(b *testing.B) {
			h := newBenchHandler(mode, io.Discard, nil)
			var ev model.Event
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				hotPath(h, clock, samples, &ev, i)
			}
		})
	}
}

// The JSON hot path must not allocate per event: at 200k events/s garbage
// per event is the tracer's CPU bill. (An allocation count, not a timing.)
func TestHotPathAllocatesNothing(t *testing.T) {
	cg, ids := benchCgroups(t)
	samples := connectionSamples(200, ids...)
	clock := tracer.ClockWithOffset(time.Now().UnixNano())
	for _, mode := range []string{outJSON, outTable, outWide} {
		h := newBenchHandler(mode, io.Discard, cg)
		var ev model.Event
		i := 0
		// Warm up: the tracker's table and the buffers reach their size.
		for ; i < len(samples); i++ {
			hotPath(h, clock, samples, &ev, i)
		}
		// json and wide resolve each socket's cgroup (from the cache).
		if got := ev.Cgroup != nil; got != (mode != outTable) {
			t.Errorf("%s: the event's cgroup resolved %v", mode, got)
		}
		allocs := testing.AllocsPerRun(5000, func() {
			hotPath(h, clock, samples, &ev, i)
			i++
		})
		if allocs != 0 {
			t.Errorf("%s: %.2f allocations per event, want 0", mode, allocs)
		}
		if st := h.tracker.Stats(); st.Anomalies() != 0 {
			t.Errorf("%s: the synthetic connections gave %d anomalies: %+v", mode, st.Anomalies(), st)
		}
	}
}

package testnet

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/model"
)

// The oracle: the kernel's own record of sock:inet_sock_set_state, in a
// private tracefs instance (its own ring buffer: the global trace and other
// instances are untouched). It sees every namespace, so its filter selects
// the test's ports; each test's namespace has ports no one else uses.
//
// The event's default output has the addresses but not skaddr; the "fields"
// option prints skaddr but not the 16-byte IPv6 addresses. The trace file
// is read twice (recording stopped), once each way, and the two views are
// joined line by line. Kernels before 6.3 have no "fields" option: there
// the oracle decodes the binary buffers instead (rawtrace.go).

const tracefsDir = "/sys/kernel/tracing"

var instanceSeq atomic.Int64

// instancePrefix names the instances: tcpstate-test-PID-N.
const instancePrefix = "tcpstate-test-"

// removeStaleInstances removes the instances of test processes that died
// without cleaning up (killed, timed out): each keeps a ring buffer.
func removeStaleInstances() {
	ents, err := os.ReadDir(filepath.Join(tracefsDir, "instances"))
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), instancePrefix)
		if !ok {
			continue
		}
		pid, _, _ := strings.Cut(rest, "-")
		if _, err := strconv.Atoi(pid); err != nil {
			continue
		}
		if _, err := os.Stat("/proc/" + pid); os.IsNotExist(err) {
			os.Remove(filepath.Join(tracefsDir, "instances", e.Name()))
		}
	}
}

// OracleEvent is one line of the kernel's record.
type OracleEvent struct {
	CPU  int
	Time string // CLOCK_MONOTONIC seconds, as tracefs prints it (trace_clock mono)
	// Ns is Time in nanoseconds (microsecond precision): comparable with
	// tcpstate's event timestamps (bpf_ktime_get_ns) and monotonic time
	// read by the test.
	Ns       uint64
	Task     string // the task on the CPU, and its pid
	TaskPid  int
	Skaddr   uint64
	Old, New model.State
	Sport    uint16
	Dport    uint16
	Family   model.Family
	Protocol uint16
	Saddr    netip.Addr
	Daddr    netip.Addr
}

func (e OracleEvent) String() string {
	return fmt.Sprintf("[%d] %s %s-%d skaddr=%#x %v->%v %s %v:%d -> %v:%d proto=%d",
		e.CPU, e.Time, e.Task, e.TaskPid, e.Skaddr, e.Old, e.New, e.Family, e.Saddr, e.Sport, e.Daddr, e.Dport, e.Protocol)
}

// Oracle is a private tracefs instance recording inet_sock_set_state.
type Oracle struct {
	dir  string
	raw  bool // read the binary buffers (rawtrace.go), not the text views
	once sync.Once
	evs  []OracleEvent
	err  error
}

// ServiceFilter is a tracefs filter for the TCP (protocol 6) transitions
// of connections to one service port from clients whose ports are in
// [lo, hi] (or 0, before connect() picks it): a server's listener, its
// children and their clients, when the clients' namespace has the
// ephemeral range [lo, hi] (one wider than a port block, for loads of
// hundreds of connections). Pick a range that excludes the server ports of
// other tests' loads (18080) and the port blocks: above 32767.
func ServiceFilter(port, lo, hi uint16) string {
	peer := func(f string) string { return fmt.Sprintf("(%s==0 || (%s>=%d && %s<=%d))", f, f, lo, f, hi) }
	return fmt.Sprintf("protocol==6 && ((sport==%d && %s) || (dport==%d && %s))", port, peer("dport"), port, peer("sport"))
}

// PortFilter is a tracefs filter for TCP (protocol 6) transitions whose
// ports are both in [lo, hi] or 0, one of them at least in it: every
// transition of a namespace's sockets when all their ports are in its block
// (a listener's peer port is 0, and CLOSE->SYN_SENT's source port too when
// connect() picks it). Either port in the block would not do: a load
// generator elsewhere with a wide ephemeral range connects from ports in
// the block to its own server's port. A listener that autobinds is not
// seen at its CLOSE->LISTEN (sport 0 and dport 0): bind listeners.
func PortFilter(lo, hi uint16) string {
	in := func(f string) string { return fmt.Sprintf("(%s>=%d && %s<=%d)", f, lo, f, hi) }
	return fmt.Sprintf("protocol==6 && (%s || %s) && (%s || sport==0) && (%s || dport==0)",
		in("sport"), in("dport"), in("sport"), in("dport"))
}

// Oracle starts recording the namespace's port block (PortFilter of
// PortRange) in a new tracefs instance.
func (ns *NS) Oracle(t testing.TB) *Oracle {
	t.Helper()
	return NewOracle(t, PortFilter(ns.PortRange()))
}

// NewOracle creates a tracefs instance recording the transitions that
// match filter (tracefs filter syntax on the event's fields), from now
// until Events is first called. It is removed when the test ends.
func NewOracle(t testing.TB, filter string) *Oracle {
	t.Helper()
	return NewOracleSize(t, filter, 512)
}

// NewOracleSize is NewOracle with a buffer of kb KiB per CPU (a load of
// thousands of connections needs more than the default 512: an overflow
// fails Events).
func NewOracleSize(t testing.TB, filter string, kb int) *Oracle {
	t.Helper()
	RequireRoot(t)
	if _, err := os.Stat(filepath.Join(tracefsDir, "instances")); err != nil {
		if err := unix.Mount("nodev", tracefsDir, "tracefs", 0, ""); err != nil {
			t.Fatalf("testnet: tracefs is not mounted on %s and mounting it failed: %v", tracefsDir, err)
		}
	}
	removeStaleInstances()
	name := fmt.Sprintf("%s%d-%d", instancePrefix, os.Getpid(), instanceSeq.Add(1))
	o := &Oracle{dir: filepath.Join(tracefsDir, "instances", name)}
	if err := os.Mkdir(o.dir, 0o755); err != nil {
		t.Fatalf("testnet: creating tracefs instance: %v", err)
	}
	o.raw = !o.hasFieldsOption()
	t.Cleanup(func() {
		o.write("events/sock/inet_sock_set_state/enable", "0")
		removeInstance(t, o.dir)
	})
	ev := "events/sock/inet_sock_set_state/"
	for _, w := range [][2]string{
		{"buffer_size_kb", strconv.Itoa(kb)},
		// The clock of tcpstate's timestamps, so tests can order both.
		{"trace_clock", "mono"},
		{ev + "filter", filter},
		{ev + "enable", "1"},
	} {
		if err := o.write(w[0], w[1]); err != nil {
			t.Fatalf("testnet: %v", err)
		}
	}
	return o
}

// removeInstance removes a tracefs instance the test made. rmdir answers
// EBUSY while a reader (another test's stale-instance sweep, say) still has
// one of its files open: it is tried again, for a second at most.
func removeInstance(t testing.TB, dir string) {
	var err error
	for range 50 {
		if err = os.Remove(dir); !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("testnet: removing tracefs instance %s: %v", dir, err)
	}
}

func (o *Oracle) write(file, value string) error {
	if err := os.WriteFile(filepath.Join(o.dir, file), []byte(value), 0); err != nil {
		return fmt.Errorf("writing %q to tracefs %s: %w", value, file, err)
	}
	return nil
}

// Events stops the recording (on the first call) and returns what it
// recorded, in timestamp order. It fails if the instance's buffer
// overflowed, so a missing event is never the oracle's own loss.
func (o *Oracle) Events() ([]OracleEvent, error) {
	o.once.Do(func() { o.evs, o.err = o.read() })
	return o.evs, o.err
}

var (
	lineRE  = regexp.MustCompile(`^\s*(.+)-(\d+)\s+\[(\d+)\]\s+\S+\s+(\d+\.\d+): inet_sock_set_state: (.*)$`)
	fieldRE = regexp.MustCompile(`(\w+)=(\S+)`)
	countRE = regexp.MustCompile(`entries-in-buffer/entries-written: (\d+)/(\d+)`)
)

type traceLine struct {
	task   string
	pid    int
	cpu    int
	time   string
	fields map[string]string
}

func (o *Oracle) readView(fields bool) ([]traceLine, error) {
	v := "0"
	if fields {
		v = "1"
	}
	if err := o.write("options/fields", v); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(o.dir, "trace"))
	if err != nil {
		return nil, fmt.Errorf("reading tracefs trace: %w", err)
	}
	var out []traceLine
	for _, line := range strings.Split(string(b), "\n") {
		if m := countRE.FindStringSubmatch(line); m != nil && m[1] != m[2] {
			return nil, fmt.Errorf("the tracefs instance lost events: %s", strings.TrimSpace(line))
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := lineRE.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("unexpected tracefs line %q", line)
		}
		pid, _ := strconv.Atoi(m[2])
		cpu, _ := strconv.Atoi(m[3])
		tl := traceLine{task: strings.TrimSpace(m[1]), pid: pid, cpu: cpu, time: m[4], fields: map[string]string{}}
		for _, f := range fieldRE.FindAllStringSubmatch(m[5], -1) {
			tl.fields[f[1]] = f[2]
		}
		out = append(out, tl)
	}
	return out, nil
}

func (o *Oracle) read() ([]OracleEvent, error) {
	if err := o.write("tracing_on", "0"); err != nil {
		return nil, err
	}
	if o.raw {
		return o.readRaw()
	}
	raw, err := o.readView(true)
	if err != nil {
		return nil, err
	}
	pretty, err := o.readView(false)
	if err != nil {
		return nil, err
	}
	if len(raw) != len(pretty) {
		return nil, fmt.Errorf("tracefs views differ: %d lines with fields, %d without", len(raw), len(pretty))
	}
	evs := make([]OracleEvent, 0, len(raw))
	for i := range raw {
		r, p := raw[i], pretty[i]
		if r.cpu != p.cpu || r.time != p.time {
			return nil, fmt.Errorf("tracefs views differ at line %d: [%d] %s vs [%d] %s", i, r.cpu, r.time, p.cpu, p.time)
		}
		e, err := parseOracle(r, p)
		if err != nil {
			return nil, fmt.Errorf("tracefs line %d: %w", i, err)
		}
		evs = append(evs, e)
	}
	return evs, nil
}

// parseOracle joins a line of the fields view (skaddr=0x... oldstate=0x7
// (7) ...) with the same line of the default view (family=AF_INET ...
// saddrv6=::1 ... oldstate=TCP_CLOSE).
func parseOracle(r, p traceLine) (OracleEvent, error) {
	e := OracleEvent{CPU: r.cpu, Time: r.time, Task: r.task, TaskPid: r.pid}
	if sec, frac, ok := strings.Cut(r.time, "."); ok {
		s, err1 := strconv.ParseUint(sec, 10, 64)
		f, err2 := strconv.ParseUint((frac + "000000000")[:9], 10, 64)
		if err1 != nil || err2 != nil {
			return e, fmt.Errorf("timestamp %q", r.time)
		}
		e.Ns = s*1e9 + f
	}
	num := func(key string, bits int) (uint64, error) {
		v, ok := r.fields[key]
		if !ok {
			return 0, fmt.Errorf("no field %s", key)
		}
		n, err := strconv.ParseUint(v, 0, bits)
		if err != nil {
			return 0, fmt.Errorf("field %s=%q: %w", key, v, err)
		}
		return n, nil
	}
	var errs []error
	get := func(key string, bits int) uint64 {
		n, err := num(key, bits)
		errs = append(errs, err)
		return n
	}
	e.Skaddr = get("skaddr", 64)
	e.Old = model.State(get("oldstate", 8))
	e.New = model.State(get("newstate", 8))
	e.Sport = uint16(get("sport", 16))
	e.Dport = uint16(get("dport", 16))
	e.Family = model.Family(get("family", 16))
	e.Protocol = uint16(get("protocol", 16))
	if err := errors.Join(errs...); err != nil {
		return e, err
	}
	// The default view must agree on what both views show.
	if p.fields["sport"] != strconv.Itoa(int(e.Sport)) || p.fields["dport"] != strconv.Itoa(int(e.Dport)) ||
		p.fields["oldstate"] != "TCP_"+e.Old.String() || p.fields["newstate"] != "TCP_"+e.New.String() {
		return e, fmt.Errorf("views disagree: %v vs %v", r.fields, p.fields)
	}
	sk, dk := "saddr", "daddr"
	if e.Family == model.AFInet6 {
		sk, dk = "saddrv6", "daddrv6"
	}
	var err error
	if e.Saddr, err = netip.ParseAddr(p.fields[sk]); err != nil {
		return e, fmt.Errorf("%s: %w", sk, err)
	}
	if e.Daddr, err = netip.ParseAddr(p.fields[dk]); err != nil {
		return e, fmt.Errorf("%s: %w", dk, err)
	}
	return e, nil
}

package testnet_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
)

func TestHelperProcess(t *testing.T) { testnet.HelperProcess() }

// must fails the test on an error and returns the value: must(t).fd(ns.Listen(ap)).
type checker struct{ t *testing.T }

func must(t *testing.T) checker { return checker{t} }

func (c checker) fd(fd int, err error) int {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
	return fd
}

func (c checker) ap(ap netip.AddrPort, err error) netip.AddrPort {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
	return ap
}

func (c checker) str(s string, err error) string {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

func readHost(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func ok(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func inode(t *testing.T, path string) uint32 {
	t.Helper()
	var st unix.Stat_t
	ok(t, unix.Stat(path, &st))
	return uint32(st.Ino)
}

func TestNamespace(t *testing.T) {
	t.Parallel()
	ns := testnet.New(t)
	// Not /proc/self: the namespace thread may be the main thread, whose
	// namespace /proc/self shows. This goroutine's thread is not it.
	host := inode(t, "/proc/thread-self/ns/net")
	if ns.Inode() == 0 || ns.Inode() == host {
		t.Fatalf("namespace inode %d, host %d: want a new namespace", ns.Inode(), host)
	}
	if got := inode(t, ns.Path()); got != ns.Inode() {
		t.Errorf("inode of %s is %d, want %d", ns.Path(), got, ns.Inode())
	}
	other := testnet.New(t)
	if other.Inode() == ns.Inode() {
		t.Errorf("two namespaces share inode %d", ns.Inode())
	}
	if lo1, _ := ns.PortRange(); lo1 == func() uint16 { l, _ := other.PortRange(); return l }() {
		t.Errorf("two namespaces share port block %d", lo1)
	}

	// lo is up with both loopback addresses; the ephemeral port comes from
	// the namespace's range.
	for _, fam := range []int{4, 6} {
		ap := testnet.Addr(fam, ns.Port(0))
		lfd := must(t).fd(ns.Listen(ap))
		cfd := must(t).fd(ns.Connect(ap))
		afd := must(t).fd(ns.Accept(lfd))
		ok(t, ns.Write(cfd, 100))
		ok(t, ns.ReadFull(afd, 100))
		local := must(t).ap(ns.LocalAddr(cfd))
		if lo, hi := ns.EphemeralRange(); local.Port() < lo || local.Port() > hi {
			t.Errorf("IPv%d client port %d outside the namespace's ephemeral range %d-%d", fam, local.Port(), lo, hi)
		}
		if local.Addr() != ap.Addr() {
			t.Errorf("IPv%d client address %v, want %v", fam, local.Addr(), ap.Addr())
		}
		ok(t, ns.Close(cfd))
		ok(t, ns.ReadEOF(afd))
		ok(t, ns.Close(afd))
		ok(t, ns.Close(lfd))
	}
	// The host's loopback does not answer in the namespace: nothing
	// listens on the port there.
	_, err := ns.Connect(testnet.Addr(4, ns.Port(1)))
	if !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("connect to a port nothing listens on: %v, want ECONNREFUSED", err)
	}
}

// /proc/sys/net is resolved in the network namespace of the thread that
// opens it: what SetSysctl writes applies to the namespace only.
func TestSysctlIsPerNamespace(t *testing.T) {
	t.Parallel()
	ns := testnet.New(t)
	const name = "net.ipv4.tcp_fin_timeout"
	hostBefore := readHost(t, "net/ipv4/tcp_fin_timeout")
	hostVal, _ := strconv.Atoi(hostBefore)
	want := strconv.Itoa(hostVal + 7)
	ok(t, ns.SetSysctl(name, want))
	if got := must(t).str(ns.Sysctl(name)); got != want {
		t.Errorf("%s in the namespace = %q, want %q", name, got, want)
	}
	// The writer was the namespace thread: /proc/thread-self/ns/net is the
	// namespace there.
	ok(t, ns.Do(func() error {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		if uint32(st.Ino) != ns.Inode() {
			return fmt.Errorf("namespace thread is in netns %d, want %d", st.Ino, ns.Inode())
		}
		return nil
	}))
	// Another namespace keeps the default.
	if got := must(t).str(testnet.New(t).Sysctl(name)); got == want {
		t.Errorf("%s in a second namespace = %q too", name, got)
	}
	if hostAfter := readHost(t, "net/ipv4/tcp_fin_timeout"); hostAfter != hostBefore {
		t.Errorf("the host's %s changed from %q to %q", name, hostBefore, hostAfter)
	}
	lo, hi := ns.EphemeralRange()
	if got := must(t).str(ns.Sysctl("net/ipv4/ip_local_port_range")); got != fmt.Sprintf("%d\t%d", lo, hi) {
		t.Errorf("ip_local_port_range in the namespace = %q, want %d-%d", got, lo, hi)
	}
}

func TestProc(t *testing.T) {
	t.Parallel()
	ns := testnet.New(t)
	p := ns.StartProc(t)
	if p.Pid() == os.Getpid() || p.Pid() <= 0 {
		t.Fatalf("helper pid %d (test pid %d)", p.Pid(), os.Getpid())
	}
	var _ testnet.Sockets = p
	ap := testnet.Addr(6, ns.Port(2))
	lfd := must(t).fd(p.Listen(ap))
	cfd := must(t).fd(ns.Connect(ap))
	afd := must(t).fd(p.Accept(lfd))
	local := must(t).ap(p.LocalAddr(afd))
	if local != ap {
		t.Errorf("accepted socket's local address %v, want %v", local, ap)
	}
	ok(t, ns.Write(cfd, 10))
	ok(t, p.ReadFull(afd, 10))
	ok(t, p.Close(afd))
	ok(t, ns.ReadEOF(cfd))
	ok(t, ns.Close(cfd))
	ok(t, p.Close(lfd))

	// Errors keep their errno.
	_, err := p.Connect(testnet.Addr(4, ns.Port(3)))
	if !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("helper's connect to a closed port: %v, want ECONNREFUSED", err)
	}
	if err := p.Close(12345); !errors.Is(err, unix.EBADF) {
		t.Errorf("helper's close of a bad fd: %v, want EBADF", err)
	}

	// A listener of the test process, accepted from in the child.
	lfd2 := must(t).fd(ns.Listen(testnet.Addr(4, ns.Port(4))))
	lf, err := ns.SocketFile(lfd2)
	ok(t, err)
	p2 := ns.StartProc(t, lf)
	lf.Close()
	cfd2 := must(t).fd(ns.Connect(testnet.Addr(4, ns.Port(4))))
	afd2 := must(t).fd(p2.Accept(testnet.FirstExtraFD))
	ok(t, ns.Close(cfd2))
	ok(t, p2.ReadEOF(afd2))
	ok(t, p2.Close(afd2))
	ok(t, ns.Close(lfd2))
}

// The oracle records exactly the kernel's transitions for the namespace's
// ports, with skaddr and both address families.
func TestOracle(t *testing.T) {
	t.Parallel()
	ns := testnet.New(t)
	o := ns.Oracle(t)
	oracleTraffic(t, ns)
	evs, err := o.Events()
	ok(t, err)
	type key struct {
		fam model.Family
		sk  uint64
	}
	seqs := map[key][]string{}
	var order []key
	for _, e := range evs {
		if e.Protocol != 6 {
			t.Errorf("non-TCP event %v", e)
		}
		want := netip.MustParseAddr("127.0.0.1")
		if e.Family == model.AFInet6 {
			want = netip.IPv6Loopback()
		}
		if e.Saddr != want {
			t.Errorf("saddr %v, want %v: %v", e.Saddr, want, e)
		}
		k := key{e.Family, e.Skaddr}
		if _, seen := seqs[k]; !seen {
			order = append(order, k)
		}
		seqs[k] = append(seqs[k], e.Old.String()+">"+e.New.String())
	}
	var got []string
	for _, k := range order {
		got = append(got, fmt.Sprintf("%v %s", k.fam, strings.Join(seqs[k], " ")))
	}
	want := []string{
		"ipv4 CLOSE>LISTEN LISTEN>CLOSE",
		"ipv4 CLOSE>SYN_SENT SYN_SENT>ESTABLISHED ESTABLISHED>FIN_WAIT1 FIN_WAIT1>FIN_WAIT2 FIN_WAIT2>CLOSE",
		"ipv4 LISTEN>SYN_RECV SYN_RECV>ESTABLISHED ESTABLISHED>CLOSE_WAIT CLOSE_WAIT>LAST_ACK LAST_ACK>CLOSE",
		"ipv6 CLOSE>LISTEN LISTEN>CLOSE",
		"ipv6 CLOSE>SYN_SENT SYN_SENT>ESTABLISHED ESTABLISHED>FIN_WAIT1 FIN_WAIT1>FIN_WAIT2 FIN_WAIT2>CLOSE",
		"ipv6 LISTEN>SYN_RECV SYN_RECV>ESTABLISHED ESTABLISHED>CLOSE_WAIT CLOSE_WAIT>LAST_ACK LAST_ACK>CLOSE",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("oracle sockets:\n%s\nwant:\n%s\nevents:\n%v", strings.Join(got, "\n"), strings.Join(want, "\n"), evs)
	}
}

// A veth pair joins two namespaces: TCP crosses it; with one end down
// nothing crosses and nothing answers (a SYN waits in SYN_SENT); Remove
// deletes both ends.
func TestVeth(t *testing.T) {
	t.Parallel()
	a, b := testnet.New(t), testnet.New(t)
	v := testnet.NewVeth(t, a, b)
	server := netip.AddrPortFrom(v.AddrB, a.Port(0))
	lfd := must(t).fd(b.Listen(server))
	cfd := must(t).fd(a.Connect(server))
	afd := must(t).fd(b.Accept(lfd))
	ok(t, a.Write(cfd, 100))
	ok(t, b.ReadFull(afd, 100))
	if local := must(t).ap(a.LocalAddr(cfd)); local.Addr() != v.AddrA {
		t.Errorf("client address %v, want end A's %v", local.Addr(), v.AddrA)
	}
	ok(t, a.Close(cfd))
	ok(t, b.ReadEOF(afd))
	ok(t, b.Close(afd))

	ok(t, v.SetLinkB(false))
	fd := must(t).fd(a.ConnectNonblock(server))
	time.Sleep(300 * time.Millisecond)
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	ok(t, err)
	if model.State(info.State) != model.SynSent {
		t.Errorf("a connect over a link whose far end is down is in %v after 300ms, want SYN_SENT", model.State(info.State))
	}
	ok(t, a.Close(fd))
	ok(t, v.SetLinkB(true))
	ok(t, b.Close(lfd))

	exists := func(ns *testnet.NS) bool {
		var found bool
		ok(t, ns.Do(func() error {
			_, err := net.InterfaceByName(testnet.VethName)
			found = err == nil
			return nil
		}))
		return found
	}
	if !exists(a) || !exists(b) {
		t.Fatalf("the veth ends are missing: in A %v, in B %v", exists(a), exists(b))
	}
	v.Remove()
	if exists(a) || exists(b) {
		t.Errorf("after Remove the veth ends are still there: in A %v, in B %v", exists(a), exists(b))
	}
	v.Remove() // again: nothing to do
}

// The reset oracle records the resets the kernel sends between the
// namespace's ports, with their reasons, and tells a socket's reset from
// one answering a packet that matched no socket.
func TestResetOracle(t *testing.T) {
	t.Parallel()
	ns := testnet.New(t)
	o := ns.ResetOracle(t)
	ap := testnet.Addr(4, ns.Port(0))
	lfd := must(t).fd(ns.Listen(ap))
	cfd := must(t).fd(ns.Connect(ap))
	afd := must(t).fd(ns.Accept(lfd))
	client := must(t).ap(ns.LocalAddr(cfd))
	ok(t, ns.SetLinger0(cfd))
	ok(t, ns.Close(cfd)) // a reset from the client's socket
	ok(t, ns.Close(afd))
	ok(t, ns.Close(lfd))
	closed := testnet.Addr(4, ns.Port(1))
	if _, err := ns.Connect(closed); !errors.Is(err, unix.ECONNREFUSED) { // a reset without a socket
		t.Fatalf("connect to a closed port: %v, want ECONNREFUSED", err)
	}
	rs, err := o.Resets()
	ok(t, err)
	var got []string
	for _, r := range rs {
		switch {
		case r.NoSocket && r.Src == closed:
			got = append(got, "no socket "+r.Reason)
		case !r.NoSocket && r.Src == client && r.Dst == ap:
			got = append(got, "client "+r.Reason)
		default:
			got = append(got, r.String())
		}
	}
	if want := "client TCP_STATE, no socket NO_SOCKET"; strings.Join(got, ", ") != want {
		t.Errorf("resets: %s, want %s (%v)", strings.Join(got, ", "), want, rs)
	}
}

// oracleTraffic opens and closes a connection of each family.
func oracleTraffic(t *testing.T, ns *testnet.NS) {
	t.Helper()
	for _, fam := range []int{4, 6} {
		ap := testnet.Addr(fam, ns.Port(0))
		lfd := must(t).fd(ns.Listen(ap))
		cfd := must(t).fd(ns.Connect(ap))
		afd := must(t).fd(ns.Accept(lfd))
		ok(t, ns.Close(cfd))
		ok(t, ns.ReadEOF(afd))
		ok(t, ns.Close(afd))
		ok(t, ns.Close(lfd))
	}
}

// Kernels before 6.3 have no "fields" option, and the oracle decodes the
// binary buffers there: on a kernel that has both, the two readings of one
// recording are the same events.
func TestOracleRawMatchesText(t *testing.T) {
	t.Parallel()
	ns := testnet.New(t)
	o := ns.Oracle(t)
	if !o.HasFieldsOption() {
		t.Skip("this kernel's tracefs has no fields option (Linux 6.3): the oracle reads only its binary buffers here")
	}
	oracleTraffic(t, ns)
	text, raw, err := o.ReadBoth()
	ok(t, err)
	if len(text) == 0 {
		t.Fatal("no events recorded")
	}
	if fmt.Sprint(text) != fmt.Sprint(raw) {
		t.Errorf("binary buffers:\n%v\ntext views:\n%v", raw, text)
	}
	// Ns too, which String does not print: tests order the record by it
	// (it was 0 from the binary buffers, and TestSnapshotRace on 6.1 saw
	// every transition before the tracer's attach).
	for i := range min(len(text), len(raw)) {
		if text[i].Ns != raw[i].Ns || raw[i].Ns == 0 {
			t.Errorf("event %d: Ns %d from the binary buffers, %d from the text view", i, raw[i].Ns, text[i].Ns)
		}
	}
}

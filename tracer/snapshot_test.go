package tracer_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// ssState maps ss's state names to the kernel's.
var ssState = map[string]model.State{
	"ESTAB": model.Established, "SYN-SENT": model.SynSent, "SYN-RECV": model.SynRecv,
	"FIN-WAIT-1": model.FinWait1, "FIN-WAIT-2": model.FinWait2, "TIME-WAIT": model.TimeWait,
	"UNCONN": model.Close, "CLOSE-WAIT": model.CloseWait, "LAST-ACK": model.LastAck,
	"LISTEN": model.Listen, "CLOSING": model.Closing,
}

// ssSocket is one line of `ss -tanpH`.
type ssSocket struct {
	key  string // state local remote
	pids []uint32
}

var ssUsers = regexp.MustCompile(`pid=(\d+)`)

// ssSockets runs ss -tanp in the namespace at path (the oracle for ls).
func ssSockets(t *testing.T, path string) map[string]ssSocket {
	t.Helper()
	// Through testnet: a child forked with the test's sockets open
	// would close one the test closes meanwhile, in its name.
	cmd := exec.Command("nsenter", "--net="+path, "ss", "-tanpH")
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := testnet.RunCmd(cmd)
	out := b.Bytes()
	if err != nil {
		t.Fatalf("ss -tanp in %s: %v\n%s", path, err, out)
	}
	socks := map[string]ssSocket{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		st, ok := ssState[f[0]]
		if !ok {
			t.Fatalf("ss state %q unknown in %q", f[0], line)
		}
		key := fmt.Sprintf("%s %s %s", st, ssAddr(t, f[3]), ssAddr(t, f[4]))
		var pids []uint32
		for _, m := range ssUsers.FindAllStringSubmatch(line, -1) {
			n, _ := strconv.ParseUint(m[1], 10, 32)
			pids = append(pids, uint32(n))
		}
		socks[key] = ssSocket{key: key, pids: pids}
	}
	return socks
}

// ssAddr normalises ss's "addr:port" ("[::1]:80", "0.0.0.0:*", "*:*").
func ssAddr(t *testing.T, s string) string {
	t.Helper()
	i := strings.LastIndex(s, ":")
	host, port := strings.Trim(s[:i], "[]"), s[i+1:]
	if port == "*" {
		port = "0"
	}
	if host == "*" {
		host = "0.0.0.0"
	}
	if i := strings.Index(host, "%"); i >= 0 {
		host = host[:i]
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		t.Fatalf("ss address %q: %v", s, err)
	}
	p, _ := strconv.ParseUint(port, 10, 16)
	return netip.AddrPortFrom(a.Unmap(), uint16(p)).String()
}

func snapKey(s *model.SocketInfo) string {
	return fmt.Sprintf("%s %s %s", s.State, netip.AddrPortFrom(s.Saddr.Unmap(), s.Sport), netip.AddrPortFrom(s.Daddr.Unmap(), s.Dport))
}

// fds checks calls that make a socket or open its file.
type fds struct{ t *testing.T }

func (c fds) fd(fd int, err error) int {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
	return fd
}

func (c fds) file(f *os.File, err error) *os.File {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
	return f
}

// TestSnapshotMatchesSS: sockets made before any tracer exists, in two
// namespaces: a listener held by two processes, an established pair, a
// socket in CLOSE_WAIT, one in FIN_WAIT2 and one in TIME_WAIT. A snapshot
// lists each of them with its state, addresses and owners, exactly as
// `ss -tanp` run in each namespace lists them.
func TestSnapshotMatchesSS(t *testing.T) {
	testnet.RequireRoot(t)
	testnet.NeedTools(t, "ss", "nsenter") // the oracle
	ns1, ns2 := testnet.New(t), testnet.New(t)
	v4 := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	must := fds{t}

	// ns1: a listener on P0 that a helper process also holds.
	lfd := must.fd(ns1.Listen(netip.AddrPortFrom(v4, ns1.Port(0))))
	lf := must.file(ns1.SocketFile(lfd))
	helper := ns1.StartProc(t, lf)
	lf.Close()
	// An established pair.
	c1 := must.fd(ns1.Connect(netip.AddrPortFrom(v4, ns1.Port(0))))
	a1 := must.fd(ns1.Accept(lfd))
	// CLOSE_WAIT (a2, its peer c2 in FIN_WAIT2): the peer closes, a2 does not.
	c2 := must.fd(ns1.Connect(netip.AddrPortFrom(v4, ns1.Port(0))))
	a2 := must.fd(ns1.Accept(lfd))
	if err := ns1.Close(c2); err != nil {
		t.Fatal(err)
	}
	// TIME_WAIT: c3 closes first, then a3.
	c3 := must.fd(ns1.Connect(netip.AddrPortFrom(v4, ns1.Port(0))))
	a3 := must.fd(ns1.Accept(lfd))
	if err := ns1.Close(c3); err != nil {
		t.Fatal(err)
	}
	if err := ns1.ReadEOF(a3); err != nil {
		t.Fatal(err)
	}
	if err := ns1.Close(a3); err != nil {
		t.Fatal(err)
	}
	// ns2: a listener and an IPv6 pair.
	v6 := netip.IPv6Loopback()
	l2 := must.fd(ns2.Listen(netip.AddrPortFrom(v6, ns2.Port(0))))
	c4 := must.fd(ns2.Connect(netip.AddrPortFrom(v6, ns2.Port(0))))
	a4 := must.fd(ns2.Accept(l2))
	time.Sleep(50 * time.Millisecond) // the FINs and ACKs settle
	_, _, _, _ = c1, a1, a2, c4
	_ = a4

	tr, err := tracer.Load(tracer.Options{ListOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	start := time.Now()
	snap, err := tr.Snapshot(tracer.SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot of %d sockets in %d namespaces in %v", len(snap.Sockets), len(snap.Namespaces), time.Since(start))
	me, them := uint32(os.Getpid()), uint32(helper.Pid())
	for _, ns := range []*testnet.NS{ns1, ns2} {
		want := ssSockets(t, ns.Path())
		got := map[string]*model.SocketInfo{}
		for i := range snap.Sockets {
			s := &snap.Sockets[i]
			if s.Netns != ns.Inode() || s.State == model.Close {
				continue
			}
			if got[snapKey(s)] != nil {
				t.Errorf("netns %d: socket %s listed twice", ns.Inode(), snapKey(s))
			}
			got[snapKey(s)] = s
		}
		var gk, wk []string
		for k := range got {
			gk = append(gk, k)
		}
		for k := range want {
			wk = append(wk, k)
		}
		slices.Sort(gk)
		slices.Sort(wk)
		if !slices.Equal(gk, wk) {
			t.Errorf("netns %d: snapshot\n  %s\nss -tanp\n  %s", ns.Inode(), strings.Join(gk, "\n  "), strings.Join(wk, "\n  "))
			continue
		}
		for k, w := range want {
			g := got[k]
			var holders []uint32
			for _, h := range g.Holders {
				holders = append(holders, h.Pid)
			}
			slices.Sort(holders)
			wp := slices.Sorted(slices.Values(w.pids))
			wp = slices.Compact(wp)
			if !slices.Equal(holders, wp) {
				t.Errorf("netns %d: %s: holders %v, ss names %v", ns.Inode(), k, holders, wp)
			}
			if len(wp) > 0 && (!g.OwnerKnown || !slices.Contains(wp, g.Pid)) {
				t.Errorf("netns %d: %s: owner %d (known %v), not among ss's users %v", ns.Inode(), k, g.Pid, g.OwnerKnown, wp)
			}
		}
		t.Logf("netns %d: %d sockets, as ss lists them", ns.Inode(), len(want))
	}
	// The roles, spelled out: the shared listener is held by both.
	for _, s := range snap.Sockets {
		if s.Netns == ns1.Inode() && s.State == model.Listen {
			if len(s.Holders) != 2 || s.Holders[0].Pid != min(me, them) || s.Holders[1].Pid != max(me, them) {
				t.Errorf("the listener's holders %+v, want the test %d and its helper %d", s.Holders, me, them)
			}
		}
	}
	states := map[model.State]int{}
	for _, s := range snap.Sockets {
		if s.Netns == ns1.Inode() {
			states[s.State]++
		}
	}
	for st, n := range map[model.State]int{model.Listen: 1, model.Established: 2, model.CloseWait: 1, model.FinWait2: 1, model.TimeWait: 1} {
		if states[st] != n {
			t.Errorf("netns 1: %d sockets in %s, want %d (all: %v)", states[st], st, n, states)
		}
	}
}

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
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
)

var ssPids = regexp.MustCompile(`pid=(\d+)`)

// ssList runs ss -tanp in the namespace at path: state, local and remote
// (normalised as ls -o json prints them) and the pids it names.
func ssList(t *testing.T, path string) map[string][]uint32 {
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
	socks := map[string][]uint32{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		st, err := model.ParseState(f[0])
		if err != nil {
			t.Fatalf("ss state %q: %v", f[0], err)
		}
		var pids []uint32
		for _, m := range ssPids.FindAllStringSubmatch(line, -1) {
			n, _ := strconv.ParseUint(m[1], 10, 32)
			pids = append(pids, uint32(n))
		}
		slices.Sort(pids)
		socks[fmt.Sprintf("%s %s %s", st, ssAddrPort(t, f[3]), ssAddrPort(t, f[4]))] = slices.Compact(pids)
	}
	return socks
}

func ssAddrPort(t *testing.T, s string) string {
	t.Helper()
	i := strings.LastIndex(s, ":")
	host, port := strings.Trim(s[:i], "[]"), s[i+1:]
	if port == "*" {
		port = "0"
	}
	if host == "*" {
		host = "0.0.0.0"
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		t.Fatalf("ss address %q: %v", s, err)
	}
	p, _ := strconv.ParseUint(port, 10, 16)
	return netip.AddrPortFrom(a.Unmap(), uint16(p)).String()
}

// TestLsMatchesSS runs the built binary: ls -o json --netns for each of two
// namespaces lists exactly the sockets ss -tanp lists there (a listener two
// processes hold, an established pair, CLOSE_WAIT, FIN_WAIT2, TIME_WAIT, an
// IPv6 pair), with ss's users as holders; --state takes ss's names and
// groups; the table ends with the count per state.
func TestLsMatchesSS(t *testing.T) {
	testnet.RequireRoot(t)
	testnet.NeedTools(t, "ss", "nsenter") // the oracle
	bin := buildBinary(t, t.TempDir())
	ns1, ns2 := testnet.New(t), testnet.New(t)
	v4, v6 := netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()
	must := func(fd int, err error) int {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	ok := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	lfd := must(ns1.Listen(netip.AddrPortFrom(v4, ns1.Port(0))))
	lf, err := ns1.SocketFile(lfd)
	ok(err)
	helper := ns1.StartProc(t, lf)
	lf.Close()
	must(ns1.Connect(netip.AddrPortFrom(v4, ns1.Port(0))))
	must(ns1.Accept(lfd))
	c2 := must(ns1.Connect(netip.AddrPortFrom(v4, ns1.Port(0))))
	must(ns1.Accept(lfd))
	ok(ns1.Close(c2)) // its peer in CLOSE_WAIT, it in FIN_WAIT2
	c3 := must(ns1.Connect(netip.AddrPortFrom(v4, ns1.Port(0))))
	a3 := must(ns1.Accept(lfd))
	ok(ns1.Close(c3))
	ok(ns1.ReadEOF(a3))
	ok(ns1.Close(a3)) // c3 in TIME_WAIT
	l2 := must(ns2.Listen(netip.AddrPortFrom(v6, ns2.Port(0))))
	must(ns2.Connect(netip.AddrPortFrom(v6, ns2.Port(0))))
	must(ns2.Accept(l2))
	time.Sleep(50 * time.Millisecond)

	ls := func(args ...string) (string, string) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"ls"}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := testnet.RunCmd(cmd); err != nil {
			t.Fatalf("tcpstate ls %v: %v\n%s", args, err, &stderr)
		}
		return stdout.String(), stderr.String()
	}
	for _, ns := range []*testnet.NS{ns1, ns2} {
		out, _ := ls("-o", "json", "--netns", ns.Path())
		got := map[string][]uint32{}
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var s struct {
				State, Family, Saddr, Daddr string
				Sport, Dport                uint16
				Netns                       uint32
				Skaddr                      string
				Pid                         uint32
				Comm                        string
				Holders                     []struct {
					Pid  uint32
					Comm string
				}
			}
			if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
				t.Fatalf("ls -o json line %q: %v", sc.Text(), err)
			}
			if s.Netns != ns.Inode() {
				t.Errorf("--netns %s listed a socket of namespace %d", ns.Path(), s.Netns)
			}
			if s.Holders == nil || !strings.HasPrefix(s.Skaddr, "0x") || (s.Family != "ipv4" && s.Family != "ipv6") {
				t.Errorf("ls -o json record %s: holders [] not null, skaddr 0x..., family ipv4 or ipv6", sc.Text())
			}
			st, err := model.ParseState(s.State)
			if err != nil {
				t.Fatalf("state %q: %v", s.State, err)
			}
			key := fmt.Sprintf("%s %s %s", st, netip.AddrPortFrom(netip.MustParseAddr(s.Saddr).Unmap(), s.Sport), netip.AddrPortFrom(netip.MustParseAddr(s.Daddr).Unmap(), s.Dport))
			var pids []uint32
			for _, h := range s.Holders {
				pids = append(pids, h.Pid)
			}
			got[key] = pids
			if len(pids) > 0 && (s.Pid == 0 || !slices.Contains(pids, s.Pid) || s.Comm == "") {
				t.Errorf("%s: owner %d %q, holders %v", key, s.Pid, s.Comm, pids)
			}
		}
		want := ssList(t, ns.Path())
		if len(got) != len(want) {
			t.Errorf("netns %d: ls lists %d sockets, ss %d:\nls %v\nss %v", ns.Inode(), len(got), len(want), got, want)
		}
		for k, w := range want {
			if g, ok := got[k]; !ok {
				t.Errorf("netns %d: ss lists %s, ls does not", ns.Inode(), k)
			} else if !slices.Equal(g, w) {
				t.Errorf("netns %d: %s: ls holders %v, ss users %v", ns.Inode(), k, g, w)
			}
		}
	}
	// The shared listener names both processes.
	me, them := uint32(os.Getpid()), uint32(helper.Pid())
	out, _ := ls("-o", "wide", "--netns", strconv.FormatUint(uint64(ns1.Inode()), 10), "--state", "listening")
	if !strings.Contains(out, fmt.Sprintf("%d/", min(me, them))) || !strings.Contains(out, fmt.Sprintf(",%d/", max(me, them))) {
		t.Errorf("ls -o wide --state listening does not name both holders %d and %d:\n%s", me, them, out)
	}
	// ss's groups and names, and the count per state.
	for _, c := range []struct {
		state, summary string
	}{
		// The socket closed in FIN_WAIT2 is a timewait socket showing its
		// substate: not in ss's bucket group, which goes by the state.
		{"bucket", "1 TCP socket: TIME_WAIT 1"},
		{"connected", "5 TCP sockets: ESTABLISHED 2, FIN_WAIT2 1, TIME_WAIT 1, CLOSE_WAIT 1"},
		{"synchronized", "5 TCP sockets: ESTABLISHED 2, FIN_WAIT2 1, TIME_WAIT 1, CLOSE_WAIT 1"},
		{"big", "5 TCP sockets: LISTEN 1, ESTABLISHED 2, FIN_WAIT2 1, CLOSE_WAIT 1"},
		{"ESTAB,CLOSE-WAIT", "3 TCP sockets: ESTABLISHED 2, CLOSE_WAIT 1"},
		{"all", "6 TCP sockets: LISTEN 1, ESTABLISHED 2, FIN_WAIT2 1, TIME_WAIT 1, CLOSE_WAIT 1"},
	} {
		out, _ := ls("--netns", ns1.Path(), "--state", c.state)
		if !strings.HasSuffix(strings.TrimSpace(out), c.summary) {
			t.Errorf("ls --state %s ends with %q, want %q:\n%s", c.state, lastLine(out), c.summary, out)
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

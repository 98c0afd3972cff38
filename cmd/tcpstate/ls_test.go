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

// lsRight are ls's right-aligned columns.
var lsRight = map[string]bool{"PID": true, "NETNS": true, "UID": true, "INODE": true}

// lsCgroupSockets are sockets of every kind of cgroup ls names, with the
// CGROUP cell -o wide must show for each.
func lsCgroupSockets() ([]model.SocketInfo, []string) {
	const podmanID = "b6e375cfe46efa5cd90d095603dec2de888c28b203285819233040b5cf1212ac"
	const podUID = "2ac1fe3e-1c7b-4c1a-9d5e-7f1a3d2b0c11"
	base := model.SocketInfo{Skaddr: 0xffff8881658fa500, Kind: model.KindFull, State: model.Established, Family: model.AFInet,
		Saddr: netip.MustParseAddr("127.0.0.1"), Sport: 5555, Daddr: netip.MustParseAddr("127.0.0.1"), Dport: 42744,
		Netns: 4026531833, Inode: 45073674, Pid: 12072, Comm: "python3", OwnerKnown: true,
		Holders: []model.Holder{{Pid: 12072, Comm: "python3", Fd: 4}}}
	var socks []model.SocketInfo
	var cells []string
	add := func(id uint64, path, cell string, f func(s *model.SocketInfo)) {
		s := base
		s.CgroupID = id
		if path != "" {
			s.Cgroup = model.NewCgroupInfo(path)
		}
		if f != nil {
			f(&s)
		}
		socks, cells = append(socks, s), append(cells, cell)
	}
	add(3008, "/machine.slice/libpod-"+podmanID+".scope/container", "podman:b6e375cfe46e", nil)
	add(3009, "/system.slice/nginx.service", "systemd:nginx.service", func(s *model.SocketInfo) { s.State, s.Dport, s.Daddr = model.Listen, 0, netip.IPv4Unspecified() })
	add(3010, "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"+strings.ReplaceAll(podUID, "-", "_")+".slice", "pod:"+podUID, nil)
	add(3011, "/user.slice/user-0.slice/session-3.scope", "/user.slice/user-0.slice/session-3.scope", func(s *model.SocketInfo) {
		s.Family, s.Saddr, s.Daddr = model.AFInet6, netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
	})
	add(3012, "/", "/", func(s *model.SocketInfo) {
		s.Pid, s.Comm = 4194304, "日本語テス"
		s.Holders = []model.Holder{{Pid: 4194304, Comm: "日本語テス"}}
	})
	add(7021, "", "id:7021", func(s *model.SocketInfo) { s.OwnerKnown, s.Pid, s.Comm, s.Holders = false, 0, "", nil }) // removed before it was resolved
	add(0, "", "-", func(s *model.SocketInfo) {                                                                        // a timewait socket keeps no cgroup
		s.Kind, s.State, s.Inode, s.OwnerKnown, s.Pid, s.Comm, s.Holders = model.KindTimeWait, model.TimeWait, 0, false, 0, "", nil
	})
	for _, n := range hostileNames { // a cgroup is named by whoever made it
		add(4000, "/user.slice/"+n.comm, "/user.slice/"+n.shown, nil)
	}
	return socks, cells
}

// TestLsWideCgroups: -o wide names each socket's cgroup as trace's CGROUP
// column does (the container, else the path, else id:N, "-" for none),
// escaped, in an aligned column; the plain table has none.
func TestLsWideCgroups(t *testing.T) {
	socks, cells := lsCgroupSockets()
	var b bytes.Buffer
	writeLsTable(&b, socks, true)
	out := b.String()
	assertTerminalSafe(t, "ls -o wide", out)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(socks)+1 {
		t.Fatalf("%d lines for %d sockets:\n%s", len(lines), len(socks), out)
	}
	header := fields(lines[0])
	col := slices.IndexFunc(header, func(f field) bool { return f.text == "CGROUP" })
	if col < 0 || header[len(header)-1].text != "HOLDERS" {
		t.Fatalf("no CGROUP column before HOLDERS: %s", lines[0])
	}
	for i, l := range lines[1:] {
		if f := fields(l); len(f) <= col || f[col].text != cells[i] {
			t.Errorf("socket %d: CGROUP cell of %q, want %s", i, l, cells[i])
		}
	}
	checkColumns(t, lines[0], lines[1:], lsRight)

	b.Reset()
	writeLsTable(&b, socks, false)
	if strings.Contains(b.String(), "CGROUP") || strings.Contains(b.String(), "podman:") {
		t.Errorf("the plain table shows cgroups:\n%s", &b)
	}
}

// TestLsJSONCgroups: ls -o json adds cgroup_id, cgroup, container,
// container_runtime and pod_uid as trace's record has them: each absent
// when none or not known, names exact (JSON escapes only what it must).
func TestLsJSONCgroups(t *testing.T) {
	socks, _ := lsCgroupSockets()
	keys := []string{"cgroup_id", "cgroup", "container", "container_runtime", "pod_uid"}
	for i := range socks {
		s := &socks[i]
		var got map[string]any
		line := appendLsJSON(nil, s)
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		want := map[string]any{}
		if s.CgroupID != 0 {
			want["cgroup_id"] = float64(s.CgroupID)
		}
		if cg := s.Cgroup; cg != nil {
			for k, v := range map[string]string{"cgroup": cg.Path, "container": cg.Container.ID, "container_runtime": cg.Container.Runtime, "pod_uid": cg.Container.PodUID} {
				if v != "" {
					want[k] = string([]rune(v)) // JSON's U+FFFD for each byte that is not UTF-8, as trace's record
				}
			}
		}
		for _, k := range keys {
			if g, ok := got[k]; ok != (want[k] != nil) || ok && g != want[k] {
				t.Errorf("socket %d: %s %v (present %v), want %v:\n%s", i, k, g, ok, want[k], line)
			}
		}
		// The keys come after netns, as in trace's record, and none of
		// the old ones moved.
		if s.CgroupID != 0 && !bytes.Contains(line, fmt.Appendf(nil, `"netns":%d,"cgroup_id":%d,`, s.Netns, s.CgroupID)) {
			t.Errorf("cgroup_id not right after netns: %s", line)
		}
		if _, ok := got["holders"]; !ok || got["state"] == nil || got["skaddr"] == nil {
			t.Errorf("old keys missing: %s", line)
		}
	}
	if got, want := string(appendLsJSON(nil, &socks[0])), `"cgroup":"/machine.slice/libpod-b6e375cfe46efa5cd90d095603dec2de888c28b203285819233040b5cf1212ac.scope/container","container":"b6e375cfe46efa5cd90d095603dec2de888c28b203285819233040b5cf1212ac","container_runtime":"podman","skaddr"`; !strings.Contains(got, want) {
		t.Errorf("podman socket:\n%s\nwant it to hold\n%s", got, want)
	}
}

// runLsBin runs the built binary's ls and returns its standard output.
func runLsBin(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"ls"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := testnet.RunCmd(cmd); err != nil {
		t.Fatalf("tcpstate ls %v: %v\n%s", args, err, &stderr)
	}
	return stdout.String()
}

// TestLsCgroups runs the built binary: a server in a made-up podman
// container's cgroup (machine.slice/libpod-ID.scope) and a client on the
// host (a cgroup that names no container), in a namespace of their own.
// ls -o json and -o wide name the container for the server's sockets (the
// connection it has not accepted, which no process holds, too: its cgroup
// is the socket's, copied from its listener), the cgroup's path for the
// client's, and none for the client's TIME_WAIT socket; -o wide stays
// aligned; --container lists exactly the container's sockets.
func TestLsCgroups(t *testing.T) {
	testnet.RequireRoot(t)
	bin := buildBinary(t, t.TempDir())
	id := fmt.Sprintf("%08x%08x", os.Getpid(), uint32(time.Now().UnixNano())) + strings.Repeat("d0cce7", 8)
	ns := testnet.New(t)
	top := testnet.NewCgroup(t)
	ctr := top.Sub("machine.slice").Sub("libpod-" + id + ".scope")
	host := top.Sub("host")
	srv, cli := ns.StartProc(t), ns.StartProc(t)
	if err := ctr.Add(srv.Pid()); err != nil {
		t.Fatal(err)
	}
	if err := host.Add(cli.Pid()); err != nil {
		t.Fatal(err)
	}
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
	srvAddr := testnet.Addr(4, ns.Port(0))
	lfd := must(srv.Listen(srvAddr))
	c1 := must(cli.Connect(srvAddr))
	must(srv.Accept(lfd))
	// Closed by the client first: its side ends in TIME_WAIT.
	c2 := must(cli.Connect(srvAddr))
	a2 := must(srv.Accept(lfd))
	tport := mustLocalPort(t, cli, c2)
	ok(cli.Close(c2))
	ok(srv.ReadEOF(a2))
	ok(srv.Close(a2))
	// Not accepted: in the listener's queue, held by no process.
	c3 := must(cli.Connect(srvAddr))
	qport := mustLocalPort(t, cli, c3)
	cport := mustLocalPort(t, cli, c1)
	time.Sleep(50 * time.Millisecond)

	type sock struct {
		role, wantCell string
		container      bool // the container's cgroup, else none (timewait) or the host's
		none           bool
	}
	sp := srvAddr.Port()
	key := func(a, b uint16) string { return strconv.Itoa(int(a)) + ">" + strconv.Itoa(int(b)) }
	podman := "podman:" + id[:12]
	want := map[string]sock{
		key(sp, 0):     {role: "the container's listener", wantCell: podman, container: true},
		key(sp, cport): {role: "the container's accepted socket", wantCell: podman, container: true},
		key(sp, qport): {role: "the container's connection not yet accepted", wantCell: podman, container: true},
		key(cport, sp): {role: "the host's client", wantCell: host.Path},
		key(qport, sp): {role: "the host's queued client", wantCell: host.Path},
		key(tport, sp): {role: "the host's TIME_WAIT socket", wantCell: "-", none: true},
	}

	// JSON: the keys, and none where the socket has no cgroup.
	out := runLsBin(t, bin, "-o", "json", "--netns", ns.Path())
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("ls -o json line %q: %v", line, err)
		}
		k := key(uint16(r["sport"].(float64)), uint16(r["dport"].(float64)))
		w, found := want[k]
		if !found {
			t.Errorf("a socket the test did not make: %s", line)
			continue
		}
		seen[k] = true
		var wantKeys map[string]any
		switch {
		case w.none:
			wantKeys = map[string]any{}
		case w.container:
			wantKeys = map[string]any{"cgroup_id": float64(ctr.ID), "cgroup": ctr.Path, "container": id, "container_runtime": "podman"}
		default:
			wantKeys = map[string]any{"cgroup_id": float64(host.ID), "cgroup": host.Path}
		}
		for _, name := range []string{"cgroup_id", "cgroup", "container", "container_runtime", "pod_uid"} {
			if g, present := r[name]; present != (wantKeys[name] != nil) || present && g != wantKeys[name] {
				t.Errorf("%s: %s %v (present %v), want %v:\n%s", w.role, name, g, present, wantKeys[name], line)
			}
		}
	}
	for k, w := range want {
		if !seen[k] {
			t.Errorf("%s (%s) not listed:\n%s", w.role, k, out)
		}
	}

	// -o wide: the CGROUP column, aligned.
	out = runLsBin(t, bin, "-o", "wide", "--netns", ns.Path())
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 {
		t.Fatalf("ls -o wide:\n%s", out)
	}
	table := lines[:len(lines)-2] // then a blank line and the count per state
	names := fields(table[0])
	col := func(name string) int {
		return slices.IndexFunc(names, func(f field) bool { return f.text == name })
	}
	cg, local, remote := col("CGROUP"), col("LOCAL"), col("REMOTE")
	if cg < 0 {
		t.Fatalf("no CGROUP column:\n%s", out)
	}
	for _, l := range table[1:] {
		f := fields(l)
		lp, _ := netip.ParseAddrPort(f[local].text)
		rp, _ := netip.ParseAddrPort(f[remote].text)
		w, found := want[key(lp.Port(), rp.Port())]
		if !found {
			t.Errorf("a socket the test did not make: %s", l)
			continue
		}
		if f[cg].text != w.wantCell {
			t.Errorf("%s: CGROUP %s, want %s:\n%s\n%s", w.role, f[cg].text, w.wantCell, table[0], l)
		}
	}
	checkColumns(t, table[0], table[1:], lsRight)
	if len(table) != len(want)+1 {
		t.Errorf("%d sockets listed, want %d:\n%s", len(table)-1, len(want), out)
	}

	// --container: the container's three sockets, whole.
	if out := runLsBin(t, bin, "--container", id[:12], "--summary"); !strings.HasPrefix(out, "3 TCP sockets: LISTEN 1, ESTABLISHED 2") {
		t.Errorf("ls --container %s --summary: %s", id[:12], out)
	}
}

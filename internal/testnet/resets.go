package testnet

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// The reset oracle: the kernel's own record of the resets it sends
// (tcp:tcp_send_reset), in a private tracefs instance like the Oracle's.
// The event's addresses are byte arrays a tracefs filter cannot select, so
// the instance records every reset of the machine and Resets keeps those
// whose two ports are in the namespace's block.

// Reset is one tcp:tcp_send_reset record.
type Reset struct {
	Time string // seconds since boot, as tracefs prints it
	Task string
	// NoSocket: the reset answered a packet that matched no socket (the
	// event's socket is NULL); Src is then the packet's destination.
	NoSocket bool
	Src, Dst netip.AddrPort
	State    string // the sending socket's state, "TCP_CLOSE" ("UNKNOWN" without a socket)
	Reason   string // enum sk_rst_reason without SK_RST_REASON_: "TCP_STATE", "NO_SOCKET", ...; "" before Linux 6.10
}

func (r Reset) String() string {
	sk := "socket"
	if r.NoSocket {
		sk = "no socket"
	}
	return fmt.Sprintf("%s %s: reset %v -> %v (%s, %s) reason %s", r.Time, r.Task, r.Src, r.Dst, sk, r.State, r.Reason)
}

// ResetOracle is a private tracefs instance recording tcp:tcp_send_reset.
type ResetOracle struct {
	dir    string
	lo, hi uint16
	once   sync.Once
	rs     []Reset
	all    []Reset // every reset of the machine, the block's included
	err    error
}

// ResetOracle starts recording the resets the kernel sends (Linux 6.10 or
// later: the event has the reason) in a new tracefs instance; Resets
// returns those between ports of the namespace's block. It is removed when
// the test ends.
func (ns *NS) ResetOracle(t testing.TB) *ResetOracle {
	t.Helper()
	RequireRoot(t)
	if _, err := os.Stat(filepath.Join(tracefsDir, "instances")); err != nil {
		if err := unix.Mount("nodev", tracefsDir, "tracefs", 0, ""); err != nil {
			t.Fatalf("testnet: tracefs is not mounted on %s and mounting it failed: %v", tracefsDir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(tracefsDir, "events/tcp/tcp_send_reset/format")); err != nil {
		t.Fatalf("testnet: the kernel has no tcp:tcp_send_reset event: %v", err)
	}
	removeStaleInstances()
	name := fmt.Sprintf("%s%d-%d", instancePrefix, os.Getpid(), instanceSeq.Add(1))
	lo, hi := ns.PortRange()
	o := &ResetOracle{dir: filepath.Join(tracefsDir, "instances", name), lo: lo, hi: hi}
	if err := os.Mkdir(o.dir, 0o755); err != nil {
		t.Fatalf("testnet: creating tracefs instance: %v", err)
	}
	t.Cleanup(func() {
		o.write("events/tcp/tcp_send_reset/enable", "0")
		removeInstance(t, o.dir)
	})
	for _, w := range [][2]string{
		// Every reset of the machine lands here (see above): room for
		// some 180,000 per CPU, so that another load's resets (a benchmark's
		// aborts, a parallel test's) do not push the namespace's out.
		{"buffer_size_kb", "8192"},
		{"events/tcp/tcp_send_reset/enable", "1"},
	} {
		if err := o.write(w[0], w[1]); err != nil {
			t.Fatalf("testnet: %v", err)
		}
	}
	return o
}

// HasReasons says whether this kernel's tcp_send_reset reports a reason
// (Linux 6.10 and later).
func (o *ResetOracle) HasReasons() bool {
	b, err := os.ReadFile(filepath.Join(o.dir, "events/tcp/tcp_send_reset/format"))
	return err == nil && strings.Contains(string(b), " reason;")
}

func (o *ResetOracle) write(file, value string) error {
	if err := os.WriteFile(filepath.Join(o.dir, file), []byte(value), 0); err != nil {
		return fmt.Errorf("writing %q to tracefs %s: %w", value, file, err)
	}
	return nil
}

// A tcp_send_reset line. Its fields differ by kernel: 6.10 and later
// print skbaddr, skaddr, src, dest, state and reason (and fire without a
// socket too); before, family, sport, dport, saddr, daddr, saddrv6,
// daddrv6 and state (only for a reset a socket sends).
var resetRE = regexp.MustCompile(`^\s*(.+)-(\d+)\s+\[(\d+)\]\s+\S+\s+(\d+\.\d+): tcp_send_reset: (.*)$`)

// Resets stops the recording (on the first call) and returns the resets
// sent between two ports of the namespace's block, in time order. It fails
// if the instance's buffer overflowed.
func (o *ResetOracle) Resets() ([]Reset, error) {
	o.once.Do(func() { o.rs, o.all, o.err = o.read() })
	return o.rs, o.err
}

// All stops the recording as Resets does and returns every reset the
// machine sent meanwhile, whatever its ports: what a host-wide count (the
// tracer's Counters.ResetsNoSocket) saw at most while the instance recorded.
func (o *ResetOracle) All() ([]Reset, error) {
	o.once.Do(func() { o.rs, o.all, o.err = o.read() })
	return o.all, o.err
}

func (o *ResetOracle) read() (block, all []Reset, err error) {
	if err := o.write("tracing_on", "0"); err != nil {
		return nil, nil, err
	}
	b, err := os.ReadFile(filepath.Join(o.dir, "trace"))
	if err != nil {
		return nil, nil, fmt.Errorf("reading tracefs trace: %w", err)
	}
	in := func(p uint16) bool { return p >= o.lo && p <= o.hi }
	for _, line := range strings.Split(string(b), "\n") {
		if m := countRE.FindStringSubmatch(line); m != nil && m[1] != m[2] {
			return nil, nil, fmt.Errorf("the tracefs instance lost resets: %s", strings.TrimSpace(line))
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := resetRE.FindStringSubmatch(line)
		if m == nil {
			return nil, nil, fmt.Errorf("unexpected tracefs line %q", line)
		}
		f := map[string]string{}
		for _, kv := range fieldRE.FindAllStringSubmatch(m[5], -1) {
			f[kv[1]] = kv[2]
		}
		if f["state"] == "" {
			return nil, nil, fmt.Errorf("unexpected tracefs line %q", line)
		}
		// Addresses of a family the tests do not use stay zero.
		var src, dst netip.AddrPort
		if _, ok := f["src"]; ok { // 6.10 and later
			src, _ = netip.ParseAddrPort(f["src"])
			dst, _ = netip.ParseAddrPort(f["dest"])
		} else {
			sa, da := f["saddr"], f["daddr"]
			if f["family"] == "AF_INET6" {
				sa, da = f["saddrv6"], f["daddrv6"]
			}
			sp, _ := strconv.ParseUint(f["sport"], 10, 16)
			dp, _ := strconv.ParseUint(f["dport"], 10, 16)
			if a, err := netip.ParseAddr(sa); err == nil {
				src = netip.AddrPortFrom(a, uint16(sp))
			}
			if a, err := netip.ParseAddr(da); err == nil {
				dst = netip.AddrPortFrom(a, uint16(dp))
			}
		}
		skaddr, hasSk := f["skaddr"]
		r := Reset{
			Time: m[4], Task: strings.TrimSpace(m[1]) + "-" + m[2],
			// Before 6.10 the event fires only for a socket's reset.
			NoSocket: hasSk && (strings.Trim(skaddr, "0x") == "" || skaddr == "(null)"),
			Src:      src, Dst: dst, State: f["state"], Reason: f["reason"],
		}
		all = append(all, r)
		if src.IsValid() && dst.IsValid() && in(src.Port()) && in(dst.Port()) {
			block = append(block, r)
		}
	}
	return block, all, nil
}

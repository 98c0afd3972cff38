package testnet

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Veth is a veth pair joining two test namespaces, an IPv4 link between
// them: end A in one namespace with address AddrA, end B in the other
// with AddrB, both in one /24. Taking one end down makes the link lose
// every packet in both directions, silently (no reset, no ICMP): the other
// end loses its carrier and the kernel drops what it sends (the
// neighbour entries are permanent, so no address resolution fails
// either); a peer that vanishes without a word, which loopback cannot
// make.
//
// Each end is named VethName in its own namespace (device names are per
// namespace). The pair goes away when the test ends (Remove), and in any
// case with the first of its namespaces.
type Veth struct {
	a, b         *NS
	AddrA, AddrB netip.Addr
}

// VethName is the name of both ends of a Veth, each in its namespace.
const VethName = "tsveth"

// The link's addresses: private namespaces, so every test can use the same.
var (
	vethAddrA = netip.AddrFrom4([4]byte{10, 99, 0, 1})
	vethAddrB = netip.AddrFrom4([4]byte{10, 99, 0, 2})
)

// NewVeth joins a and b with a veth pair (iproute2's ip creates it, from
// a's namespace thread, so the ip process itself is in a), gives the ends
// their addresses and brings them up. The pair is deleted when the test
// ends.
func NewVeth(t testing.TB, a, b *NS) *Veth {
	t.Helper()
	v := &Veth{a: a, b: b, AddrA: vethAddrA, AddrB: vethAddrB}
	// The peer is created straight in b's namespace: "netns PATH" (a path,
	// not a name under /run/netns) is b's namespace thread's.
	err := a.Do(func() error {
		return runIP("link", "add", VethName, "type", "veth", "peer", "name", VethName, "netns", b.Path())
	})
	if err != nil {
		t.Fatalf("testnet: creating a veth pair: %v", err)
	}
	t.Cleanup(v.Remove)
	ends := []struct {
		ns   *NS
		addr netip.Addr
		mac  string
	}{{ns: a, addr: v.AddrA}, {ns: b, addr: v.AddrB}}
	for i := range ends {
		end := &ends[i]
		err := end.ns.Do(func() error {
			if err := setAddr4(VethName, end.addr, 24); err != nil {
				return err
			}
			ifi, err := net.InterfaceByName(VethName)
			if err != nil {
				return err
			}
			end.mac = ifi.HardwareAddr.String()
			return setLink(VethName, true)
		})
		if err != nil {
			t.Fatalf("testnet: %v", err)
		}
	}
	// Permanent neighbour entries, so that a link down loses packets and
	// nothing else: an end that loses its carrier flushes its other
	// neighbour entries, and resolving the address again would fail after
	// about 3 s with an ICMP host unreachable, which TCP takes for a soft
	// error (EHOSTUNREACH instead of ETIMEDOUT when it gives up).
	for i, end := range ends {
		other := ends[1-i]
		err := end.ns.Do(func() error {
			return runIP("neigh", "replace", other.addr.String(), "lladdr", other.mac, "dev", VethName, "nud", "permanent")
		})
		if err != nil {
			t.Fatalf("testnet: %v", err)
		}
	}
	return v
}

// SetLinkA brings end A up or down, and returns once end B has seen its
// carrier follow (see SetLinkB).
func (v *Veth) SetLinkA(up bool) error { return setLinkSeen(v.a, v.b, up) }

// SetLinkB brings end B up or down, and returns once end A has seen its
// carrier follow. The kernel's link watcher takes a carrier loss into
// account up to a second later (it batches non-urgent events); until
// then A's packets are dropped by the veth driver with a local error,
// which TCP takes for congestion (it keeps the data unsent and retries
// from the probe timer) rather than for a vanished peer. Once it has, A's
// queue discards what A sends as sent.
func (v *Veth) SetLinkB(up bool) error { return setLinkSeen(v.b, v.a, up) }

// linkSeenTimeout bounds the wait for the other end to see a link change.
const linkSeenTimeout = 3 * time.Second

func setLinkSeen(end, other *NS, up bool) error {
	if err := end.Do(func() error { return setLink(VethName, up) }); err != nil {
		return err
	}
	deadline := time.Now().Add(linkSeenTimeout)
	for {
		var running bool
		err := other.Do(func() error {
			flags, err := linkFlags(VethName)
			running = flags&unix.IFF_RUNNING != 0
			return err
		})
		if err != nil {
			return err
		}
		if running == up {
			// The queue is swapped right after the operational state
			// changes; give it a moment.
			time.Sleep(10 * time.Millisecond)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testnet: the other end of the veth pair is not running=%v %v after this end went up=%v", up, linkSeenTimeout, up)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// linkFlags reads an interface's flags (SIOCGIFFLAGS: IFF_RUNNING is its
// operational state) in the calling thread's namespace.
func linkFlags(name string) (uint16, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("reading %s's flags: socket: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, fmt.Errorf("reading %s's flags: %w", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return 0, fmt.Errorf("reading %s's flags: SIOCGIFFLAGS: %w", name, err)
	}
	return ifr.Uint16(), nil
}

// Remove deletes the pair (deleting one end deletes both), if it is still
// there: a namespace already removed took it along. NewVeth registers it
// with t.Cleanup; calling it again is fine.
func (v *Veth) Remove() {
	v.a.Do(func() error {
		if !linkExists(VethName) {
			return nil
		}
		return runIP("link", "del", VethName)
	})
}

// Run runs a program (ip, ss ...) in the namespace, with RunCmd, and
// returns its output (stdout and stderr); an error says how it failed and
// what it printed.
func (ns *NS) Run(name string, args ...string) (string, error) {
	var out string
	err := ns.Do(func() error {
		var err error
		out, err = run(name, args...)
		return err
	})
	return out, err
}

// run runs a program in the calling thread's network namespace: a child
// forked from a namespace thread starts in that thread's namespace. Call
// it inside NS.Do.
func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := RunCmd(cmd); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func runIP(args ...string) error {
	_, err := run("ip", args...)
	return err
}

func linkExists(name string) bool {
	_, err := linkFlags(name)
	return err == nil
}

// setLink sets or clears IFF_UP on an interface of the calling thread's
// namespace.
func setLink(name string, up bool) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("setting %s up=%v: socket: %w", name, up, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("setting %s up=%v: %w", name, up, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("setting %s up=%v: SIOCGIFFLAGS: %w", name, up, err)
	}
	flags := ifr.Uint16() &^ unix.IFF_UP
	if up {
		flags |= unix.IFF_UP
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("setting %s up=%v: SIOCSIFFLAGS: %w", name, up, err)
	}
	return nil
}

// setAddr4 gives an interface of the calling thread's namespace an IPv4
// address and prefix (the kernel adds the connected route).
func setAddr4(name string, addr netip.Addr, bits int) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("addressing %s: socket: %w", name, err)
	}
	defer unix.Close(fd)
	set := func(req uint, a netip.Addr, what string) error {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		b := a.As4()
		if err := ifr.SetInet4Addr(b[:]); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, req, ifr); err != nil {
			return fmt.Errorf("addressing %s: %s %v: %w", name, what, a, err)
		}
		return nil
	}
	if err := set(unix.SIOCSIFADDR, addr, "SIOCSIFADDR"); err != nil {
		return err
	}
	var m [4]byte
	for i := range bits {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return set(unix.SIOCSIFNETMASK, netip.AddrFrom4(m), "SIOCSIFNETMASK")
}

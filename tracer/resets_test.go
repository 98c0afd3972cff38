package tracer_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/internal/tracetest"
)

// TestResetsNoSocket (issue 11): a connect to a port nothing listens on is
// refused by a reset that answers a packet matching no socket. The kernel
// side counts such resets, host-wide and before any filter (the tracer
// here is filtered on another namespace's ports), and
// Counters.ResetsNoSocket rises by exactly the resets the kernel's own
// record (tcp:tcp_send_reset in a tracefs instance) shows. The count is the
// whole machine's, so another test's resets can land in it: the kernel's
// record of the machine bounds it from above, and with no other reset it
// is exact. Before 6.10 the tracepoint never fires without a socket, and
// the counter must say it does not count rather than read 0.
func TestResetsNoSocket(t *testing.T) {
	t.Parallel()
	testnet.RequireRoot(t)
	s := tracetest.Start(t, blockOpts(testnet.New(t)))
	tr := s.Tracer()
	counted := false
	for _, f := range tr.Features() {
		if f.Name == "reset marks" {
			counted = slices.Contains(strings.Split(f.Detail, ", "), "handle_send_reset")
		}
	}
	c, err := tr.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if !counted {
		if c.ResetsNoSocket != nil {
			t.Fatalf("ResetsNoSocket %d without handle_send_reset: this kernel's tracepoint shows no reset without a socket, want nil (not counted)", *c.ResetsNoSocket)
		}
		t.Skip("handle_send_reset is not attached (Linux before 6.10): resets without a socket are not counted, and ResetsNoSocket says so (nil)")
	}
	if c.ResetsNoSocket == nil {
		t.Fatal("handle_send_reset is attached, but ResetsNoSocket is nil (not counted)")
	}
	read := func(p *testnet.Problems) uint64 {
		c, err := tr.Counters()
		if err != nil {
			p.Fatalf("reading the counters: %v", err)
		}
		return *c.ResetsNoSocket
	}
	const per = 3 // refused connects per family
	testnet.Retry(t, func(p *testnet.Problems) {
		ns := testnet.New(t)
		o := ns.ResetOracle(t) // records from before the first reading to after the last
		before := read(p)
		for _, fam := range []int{4, 6} {
			for i := range per {
				ap := testnet.Addr(fam, ns.Port(i))
				if _, err := ns.Connect(ap); !errors.Is(err, unix.ECONNREFUSED) {
					p.Fatalf("connect to the closed port %v: %v, want ECONNREFUSED", ap, err)
				}
			}
		}
		after := read(p)
		block, err := o.Resets()
		if err != nil {
			p.Fatalf("the reset oracle: %v", err)
		}
		all, err := o.All()
		if err != nil {
			p.Fatalf("the reset oracle: %v", err)
		}
		ours, machine := 0, 0
		for _, r := range block {
			if !r.NoSocket {
				p.Errorf("the namespace's resets include one of a socket: %v", r)
				continue
			}
			ours++
		}
		for _, r := range all {
			if r.NoSocket {
				machine++
			}
		}
		if ours != 2*per {
			p.Errorf("the kernel's record has %d resets without a socket in the namespace, want %d, one per refused connect: %v", ours, 2*per, block)
		}
		got, others := after-before, uint64(machine-ours)
		if got < uint64(ours) || got > uint64(ours)+others {
			p.Errorf("ResetsNoSocket rose by %d, want %d (the namespace's) plus at most the machine's %d others the kernel recorded meanwhile", got, ours, others)
		}
		t.Logf("ResetsNoSocket rose by %d: the namespace's %d resets; the machine sent %d others while the oracle recorded", got, ours, others)
	})
}

package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/tcpstate/tcpstate/model"
)

// sockRecordSize is struct sock_record's size (bpf/iter.h).
const sockRecordSize = int(unsafe.Sizeof(tcpstateSockRecord{}))

// Sockets lists the live sockets the kernel follows: every socket that made
// a transition since Attach and has not reached CLOSE, with its owner, its
// state and when it entered it, and its addresses as they are now.
func (t *Tracer) Sockets() ([]model.SocketInfo, error) {
	var out []model.SocketInfo
	err := t.VisitSockets(func(s *model.SocketInfo) { out = append(out, *s) })
	return out, err
}

// VisitSockets gives visit each live socket Sockets would list, as the
// iterator yields them, without keeping them (serve's stuck counts: memory
// does not grow with the sockets). The SocketInfo is reused.
func (t *Tracer) VisitSockets(visit func(*model.SocketInfo)) error {
	if t.dump == nil {
		return errNoIterator
	}
	l, err := link.AttachIter(link.IterOptions{Program: t.dump, Map: t.maps.SockStates})
	if err != nil {
		return fmt.Errorf("attaching the socket iterator: %w", err)
	}
	defer l.Close()
	r, err := l.Open()
	if err != nil {
		return fmt.Errorf("opening the socket iterator: %w", err)
	}
	defer r.Close()
	now := uint64(monotonicNow())
	br := bufio.NewReaderSize(r, 64<<10)
	buf := make([]byte, sockRecordSize)
	var s model.SocketInfo
	// The walk of the storage map may repeat an entry while sockets of the
	// host get and lose storage meanwhile (seen here under load: 5 of
	// 100,000 listed twice): the first record wins, as in Snapshot. (The
	// set is 8 bytes of key a socket the kernel follows.)
	seen := map[uint64]struct{}{}
	for {
		if _, err := io.ReadFull(br, buf); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading the socket iterator: %w", err)
		}
		// Records are the generated struct's layout, host byte order.
		rec := *(*tcpstateSockRecord)(unsafe.Pointer(&buf[0]))
		if _, dup := seen[rec.Skaddr]; dup {
			continue
		}
		seen[rec.Skaddr] = struct{}{}
		st := model.State(rec.State)
		// Closed (the storage outlives the connection until the socket is
		// freed), or only an accept() record so far: not live.
		if !st.Valid() || st == model.Close || rec.StateTs == 0 {
			continue
		}
		s = model.SocketInfo{
			Skaddr:       rec.Skaddr,
			State:        st,
			Since:        since(now, rec.StateTs),
			SinceAtLeast: rec.Flags&uint8(tcpstateSockFlagSF_SEEDED_STATE) != 0,
			AgeAtLeast:   rec.Flags&uint8(tcpstateSockFlagSF_BORN_BEFORE) != 0,
			Age:          since(now, rec.BornTs),
			Pid:          rec.Pid,
			Comm:         cString(rec.Comm[:]),
			OwnerKnown:   rec.Owner != 0,
			Family:       model.Family(rec.Family),
			Sport:        rec.Sport,
			Dport:        rec.Dport,
			Netns:        rec.Netns,
			CgroupID:     rec.CgroupId,
			Cgroup:       t.cgroups.Lookup(rec.CgroupId),
		}
		if s.Family == model.AFInet {
			s.Saddr = netip.AddrFrom4([4]byte(rec.Saddr[:4]))
			s.Daddr = netip.AddrFrom4([4]byte(rec.Daddr[:4]))
		} else {
			s.Saddr = netip.AddrFrom16(rec.Saddr)
			s.Daddr = netip.AddrFrom16(rec.Daddr)
		}
		visit(&s)
	}
}

func since(now, ts uint64) time.Duration {
	if ts == 0 || ts > now {
		return 0
	}
	return time.Duration(now - ts)
}

// Replay runs the pipeline as if the kernel had reported old->new for the
// live TCP socket at skaddr, through the same code and maps as real events
// (the test-only replay_set_state iterator; Options.Replay loads it). It
// exists for tests of the in-kernel model check, which real kernels never
// exercise with bad edges. The iterator walks the network namespace of the
// calling thread: call it on a thread in the socket's namespace.
func (t *Tracer) Replay(skaddr uint64, old, new model.State) error {
	if t.replay == nil {
		return fmt.Errorf("replaying %s -> %s: the tracer was loaded without Options.Replay", old, new)
	}
	var done uint32
	if err := t.vars.ReplayDone.Get(&done); err != nil {
		return err
	}
	for _, set := range []struct {
		name string
		err  error
	}{
		{"replay_old", t.vars.ReplayOld.Set(uint32(old))},
		{"replay_new", t.vars.ReplayNew.Set(uint32(new))},
		{"replay_skaddr", t.vars.ReplaySkaddr.Set(skaddr)},
	} {
		if set.err != nil {
			return fmt.Errorf("setting %s: %w", set.name, set.err)
		}
	}
	defer t.vars.ReplaySkaddr.Set(uint64(0))
	l, err := link.AttachIter(link.IterOptions{Program: t.replay})
	if err != nil {
		return fmt.Errorf("attaching the replay iterator: %w", err)
	}
	defer l.Close()
	r, err := l.Open()
	if err != nil {
		return fmt.Errorf("opening the replay iterator: %w", err)
	}
	_, err = io.Copy(io.Discard, r)
	r.Close()
	if err != nil {
		return fmt.Errorf("running the replay iterator: %w", err)
	}
	var after uint32
	if err := t.vars.ReplayDone.Get(&after); err != nil {
		return err
	}
	if after == done {
		return fmt.Errorf("replaying %s -> %s on 0x%x: no TCP socket at that address in this thread's network namespace", old, new, skaddr)
	}
	return nil
}

// runIter runs an iterator program once and returns its output.
func runIter(p *ebpf.Program, out io.Writer) error {
	l, err := link.AttachIter(link.IterOptions{Program: p})
	if err != nil {
		return fmt.Errorf("attaching the iterator: %w", err)
	}
	defer l.Close()
	r, err := l.Open()
	if err != nil {
		return fmt.Errorf("opening the iterator: %w", err)
	}
	defer r.Close()
	if out == nil {
		out = io.Discard
	}
	if _, err := io.Copy(out, r); err != nil {
		return fmt.Errorf("reading the iterator: %w", err)
	}
	return nil
}

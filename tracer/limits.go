package tracer

import (
	"fmt"
	"os"
	"strings"
)

// What a snapshot misses without the capabilities it needs beyond CAP_BPF
// and CAP_PERFMON (measured as uid 65534 and as uid 0 with a reduced
// bounding set, README "Privileges"):
//   - CAP_SYS_ADMIN: setns(2) into another network namespace. The tracer's
//     own namespace is read without it.
//   - CAP_SYS_PTRACE: stat and open another user's /proc/PID/ns/net (ptrace
//     access mode read; for uid 0 with fewer capabilities than the target
//     too), so that its namespace is found at all.
// Without them iter/task_file still sees every socket a process holds, in
// every namespace: only sockets no process holds (timewait and request
// sockets, orphans) are missed there.

// Lost texts for Limits: what each command loses in a namespace it cannot
// walk.
const (
	// LostListed is ls's loss.
	LostListed = "sockets there that no process holds (TIME_WAIT, orphans, connections not yet accepted) are not listed"
	// lostSeeded is what the tracing commands' start snapshot loses.
	lostSeeded = "sockets there that no process holds (TIME_WAIT, orphans, connections not yet accepted) are not seeded, and are known only from their next transition"
	// lostCounted is what serve's snapshots lose: they walk the tables
	// only (no process files).
	lostCounted = "sockets there are left out of tcpstate_sockets and of the snapshots' reconciliation, and those no process holds are known only from their next transition"
)

// Limits says, one line each, what the snapshot could not read for lack of
// a capability, and which capability would let it; lost is what the caller
// loses in such a namespace (LostListed, or a command's own words). No
// line: nothing was refused. A namespace that went away between being
// found and being entered (its last process exited) is not a loss to
// report.
func (s *Snapshot) Limits(lost string) []string {
	var out []string
	denied := 0
	for _, n := range s.Namespaces {
		if n.NeedsCap != "" {
			denied++
		}
	}
	if denied > 0 {
		out = append(out, fmt.Sprintf("without CAP_SYS_ADMIN, %d of the %d network namespaces found were not entered (setns(2) into another network namespace needs it): %s",
			denied, len(s.Namespaces), lost))
	}
	if s.ProcessesUnasked > 0 {
		out = append(out, fmt.Sprintf("without CAP_SYS_PTRACE, the network namespace of %s of other users is unknown (their /proc/PID/ns/net may not be read): a namespace only they are in is not walked, and %s",
			count(s.ProcessesUnasked, "process", "processes"), lost))
	}
	return out
}

func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// initialUserNS reports whether this process is in the host's user
// namespace, where the kernel checks CAP_BPF and CAP_PERFMON (bpf(2) asks
// capable(), not ns_capable()). A user namespace maps a part of the ids;
// only the initial one maps all 2^32 of them from 0.
func initialUserNS() (bool, string) {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return true, "" // cannot tell: let the kernel say
	}
	m := strings.Join(strings.Fields(string(b)), " ")
	return m == "0 0 4294967295", m
}

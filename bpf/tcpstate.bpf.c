//go:build ignore
// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// tcpstate's kernel side: one program on the inet_sock_set_state tracepoint
// streams TCP state transitions into a ring buffer, names the process that
// owns each socket, and applies the user's filters here, so unwanted events
// never cross to user space. Two small programs on the accept syscalls' exits
// name the owner of accepted sockets. See ../shared/KERNEL-NOTES.md for the
// kernel behaviour this file depends on.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual MIT/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define PF_KTHREAD 0x00200000
#define TASK_COMM_LEN 16
#define NUM_STATES 13 /* TCP states are 1..12 */
#define EPIPE 32
#define ECONNRESET 104
#define ECONNREFUSED 111

/* Events a socket may hold back while its filter match is undecided. */
#define MAX_HELD 4

/* struct event flags; mirrored in model/event.go (Flag*). */
#define EVF_OWNER_KNOWN 0x1
#define EVF_OWNER_INHERITED 0x2
#define EVF_DURATION_KNOWN 0x4
#define EVF_HELD 0x8
#define EVF_ILLEGAL 0x10 /* the edge is not in the model (edge_mask) */
#define EVF_GAP 0x20     /* old state is not the last state seen */
#define EVF_ACTIVE 0x40  /* the socket connect()ed: it went through SYN_SENT */

/* struct tcpstate_sock.owner */
#define OWNER_NONE 0
#define OWNER_INHERITED 1 /* the listener's owner, until accept() names one */
#define OWNER_FINAL 2     /* seen acting on the socket in process context */

/* Filter decisions. */
#define DECIDE_NO 0
#define DECIDE_YES 1
#define DECIDE_LATER 2

/* port_filter values: which port a filtered port number is wanted on. */
#define PORT_EITHER 0x1
#define PORT_LOCAL 0x2
#define PORT_REMOTE 0x4

/* Indexes of the counters map; mirrored in tracer/tracer.go. */
enum counter {
	CNT_RINGBUF_FULL = 0, /* events lost: ring buffer reservation failed */
	CNT_SOCK_INSERT,      /* entries added to socks */
	CNT_SOCK_DELETE,      /* entries removed from socks at ->CLOSE */
	CNT_HELD_OVERFLOW,    /* events lost: a socket's held queue was full */
	CNT_HELD_INSERT,      /* entries added to held */
	CNT_HELD_DELETE,      /* entries removed from held (flushed or dropped) */
	CNT_ACCEPT,           /* accepted sockets whose owner accept() named */
	CNT_PORT_OTHER,       /* transitions not counted per port: port_counts full */
	CNT_PID_OTHER,        /* transitions not counted per owner: pid_counts full */
	CNT_RESCUED,          /* nested events handle_set_state missed and rescue_set_state handled */
	CNT_SEEN,             /* TCP transitions handled, before any filter */
	CNT_MAX,
};

/* Histograms (hists map): one row of log2(microseconds) buckets per kind. */
#define HIST_BUCKETS 48
#define HIST_ACTIVE_OPEN NUM_STATES      /* SYN_SENT -> ESTABLISHED */
#define HIST_PASSIVE_OPEN (NUM_STATES + 1) /* child LISTEN -> SYN_RECV -> ESTABLISHED */
#define HIST_LIFETIME (NUM_STATES + 2)   /* birth to ->CLOSE, listeners excluded */
#define HIST_KINDS (NUM_STATES + 3)      /* rows 0..NUM_STATES-1: time in that state */

/* How a socket's life ended (outcomes map); mirrored in tracer/aggregate.go. */
enum outcome {
	OUT_ACTIVE_CLOSE = 0,  /* we sent FIN first: FIN_WAIT1/2 -> CLOSE (time-wait) */
	OUT_PASSIVE_CLOSE,     /* the peer sent FIN first: LAST_ACK -> CLOSE */
	OUT_SIMULTANEOUS_CLOSE,/* both at once: through CLOSING */
	OUT_RESET,             /* RST received (sk_err ECONNRESET/EPIPE) */
	OUT_TIMEOUT,           /* retransmissions gave up (sk_err ETIMEDOUT) */
	OUT_ABORT,             /* closed locally without FIN: SO_LINGER 0, unread data, unaccepted child */
	OUT_CONNECT_REFUSED,   /* SYN_SENT -> CLOSE, sk_err ECONNREFUSED */
	OUT_CONNECT_TIMEOUT,   /* SYN_SENT -> CLOSE, sk_err ETIMEDOUT */
	OUT_CONNECT_ABORTED,   /* SYN_SENT -> CLOSE otherwise (closed while connecting) */
	OUT_LISTENER_CLOSED,   /* LISTEN -> CLOSE */
	OUT_MAX,
};

/* One state transition, as user space receives it (tracer/decode.go). */
struct event {
	__u64 ts_ns;        /* bpf_ktime_get_ns() at the transition */
	__u64 skaddr;       /* struct sock address */
	__u64 old_state_ns; /* time in oldstate, if EVF_DURATION_KNOWN */
	__u32 pid;          /* owner tgid (0: unknown) */
	__u32 cpu_pid;      /* tgid on the CPU when it fired */
	__u16 family;
	__u16 sport; /* host byte order */
	__u16 dport; /* host byte order */
	__u8 oldstate;
	__u8 newstate;
	__u8 saddr[16]; /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
	char cpu_comm[TASK_COMM_LEN];
	__u8 flags;      /* EVF_* */
	__u8 last_state; /* the new state of this socket's previous event (0: none seen) */
	__u8 _pad[2];
	__u32 netns; /* inode number of the socket's network namespace */
};

/* What the program remembers of one socket incarnation. */
struct tcpstate_sock {
	__u64 state_ts; /* when it entered its current state (0: unknown) */
	__u64 born_ts;  /* its birth (0: born before we started) */
	__u32 pid;      /* owner tgid */
	__u16 visited;  /* bit n: it has been in state n */
	__u8 owner;     /* OWNER_* */
	__u8 matched;   /* the filters matched once: sticky */
	__u8 state;     /* the last new state seen (0: none) */
	__u8 _pad;
	/* Addresses as of its last event, for the stuck-socket list. */
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
};

struct tcpstate_held {
	__u32 n;
	__u32 _pad;
	struct event ev[MAX_HELD];
};

struct tcpstate_lkey {
	__u32 netns; /* network namespace inode number */
	__u16 port;  /* host byte order */
	__u16 _pad;
};

struct tcpstate_listener {
	__u64 skaddr; /* the listening socket that registered this port */
	__u32 pid;
	__u32 _pad;
	char comm[TASK_COMM_LEN];
};

/* Settings fixed by user space at load time (tracer/tracer.go). */
const volatile __u16 filter_family = 0;  /* 0: any; AF_INET or AF_INET6 */
const volatile __u8 filter_ports = 0;    /* PORT_* kinds in use; values in port_filter */
const volatile __u8 filter_pids = 0;     /* owner pids in pid_filter */
const volatile __u16 filter_states = 0;  /* bit n: events into or out of state n; 0: all */
const volatile __u64 wakeup_bytes = 0;   /* wake the reader only past this much pending data */

/* What to do with an event that passes the filters (tracer.Mode). */
const volatile __u8 mode_stream = 1;    /* send it to the ring buffer */
const volatile __u8 mode_anomalies = 0; /* send it only if EVF_ILLEGAL or EVF_GAP */
const volatile __u8 mode_aggregate = 0; /* count it in the aggregation maps */
/* The transition model (model.Model.Mask): bit n of edge_mask[old] allows old->n. */
const volatile __u16 edge_mask[NUM_STATES] = {};

/* The transitions, in order per socket. Written by every program, read by
 * tracer.Tracer.Run. Submitted without wakeup (see submit()). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 21); /* resized by user space */
} events SEC(".maps");

/* Per-socket memory, keyed by skaddr. handle_set_state inserts an entry at
 * a socket's first event (or the accept programs, for a socket they see
 * first), updates it at every event, and deletes it at ->CLOSE, so a reused
 * skaddr never inherits an old owner or duration. LRU: sockets whose ->CLOSE
 * we never see (lost event) age out; user space counts those evictions as
 * inserts - deletes - live entries. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* resized by user space */
	__type(key, __u64);
	__type(value, struct tcpstate_sock);
} socks SEC(".maps");

/* Events held back while a socket's filter match is undecided (its port or
 * owner not yet known), keyed by skaddr. hold() inserts, flush_held() emits
 * and deletes them once the socket matches, drop_held() deletes them when it
 * does not, and handle_set_state deletes them at ->CLOSE. Sized to 1 entry by
 * user space when no filter can be undecided. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct tcpstate_held);
} held SEC(".maps");

/* A zeroed struct tcpstate_held to insert from (too large for the BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tcpstate_held);
} held_zero SEC(".maps");

/* The owner of each listening port, per network namespace: a child socket is
 * born in softirq (inet_csk_clone_lock) with no pointer back to its listener,
 * but with the listener's local port. handle_set_state inserts at
 * CLOSE->LISTEN and deletes at LISTEN->CLOSE (only its own registration). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct tcpstate_lkey);
	__type(value, struct tcpstate_listener);
} listeners SEC(".maps");

/* Filter sets, filled by user space before attach; read-only here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* resized by user space */
	__type(key, __u16);
	__type(value, __u8); /* PORT_* */
} port_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* resized by user space */
	__type(key, __u32);
	__type(value, __u8);
} pid_filter SEC(".maps");

/* Counters (enum counter), per CPU; user space sums them. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Aggregation (mode_aggregate), read and summed by tracer/aggregate.go. */

/* Transition counts: index old * NUM_STATES + new. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NUM_STATES * NUM_STATES);
	__type(key, __u32);
	__type(value, __u64);
} matrix SEC(".maps");

/* Histograms: index kind * HIST_BUCKETS + log2(microseconds). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HIST_KINDS * HIST_BUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OUT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} outcomes SEC(".maps");

struct tcpstate_count {
	__u64 transitions;
	__u64 opened; /* sockets born: connect(), listen(), a child */
	char comm[TASK_COMM_LEN];
};

/* Per local port and per owner pid; bounded: what does not fit is counted in
 * CNT_PORT_OTHER / CNT_PID_OTHER. Inserted and updated by count_by(). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct tcpstate_count);
} port_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct tcpstate_count);
} pid_counts SEC(".maps");

/* bpf2go -type event needs the struct referenced. */
const struct event *unused_event __attribute__((unused));

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += 1;
}

/* Send one event. No wakeup per event: the wakeup is the expensive part of a
 * ring buffer submit (it raises an irq_work self-interrupt, and softirq work
 * that runs nested inside it makes the kernel skip our program for those
 * events: recursion misses). The reader polls with a short deadline instead
 * and is woken only when the ring fills past wakeup_bytes. */
static __always_inline void submit(struct event *e)
{
	__u64 flags = BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(&events, e, sizeof(*e), flags))
		count(CNT_RINGBUF_FULL);
}

static __always_inline void add(void *map, __u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(map, &idx);
	if (v)
		*v += 1;
}

/* floor(log2(microseconds)), 0 for less than 2 us, at most HIST_BUCKETS-1;
 * branch-free, where a shift loop ran up to 47 rounds per event. */
static __always_inline __u32 log2_bucket(__u64 ns)
{
	__u64 v = ns / 1000;
	__u32 r, s;
	r = (v > 0xFFFFFFFFULL) << 5;
	v >>= r;
	s = (v > 0xFFFF) << 4;
	v >>= s;
	r |= s;
	s = (v > 0xFF) << 3;
	v >>= s;
	r |= s;
	s = (v > 0xF) << 2;
	v >>= s;
	r |= s;
	s = (v > 0x3) << 1;
	v >>= s;
	r |= s;
	r |= (__u32)(v >> 1);
	return r < HIST_BUCKETS - 1 ? r : HIST_BUCKETS - 1;
}

static __always_inline void hist(__u32 kind, __u64 ns)
{
	add(&hists, kind * HIST_BUCKETS + log2_bucket(ns));
}

static __always_inline void count_by(void *map, __u32 key, __u32 other, bool born,
				     const char *comm)
{
	struct tcpstate_count *c = bpf_map_lookup_elem(map, &key);
	if (!c) {
		struct tcpstate_count zero = {};
		if (comm)
			__builtin_memcpy(zero.comm, comm, sizeof(zero.comm));
		if (bpf_map_update_elem(map, &key, &zero, BPF_NOEXIST) && !bpf_map_lookup_elem(map, &key)) {
			count(other);
			return;
		}
		c = bpf_map_lookup_elem(map, &key);
		if (!c)
			return;
	}
	__sync_fetch_and_add(&c->transitions, 1);
	if (born)
		__sync_fetch_and_add(&c->opened, 1);
}

/* A global function: the verifier checks it once, on its own, instead of
 * at each of deliver()'s inlined call sites (flush_held() delivers up to
 * MAX_HELD events), which with the filter paths exceeded its 1M-instruction
 * budget. */
__noinline int aggregate(struct event *e)
{
	if (!e)
		return 0;
	__u32 old = e->oldstate, new = e->newstate;
	if (old >= NUM_STATES || new >= NUM_STATES)
		return 0;
	add(&matrix, old * NUM_STATES + new);
	if (e->flags & EVF_DURATION_KNOWN) {
		hist(old, e->old_state_ns);
		if (old == TCP_SYN_SENT && new == TCP_ESTABLISHED)
			hist(HIST_ACTIVE_OPEN, e->old_state_ns);
		else if (old == TCP_SYN_RECV && new == TCP_ESTABLISHED)
			hist(HIST_PASSIVE_OPEN, e->old_state_ns);
	}
	bool born = (old == TCP_CLOSE && new != TCP_LISTEN) ||
		    (old == TCP_LISTEN && new == TCP_SYN_RECV);
	/* Count by the service port, not the ephemeral one: a connecting
	 * socket by its remote port (key bit 16 set), any other (listeners,
	 * accepted children) by its local port. */
	__u32 pkey = e->flags & EVF_ACTIVE ? (1 << 16) | e->dport : e->sport;
	count_by(&port_counts, pkey, CNT_PORT_OTHER, born, NULL);
	if (e->flags & EVF_OWNER_KNOWN)
		count_by(&pid_counts, e->pid, CNT_PID_OTHER, born, e->comm);
	return 0;
}

/* An event that passed the filters: counted, sent, or both, as the mode says. */
static __always_inline void deliver(struct event *e)
{
	if (filter_states &&
	    !(((1 << e->oldstate) | (1 << e->newstate)) & filter_states))
		return;
	if (mode_aggregate)
		aggregate(e);
	if (mode_stream || (mode_anomalies && (e->flags & (EVF_ILLEGAL | EVF_GAP))))
		submit(e);
}

/* How the socket's life ended, from its last transition, its path and the
 * error the kernel set before tcp_done() (tcp_reset, tcp_write_err). */
static __always_inline __u32 outcome(int err, int old, __u16 visited)
{
	if (old == TCP_LISTEN)
		return OUT_LISTENER_CLOSED;
	/* tcp_reset() sets ECONNREFUSED in SYN_SENT, EPIPE in CLOSE_WAIT and
	 * ECONNRESET elsewhere; tcp_write_err() sets the last soft error
	 * (an ICMP unreachable, say) or ETIMEDOUT: any other error is a
	 * timeout. */
	if (old == TCP_SYN_SENT) {
		if (err == ECONNREFUSED)
			return OUT_CONNECT_REFUSED;
		if (err)
			return OUT_CONNECT_TIMEOUT;
		return OUT_CONNECT_ABORTED;
	}
	if (visited & (1 << TCP_CLOSING))
		return OUT_SIMULTANEOUS_CLOSE;
	if (err == ECONNRESET || err == EPIPE)
		return OUT_RESET;
	if (err)
		return OUT_TIMEOUT;
	if (old == TCP_LAST_ACK)
		return OUT_PASSIVE_CLOSE;
	if (old == TCP_FIN_WAIT1 || old == TCP_FIN_WAIT2)
		return OUT_ACTIVE_CLOSE;
	return OUT_ABORT;
}

static __always_inline void drop_held(__u64 *key)
{
	if (bpf_map_delete_elem(&held, key) == 0)
		count(CNT_HELD_DELETE);
}

static __always_inline void flush_held(__u64 *key)
{
	struct tcpstate_held *h = bpf_map_lookup_elem(&held, key);
	if (!h)
		return;
	__u32 n = h->n;
	for (__u32 i = 0; i < MAX_HELD; i++) {
		if (i >= n)
			break;
		deliver(&h->ev[i]);
	}
	drop_held(key);
}

static __always_inline void hold(__u64 *key, struct event *e)
{
	struct tcpstate_held *h = bpf_map_lookup_elem(&held, key);
	if (!h) {
		__u32 zero = 0;
		struct tcpstate_held *z = bpf_map_lookup_elem(&held_zero, &zero);
		if (!z)
			return;
		if (bpf_map_update_elem(&held, key, z, BPF_NOEXIST) == 0)
			count(CNT_HELD_INSERT);
		h = bpf_map_lookup_elem(&held, key);
		if (!h) {
			count(CNT_HELD_OVERFLOW);
			return;
		}
	}
	__u32 n = h->n;
	if (n >= MAX_HELD) {
		count(CNT_HELD_OVERFLOW);
		return;
	}
	e->flags |= EVF_HELD;
	__builtin_memcpy(&h->ev[n & (MAX_HELD - 1)], e, sizeof(*e));
	h->n = n + 1;
}

/* One kind of port filter against one port: DECIDE_LATER while the port is
 * not known yet. */
static __always_inline int port_is(__u16 port, bool known, __u8 kinds)
{
	if (!known)
		return DECIDE_LATER;
	__u8 *v = bpf_map_lookup_elem(&port_filter, &port);
	return v && (*v & kinds) ? DECIDE_YES : DECIDE_NO;
}

static __always_inline int combine(int a, int b)
{
	if (a == DECIDE_NO || b == DECIDE_NO)
		return DECIDE_NO;
	if (a == DECIDE_LATER || b == DECIDE_LATER)
		return DECIDE_LATER;
	return DECIDE_YES;
}

/* Do the filters want this socket? Different filters AND, the values of one
 * filter OR. A field not known yet makes the answer DECIDE_LATER, unless
 * `last` (the socket is closing), when what is known is final: an inherited
 * owner counts, an unknown port does not match. */
static __always_inline int decide(struct tcpstate_sock *si, __u16 sport, bool sport_known,
				  __u16 dport, bool dport_known, bool last)
{
	int d = DECIDE_YES;

	if (filter_ports & PORT_EITHER) {
		int l = port_is(sport, sport_known, PORT_EITHER);
		int r = port_is(dport, dport_known, PORT_EITHER);
		if (l == DECIDE_YES || r == DECIDE_YES)
			d = DECIDE_YES;
		else if (l == DECIDE_LATER || r == DECIDE_LATER)
			d = DECIDE_LATER;
		else
			d = DECIDE_NO;
	}
	if (filter_ports & PORT_LOCAL)
		d = combine(d, port_is(sport, sport_known, PORT_LOCAL));
	if (filter_ports & PORT_REMOTE)
		d = combine(d, port_is(dport, dport_known, PORT_REMOTE));
	if (filter_pids) {
		int p = DECIDE_LATER;
		if (si->owner == OWNER_FINAL || (last && si->owner == OWNER_INHERITED)) {
			__u32 pid = si->pid;
			p = bpf_map_lookup_elem(&pid_filter, &pid) ? DECIDE_YES : DECIDE_NO;
		}
		d = combine(d, p);
	}
	if (last && d == DECIDE_LATER)
		d = DECIDE_NO;
	return d;
}

/* Transitions that only happen in a system call on the socket, so the task
 * on the CPU is (one of) its owner(s): connect() (tcp_v4_connect,
 * tcp_v6_connect), listen() (inet_csk_listen_start), close()/shutdown()
 * (tcp_close_state, including its self transitions), close() of a listener.
 * Everything else may run in softirq, where the CPU's task is whoever was
 * interrupted. */
static __always_inline bool owner_acts(int old, int new)
{
	switch (new) {
	case TCP_SYN_SENT:
	case TCP_LISTEN:
		return old == TCP_CLOSE;
	case TCP_FIN_WAIT1:
		return old == TCP_ESTABLISHED || old == TCP_SYN_RECV || old == TCP_FIN_WAIT1;
	case TCP_LAST_ACK:
		return old == TCP_CLOSE_WAIT || old == TCP_LAST_ACK;
	case TCP_FIN_WAIT2:
	case TCP_CLOSING:
		return old == new;
	case TCP_CLOSE:
		return old == TCP_LISTEN;
	}
	return false;
}

/* Reads of the struct sock. In the tp_btf program sk is a BTF pointer that
 * can be dereferenced directly (plain loads, CO-RE relocated); the raw_tp
 * twin gets a plain address and needs bpf_probe_read_kernel. A probe read
 * is a helper call: doing eight of them per event cost ~300 ns. */
#define SK_READ(direct, ptr, ...) \
	((direct) ? __builtin_preserve_access_index((ptr)->__VA_ARGS__) : BPF_CORE_READ(ptr, __VA_ARGS__))

static __always_inline __u32 sock_netns(const struct sock *sk, bool direct)
{
	if (direct)
		return sk->__sk_common.skc_net.net->ns.inum;
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* tp_btf rather than the classic tracepoint: it hands us the struct sock
 * itself (the owner map and CO-RE reads need it), it needs only CAP_BPF +
 * CAP_PERFMON and no tracefs, and its recursion guard is per program
 * (prog->active) instead of the per-CPU bpf_prog_active that every classic
 * tracepoint and kprobe program shares, so it misses fewer nested events.
 * Without BTF neither CO-RE nor tp_btf works, so there is no fallback to
 * choose: user space reports the missing BTF instead. */
static __always_inline int on_set_state(const struct sock *sk, const int oldstate, const int newstate,
					bool direct)
{
	/* The tracepoint also fires for MPTCP (262) and SCTP (132) sockets. */
	__u16 protocol = direct ? BPF_CORE_READ_BITFIELD(sk, sk_protocol)
				: BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
	if (protocol != IPPROTO_TCP)
		return 0;
	count(CNT_SEEN);
	__u16 family = SK_READ(direct, sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (filter_family && family != filter_family)
		return 0;

	__u64 now = bpf_ktime_get_ns();
	__u64 key = (__u64)sk;
	bool last = newstate == TCP_CLOSE;
	bool child = oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV;
	bool birth = child || (oldstate == TCP_CLOSE &&
			       (newstate == TCP_SYN_SENT || newstate == TCP_LISTEN));

	struct event e = {};
	e.ts_ns = now;
	e.skaddr = key;
	e.oldstate = oldstate;
	e.newstate = newstate;
	e.family = family;
	e.netns = sock_netns(sk, direct);
	/* Ports from inet_sport/skc_dport, as the tracepoint itself does:
	 * skc_num is already 0 at FIN_WAIT2->CLOSE and LAST_ACK->CLOSE. */
	const struct inet_sock *inet = (const struct inet_sock *)sk;
	if (direct) {
		/* The verifier knows sk as a struct sock: reaching the
		 * inet_sock around it takes a typed cast, which this helper
		 * gives (NULL for anything but a full TCP socket). */
		struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
		if (!tp)
			return 0;
		inet = &tp->inet_conn.icsk_inet;
	}
	e.sport = bpf_ntohs(SK_READ(direct, inet, inet_sport));
	e.dport = bpf_ntohs(SK_READ(direct, sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		*(__u32 *)e.saddr = SK_READ(direct, inet, inet_saddr);
		*(__u32 *)e.daddr = SK_READ(direct, sk, __sk_common.skc_daddr);
	} else if (direct) {
		__builtin_memcpy(e.saddr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
		__builtin_memcpy(e.daddr, &sk->__sk_common.skc_v6_daddr, 16);
	} else {
		BPF_CORE_READ_INTO(&e.saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&e.daddr, sk, __sk_common.skc_v6_daddr);
	}
	e.cpu_pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(&e.cpu_comm, sizeof(e.cpu_comm));

	/* A birth starts a new incarnation even if an entry survived (its
	 * ->CLOSE was lost): never carry an old owner or duration over. */
	struct tcpstate_sock fresh = {};
	struct tcpstate_sock *si = bpf_map_lookup_elem(&socks, &key);
	__u8 prev_state = si ? si->state : 0;
	if (si && birth) {
		*si = fresh;
		if (filter_ports || filter_pids)
			drop_held(&key);
	}
	if (!si && !last) {
		if (bpf_map_update_elem(&socks, &key, &fresh, BPF_NOEXIST) == 0)
			count(CNT_SOCK_INSERT);
		si = bpf_map_lookup_elem(&socks, &key);
	}
	if (!si)
		si = &fresh; /* ->CLOSE of a socket we never saw, or the map refused it */

	if (si->state_ts && !birth) {
		e.old_state_ns = now - si->state_ts;
		e.flags |= EVF_DURATION_KNOWN;
	}
	/* The model check, as model.Tracker does it: an edge outside the
	 * model is illegal; a socket whose last state we know must continue
	 * from it, and a birth on a known socket means its ->CLOSE was lost. */
	e.last_state = prev_state;
	__u32 oi = oldstate;
	__u16 allowed = 0;
	if (oi < NUM_STATES)
		allowed = edge_mask[oi];
	if ((__u32)newstate >= NUM_STATES || !(allowed & (1 << (newstate & 0xf))))
		e.flags |= EVF_ILLEGAL;
	if (prev_state && (birth || prev_state != oldstate))
		e.flags |= EVF_GAP;

	/* The task is looked at only for the transitions that name an owner. */
	if (owner_acts(oldstate, newstate) && !(bpf_get_current_task_btf()->flags & PF_KTHREAD)) {
		si->pid = e.cpu_pid;
		__builtin_memcpy(si->comm, e.cpu_comm, sizeof(si->comm));
		si->owner = OWNER_FINAL;
	} else if (child) {
		/* Born in softirq inside inet_csk_clone_lock(): inherit the
		 * listener's owner until accept() names the real one. */
		struct tcpstate_lkey lk = { .netns = e.netns, .port = e.sport };
		struct tcpstate_listener *l = bpf_map_lookup_elem(&listeners, &lk);
		if (l) {
			si->pid = l->pid;
			__builtin_memcpy(si->comm, l->comm, sizeof(si->comm));
			si->owner = OWNER_INHERITED;
		}
	}
	if (newstate == TCP_LISTEN && e.sport) {
		/* listen() after bind(): the port is known. After an autobind
		 * the port is still 0 here (inet_csk_listen_start sets the state
		 * before get_port), so that listener's children get no owner
		 * until accept(). */
		struct tcpstate_lkey lk = { .netns = e.netns, .port = e.sport };
		struct tcpstate_listener l = { .skaddr = key, .pid = si->pid };
		__builtin_memcpy(l.comm, si->comm, sizeof(l.comm));
		bpf_map_update_elem(&listeners, &lk, &l, BPF_ANY);
	} else if (oldstate == TCP_LISTEN && last) {
		struct tcpstate_lkey lk = { .netns = e.netns, .port = e.sport };
		struct tcpstate_listener *l = bpf_map_lookup_elem(&listeners, &lk);
		if (l && l->skaddr == key)
			bpf_map_delete_elem(&listeners, &lk);
	}
	if (si->owner != OWNER_NONE) {
		e.pid = si->pid;
		__builtin_memcpy(e.comm, si->comm, sizeof(e.comm));
		e.flags |= EVF_OWNER_KNOWN;
		if (si->owner == OWNER_INHERITED)
			e.flags |= EVF_OWNER_INHERITED;
	}
	si->state_ts = now;
	si->state = newstate;
	if (birth)
		si->born_ts = now;
	__u16 visited = si->visited | (1 << (newstate & 0xf));
	si->visited = visited;
	if (visited & (1 << TCP_SYN_SENT))
		e.flags |= EVF_ACTIVE;
	si->family = family;
	si->sport = e.sport;
	si->dport = e.dport;
	__builtin_memcpy(si->saddr, e.saddr, sizeof(si->saddr));
	__builtin_memcpy(si->daddr, e.daddr, sizeof(si->daddr));
	__u64 born_ts = si->born_ts;

	bool pass = true;
	if (!filter_ports && !filter_pids) {
		deliver(&e);
	} else if (si->matched) {
		deliver(&e);
	} else {
		/* Fields the kernel has not set yet: CLOSE->SYN_SENT fires
		 * before connect() picks the source port (sport is 0 or stale
		 * after connect(AF_UNSPEC)); CLOSE->LISTEN after an autobind
		 * has sport 0; a child's LISTEN->SYN_RECV may fire before its
		 * peer is set (on 6.18 it was always set). A listener has no
		 * peer at all: its remote side is known to match no remote port. */
		bool sport_known = e.sport && !(oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT);
		bool listening = newstate == TCP_LISTEN || (oldstate == TCP_LISTEN && !child);
		bool dport_known = listening || e.dport;
		int d = decide(si, e.sport, sport_known, e.dport, dport_known, last);
		if (d == DECIDE_YES) {
			si->matched = 1;
			flush_held(&key);
			deliver(&e);
		} else if (d == DECIDE_LATER) {
			hold(&key, &e);
			pass = false;
		} else {
			drop_held(&key);
			pass = false;
		}
	}

	if (last) {
		if (mode_aggregate && pass) {
			add(&outcomes, outcome(SK_READ(direct, sk, sk_err), oldstate, visited));
			if (born_ts && oldstate != TCP_LISTEN)
				hist(HIST_LIFETIME, now - born_ts);
		}
		if (bpf_map_delete_elem(&socks, &key) == 0)
			count(CNT_SOCK_DELETE);
		if (filter_ports || filter_pids)
			drop_held(&key);
	}
	return 0;
}

/* Set while handle_set_state runs on this CPU; read by rescue_set_state. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} busy SEC(".maps");

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	__u32 zero = 0;
	__u32 *b = bpf_map_lookup_elem(&busy, &zero);
	if (b)
		*b = 1;
	on_set_state(sk, oldstate, newstate, true);
	if (b)
		*b = 0;
	return 0;
}

/* The kernel runs a tracing program at most once per CPU at a time
 * (prog->active): a transition that fires in softirq while handle_set_state
 * runs for a process-context one on the same CPU (the ring buffer's and the
 * maps' work can let pending softirqs in) is skipped, a recursion miss. Each
 * attached program is its own probe, called in turn, with its own guard: this
 * second program, attached after the first, runs for that nested transition
 * and handles it when it sees the first one busy on this CPU. Otherwise it
 * returns at once. Misses that neither program caught are the first
 * program's recursion misses less CNT_RESCUED (tracer.Counters). */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(rescue_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	__u32 zero = 0;
	__u32 *b = bpf_map_lookup_elem(&busy, &zero);
	if (!b || !*b)
		return 0;
	count(CNT_RESCUED);
	return on_set_state(sk, oldstate, newstate, true);
}

/* The same program as a raw tracepoint. It is loaded but not attached:
 * raw_tp programs can be run with BPF_PROG_RUN and arguments of our choice,
 * so tests replay transitions the kernel would never make (an illegal edge, a
 * gap) on a real socket through the real code (tracer.Tracer.Replay). Every
 * read of sk above is a CO-RE probe read, which works in both program types. */
SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(replay_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	return on_set_state(sk, oldstate, newstate, false);
}

/* accept() and accept4() return the new socket's fd: the task is now the
 * socket's owner. Walk current->files to the struct sock (the child was
 * born in softirq and may already have made several transitions). */
static __always_inline int on_accept(long ret)
{
	if (ret < 0)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || ret >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[ret]) || !f)
		return 0;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return 0;
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (filter_family && family != filter_family)
		return 0;

	__u64 key = (__u64)sk;
	struct tcpstate_sock *si = bpf_map_lookup_elem(&socks, &key);
	if (!si) {
		/* Born before we started: remember the owner for its later events. */
		struct tcpstate_sock fresh = {};
		if (bpf_map_update_elem(&socks, &key, &fresh, BPF_NOEXIST) == 0)
			count(CNT_SOCK_INSERT);
		si = bpf_map_lookup_elem(&socks, &key);
		if (!si)
			return 0;
	}
	si->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(&si->comm, sizeof(si->comm));
	si->owner = OWNER_FINAL;
	count(CNT_ACCEPT);

	/* The owner was what the held events waited for: decide now rather
	 * than at the socket's next transition, which may be much later. */
	if ((filter_ports || filter_pids) && !si->matched) {
		const struct inet_sock *inet = (const struct inet_sock *)sk;
		__u16 sport = bpf_ntohs(BPF_CORE_READ(inet, inet_sport));
		__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
		int d = decide(si, sport, sport != 0, dport, dport != 0, false);
		if (d == DECIDE_YES) {
			si->matched = 1;
			flush_held(&key);
		} else if (d == DECIDE_NO) {
			drop_held(&key);
		}
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int handle_accept4_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int handle_accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx->ret);
}

/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * The event: one TCP state transition as user space receives it from the
 * ring buffer (tracer/decode.go), and its flags. bpf2go generates the Go
 * types of struct event and of every enum here (-type); tracer's tests pin
 * the model package's copies of the flags against them.
 */
#ifndef TCPSTATE_EVENT_H
#define TCPSTATE_EVENT_H

/* struct event.flags */
enum event_flag {
	EVF_OWNER_KNOWN = 0x1,     /* pid/comm name the socket's owner */
	EVF_OWNER_INHERITED = 0x2, /* the owner is its listener's, until accept() names one */
	EVF_DURATION_KNOWN = 0x4,  /* old_state_ns was measured */
	EVF_HELD = 0x8,            /* held back until the socket matched the filters */
	EVF_ILLEGAL = 0x10,        /* the edge is not in the model (edge_mask) */
	EVF_GAP = 0x20,            /* old state is not the last state seen */
	EVF_ACTIVE = 0x40,         /* the socket connect()ed: it went through SYN_SENT */
	EVF_CPU_TASK = 0x80,       /* cpu_pid/cpu_comm were read */
	EVF_AGE_AT_LEAST = 0x100,  /* age_ns counts from the snapshot: the socket is older */
	EVF_COUNTS = 0x200,        /* bytes_acked..srtt_us were read (a ->CLOSE, not a listener's) */
};

/* One state transition. Naturally aligned, never packed. Integers are in
 * host byte order, ports included (converted with bpf_ntohs); addresses are
 * the kernel's network-order bytes, IPv4 in the first 4. */
struct event {
	__u64 ts_ns;        /* bpf_ktime_get_ns() at the transition */
	__u64 skaddr;       /* struct sock address */
	__u64 old_state_ns; /* time in oldstate, if EVF_DURATION_KNOWN */
	__u64 loss_seq;     /* events counted lost host-wide before this one (loss_seq) */
	__u64 prev_loss_seq; /* loss_seq at this socket's previous event (0: none seen) */
	__u64 cgroup_id;     /* the socket's own cgroup v2 id (0: none) */
	/* At ->CLOSE only (0 otherwise): how the connection ended (cause.h). */
	__u64 bytes_acked;    /* bytes sent and acknowledged (tcp_sock.bytes_acked) */
	__u64 bytes_received; /* bytes received (tcp_sock.bytes_received) */
	__u64 age_ns;         /* since its birth (0: born before tracing) */
	__u32 total_retrans;  /* segments retransmitted */
	__u32 srtt_us;        /* smoothed round-trip time, microseconds */
	__u32 pid;          /* owner tgid (0: unknown) */
	__u32 cpu_pid;      /* tgid on the CPU when it fired, if EVF_CPU_TASK */
	__u32 netns;        /* inode number of the socket's network namespace */
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u16 flags; /* enum event_flag */
	__u8 oldstate;
	__u8 newstate;
	__u8 last_state; /* the new state of this socket's previous event (0: none seen) */
	__u8 _pad;
	__u16 close_facts; /* at ->CLOSE: enum close_fact bits */
	__u16 close_err;   /* at ->CLOSE: sk_err, an errno */
	__u16 rst_reason;  /* at ->CLOSE: enum sk_rst_reason of a reset sent (6.10+) */
	__u16 _pad2;
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
	char cpu_comm[TASK_COMM_LEN];
};

/* Indexes of the counters map. Every cause of loss has its own. */
enum counter {
	CNT_SEEN = 0,         /* TCP transitions handled, before any filter */
	CNT_SOCKETS,          /* socket incarnations: births, and sockets first seen mid-life */
	CNT_RINGBUF_FULL,     /* lost: no room in the ring buffer */
	CNT_HELD_OVERFLOW,    /* lost: a socket's held-back queue was full */
	CNT_HELD_NOSPACE,     /* lost: no held-back queue could be made (held map full) */
	CNT_UNDECIDED_CLOSED, /* lost: held back for an owner or port never learnt, dropped at ->CLOSE */
	CNT_NO_STATE,         /* transitions of a socket whose storage could not be made */
	CNT_ACCEPT,           /* owners named by accept() */
	CNT_ACCEPT_NOSPACE,   /* accept() owners not recorded: accepted map full */
	CNT_ACCEPT_STALE,     /* accept() records of a socket freed before its next event */
	CNT_RESCUED,          /* nested events handle_set_state missed and rescue_set_state handled */
	CNT_PID_OTHER,        /* transitions not counted per owner: pid_counts full */
	CNT_RST_NO_SOCKET,    /* resets sent for packets that matched no socket (6.10+) */
	CNT_CGROUP_OTHER,     /* transitions not counted per cgroup: cgroup_counts full */
	CNT_GAP,              /* aggregated transitions whose old state is not the socket's last one (EVF_GAP) */
	CNT_GAP_AFTER_LOSS,   /* of those, gaps with a loss counted since the socket's previous event */
	CNT_GAP_MISSING,      /* transitions the other gaps prove missing, uncounted (missing_dist) */
	CNT_MAX,
};

/* Histograms (hists map): one row of log2(microseconds) buckets per kind. */
enum hist_kind {
	/* rows 0..NUM_STATES-1: time spent in that state */
	HIST_ACTIVE_OPEN = NUM_STATES, /* SYN_SENT -> ESTABLISHED */
	HIST_PASSIVE_OPEN,             /* a child's SYN_RECV -> ESTABLISHED */
	HIST_LIFETIME,                 /* birth to ->CLOSE, listeners excluded */
	HIST_KINDS,
};
enum hist_size {
	HIST_BUCKETS = 48, /* log2(us) buckets per histogram row */
};

/* bpf2go -type needs each type referenced. */
const struct event *unused_event __attribute__((unused));
const enum event_flag *unused_event_flag __attribute__((unused));
const enum counter *unused_counter __attribute__((unused));
const enum hist_kind *unused_hist_kind __attribute__((unused));
const enum hist_size *unused_hist_size __attribute__((unused));
const enum port_kind *unused_port_kind __attribute__((unused));

#endif

/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * Every map, with who creates, updates and deletes its entries. User space
 * (tracer/load.go) sizes them before loading; tracer/ reads them.
 */
#ifndef TCPSTATE_MAPS_H
#define TCPSTATE_MAPS_H

/* struct sock_state.owner */
enum owner_kind {
	OWNER_NONE = 0,
	OWNER_INHERITED = 1, /* the listener's owner, until accept() names one */
	OWNER_FINAL = 2,     /* seen acting on the socket in process context, or its acceptor */
};

/* sock_state.flags */
enum sock_flag {
	SF_SEEDED_STATE = 0x1, /* the state came from a snapshot: it began before state_ts */
	SF_SEEDED_OWNER = 0x2, /* the owner came from a snapshot: a process that holds it */
	SF_BORN_BEFORE = 0x4,  /* it existed before tracing: born_ts is the snapshot's time, a lower bound */
};

/* What the programs remember of one socket incarnation. */
struct sock_state {
	__u64 state_ts; /* when it entered its current state (0: unknown) */
	__u64 loss_seq; /* loss_seq at its last event */
	__u64 born_ts;  /* its birth (0: born before we started) */
	__u32 pid;      /* owner tgid */
	__u16 visited;  /* bit n: it has been in state n */
	__u8 owner;     /* enum owner_kind */
	__u8 matched;   /* the filters matched once: sticky */
	__u8 state;     /* the last new state seen (0: none) */
	__u8 flags;     /* enum sock_flag */
	__u8 rst;       /* enum rst_mark: resets seen (cause.h) */
	__u8 _pad;
	__u16 rst_reason; /* enum sk_rst_reason of the last reset sent (6.10+) */
	__u16 cgroup_gen; /* cgroup_gen at its birth (0: born before tracing) */
	char comm[TASK_COMM_LEN];
};

/*
 * Per-socket memory, kept in the socket itself (socket local storage): it
 * cannot be evicted, whatever the number of live sockets, and the kernel
 * frees it with the socket, so a reused socket address never inherits an
 * old owner or duration. handle_set_state creates an entry at a socket's
 * first event and updates it at every event; nothing deletes entries.
 * BPF_F_CLONE: inet_csk_clone_lock() copies a listener's entry into each
 * child it creates (sk_clone_lock -> bpf_sk_storage_clone), before the
 * child's LISTEN->SYN_RECV fires, which is how a child learns its
 * listener's owner, also for a listener that autobound its port.
 * Why not an LRU hash: it evicted owners once live sockets outnumbered it.
 * Creating storage costs more than an LRU insert (measured in the README's
 * performance section), but there is no delete at ->CLOSE and no lookup by
 * address: bpf_sk_storage_get is a walk of the socket's own short list.
 * Only tracing programs (tp_btf, fentry/fexit, iterators) can use it: the
 * accept syscall tracepoints hand their owner over through `accepted`, and
 * the tests' replay of transitions the kernel never makes runs in an
 * iterator (replay_set_state), not in a raw_tp program.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct sock_state);
} sock_states SEC(".maps");

/* struct held.gate: who may deliver a socket's held events (filter.h). */
enum gate {
	GATE_OPEN = 0,     /* undecided: handle_set_state appends, anyone may decide */
	GATE_FLUSHING = 1, /* the holder of the gate is delivering held events */
	GATE_MATCHED = 2,  /* an accept program decided yes; handle_set_state finishes */
};

struct held {
	__u64 skaddr; /* whose queue this is (checked after taking the gate) */
	__u32 gate;   /* enum gate, changed only with atomic exchanges */
	__u32 n;      /* events appended; only handle_set_state appends */
	__u32 done;   /* events delivered or dropped; only the gate holder moves it */
	__u32 _pad;
	struct event ev[MAX_HELD];
};

/*
 * Events held back while a socket's filter match is undecided (its port or
 * owner not yet known), keyed by skaddr. A hash map, not socket storage, so
 * that the accept programs of every kind can deliver them when accept()
 * names the owner. handle_set_state inserts an entry when it first holds an
 * event, and deletes it once the socket is decided and its events are
 * delivered or dropped, or at ->CLOSE. Not preallocated: memory is spent
 * only on sockets that wait. Full: the event is counted in
 * CNT_HELD_NOSPACE. Sized by --max-sockets.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536); /* resized by user space */
	__type(key, __u64);
	__type(value, struct held);
} held SEC(".maps");

/* A zeroed struct held to insert from (too large for the BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct held);
} held_zero SEC(".maps");

struct accepted {
	__u64 ts; /* when accept() returned the socket */
	__u32 pid;
	__u32 _pad;
	char comm[TASK_COMM_LEN];
};

/*
 * The acceptor of each accepted socket, keyed by skaddr, until the socket's
 * next transition. The accept programs (fexit/inet_csk_accept or the accept
 * syscall tracepoints) insert; handle_set_state takes the owner over into
 * sock_states and deletes the entry at the socket's next event. An entry
 * older than the socket's birth belongs to a freed socket whose address was
 * reused (its last event was lost): handle_set_state deletes it unused
 * (CNT_ACCEPT_STALE). Full: CNT_ACCEPT_NOSPACE, the socket keeps its
 * listener's owner. Sized by --max-sockets.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH); /* preallocated: an insert and a delete per connection */
	__uint(max_entries, 65536);      /* resized by user space */
	__type(key, __u64);
	__type(value, struct accepted);
} accepted SEC(".maps");

/* Filter sets, filled by user space before attach; read-only here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* resized by user space */
	__type(key, __u16);
	__type(value, __u8); /* enum port_kind bits */
} port_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* resized by user space */
	__type(key, __u32);
	__type(value, __u8);
} pid_filter SEC(".maps");

/* A cgroup subtree the filter wants: the cgroup's id and its depth, and
 * the generation of the filter that added it. An unused slot has a level
 * above CGROUP_MAX_LEVEL and matches nothing. */
struct cgroup_want {
	__u64 id;
	__u32 level;
	__u32 gen;
};

#define CGROUP_MAX_LEVEL 4095

/*
 * The cgroup subtrees of --cgroup and --container, slots
 * [0, filter_cgroups). User space fills them before attach, and may fill
 * more while tracing runs: --container finds the cgroups of a container
 * that (re)starts later. A slot added later must not match sockets born
 * before it, or their later transitions would pass without their first
 * ones: a socket records cgroup_gen at its birth, and a slot matches only
 * sockets born at or after its generation. User space writes a slot with
 * the next generation, then raises cgroup_gen, so a socket that sees the
 * new generation sees the slot too. Read by cgroup_is.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* resized by user space */
	__type(key, __u32);
	__type(value, struct cgroup_want);
} cgroup_filter SEC(".maps");

/* The cgroup filter's generation (see cgroup_filter), raised by user space
 * after each slot it adds while tracing runs; at most 65535. */
__u32 cgroup_gen = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* resized by user space */
	__type(key, __u32); /* netns inode */
	__type(value, __u8);
} netns_filter SEC(".maps");

/* The transitions, in order per socket. Written by every program that
 * delivers, read by tracer's ring reader. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 21); /* resized by user space */
} events SEC(".maps");

/* Counters (enum counter), per CPU; user space sums them. Every increment
 * is atomic: a program nested on the same CPU (a softirq interrupting an
 * accept program, the rescue program inside the main one) must not lose an
 * increment. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Events counted lost so far, host-wide, by any cause the programs count:
 * every event carries the value it saw (event.loss_seq), so user space can
 * tell exactly whether a loss was counted between two events of a socket. */
__u64 loss_seq = 0;

/* Seed socket storage from the running state of the kernel (tracing
 * commands; not ls): set by user space from before the programs attach
 * until the start snapshot ends (tracer/load.go, Attach), and around each
 * seeding snapshot. snapshot.h says what seeding is. */
__u8 snap_seed = 0;

/* seed_state starts the storage of a socket that existed before tracing,
 * in state. Its history is unknown, except whether it connect()ed: a child
 * of a listener is a copy of it (sk_clone_lock copies struct sock whole),
 * sk_max_ack_backlog included, which listen() set to its backlog; a socket
 * that connect()ed never listened and has 0. (listen(fd, 0) makes children
 * that look active; no server we know of asks for a backlog of 0.) Active
 * or not decides whether the SYN is in bytes_acked and who closed first. */
static __always_inline void seed_state(struct sock_state *st, const struct sock *sk, __u8 state)
{
	st->state = state;
	st->state_ts = bpf_ktime_get_ns();
	st->born_ts = st->state_ts;
	st->flags |= SF_BORN_BEFORE | SF_SEEDED_STATE;
	st->loss_seq = loss_seq;
	st->visited = 1 << (state & 0xf);
	if (state != TCP_LISTEN && state != TCP_SYN_RECV && !BPF_CORE_READ(sk, sk_max_ack_backlog))
		st->visited |= 1 << TCP_SYN_SENT;
}

/* Aggregation (mode_aggregate), read by tracer/aggregate.go. */

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

/* The sum of each histogram's values, in nanoseconds: index hist_kind. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HIST_KINDS);
	__type(key, __u32);
	__type(value, __u64);
} hist_sums SEC(".maps");

/* Closes by their facts (enum close_fact bits, cause.h); user space names
 * the causes (model/cause.go). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 8192); /* CF_VALUES */
	__type(key, __u32);
	__type(value, __u64);
} closes SEC(".maps");

struct count {
	__u64 transitions;
	__u64 opened; /* sockets born: connect(), listen(), a child */
};

/* Per service port: index side * 65536 + port, side 1 for a socket that
 * connect()ed (counted by its remote port), 0 otherwise (by its local port).
 * An array of every port, so it never fills and costs no hash lookup; one
 * entry in stream mode. aggregate() updates it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE); /* user space reads it as memory, not 131072 lookups */
	__uint(max_entries, 2 * 65536);    /* 1 when not aggregating */
	__type(key, __u32);
	__type(value, struct count);
} port_counts SEC(".maps");

/* Per socket cgroup; bounded: what does not fit is counted in
 * CNT_CGROUP_OTHER. aggregate() inserts and updates; serve
 * --label-container deletes the entries of cgroups that are gone (the next
 * transition of such a cgroup's socket inserts it again, from 0). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024); /* 1 when not aggregating */
	__type(key, __u64);
	__type(value, struct count);
} cgroup_counts SEC(".maps");

/* Service ports with a slot of their own in port_matrix (serve
 * --port-label): port -> slot 1..n. Filled by user space before attach;
 * read-only here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* resized by user space */
	__type(key, __u16);
	__type(value, __u32);
} port_label SEC(".maps");

/* Transitions per port slot and edge: index slot * NUM_STATES * NUM_STATES
 * + old * NUM_STATES + new, slot 0 for every port without a label. An
 * array: it never fills. aggregate() updates it when label_ports is set. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NUM_STATES * NUM_STATES); /* resized by user space: (labels + 1) slots */
	__type(key, __u32);
	__type(value, __u64);
} port_matrix SEC(".maps");

struct owner_count {
	__u64 transitions;
	__u64 opened;
	char comm[TASK_COMM_LEN];
};

/* Per owner pid; bounded: what does not fit is counted in CNT_PID_OTHER.
 * aggregate() inserts and updates. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024); /* 1 when not aggregating */
	__type(key, __u32);
	__type(value, struct owner_count);
} pid_counts SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		__sync_fetch_and_add(v, 1);
}

/* A counted loss: the counter for its cause and the loss sequence. */
static __always_inline void lose(__u32 idx)
{
	count(idx);
	__sync_fetch_and_add(&loss_seq, 1);
}

static __always_inline void add(void *map, __u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(map, &idx);
	if (v)
		__sync_fetch_and_add(v, 1);
}

#endif

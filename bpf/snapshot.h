/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * The snapshot: every TCP socket that exists, read by iterators that user
 * space runs on demand (tracer/snapshot.go), for `tcpstate ls`, to seed the
 * per-socket state when tracing starts, and to reconcile at the end.
 *
 *   snap_tcp    iter/tcp walks the TCP hash tables of one network namespace,
 *               the one current when the iterator is opened: listeners,
 *               established sockets, orphans, timewait and request sockets.
 *               User space opens it once in each namespace (setns).
 *   snap_files  iter/task_file walks every task's open files, in every
 *               namespace at once; bpf_sock_from_file() turns a socket file
 *               into its socket: the processes that hold each socket.
 *
 * Seeding (snap_seed, set for the tracing commands): a socket without
 * storage gets it, with its current state (unless CLOSE: its next event is
 * a birth) and, from snap_files, its holder as owner, both marked seeded.
 * The programs are attached before the snapshot runs, so a socket that
 * changes state meanwhile already has storage with its newer state, which
 * the snapshot leaves alone: live data wins, and the record says the socket
 * was already tracked. That first change seeds the socket itself
 * (on_set_state, pipeline.h): snap_seed is set from before the programs
 * attach until the seeding snapshot ends, and a socket first seen then in
 * the middle of its life existed before tracing, in the state it is
 * leaving, exactly what the snapshot would have seeded had it come first.
 * Its first event so continues from a known state, never an unknown. The iterator
 * holds the socket's lock while it looks (iter/tcp's lock_sock_fast), the
 * same lock every state change holds, so it never sees a half-made change;
 * snap_files does not hold it, and a change racing with it can at worst
 * seed the state that the change is leaving, which the change then
 * overwrites.
 *
 * Reconciliation: for a socket with storage, a record carries both the state
 * the programs last saw (tracked_state) and the socket's own: when they
 * differ, the kernel did not deliver a transition. With snap_reconcile (serve,
 * which snapshots periodically) the snapshot also corrects the storage to the
 * socket's own state, marked seeded, so that the socket's next transition is
 * not a gap: each missed transition is found once, by the snapshot or by a
 * gap, never by both. Under the socket's lock, like any state change.
 */
#ifndef TCPSTATE_SNAPSHOT_H
#define TCPSTATE_SNAPSHOT_H

/* Correct the storage of sockets whose tracked state is not their own
 * (serve's periodic snapshots); set by user space around each snapshot. */
__u8 snap_reconcile = 0;

/* struct snap_record.kind */
enum snap_kind {
	SNAP_FULL = 1,     /* a full socket: listener, connecting, connected, orphan */
	SNAP_TIMEWAIT = 2, /* a timewait socket (state: its substate, as ss shows) */
	SNAP_REQUEST = 3,  /* a request socket: a connection still in its handshake */
};

/* struct snap_record.flags */
enum snap_flag {
	SNAPF_TRACKED = 0x1, /* the programs already had storage for it */
	SNAPF_SEEDED = 0x2,  /* this snapshot seeded its storage */
	SNAPF_OWNER = 0x4,   /* owner_pid/owner_comm: the owner the programs know */
	SNAPF_RECONCILED = 0x8, /* snap_reconcile corrected its storage from tracked_state to state */
	SNAPF_LOSS_SINCE = 0x10, /* a loss was counted since its last event (loss_seq moved): it may explain the difference */
};

/* One socket of snap_tcp. */
struct snap_record {
	__u64 skaddr;
	__u64 state_ts;    /* when the programs saw it enter tracked_state (0: unknown) */
	__u64 ino;         /* inode of its socket file (0: none: orphan, timewait, request) */
	__u64 listener;    /* a request socket's listener */
	__u64 cgroup_id;   /* its own cgroup v2 (a request socket: its listener's; a timewait socket has none: 0) */
	__u32 netns;
	__u32 uid;
	__u32 owner_pid;
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 kind;          /* enum snap_kind */
	__u8 state;         /* the socket's state now (a timewait socket's substate) */
	__u8 tracked_state; /* the state the programs last saw (0: none) */
	__u8 flags;         /* enum snap_flag */
	__u8 owner_kind;    /* enum owner_kind */
	__u8 _pad[5];
	__u8 saddr[16];
	__u8 daddr[16];
	char owner_comm[TASK_COMM_LEN];
};

/* One socket a task holds, from snap_files. */
struct holder_record {
	__u64 skaddr;
	__u64 cgroup_id; /* the socket's own cgroup v2, not the holder's */
	__u32 tgid;
	__u32 fd;
	__u32 netns;
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 state;
	__u8 _pad[5];
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
};

const struct snap_record *unused_snap_record __attribute__((unused));
const struct holder_record *unused_holder_record __attribute__((unused));
const enum snap_kind *unused_snap_kind __attribute__((unused));
const enum snap_flag *unused_snap_flag __attribute__((unused));
const enum sock_flag *unused_sock_flag __attribute__((unused));

/* The socket common part every kind shares. */
static __always_inline void snap_common(struct snap_record *r, const struct sock_common *skc)
{
	r->skaddr = (__u64)skc;
	r->family = skc->skc_family;
	r->netns = skc->skc_net.net->ns.inum;
	r->sport = skc->skc_num;
	r->dport = bpf_ntohs(skc->skc_dport);
	if (r->family == AF_INET) {
		*(__u32 *)r->saddr = skc->skc_rcv_saddr;
		*(__u32 *)r->daddr = skc->skc_daddr;
	} else {
		__builtin_memcpy(r->saddr, &skc->skc_v6_rcv_saddr, 16);
		__builtin_memcpy(r->daddr, &skc->skc_v6_daddr, 16);
	}
}

/* Storage of a full socket: what the programs know, seeded when asked. */
static __always_inline void snap_state(struct snap_record *r, struct sock *sk, __u8 state)
{
	/* Seed only what the programs follow (the family filter). */
	bool seed = snap_seed && (!filter_family || r->family == filter_family);
	struct sock_state *st = bpf_sk_storage_get(&sock_states, sk, 0, seed ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	if (!st)
		return;
	__u8 tracked = st->state;
	if (st->state) {
		r->flags |= SNAPF_TRACKED;
		if (snap_reconcile && st->state != state) {
			if (st->loss_seq != loss_seq)
				r->flags |= SNAPF_LOSS_SINCE;
			st->state = state;
			st->state_ts = bpf_ktime_get_ns();
			st->loss_seq = loss_seq;
			st->flags |= SF_SEEDED_STATE;
			r->flags |= SNAPF_RECONCILED;
		}
	} else if (seed && state != TCP_CLOSE) {
		seed_state(st, sk, state);
		r->flags |= SNAPF_SEEDED;
	}
	/* A corrected socket's record keeps what the programs believed. */
	r->tracked_state = r->flags & SNAPF_RECONCILED ? tracked : st->state;
	r->state_ts = st->state_ts;
	if (st->owner != OWNER_NONE) {
		r->flags |= SNAPF_OWNER;
		r->owner_kind = st->owner;
		r->owner_pid = st->pid;
		__builtin_memcpy(r->owner_comm, st->comm, sizeof(r->owner_comm));
	}
}

SEC("iter/tcp")
int snap_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc)
		return 0;
	struct snap_record r = {};
	snap_common(&r, skc);
	if (r.family != AF_INET && r.family != AF_INET6)
		return 0;
	r.uid = ctx->uid;
	__u8 state = skc->skc_state;
	if (state == TCP_TIME_WAIT) {
		struct tcp_timewait_sock *tw = bpf_skc_to_tcp_timewait_sock(skc);
		if (!tw)
			return 0;
		r.kind = SNAP_TIMEWAIT;
		/* ss shows a timewait socket by its substate: one closed in
		 * FIN_WAIT2 stays FIN-WAIT-2 until the peer's FIN. */
		r.state = tw->tw_sk.tw_substate;
	} else if (state == TCP_NEW_SYN_RECV) {
		struct tcp_request_sock *req = bpf_skc_to_tcp_request_sock(skc);
		if (!req)
			return 0;
		r.kind = SNAP_REQUEST;
		r.state = TCP_NEW_SYN_RECV;
		r.listener = (__u64)req->req.req.__req_common.skc_listener;
		/* The child made from it will copy its listener's cgroup. */
		struct sock *l = req->req.req.__req_common.skc_listener;
		if (l && bpf_core_field_exists(struct sock_cgroup_data, cgroup))
			r.cgroup_id = cgroup_id(BPF_CORE_READ(l, sk_cgrp_data.cgroup));
	} else {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
		if (!tp)
			return 0;
		struct sock *sk = (struct sock *)tp;
		if (sk_protocol(sk) != IPPROTO_TCP)
			return 0;
		r.kind = SNAP_FULL;
		r.state = state;
		r.cgroup_id = cgroup_id(sk_cgroup(sk));
		/* The local port from inet_sport: a socket being closed has
		 * skc_num 0 (see sk_sport). */
		r.sport = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
		struct socket *so = sk->sk_socket;
		if (so)
			r.ino = BPF_CORE_READ(so, file, f_inode, i_ino);
		snap_state(&r, sk, state);
	}
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

SEC("iter/task_file")
int snap_files(struct bpf_iter__task_file *ctx)
{
	struct file *file = ctx->file;
	struct task_struct *task = ctx->task;
	if (!file || !task)
		return 0;
	struct socket *so = bpf_sock_from_file(file);
	if (!so)
		return 0;
	struct sock *sk = so->sk;
	if (!sk || sk_protocol(sk) != IPPROTO_TCP)
		return 0;
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	struct holder_record h = {};
	struct snap_record addr = {};
	snap_common(&addr, &sk->__sk_common);
	h.skaddr = (__u64)sk;
	h.cgroup_id = cgroup_id(sk_cgroup(sk));
	h.tgid = task->tgid;
	h.fd = ctx->fd;
	h.family = family;
	h.state = sk->__sk_common.skc_state;
	h.netns = addr.netns;
	h.sport = sk_sport(sk);
	h.dport = addr.dport;
	__builtin_memcpy(h.saddr, addr.saddr, sizeof(h.saddr));
	__builtin_memcpy(h.daddr, addr.daddr, sizeof(h.daddr));
	__builtin_memcpy(h.comm, task->comm, sizeof(h.comm));
	if (snap_seed && !(task->flags & PF_KTHREAD) && (!filter_family || family == filter_family)) {
		struct sock_state *st = bpf_sk_storage_get(&sock_states, sk, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (st) {
			/* A socket in CLOSE has made no transition yet: its
			 * first one is a birth, and only its owner is seeded. */
			if (!st->state && h.state != TCP_CLOSE) {
				seed_state(st, sk, h.state);
			}
			/* The first holder, in pid order (a master before its
			 * workers), is the owner, unless the programs know one. */
			if (st->owner == OWNER_NONE) {
				st->owner = OWNER_FINAL;
				st->pid = h.tgid;
				__builtin_memcpy(st->comm, h.comm, sizeof(st->comm));
				st->flags |= SF_SEEDED_OWNER;
			}
		}
	}
	bpf_seq_write(ctx->meta->seq, &h, sizeof(h));
	return 0;
}

#endif

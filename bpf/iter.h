/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * Iterators: programs that user space runs on demand (tracer/iter.go) and
 * that write records into the iterator's file instead of the ring buffer.
 */
#ifndef TCPSTATE_ITER_H
#define TCPSTATE_ITER_H

/* One socket as an iterator reports it (tracer/iter.go decodes it). */
struct sock_record {
	__u64 skaddr;
	__u64 state_ts; /* when it entered `state` (0: unknown) */
	__u64 born_ts;  /* its birth (0: born before tracing) */
	__u64 cgroup_id; /* its own cgroup v2 */
	__u32 pid;      /* owner tgid, if owner != OWNER_NONE */
	__u32 netns;
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 state;    /* the last new state the programs saw */
	__u8 sk_state; /* the socket's state as the iterator found it */
	__u8 owner;    /* enum owner_kind */
	__u8 flags;    /* enum sock_flag */
	__u8 _pad[6];
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
};

const struct sock_record *unused_sock_record __attribute__((unused));

/* Every socket that has storage: what the programs remember of it, with
 * its addresses as they are now. The stuck-socket lists read this. */
SEC("iter/bpf_sk_storage_map")
int dump_sock_states(struct bpf_iter__bpf_sk_storage_map *ctx)
{
	struct sock *sk = ctx->sk;
	struct sock_state *st = ctx->value;
	if (!sk || !st)
		return 0;
	struct sock_record r = {};
	r.skaddr = (__u64)sk;
	r.state_ts = st->state_ts;
	r.born_ts = st->born_ts;
	r.cgroup_id = cgroup_id(sk_cgroup(sk));
	r.pid = st->pid;
	r.owner = st->owner;
	r.state = st->state;
	r.flags = st->flags;
	__builtin_memcpy(r.comm, st->comm, sizeof(r.comm));
	r.sk_state = sk->__sk_common.skc_state;
	r.family = sk_family(sk);
	r.netns = sk_netns(sk);
	r.sport = sk_sport(sk);
	r.dport = sk_dport(sk);
	if (r.family == AF_INET || r.family == AF_INET6)
		sk_addrs(sk, r.family, r.saddr, r.daddr);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

/* For tests only (tracer.Tracer.Replay; not loaded otherwise): runs the
 * pipeline as if the kernel had reported replay_old -> replay_new for the
 * socket at replay_skaddr, through the same code and maps as real events,
 * so that tests can make transitions the kernel never makes (an illegal
 * edge, a gap) on a real socket. An iterator because the pipeline keeps
 * its state in socket storage, which only tracing programs can reach (a
 * raw_tp program run with BPF_PROG_RUN cannot), and an iterator can be run
 * on demand. iter/tcp walks the namespace of the task that creates it, so
 * the test creates it in the socket's namespace. */
__u64 replay_skaddr = 0;
__u32 replay_old = 0;
__u32 replay_new = 0;
__u32 replay_done = 0;

SEC("iter/tcp")
int replay_set_state(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc || !replay_skaddr)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp || (__u64)tp != replay_skaddr)
		return 0;
	on_set_state((struct sock *)tp, replay_old, replay_new, SLOT_REPLAY);
	replay_done++;
	return 0;
}

#endif

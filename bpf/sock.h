/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * Reads of a struct sock. Every entry point hands these a BTF pointer the
 * verifier lets us dereference (tp_btf's argument, an iterator's socket, the
 * return value of inet_csk_accept in fexit), so fields of struct sock are
 * plain loads, CO-RE relocated. The ports and addresses that live in struct
 * inet_sock, around the struct sock, need a typed cast: bpf_rdonly_cast()
 * (Linux 6.2) makes it a plain load too; older kernels fall back to a probe
 * read. A helper call per field cost ~30 ns; a cast and a load, nothing.
 */
#ifndef TCPSTATE_SOCK_H
#define TCPSTATE_SOCK_H

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

/* A __weak kfunc the running kernel lacks is resolved to 0 at load time,
 * and the verifier drops the branch that would call it. */
#define have_kfunc(sym) (!!(sym))

static __always_inline __u16 sk_protocol(const struct sock *sk)
{
	/* A bitfield before 5.6, a __u16 since: CO-RE reads either. */
	return BPF_CORE_READ_BITFIELD(sk, sk_protocol);
}

static __always_inline __u16 sk_family(const struct sock *sk)
{
	return sk->__sk_common.skc_family;
}

static __always_inline __u32 sk_netns(const struct sock *sk)
{
	return sk->__sk_common.skc_net.net->ns.inum;
}

/* The local port from inet_sport (network order in the socket), as the
 * tracepoint itself reports it: skc_num is already 0 at FIN_WAIT2->CLOSE
 * and LAST_ACK->CLOSE (tcp_set_state -> inet_put_port runs before the
 * state changes). */
static __always_inline __u16 sk_sport(const struct sock *sk)
{
	if (have_kfunc(bpf_rdonly_cast)) {
		const struct inet_sock *inet = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct inet_sock));
		return bpf_ntohs(inet->inet_sport);
	}
	return bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
}

static __always_inline __u16 sk_dport(const struct sock *sk)
{
	return bpf_ntohs(sk->__sk_common.skc_dport);
}

/* Addresses as the tracepoint reports them: the IPv4 source from
 * inet_saddr (set by connect() before CLOSE->SYN_SENT fires), the rest from
 * sock_common. */
static __always_inline void sk_addrs(const struct sock *sk, __u16 family, __u8 *saddr, __u8 *daddr)
{
	if (family == AF_INET) {
		__u32 s;
		if (have_kfunc(bpf_rdonly_cast)) {
			const struct inet_sock *inet = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct inet_sock));
			s = inet->inet_saddr;
		} else {
			s = BPF_CORE_READ((const struct inet_sock *)sk, inet_saddr);
		}
		*(__u32 *)saddr = s;
		*(__u32 *)daddr = sk->__sk_common.skc_daddr;
		return;
	}
	__builtin_memcpy(saddr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
	__builtin_memcpy(daddr, &sk->__sk_common.skc_v6_daddr, 16);
}

/* The socket's own cgroup v2 (cgroup_sk_alloc() records the creating
 * task's at creation; an accepted child copies its listener's): right for
 * softirq events, where the task on the CPU is someone else's. NULL on a
 * kernel without it. */
static __always_inline struct cgroup *sk_cgroup(const struct sock *sk)
{
	if (!bpf_core_field_exists(struct sock_cgroup_data, cgroup))
		return NULL;
	return sk->sk_cgrp_data.cgroup;
}

/* The cgroup's id, as user space sees it: the inode number of its
 * directory in the cgroup2 file system (kernfs node id). */
static __always_inline __u64 cgroup_id(const struct cgroup *cg)
{
	if (!cg)
		return 0;
	return BPF_CORE_READ(cg, kn, id);
}

static __always_inline int sk_err(const struct sock *sk)
{
	return sk->sk_err;
}

#endif

//go:build ignore
// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// tcpstate's kernel side, one compilation unit so that every program
// shares the same maps: the headers hold one concern each, this file the
// entry points. Follow one event from handle_set_state: pipeline.h
// (on_set_state) -> filter.h (decide, held events) -> the ring buffer
// (struct event in event.h) -> tracer/ring.go and tracer/decode.go.
//
//   common.h     constants and the settings user space fixes at load time
//   event.h      struct event, its flags, the counters, histograms
//   maps.h       every map, with who creates, updates and deletes entries
//   sock.h       reads of struct sock
//   owner.h      which process owns a socket
//   aggregate.h  in-kernel counting (stats)
//   cause.h      the facts of a close, and the reset tracepoints
//   filter.h     the filters and held events
//   pipeline.h   one transition, from the tracepoint to the ring buffer
//   accept.h     accept() names the owner of a child socket
//   iter.h       iterators: socket listings and the tests' replay
//   misses.h     recursion misses counted exactly into the loss sequence
//   snapshot.h   every socket that exists: ls, seeding, reconciliation
//
// docs/kernel.md explains the kernel behaviour this code depends on.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual MIT/GPL";

#include "common.h"
#include "event.h"
#include "maps.h"
#include "sock.h"
#include "owner.h"
#include "aggregate.h"
#include "cause.h"
#include "filter.h"
#include "pipeline.h"
#include "accept.h"
#include "iter.h"
#include "misses.h"
#include "snapshot.h"

/* Attach the rescue program (tracer.Options.RescueNested): handle_set_state
 * then marks itself busy on its CPU. */
__u8 rescue_nested = 0; /* set by user space after attaching */

/* Set while handle_set_state runs on this CPU; read by rescue_set_state. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} busy SEC(".maps");

/* This CPU's miss counter as handle_set_state last read it, at the end of
 * its last run. The kernel counts a skip while the program is active, and
 * it still is for a few instructions after the last read (until the
 * trampoline returns): a skip there shows at the start of this CPU's next
 * run, as the difference from this value. No skip can happen between two
 * runs (the program is not active then). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} miss_seen SEC(".maps");

/* Every TCP state change. tp_btf rather than the classic tracepoint: it
 * hands us the struct sock itself as a pointer the verifier trusts (socket
 * storage and plain loads need it), it needs only CAP_BPF + CAP_PERFMON and
 * no tracefs, and its recursion guard is per program. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	__u64 missed = my_misses();
	__u32 zero = 0;
	/* Looked up again at the end: a map value pointer (or NULL) kept
	 * live across on_set_state doubles the states the verifier walks,
	 * which took stats' program past its 1,000,000 on 6.12. */
	__u64 *seen = bpf_map_lookup_elem(&miss_seen, &zero);
	if (seen && missed > *seen) /* skipped after the last run's last read */
		__sync_fetch_and_add(&loss_seq, missed - *seen);
	__u32 *b = NULL;
	__u64 rescued = 0;
	if (rescue_nested) {
		b = bpf_map_lookup_elem(&busy, &zero);
		if (b)
			*b = 1;
		__u32 r = CNT_RESCUED;
		__u64 *v = bpf_map_lookup_elem(&counters, &r);
		rescued = v ? *v : 0;
	}
	on_set_state(sk, oldstate, newstate, SLOT_MAIN);
	if (b) {
		*b = 0;
		__u32 r = CNT_RESCUED;
		__u64 *v = bpf_map_lookup_elem(&counters, &r);
		rescued = v ? *v - rescued : 0; /* nested runs the rescue program handled */
	}
	/* Transitions the kernel skipped while this run was going on. */
	__u64 now = my_misses();
	__u64 skipped = now - missed;
	if (skipped > rescued)
		__sync_fetch_and_add(&loss_seq, skipped - rescued);
	seen = bpf_map_lookup_elem(&miss_seen, &zero);
	if (seen)
		*seen = now;
	return 0;
}

/* Optional (--rescue-nested). The kernel runs a tracing program at most
 * once per CPU at a time (prog->active): a transition that fires in softirq
 * while handle_set_state runs on the same CPU is skipped, a recursion miss.
 * Each attached program is its own probe with its own guard: this second
 * one, attached after the first, handles such a nested transition when it
 * sees the first one busy on its CPU. It costs every transition a second
 * probe call, and with no-wakeup submits it rarely finds work. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(rescue_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	__u32 zero = 0;
	__u32 *b = bpf_map_lookup_elem(&busy, &zero);
	if (!b || !*b)
		return 0;
	count(CNT_RESCUED);
	return on_set_state(sk, oldstate, newstate, SLOT_RESCUE);
}

/* The accepted socket as the accept hooks see it: an address, read through
 * a typed cast where the kernel has bpf_rdonly_cast, else probe reads. */
static __always_inline int accepted_sock(struct sock *sk)
{
	if (!sk)
		return 0;
	__u16 protocol, family, sport, dport;
	if (have_kfunc(bpf_rdonly_cast)) {
		struct inet_sock *inet = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct inet_sock));
		protocol = BPF_CORE_READ_BITFIELD(&inet->sk, sk_protocol);
		family = inet->sk.__sk_common.skc_family;
		sport = inet->inet_sport;
		dport = inet->sk.__sk_common.skc_dport;
	} else {
		protocol = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
		family = BPF_CORE_READ(sk, __sk_common.skc_family);
		sport = BPF_CORE_READ((struct inet_sock *)sk, inet_sport);
		dport = BPF_CORE_READ(sk, __sk_common.skc_dport);
	}
	if (protocol != IPPROTO_TCP || (filter_family && family != filter_family))
		return 0;
	__u32 netns = 0;
	struct cgroup *cg = NULL;
	if (sticky_filters()) {
		netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
		if (bpf_core_field_exists(struct sock_cgroup_data, cgroup))
			cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	}
	on_accept((__u64)sk, bpf_ntohs(sport), bpf_ntohs(dport), netns, cg);
	return 0;
}

/* accept() returns the new socket: the task is now its owner. Runs only on
 * accept (BPF trampolines: not on every kernel). bpf_get_func_ret reads the
 * return value whatever the function's arguments (they changed in 6.10). */
SEC("fexit/inet_csk_accept")
int BPF_PROG(accept_fexit)
{
	__u64 ret = 0;
	if (bpf_get_func_ret(ctx, &ret))
		return 0;
	return accepted_sock((struct sock *)ret);
}

/* The fallback where trampolines do not load: accept() and accept4()
 * return the new socket's fd; walk current->files to the struct sock. The
 * task is a pointer the verifier trusts, so the walk is plain loads, but
 * for the fd array, indexed by a run-time value. */
static __always_inline int on_accept_exit(long ret)
{
	if (ret < 0)
		return 0;
	struct fdtable *fdt = bpf_get_current_task_btf()->files->fdt;
	if (!fdt || ret >= fdt->max_fds)
		return 0;
	struct file *f = NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fdt->fd[ret]) || !f)
		return 0;
	struct socket *sock;
	if (have_kfunc(bpf_rdonly_cast)) {
		struct file *file = bpf_rdonly_cast(f, bpf_core_type_id_kernel(struct file));
		sock = file->private_data;
		if (!sock)
			return 0;
		struct socket *s = bpf_rdonly_cast(sock, bpf_core_type_id_kernel(struct socket));
		return accepted_sock(s->sk);
	}
	sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return 0;
	return accepted_sock(BPF_CORE_READ(sock, sk));
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int accept4_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept_exit(ctx->ret);
}

/* Resets, where the kernel has the tracepoints (4.16; the reason and a
 * socket that may be NULL since 6.10): they mark the socket for its close
 * cause. Two versions of the send hook, for the tracepoint's two
 * signatures; tracer/programs.go loads the one the kernel takes. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(handle_send_reset, const struct sock *sk, const struct sk_buff *skb, const enum sk_rst_reason reason)
{
	return on_send_reset(sk, reason);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(handle_send_reset_v1, const struct sock *sk, const struct sk_buff *skb)
{
	return on_send_reset(sk, 0);
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(handle_receive_reset, struct sock *sk)
{
	if (!sk)
		return 0;
	struct sock_state *st = bpf_sk_storage_get(&sock_states, sk, 0, 0);
	if (st)
		st->rst |= RST_RECEIVED;
	return 0;
}

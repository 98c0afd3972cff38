/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * accept(): the moment a child socket gets its real owner. The hook that
 * runs it depends on the kernel (tracer/programs.go picks at run time):
 *   - fexit/inet_csk_accept where BPF trampolines load: runs only on
 *     accept, costs nothing else;
 *   - the syscalls:sys_exit_accept4/accept tracepoints otherwise: attaching
 *     any syscall tracepoint sets SYSCALL_WORK_SYSCALL_TRACEPOINT on every
 *     task, which costs every system call of every process on the host
 *     (measured in docs/kernel.md).
 * Both record the acceptor in `accepted` for handle_set_state to take over
 * at the socket's next event (neither kind of program can touch the
 * socket's storage: a classic tracepoint may not call bpf_sk_storage_get),
 * and, with filters, deliver the socket's held events at once when the
 * acceptor makes it match (filter.h says how they take turns).
 */
#ifndef TCPSTATE_ACCEPT_H
#define TCPSTATE_ACCEPT_H

static __always_inline void on_accept(__u64 key, __u16 sport, __u16 dport, __u32 netns, const struct cgroup *cg)
{
	struct accepted a = { .ts = bpf_ktime_get_ns(), .pid = bpf_get_current_pid_tgid() >> 32 };
	bpf_get_current_comm(&a.comm, sizeof(a.comm));
	if (bpf_map_update_elem(&accepted, &key, &a, BPF_ANY)) {
		count(CNT_ACCEPT_NOSPACE);
		return;
	}
	count(CNT_ACCEPT);

	if (!sticky_filters())
		return;
	struct held *h = bpf_map_lookup_elem(&held, &key);
	if (!h)
		return;
	if (__sync_val_compare_and_swap(&h->gate, GATE_OPEN, GATE_FLUSHING) != GATE_OPEN)
		return; /* handle_set_state holds it: it takes the owner over at its next event */
	if (h->skaddr != key) {
		gate_release(h, GATE_OPEN);
		return;
	}
	struct facts f = {
		.sport = sport,
		.dport = dport,
		.sport_known = sport != 0,
		.dport_known = dport != 0,
		.owner = OWNER_FINAL,
		.pid = a.pid,
		.netns = netns,
		.cgroup = cg,
		/* No storage here to read the socket's birth generation from:
		 * any slot may select it. Its events are all still held (none
		 * delivered or dropped yet), so it is delivered whole. */
		.cgroup_gen = 0xffffffff,
	};
	int d = decide(&f, false);
	if (d != DECIDE_YES) {
		gate_release(h, GATE_OPEN);
		return;
	}
	struct owner_id o = { .pid = a.pid, .kind = OWNER_FINAL };
	__builtin_memcpy(o.comm, a.comm, sizeof(o.comm));
	/* Deliver, release, and look again for events handle_set_state
	 * appended while we held the gate (it saw FLUSHING and left them). */
	for (int i = 0; i < 4; i++) {
		deliver_held(h, h->n, &o);
		gate_release(h, GATE_MATCHED);
		if (h->n == h->done || i == 3)
			break; /* what is left, handle_set_state delivers at its next event */
		if (__sync_val_compare_and_swap(&h->gate, GATE_MATCHED, GATE_FLUSHING) != GATE_MATCHED)
			break; /* handle_set_state took it and delivers the rest */
	}
}

#endif

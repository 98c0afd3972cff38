/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * Owner attribution: which process a socket belongs to, for every event,
 * including the half that fire in softirq, where the task on the CPU is
 * whoever the interrupt found there.
 *
 * A socket's owner is the last process seen acting on it in process
 * context: the transitions only a system call makes (owner_acts), and
 * accept(), which names the acceptor of a child socket. A child is born in
 * softirq (inet_csk_clone_lock) and starts with a copy of its listener's
 * storage (BPF_F_CLONE), so it carries the listener's owner, marked
 * inherited, until accept() names its own.
 */
#ifndef TCPSTATE_OWNER_H
#define TCPSTATE_OWNER_H

/* Transitions that only happen in a system call on the socket, so the task
 * on the CPU is (one of) its owner(s): connect() (tcp_v4_connect,
 * tcp_v6_connect), listen() (inet_csk_listen_start), close()/shutdown()
 * (tcp_close_state, including its self transitions), close() of a listener.
 * Everything else may run in softirq. */
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

static __always_inline bool is_kthread(void)
{
	return bpf_get_current_task_btf()->flags & PF_KTHREAD;
}

/* The task on the CPU becomes the owner. */
static __always_inline void own_by_current(struct sock_state *st, __u32 tgid)
{
	st->pid = tgid;
	bpf_get_current_comm(&st->comm, sizeof(st->comm));
	st->owner = OWNER_FINAL;
}

/* A new child (LISTEN->SYN_RECV): what was cloned from the listener is
 * reset, except its owner, which the child inherits. Its filter decision
 * is its own: a listener matches no remote port, its children may. */
static __always_inline void child_born(struct sock_state *st)
{
	__u8 owner = st->owner != OWNER_NONE ? OWNER_INHERITED : OWNER_NONE;
	__u32 pid = st->pid;
	char comm[TASK_COMM_LEN];
	__builtin_memcpy(comm, st->comm, sizeof(comm));
	__builtin_memset(st, 0, sizeof(*st));
	st->owner = owner;
	st->pid = pid;
	__builtin_memcpy(st->comm, comm, sizeof(comm));
}

/* Takes over the owner that an accept program recorded for this socket,
 * at its first event after accept(). Only sockets that have not been seen
 * acting in process context since birth can have a record, and not at a
 * birth (accept() comes after it). */
static __always_inline void take_accepted(struct sock_state *st, __u64 key)
{
	struct accepted *a = bpf_map_lookup_elem(&accepted, &key);
	if (!a)
		return;
	/* Recorded before this incarnation's birth: the socket it belonged to
	 * was freed and its address reused before it made another transition. */
	if (a->ts < st->born_ts) {
		count(CNT_ACCEPT_STALE);
	} else {
		st->pid = a->pid;
		__builtin_memcpy(st->comm, a->comm, sizeof(st->comm));
		st->owner = OWNER_FINAL;
	}
	bpf_map_delete_elem(&accepted, &key);
}

#endif

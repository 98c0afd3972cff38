/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * The set_state pipeline: what happens to one transition, from the
 * tracepoint's arguments to the ring buffer record (or the aggregation
 * maps). In order: select TCP, find or make the socket's storage, check the
 * edge against the model, name the owner, update the storage, then filter
 * and deliver.
 */
#ifndef TCPSTATE_PIPELINE_H
#define TCPSTATE_PIPELINE_H

/* Are there filters that select sockets (and hold their events while
 * undecided)? */
static __always_inline bool sticky_filters(void)
{
	return filter_ports || filter_pids || filter_cgroups || filter_netns;
}

/* One transition, as the pipeline works it out before delivering it. */
struct tctx {
	__u64 now;
	__u64 key; /* skaddr */
	__u64 dur; /* time in old, if EVF_DURATION_KNOWN */
	__u64 loss_seq;
	__u64 prev_loss_seq;
	__u64 cgroup_id;
	__u32 netns;
	__u32 cpu_pid;
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u16 flags;
	__u8 old;
	__u8 new;
	__u8 last_state;
	__u64 age_ns;         /* at ->CLOSE */
	struct close_info ci; /* at ->CLOSE */
};

/* Per-CPU scratch for one transition (on_set_state's slot argument:
 * SLOT_MAIN for handle_set_state, SLOT_RESCUE and SLOT_REPLAY for the
 * others). */
enum scratch_slot { SLOT_MAIN = 0, SLOT_RESCUE = 1, SLOT_REPLAY = 2, SLOTS = 3 };

struct scratch {
	struct tctx c;
	struct sock_state fresh; /* for a socket whose storage cannot be made */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/* Writes the event for c into e: a ring buffer record or a held slot, both
 * uninitialised memory, so every byte is written. */
static __always_inline void fill(struct event *e, const struct tctx *c, const struct sock *sk,
				 const struct sock_state *st)
{
	e->ts_ns = c->now;
	e->skaddr = c->key;
	e->old_state_ns = c->dur;
	e->loss_seq = c->loss_seq;
	e->prev_loss_seq = c->prev_loss_seq;
	e->cgroup_id = c->cgroup_id;
	e->netns = c->netns;
	e->family = c->family;
	e->sport = c->sport;
	e->dport = c->dport;
	e->flags = c->flags;
	e->oldstate = c->old;
	e->newstate = c->new;
	e->last_state = c->last_state;
	e->_pad = 0;
	e->_pad2 = 0;
	e->close_facts = c->ci.facts;
	e->close_err = c->ci.err;
	e->rst_reason = c->ci.rst_reason;
	e->bytes_acked = c->ci.bytes_acked;
	e->bytes_received = c->ci.bytes_received;
	e->total_retrans = c->ci.total_retrans;
	e->srtt_us = c->ci.srtt_us;
	e->age_ns = c->age_ns;
	if (c->family == AF_INET) {
		__builtin_memset(e->saddr, 0, sizeof(e->saddr));
		__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	}
	sk_addrs(sk, c->family, e->saddr, e->daddr);
	if (st->owner != OWNER_NONE) {
		e->pid = st->pid;
		__builtin_memcpy(e->comm, st->comm, sizeof(e->comm));
	} else {
		e->pid = 0;
		__builtin_memset(e->comm, 0, sizeof(e->comm));
	}
	e->cpu_pid = c->cpu_pid;
	if (c->flags & EVF_CPU_TASK)
		bpf_get_current_comm(&e->cpu_comm, sizeof(e->cpu_comm));
	else
		__builtin_memset(e->cpu_comm, 0, sizeof(e->cpu_comm));
}

/* An event that passed the filters: counted, sent, or both, as the mode says. */
static __always_inline void emit(const struct tctx *c, const struct sock *sk, const struct sock_state *st)
{
	if (!state_wanted(c->old, c->new))
		return;
	if (only_closes && c->new != TCP_CLOSE)
		return;
	if (mode_aggregate) {
		aggregate(c->old, c->new, c->flags, c->dur, c->sport, c->dport, st->pid, st->comm, c->cgroup_id);
		if (c->flags & EVF_GAP)
			count_gap(c->last_state, c->old, c->loss_seq, c->prev_loss_seq);
	}
	if (!mode_stream && !(mode_anomalies && (c->flags & (EVF_ILLEGAL | EVF_GAP))))
		return;
	/* No wakeup per event: a wakeup raises an irq_work self-interrupt,
	 * softirq work runs nested inside it, and the kernel skips this
	 * program for those nested transitions (recursion misses). The reader
	 * polls instead (tracer/ring.go). */
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		lose(CNT_RINGBUF_FULL);
		return;
	}
	fill(e, c, sk, st);
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline void owner_of(const struct sock_state *st, struct owner_id *o)
{
	o->pid = st->pid;
	o->kind = st->owner;
	__builtin_memcpy(o->comm, st->comm, sizeof(o->comm));
}

/* The filtered path: the socket has not matched yet. */
static __always_inline void filtered(const struct tctx *c, const struct sock *sk, struct sock_state *st, bool last)
{
	/* Fields the kernel has not set yet: CLOSE->SYN_SENT fires before
	 * connect() picks the source port (sport is 0, or stale after
	 * connect(AF_UNSPEC)); CLOSE->LISTEN after an autobind has sport 0; a
	 * child's peer may not be set at LISTEN->SYN_RECV. A listener has no
	 * peer at all: its remote side is known to match no remote port. */
	bool child = c->old == TCP_LISTEN && c->new == TCP_SYN_RECV;
	bool listening = c->new == TCP_LISTEN || (c->old == TCP_LISTEN && !child);
	struct facts f = {
		.sport = c->sport,
		.dport = c->dport,
		.sport_known = c->sport && !(c->old == TCP_CLOSE && c->new == TCP_SYN_SENT),
		.dport_known = listening || c->dport,
		.owner = st->owner,
		.pid = st->pid,
		.netns = c->netns,
		.cgroup = filter_cgroups ? sk_cgroup(sk) : NULL,
		.cgroup_gen = st->cgroup_gen,
	};
	struct held *h = bpf_map_lookup_elem(&held, &c->key);
	if (!h) {
		int d = decide(&f, last);
		if (d == DECIDE_YES) {
			st->matched = 1;
			emit(c, sk, st);
		} else if (d == DECIDE_LATER) {
			h = held_new(c->key);
			if (!h)
				return;
			struct event *e = held_slot(h);
			barrier_var(e); /* see below */
			if (e) {
				fill(e, c, sk, st);
				e->flags |= EVF_HELD;
				held_commit(h);
			}
		} else if (d == DECIDE_UNKNOWN) {
			lose(CNT_UNDECIDED_CLOSED);
		}
		return;
	}

	/* Events are held: append this one behind them, then take turns.
	 * barrier_var keeps e's own NULL checks: without it clang tests the
	 * queue's length again instead (e is NULL iff it was full), kept in a
	 * 32-bit stack spill, and the 6.1 verifier does not keep the bounds of
	 * such spills (later ones do): it then saw the later `if (e)` pass
	 * with e NULL and rejected the program. */
	struct event *e = held_slot(h);
	barrier_var(e);
	if (e) {
		fill(e, c, sk, st);
		e->flags |= EVF_HELD;
		held_commit(h);
	}
	__u32 from = gate_take(h);
	if (from == GATE_FLUSHING)
		return; /* an accept program is delivering; it delivers this one too */
	int d = from == GATE_MATCHED ? DECIDE_YES : decide(&f, last);
	struct owner_id o;
	owner_of(st, &o);
	__u32 n = h->n;
	if (d == DECIDE_YES) {
		st->matched = 1;
		if (e)
			e->flags &= ~EVF_HELD; /* this event is delivered now, not late */
		deliver_held(h, n, &o);
	} else if (d == DECIDE_LATER) {
		gate_release(h, GATE_OPEN);
		return;
	} else {
		drop_held(h, n, d == DECIDE_UNKNOWN ? CNT_UNDECIDED_CLOSED : 0);
	}
	bpf_map_delete_elem(&held, &c->key);
}

/* One transition of a TCP socket. The entry points (tcpstate.bpf.c) call
 * this with a socket pointer the verifier trusts. */
static __always_inline int on_set_state(const struct sock *sk, int oldstate, int newstate, __u32 slot)
{
	/* The tracepoint also fires for MPTCP (262) and SCTP (132) sockets. */
	if (sk_protocol(sk) != IPPROTO_TCP)
		return 0;
	count(CNT_SEEN);
	__u16 family = sk_family(sk);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (filter_family && family != filter_family)
		return 0;

	/* The transition's working set lives in a per-CPU scratch slot, not
	 * on the 512-byte stack; each entry point has its own slot (a program
	 * nested on the same CPU uses another). */
	struct scratch *sc = bpf_map_lookup_elem(&scratch, &slot);
	if (!sc)
		return 0;
	struct tctx *c = &sc->c;
	__builtin_memset(c, 0, sizeof(*c));
	c->now = bpf_ktime_get_ns();
	c->key = (__u64)sk;
	c->old = oldstate;
	c->new = newstate;
	c->family = family;
	c->loss_seq = loss_seq;
	bool last = newstate == TCP_CLOSE;
	bool child = oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV;
	bool birth = child || (oldstate == TCP_CLOSE && (newstate == TCP_SYN_SENT || newstate == TCP_LISTEN));

	/* A socket we never saw that is closing needs no storage any more. */
	struct sock_state *st = bpf_sk_storage_get(&sock_states, (void *)sk, 0,
						   last ? 0 : BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st) {
		if (!last)
			count(CNT_NO_STATE); /* the socket's option memory is exhausted */
		st = &sc->fresh;
		__builtin_memset(st, 0, sizeof(*st));
	}
	/* A birth starts a new incarnation: nothing carries over, except a
	 * child's owner (its storage is a copy of the listener's). A birth on a
	 * socket last seen in another state than CLOSE means its ->CLOSE was
	 * lost: a gap. */
	if (birth || !st->state)
		count(CNT_SOCKETS);
	/* First seen in the middle of its life while the start snapshot runs:
	 * the socket existed before tracing (every later birth is seen), and
	 * the state it leaves is the one the snapshot would have seeded. Seed
	 * it here (also a closing one, in the scratch copy), so that this
	 * event continues from a known state as the snapshot's own would.
	 * Only memory changes here, and prev is read after: the verifier's
	 * paths through the rest merge again (a register set here doubled
	 * the main program's verification time). */
	if (!birth && !st->state && snap_seed)
		seed_state(st, sk, oldstate);
	__u8 prev = child ? 0 : st->state;
	if (child)
		child_born(st);
	else if (birth)
		__builtin_memset(st, 0, sizeof(*st));
	/* The cgroup filter's slots as they are at its birth are the ones
	 * that may select it (cgroup_filter in maps.h). */
	if (birth && filter_cgroups)
		st->cgroup_gen = cgroup_gen;
	c->last_state = prev;
	c->prev_loss_seq = prev ? st->loss_seq : 0;
	/* A state seeded by the snapshot began before state_ts: no duration. */
	if (!birth && st->state_ts && !(st->flags & SF_SEEDED_STATE)) {
		c->dur = c->now - st->state_ts;
		c->flags |= EVF_DURATION_KNOWN;
	}
	/* The model check, as model.Tracker does it: an edge outside the
	 * model is illegal; a socket whose last state we know must continue
	 * from it. */
	__u16 allowed = edge_mask[oldstate & 0xf];
	if ((__u32)oldstate >= NUM_STATES || (__u32)newstate >= NUM_STATES || !(allowed & (1 << (newstate & 0xf))))
		c->flags |= EVF_ILLEGAL;
	if (prev && prev != oldstate)
		c->flags |= EVF_GAP;

	/* The owner. The task on the CPU is looked at only for transitions that
	 * name one, unless the output shows it for every event. */
	bool acts = owner_acts(oldstate, newstate);
	if (want_cpu_task || acts) {
		c->cpu_pid = bpf_get_current_pid_tgid() >> 32;
		c->flags |= EVF_CPU_TASK;
	}
	if (acts && !is_kthread())
		own_by_current(st, c->cpu_pid);
	else if (accept_owner && st->owner != OWNER_FINAL && !birth)
		take_accepted(st, c->key);
	if (st->owner != OWNER_NONE) {
		c->flags |= EVF_OWNER_KNOWN;
		if (st->owner == OWNER_INHERITED)
			c->flags |= EVF_OWNER_INHERITED;
	}

	c->netns = sk_netns(sk);
	c->cgroup_id = cgroup_id(sk_cgroup(sk));
	c->sport = sk_sport(sk);
	c->dport = sk_dport(sk);
	__u16 visited = st->visited | (1 << (newstate & 0xf));
	if (visited & (1 << TCP_SYN_SENT))
		c->flags |= EVF_ACTIVE;
	__u64 born_ts = birth ? c->now : st->born_ts;
	if (last) {
		if (close_info(&c->ci, sk, oldstate, st, visited))
			c->flags |= EVF_COUNTS;
		if (born_ts)
			c->age_ns = c->now - born_ts;
		if (st->flags & SF_BORN_BEFORE)
			c->flags |= EVF_AGE_AT_LEAST;
	}

	if (!sticky_filters() || st->matched)
		emit(c, sk, st);
	else
		filtered(c, sk, st, last);

	if (last && mode_aggregate && (st->matched || !sticky_filters())) {
		add(&closes, c->ci.facts & (CF_VALUES - 1));
		/* Lifetimes of sockets born while tracing only: an older one's
		 * is a lower bound. */
		if (born_ts && oldstate != TCP_LISTEN && !(st->flags & SF_BORN_BEFORE))
			hist(HIST_LIFETIME, c->now - born_ts);
	}
	st->state_ts = c->now;
	st->flags &= ~SF_SEEDED_STATE;
	st->loss_seq = c->loss_seq;
	st->state = newstate;
	st->born_ts = born_ts;
	st->visited = visited;
	if (last)
		st->rst = 0; /* a socket that connects again starts clean */
	return 0;
}

#endif

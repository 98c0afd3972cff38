/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * The filters, in the kernel, and sticky: once a socket matches, all its
 * later events pass. The semantics are model.Filter's (model/filter.go);
 * tracer/load.go fills port_filter, pid_filter, netns_filter and
 * cgroup_filter from it (fillFilters; AddCgroups adds cgroup slots later).
 *
 * Events a socket makes before its port or owner is known (CLOSE->SYN_SENT
 * has no source port yet, a child's events come before accept() names its
 * owner) are held in the `held` map and delivered, in order and with the
 * owner that made the socket match, once it matches.
 *
 * Who may deliver held events: handle_set_state, at the socket's next
 * event, or an accept program, the moment accept() names the owner. The
 * socket's events are serialized by the socket lock (every state change
 * happens under it), but an accept program runs outside it, so the two
 * take turns through held.gate, changed only by atomic exchange:
 *   - handle_set_state always appends its event first (it is the only
 *     appender), then tries to take the gate (OPEN or MATCHED ->
 *     FLUSHING). If it gets it, it decides and delivers or drops every
 *     held event, its own last. If not, an accept program is delivering
 *     and will deliver the appended event too.
 *   - an accept program takes the gate (OPEN -> FLUSHING), decides with
 *     the owner it just learnt, delivers, releases the gate (MATCHED), and
 *     then looks again for events appended meanwhile.
 * So held events reach the ring buffer in the socket's own order, never
 * twice, and a socket's later events come after them.
 */
#ifndef TCPSTATE_FILTER_H
#define TCPSTATE_FILTER_H

enum decision {
	DECIDE_NO = 0,
	DECIDE_YES = 1,
	DECIDE_LATER = 2,   /* a field the filters need is not known yet */
	DECIDE_UNKNOWN = 3, /* at ->CLOSE, a field was never learnt: it might have matched */
};

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

/* What a filter decision needs to know of a socket. */
struct facts {
	__u16 sport, dport;
	bool sport_known, dport_known;
	__u8 owner; /* enum owner_kind */
	__u32 pid;
	__u32 netns;
	const struct cgroup *cgroup; /* the socket's; set only with filter_cgroups */
	__u32 cgroup_gen;            /* the cgroup filter's generation at its birth */
};

/* Is cg in one of the wanted subtrees: is its ancestor at the wanted
 * cgroup's depth that cgroup? One read per wanted subtree (the ancestors
 * array is indexed by depth: cgroup->ancestors[level]). Slots added after
 * the socket's birth (a later generation) do not count for it. */
static __always_inline int cgroup_is(const struct cgroup *cg, __u32 gen)
{
	if (!cg)
		return DECIDE_NO;
	int level = BPF_CORE_READ(cg, level);
	for (__u32 i = 0; i < 16; i++) {
		if (i >= filter_cgroups)
			break;
		/* A copy for the lookup: the counter itself must stay in a
		 * register, where the verifier knows its value (spilled to the
		 * stack in half a slot it would not, and would call the loop
		 * infinite). */
		__u32 key = i;
		struct cgroup_want *w = bpf_map_lookup_elem(&cgroup_filter, &key);
		if (!w || w->level > (__u32)level || w->level > CGROUP_MAX_LEVEL || w->gen > gen)
			continue;
		struct cgroup *anc = NULL;
		if (bpf_probe_read_kernel(&anc, sizeof(anc), (void *)cg + bpf_core_field_offset(struct cgroup, ancestors) + w->level * sizeof(anc)))
			continue;
		if (cgroup_id(anc) == w->id)
			return DECIDE_YES;
	}
	return DECIDE_NO;
}

/* Do the filters want this socket? A field not known yet makes the answer
 * DECIDE_LATER, unless `last` (the socket is closing), when what is known
 * is final: an inherited owner counts, and what was never learnt makes it
 * DECIDE_UNKNOWN. */
static __always_inline int decide(const struct facts *f, bool last)
{
	int d = DECIDE_YES;

	if (filter_ports & PORT_EITHER) {
		int l = port_is(f->sport, f->sport_known, PORT_EITHER);
		int r = port_is(f->dport, f->dport_known, PORT_EITHER);
		if (l == DECIDE_YES || r == DECIDE_YES)
			d = DECIDE_YES;
		else if (l == DECIDE_LATER || r == DECIDE_LATER)
			d = DECIDE_LATER;
		else
			d = DECIDE_NO;
	}
	if (filter_netns) {
		__u32 ns = f->netns;
		d = combine(d, bpf_map_lookup_elem(&netns_filter, &ns) ? DECIDE_YES : DECIDE_NO);
	}
	if (filter_cgroups)
		d = combine(d, cgroup_is(f->cgroup, f->cgroup_gen));
	if (filter_ports & PORT_LOCAL)
		d = combine(d, port_is(f->sport, f->sport_known, PORT_LOCAL));
	if (filter_ports & PORT_REMOTE)
		d = combine(d, port_is(f->dport, f->dport_known, PORT_REMOTE));
	if (filter_pids) {
		int p = DECIDE_LATER;
		if (f->owner == OWNER_FINAL || (last && f->owner == OWNER_INHERITED)) {
			__u32 pid = f->pid;
			p = bpf_map_lookup_elem(&pid_filter, &pid) ? DECIDE_YES : DECIDE_NO;
		}
		d = combine(d, p);
	}
	if (last && d == DECIDE_LATER)
		d = DECIDE_UNKNOWN;
	return d;
}

/* The owner delivered with held events: the one that made the socket match. */
struct owner_id {
	__u32 pid;
	__u8 kind; /* enum owner_kind */
	char comm[TASK_COMM_LEN];
};

static __always_inline bool state_wanted(__u8 old, __u8 new)
{
	return !filter_states || (((1 << old) | (1 << new)) & filter_states);
}

/* Sends or counts an event that was stored before (held), as the mode says. */
static __always_inline void deliver_stored(struct event *e)
{
	if (!state_wanted(e->oldstate, e->newstate))
		return;
	if (only_closes && e->newstate != TCP_CLOSE)
		return;
	if (mode_aggregate)
		aggregate(e->oldstate, e->newstate, e->flags, e->old_state_ns, e->sport, e->dport, e->pid, e->comm, e->cgroup_id);
	if (mode_stream || (mode_anomalies && (e->flags & (EVF_ILLEGAL | EVF_GAP)))) {
		if (bpf_ringbuf_output(&events, e, sizeof(*e), BPF_RB_NO_WAKEUP))
			lose(CNT_RINGBUF_FULL);
	}
}

/* Delivers held events [done, upto), rewriting their owner to o's, and
 * moves done. The caller holds the gate. A global function: the verifier
 * checks it once, not at every call site. */
__noinline int deliver_held(struct held *h, __u32 upto, const struct owner_id *o)
{
	if (!h || !o)
		return 0;
	__u32 done = h->done;
	for (int i = 0; i < MAX_HELD; i++) {
		if (done >= upto)
			break;
		struct event *e = &h->ev[done & (MAX_HELD - 1)];
		e->pid = o->pid;
		__builtin_memcpy(e->comm, o->comm, sizeof(e->comm));
		e->flags &= ~(EVF_OWNER_KNOWN | EVF_OWNER_INHERITED);
		if (o->kind != OWNER_NONE)
			e->flags |= EVF_OWNER_KNOWN;
		if (o->kind == OWNER_INHERITED)
			e->flags |= EVF_OWNER_INHERITED;
		deliver_stored(e);
		done++;
	}
	h->done = done;
	return 0;
}

/* Drops held events [done, upto) of a socket that does not match, counting
 * them as lost under cause when it might have (0: a known mismatch). */
static __always_inline void drop_held(struct held *h, __u32 upto, __u32 cause)
{
	__u32 done = h->done;
	if (cause && upto > done) {
		__u32 n = upto - done;
		__u32 idx = cause;
		__u64 *v = bpf_map_lookup_elem(&counters, &idx);
		if (v)
			__sync_fetch_and_add(v, n);
		__sync_fetch_and_add(&loss_seq, n);
	}
	h->done = upto;
}

/* Reserves the next slot of h for an event (the caller fills it and then
 * calls held_commit), or counts the loss when the queue is full. */
static __always_inline struct event *held_slot(struct held *h)
{
	__u32 n = h->n;
	if (n - h->done >= MAX_HELD) {
		lose(CNT_HELD_OVERFLOW);
		return NULL;
	}
	return &h->ev[n & (MAX_HELD - 1)];
}

static __always_inline void held_commit(struct held *h)
{
	/* After the slot's contents: whoever sees the new n sees the event. */
	__sync_fetch_and_add(&h->n, 1);
}

/* A new held queue for key, or NULL (counted) when the map is full. */
static __always_inline struct held *held_new(__u64 key)
{
	__u32 zero = 0;
	struct held *z = bpf_map_lookup_elem(&held_zero, &zero);
	if (!z)
		return NULL;
	z->skaddr = key;
	bpf_map_update_elem(&held, &key, z, BPF_NOEXIST);
	struct held *h = bpf_map_lookup_elem(&held, &key);
	if (!h)
		lose(CNT_HELD_NOSPACE);
	return h;
}

/* Takes the gate if it is open (or MATCHED, by an accept program): returns
 * the state it took it from, or GATE_FLUSHING if someone else holds it. */
static __always_inline __u32 gate_take(struct held *h)
{
	if (__sync_val_compare_and_swap(&h->gate, GATE_OPEN, GATE_FLUSHING) == GATE_OPEN)
		return GATE_OPEN;
	if (__sync_val_compare_and_swap(&h->gate, GATE_MATCHED, GATE_FLUSHING) == GATE_MATCHED)
		return GATE_MATCHED;
	return GATE_FLUSHING;
}

static __always_inline void gate_release(struct held *h, __u32 to)
{
	__sync_lock_test_and_set(&h->gate, to);
}

#endif

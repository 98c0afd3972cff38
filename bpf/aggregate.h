/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * In-kernel aggregation (mode_aggregate, tcpstate stats): counts by edge,
 * log2 histograms of time in state, closes by their facts (cause.h), and
 * counts per service port, per owner and per socket cgroup. No event
 * crosses to user space.
 * The meaning of every count is in model (analytics.go, cause.go).
 */
#ifndef TCPSTATE_AGGREGATE_H
#define TCPSTATE_AGGREGATE_H

/* floor(log2(microseconds)), 0 for less than 2 us, at most HIST_BUCKETS-1;
 * branch-free. */
static __always_inline __u32 log2_bucket(__u64 ns)
{
	__u64 v = ns / 1000;
	__u32 r, s;
	r = (v > 0xFFFFFFFFULL) << 5;
	v >>= r;
	s = (v > 0xFFFF) << 4;
	v >>= s;
	r |= s;
	s = (v > 0xFF) << 3;
	v >>= s;
	r |= s;
	s = (v > 0xF) << 2;
	v >>= s;
	r |= s;
	s = (v > 0x3) << 1;
	v >>= s;
	r |= s;
	r |= (__u32)(v >> 1);
	return r < HIST_BUCKETS - 1 ? r : HIST_BUCKETS - 1;
}

static __always_inline void hist(__u32 kind, __u64 ns)
{
	add(&hists, kind * HIST_BUCKETS + log2_bucket(ns));
	/* The sum of the values, exact: serve's histograms export it (_sum). */
	__u64 *sum = bpf_map_lookup_elem(&hist_sums, &kind);
	if (sum)
		__sync_fetch_and_add(sum, ns);
}

static __always_inline bool is_birth(__u8 old, __u8 new)
{
	return (old == TCP_CLOSE && new != TCP_LISTEN) || (old == TCP_LISTEN && new == TCP_SYN_RECV);
}

/* Counts one transition that passed the filters. */
static __always_inline void count_cgroup(__u64 id, bool born)
{
	struct count *c = bpf_map_lookup_elem(&cgroup_counts, &id);
	if (!c) {
		struct count zero = {};
		if (bpf_map_update_elem(&cgroup_counts, &id, &zero, BPF_NOEXIST) &&
		    !bpf_map_lookup_elem(&cgroup_counts, &id)) {
			count(CNT_CGROUP_OTHER);
			return;
		}
		c = bpf_map_lookup_elem(&cgroup_counts, &id);
		if (!c)
			return;
	}
	__sync_fetch_and_add(&c->transitions, 1);
	if (born)
		__sync_fetch_and_add(&c->opened, 1);
}

static __always_inline void aggregate(__u8 old, __u8 new, __u16 flags, __u64 dur, __u16 sport, __u16 dport,
				      __u32 pid, const char *comm, __u64 cgroup)
{
	if (old >= NUM_STATES || new >= NUM_STATES)
		return;
	add(&matrix, old * NUM_STATES + new);
	if (flags & EVF_DURATION_KNOWN) {
		hist(old, dur);
		if (old == TCP_SYN_SENT && new == TCP_ESTABLISHED)
			hist(HIST_ACTIVE_OPEN, dur);
		else if (old == TCP_SYN_RECV && new == TCP_ESTABLISHED)
			hist(HIST_PASSIVE_OPEN, dur);
	}
	bool born = is_birth(old, new);
	/* By the service port, not the ephemeral one: a socket that
	 * connect()ed by its remote port, any other (listeners, accepted
	 * children) by its local port. */
	__u32 pkey = flags & EVF_ACTIVE ? 65536 + dport : sport;
	struct count *pc = bpf_map_lookup_elem(&port_counts, &pkey);
	if (pc) {
		__sync_fetch_and_add(&pc->transitions, 1);
		if (born)
			__sync_fetch_and_add(&pc->opened, 1);
	}
	if (label_ports) {
		__u16 port = flags & EVF_ACTIVE ? dport : sport;
		__u32 *slot = bpf_map_lookup_elem(&port_label, &port);
		add(&port_matrix, (slot ? *slot : 0) * NUM_STATES * NUM_STATES + old * NUM_STATES + new);
	}
	/* Per cgroup and per owner: maps keyed by what comes and goes; serve
	 * turns both off, or counts per cgroup for --label-container
	 * (count_cgroups, count_owners). */
	if (count_cgroups)
		count_cgroup(cgroup, born);
	if (!count_owners || !(flags & EVF_OWNER_KNOWN))
		return;
	struct owner_count *oc = bpf_map_lookup_elem(&pid_counts, &pid);
	if (!oc) {
		struct owner_count zero = {};
		__builtin_memcpy(zero.comm, comm, sizeof(zero.comm));
		if (bpf_map_update_elem(&pid_counts, &pid, &zero, BPF_NOEXIST) &&
		    !bpf_map_lookup_elem(&pid_counts, &pid)) {
			count(CNT_PID_OTHER);
			return;
		}
		oc = bpf_map_lookup_elem(&pid_counts, &pid);
		if (!oc)
			return;
	}
	__sync_fetch_and_add(&oc->transitions, 1);
	if (born)
		__sync_fetch_and_add(&oc->opened, 1);
}

/* A gap among the aggregated transitions: the socket's old state is not
 * the state it was last seen in (EVF_GAP, pipeline.h). last is that state;
 * for a birth, old is CLOSE. When no loss was counted since the socket's
 * previous event (its loss_seq then and now are equal), nothing counted
 * explains it: the fewest transitions the model needs from last to old
 * were missed without a count. */
static __always_inline void count_gap(__u8 last, __u8 old, __u64 seq, __u64 prev_seq)
{
	count(CNT_GAP);
	if (seq != prev_seq) {
		count(CNT_GAP_AFTER_LOSS);
		return;
	}
	__u32 idx = CNT_GAP_MISSING;
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		__sync_fetch_and_add(v, missing_dist[last & 0xf][old & 0xf]);
}

#endif

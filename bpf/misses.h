/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * Recursion misses, counted exactly into the loss sequence.
 *
 * The kernel runs a tracing program at most once per CPU at a time: a
 * transition that fires in softirq while handle_set_state runs for another
 * one on the same CPU is skipped, and the kernel counts it in the
 * program's per-CPU statistics (bpf_prog_stats.misses), not in anything
 * the program sees. A skip can only happen while handle_set_state runs on
 * that CPU, so handle_set_state reads its own CPU's miss counter when it
 * starts and when it ends: a difference is a skip, and joins loss_seq
 * before the skipped socket can make another transition. Every event then
 * tells exactly whether any loss was counted between two events of a
 * socket (event.loss_seq), with no time window.
 *
 * The counter's address: find_self (an iter/bpf_prog iterator user space
 * runs once after loading) finds handle_set_state's struct bpf_prog and
 * its per-CPU stats pointer, and adds each CPU's per-CPU offset, learnt from
 * the counters map (a per-CPU array: the address of CPU c's value minus
 * the map's per-CPU base is CPU c's offset). handle_set_state reads it
 * through bpf_rdonly_cast (Linux 6.2). Where any of this is missing, the
 * addresses stay 0 and user space falls back to reading the misses between
 * batches (tracer/load.go says which the run has).
 */
#ifndef TCPSTATE_MISSES_H
#define TCPSTATE_MISSES_H

/* Set by user space before it runs find_self. */
__u32 self_prog_id = 0;
__u32 counters_map_id = 0;
__u32 nr_cpus = 0;
__u32 self_found = 0; /* set by find_self: how many CPUs it resolved */

/* The address of each CPU's struct bpf_prog_stats of handle_set_state;
 * written by find_self, read by handle_set_state. Sized to the possible
 * CPUs by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* resized by user space */
	__type(key, __u32);
	__type(value, __u64);
} miss_addr SEC(".maps");

/* Pointers made numbers: a pointer stored to memory and read back is a
 * plain number to the verifier, which forbids arithmetic on some pointers. */
volatile __u64 as_number = 0;

struct self_ctx {
	__u64 stats;
	__u64 pcpu_base;
};

static long resolve_cpu(__u32 cpu, struct self_ctx *c)
{
	__u32 zero = 0;
	void *v = bpf_map_lookup_percpu_elem(&counters, &zero, cpu);
	if (!v)
		return 1; /* past the last possible CPU */
	as_number = (__u64)v;
	__u64 addr = c->stats + (as_number - c->pcpu_base);
	bpf_map_update_elem(&miss_addr, &cpu, &addr, BPF_ANY);
	self_found = cpu + 1;
	return 0;
}

SEC("iter/bpf_prog")
int find_self(struct bpf_iter__bpf_prog *ctx)
{
	struct bpf_prog *p = ctx->prog;
	if (!p || p->aux->id != self_prog_id)
		return 0;
	struct bpf_prog_aux *aux = p->aux;
	__u32 n = aux->used_map_cnt;
	struct self_ctx c = {};
	as_number = (__u64)p->stats;
	c.stats = as_number;
	for (__u32 i = 0; i < 64 && i < n; i++) {
		struct bpf_map *m = NULL;
		if (bpf_probe_read_kernel(&m, sizeof(m), &aux->used_maps[i]) || !m)
			continue;
		if (BPF_CORE_READ(m, id) != counters_map_id)
			continue;
		void *base = NULL;
		bpf_probe_read_kernel(&base, sizeof(base), (void *)m + bpf_core_field_offset(struct bpf_array, pptrs));
		as_number = (__u64)base;
		c.pcpu_base = as_number;
	}
	if (!c.stats || !c.pcpu_base)
		return 0;
	bpf_loop(nr_cpus, resolve_cpu, &c, 0);
	return 0;
}

/* This CPU's count of handle_set_state's recursion misses (0 when not
 * resolved). */
static __always_inline __u64 my_misses(void)
{
	if (!have_kfunc(bpf_rdonly_cast))
		return 0;
	__u32 cpu = bpf_get_smp_processor_id();
	__u64 *a = bpf_map_lookup_elem(&miss_addr, &cpu);
	if (!a || !*a)
		return 0;
	struct bpf_prog_stats *s = bpf_rdonly_cast((void *)*a, bpf_core_type_id_kernel(struct bpf_prog_stats));
	return s->misses.v.a.a.counter;
}

#endif

/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * Constants the kernel headers do not give a BPF program, and the settings
 * user space fixes at load time (tracer/load.go sets them through bpf2go's
 * typed variable specs). Included first by tcpstate.bpf.c.
 */
#ifndef TCPSTATE_COMMON_H
#define TCPSTATE_COMMON_H

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define PF_KTHREAD 0x00200000
#define TASK_COMM_LEN 16
#define NUM_STATES 13 /* TCP states are 1..12 (include/net/tcp_states.h) */
#define EPIPE 32
#define ECONNABORTED 103
#define ECONNRESET 104
#define ETIMEDOUT 110
#define ECONNREFUSED 111

/* Events a socket may hold back while its filter match is undecided. */
#define MAX_HELD 4

/* port_filter values: on which side a filtered port number is wanted. */
enum port_kind {
	PORT_EITHER = 0x1, /* --port */
	PORT_LOCAL = 0x2,  /* --lport */
	PORT_REMOTE = 0x4, /* --rport */
};

/* What the pipeline does with an event that passes the filters (tracer.Mode). */
const volatile __u8 mode_stream = 1;    /* send it to the ring buffer */
const volatile __u8 mode_anomalies = 0; /* send it only if EVF_ILLEGAL or EVF_GAP */
const volatile __u8 mode_aggregate = 0; /* count it in the aggregation maps */
const volatile __u8 only_closes = 0;    /* send only ->CLOSE transitions (tcpstate life) */

/* Filters (model.Filter, tracer/filters.go). Different filters AND, values
 * of one filter OR. */
const volatile __u16 filter_family = 0; /* 0: any; AF_INET or AF_INET6 */
const volatile __u8 filter_ports = 0;   /* PORT_* kinds in use; values in port_filter */
const volatile __u8 filter_pids = 0;    /* owner pids in pid_filter */
const volatile __u16 filter_states = 0; /* bit n: events into or out of state n; 0: all */
const volatile __u8 filter_cgroups = 0; /* cgroup subtrees in cgroup_filter[0..filter_cgroups) */
const volatile __u8 filter_netns = 0;   /* network namespaces in netns_filter */

/* Read the task on the CPU for every event (cpu_pid, cpu_comm), not only for
 * the transitions that name an owner. Costs a helper call and a 16-byte copy
 * per event; only the outputs that show it ask for it. */
const volatile __u8 want_cpu_task = 1;

/* An accept program is attached (fexit/inet_csk_accept or the accept
 * syscall tracepoints): look for the owner it recorded. */
__u8 accept_owner = 0; /* set by user space after attaching */

/* Count per owner (stats' table). serve exports no owners and turns this
 * off: a long-running exporter must not fill a map keyed by pids that come
 * and go (aggregate.h). */
const volatile __u8 count_owners = 1;

/* Count per socket cgroup (cgroup_counts: stats' table, serve
 * --label-container, which prunes the cgroups that are gone). Off in serve
 * otherwise. */
const volatile __u8 count_cgroups = 1;

/* Count each transition per edge and service port slot (port_matrix,
 * serve --port-label): the slot of the ports in port_label, 0 for the rest. */
const volatile __u8 label_ports = 0;

/* missing_dist[a][b] is the fewest transitions the model takes from state a
 * to state b (model.Model.Missing): what a gap proves missing. */
const volatile __u8 missing_dist[16][16] = {};

/* The transition model (model.Model.Mask): bit n of edge_mask[old] allows
 * old->n. 16 rows, so that any 4-bit index is in bounds. */
const volatile __u16 edge_mask[16] = {};

#endif

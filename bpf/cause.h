/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * Why a socket closed. The kernel side only gathers facts at ->CLOSE, in
 * 12 bits (enum close_fact); what they mean, the cause (fin, reset_received,
 * reset_sent, refused, timeout, cancelled, listener_closed), is decided in
 * one place, model/cause.go, for trace, life, stats and serve alike. stats
 * counts closes by their facts (the closes map) and user space names them.
 *
 * The facts:
 *   - the old state of the ->CLOSE transition;
 *   - the socket error: tcp_reset() sets ECONNREFUSED in SYN_SENT, EPIPE in
 *     CLOSE_WAIT and ECONNRESET elsewhere, then calls tcp_done();
 *     tcp_write_err() sets the last soft error (an ICMP unreachable) or
 *     ETIMEDOUT before tcp_done(): it is already set at ->CLOSE;
 *   - whether a reset was sent or received, from the tcp:tcp_send_reset and
 *     tcp:tcp_receive_reset tracepoints, which mark the socket. Only a
 *     reset sent before the close marks it (tcp_abort(), the keepalive
 *     timeout): a close with unread data and tcp_disconnect() (SO_LINGER
 *     0, connect(AF_UNSPEC), a listener's unaccepted children) set CLOSE
 *     first and send their reset after the ->CLOSE transition, with no
 *     mark and no reason on the event; model/cause.go does not need it
 *     there (a full socket closed from ESTABLISHED, CLOSE_WAIT or
 *     FIN_WAIT1 without an error was aborted);
 *   - whether the socket went through CLOSING (a simultaneous close);
 *   - which timer gave up, where the socket tells (close_info, from what
 *     the write queue's purge leaves): RTOs unanswered
 *     (icsk_retransmits): retransmission; zero-window probing under way
 *     (icsk_probes_tstamp): zero-window probe; probes unanswered with
 *     keepalive on: keepalive.
 */
#ifndef TCPSTATE_CAUSE_H
#define TCPSTATE_CAUSE_H

enum close_fact {
	CF_STATE_MASK = 0xf,      /* bits 0-3: the old state */
	CF_ERR_SHIFT = 4,         /* bits 4-6: enum close_err */
	CF_ERR_MASK = 0x70,
	CF_RST_SENT = 0x80,       /* tcp_send_reset fired for it */
	CF_RST_RECEIVED = 0x100,  /* tcp_receive_reset fired for it */
	CF_CLOSING = 0x200,       /* it went through CLOSING */
	CF_TIMER_SHIFT = 10,      /* bits 10-11: enum close_timer */
	CF_TIMER_MASK = 0xc00,
	CF_LIVE = 0x1000,         /* neither orphaned (SOCK_DEAD) nor past the peer's FIN (SOCK_DONE) */
	CF_VALUES = 0x2000,       /* the facts index an array this long */
};

enum close_err {
	CE_NONE = 0,
	CE_REFUSED = 1,  /* ECONNREFUSED */
	CE_RESET = 2,    /* ECONNRESET */
	CE_PIPE = 3,     /* EPIPE */
	CE_TIMEDOUT = 4, /* ETIMEDOUT */
	CE_OTHER = 5,    /* any other: a soft error (an ICMP unreachable) that outlived the retries */
	CE_ABORTED = 6,  /* ECONNABORTED: tcp_abort() (SOCK_DESTROY: ss -K), out of orphan memory */
};

enum close_timer {
	CT_NONE = 0,
	CT_RETRANS = 1,   /* data in flight: the retransmission timer */
	CT_PROBE0 = 2,    /* probes with queued data and nothing in flight: zero-window probes */
	CT_KEEPALIVE = 3, /* probes with keepalive on and nothing queued */
};

/* sock_state.rst */
enum rst_mark {
	RST_SENT = 0x1,
	RST_RECEIVED = 0x2,
};

const enum close_fact *unused_close_fact __attribute__((unused));
const enum close_err *unused_close_err __attribute__((unused));
const enum close_timer *unused_close_timer __attribute__((unused));

static __always_inline __u32 err_class(int err)
{
	switch (err) {
	case 0:
		return CE_NONE;
	case ECONNREFUSED:
		return CE_REFUSED;
	case ECONNRESET:
		return CE_RESET;
	case EPIPE:
		return CE_PIPE;
	case ETIMEDOUT:
		return CE_TIMEDOUT;
	case ECONNABORTED:
		return CE_ABORTED;
	}
	return CE_OTHER;
}

/* The connection's end, read at ->CLOSE: its facts and its counts. */
struct close_info {
	__u64 bytes_acked;
	__u64 bytes_received;
	__u32 total_retrans;
	__u32 srtt_us;
	__u16 facts;
	__u16 err;
	__u16 rst_reason;
};

/* close_info fills ci and says whether it read the counts. */
static __always_inline bool close_info(struct close_info *ci, const struct sock *sk, __u8 old,
				       const struct sock_state *st, __u16 visited)
{
	bool counts = false;
	int err = sk_err(sk);
	__u32 facts = (old & CF_STATE_MASK) | (err_class(err) << CF_ERR_SHIFT);
	if (st->rst & RST_SENT)
		facts |= CF_RST_SENT;
	if (st->rst & RST_RECEIVED)
		facts |= CF_RST_RECEIVED;
	if (visited & (1 << TCP_CLOSING))
		facts |= CF_CLOSING;
	/* A FIN exchange ends a socket its application closed (orphaned:
	 * the common FIN_WAIT2 -> CLOSE, handed to a timewait socket before
	 * the peer's FIN) or one that took the peer's FIN (tcp_fin() sets
	 * SOCK_DONE first). A socket the application still holds and the
	 * peer has not finished was torn down: tcp_disconnect() (SO_LINGER 0,
	 * connect(AF_UNSPEC)), which sets CLOSE before it touches the flags. */
	unsigned long skflags = sk->__sk_common.skc_flags;
	if (!(skflags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DEAD))) &&
	    !(skflags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))))
		facts |= CF_LIVE;
	ci->err = err;
	ci->rst_reason = st->rst_reason;
	if (old == TCP_LISTEN)
		goto out;
	/* The fields of struct tcp_sock, around the struct sock: a typed cast
	 * and plain loads where the kernel has bpf_rdonly_cast (Linux 6.2),
	 * probe reads (a helper call each) before. */
	__u64 acked, received;
	__u32 snd_una, write_seq, total_retrans, srtt_us, probes_tstamp = 0;
	__u8 retransmits, probes_out;
	if (have_kfunc(bpf_rdonly_cast)) {
		const struct tcp_sock *tp = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));
		acked = tp->bytes_acked;
		received = tp->bytes_received;
		snd_una = tp->snd_una;
		write_seq = tp->write_seq;
		total_retrans = tp->total_retrans;
		srtt_us = tp->srtt_us;
		retransmits = tp->inet_conn.icsk_retransmits;
		if (bpf_core_field_exists(tp->inet_conn.icsk_probes_tstamp))
			probes_tstamp = tp->inet_conn.icsk_probes_tstamp;
		probes_out = tp->inet_conn.icsk_probes_out;
	} else {
		const struct tcp_sock *tp = (const struct tcp_sock *)sk;
		acked = BPF_CORE_READ(tp, bytes_acked);
		received = BPF_CORE_READ(tp, bytes_received);
		snd_una = BPF_CORE_READ(tp, snd_una);
		write_seq = BPF_CORE_READ(tp, write_seq);
		total_retrans = BPF_CORE_READ(tp, total_retrans);
		srtt_us = BPF_CORE_READ(tp, srtt_us);
		retransmits = BPF_CORE_READ(tp, inet_conn.icsk_retransmits);
		if (bpf_core_field_exists(tp->inet_conn.icsk_probes_tstamp))
			probes_tstamp = BPF_CORE_READ(tp, inet_conn.icsk_probes_tstamp);
		probes_out = BPF_CORE_READ(tp, inet_conn.icsk_probes_out);
	}
	/* Data bytes only. The kernel counts sequence numbers: bytes_acked
	 * (snd_una's advances, tcp_snd_una_update) includes the SYN of an
	 * active open (acked in SYN_SENT by tcp_ack) and our FIN once it is
	 * acknowledged (every byte written, FIN included, is acked: snd_una ==
	 * write_seq); bytes_received (rcv_nxt's, tcp_rcv_nxt_update) includes
	 * the peer's FIN, and tcp_fin() sets SOCK_DONE when it takes one. */
	if ((visited & (1 << TCP_SYN_SENT)) && acked)
		acked--;
	if ((visited & ((1 << TCP_FIN_WAIT1) | (1 << TCP_LAST_ACK) | (1 << TCP_CLOSING))) &&
	    snd_una == write_seq && acked)
		acked--;
	if ((sk->__sk_common.skc_flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) && received)
		received--;
	ci->bytes_acked = acked;
	ci->bytes_received = received;
	ci->total_retrans = total_retrans;
	ci->srtt_us = srtt_us >> 3;
	counts = true;
	if (err) {
		/* tcp_done_with_error() purges the write queue before tcp_done()
		 * sets CLOSE: packets_out and sk_wmem_queued are 0 here. What
		 * the purge leaves tells the timer: icsk_retransmits counts the
		 * RTOs since snd_una last advanced (a retransmission timeout
		 * needs one at least); icsk_probes_tstamp is set by the
		 * zero-window probe timer only (5.11), cleared when the window
		 * opens; icsk_probes_out counts the unanswered keepalive or
		 * window probes. */
		__u32 timer = CT_NONE;
		if (retransmits)
			timer = CT_RETRANS;
		else if (probes_tstamp)
			timer = CT_PROBE0;
		else if (probes_out) {
			if (sk->__sk_common.skc_flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_KEEPOPEN)))
				timer = CT_KEEPALIVE;
			else
				timer = CT_PROBE0;
		}
		facts |= timer << CF_TIMER_SHIFT;
	}
out:
	ci->facts = facts;
	return counts;
}

/* A reset sent (6.10 and later give the reason, and a NULL socket for a
 * reset answering a packet that matched no socket). */
static __always_inline int on_send_reset(const struct sock *sk, __u32 reason)
{
	if (!sk) {
		count(CNT_RST_NO_SOCKET);
		return 0;
	}
	/* A timewait or request socket has no storage: the helper returns NULL. */
	struct sock_state *st = bpf_sk_storage_get(&sock_states, (void *)sk, 0, 0);
	if (!st)
		return 0;
	st->rst |= RST_SENT;
	st->rst_reason = reason;
	return 0;
}

#endif

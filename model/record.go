package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

// The JSON record: one object per line, written by `trace -o json` and read
// back by `check`. It is a public format: keys are added, never renamed.
//
//	time          RFC 3339 wall-clock time with nanoseconds
//	ts_ns         kernel CLOCK_MONOTONIC nanoseconds
//	skaddr        kernel socket address, "0x..." hex string
//	pid, comm     the socket's owner (0 and "" when unknown)
//	owner         "known", "inherited" (the listener's, before accept) or "unknown"
//	cpu_pid, cpu_comm  the task on the CPU when the transition fired
//	family        "ipv4" or "ipv6"
//	saddr, sport  local address and port
//	daddr, dport  remote address and port
//	old, new      kernel state names without TCP_ (ESTABLISHED, SYN_SENT, ...)
//	old_state_ns  nanoseconds spent in old, null when not measured
//	last_state    the socket's previous new state as the kernel remembers it (omitted when none)
//	netns         inode number of the socket's network namespace (omitted when 0)
//	cgroup_id     the socket's own cgroup v2 id, its creator's (omitted when 0)
//	cgroup        that cgroup's path from the cgroup2 root (omitted when not resolved)
//	container, container_runtime  the container (or systemd service) the path names (omitted when none)
//	pod_uid       the Kubernetes pod the path names (omitted when none)
//	held          true when the kernel held the event until its socket matched the filters (omitted otherwise)
//	cause         at -> CLOSE: why it closed (fin, reset_received, reset_sent, refused, timeout, cancelled, listener_closed)
//	cause_detail  at -> CLOSE: fin's side (active, passive, simultaneous) or timeout's timer (connect, retransmission, keepalive, zero_window_probe); omitted when none
//	error         at -> CLOSE: the socket error's name (ECONNRESET, ...); omitted when none
//	reset_reason  at -> CLOSE: the kernel's reason for a reset it sent before the close (Linux 6.10+; the resets
//	              of SO_LINGER 0, connect(AF_UNSPEC) and a close with unread data follow the close: none); omitted when none
//	close_facts   at -> CLOSE: the facts the cause was decided from (model.CloseFacts)
//	bytes_acked, bytes_received, retransmits, srtt_us  at -> CLOSE: the connection's counts, null when the
//	              kernel did not read them (a listener's close); the bytes are data only (Event.BytesAcked)
//	age_ns        at -> CLOSE: nanoseconds since its birth; null when unknown
//	age_at_least  at -> CLOSE: true when the socket existed before tracing began (age_ns counts from then)
//	loss_seq      events the kernel had counted lost, host-wide, when it handled this one
//	prev_loss_seq loss_seq at the socket's previous event (omitted when the kernel saw none)
//	verdict       "ok", "illegal", "gap" or "unknown" when checked (omitted otherwise)
//	reason        why an anomaly was flagged (omitted when empty)

// AppendJSON appends e (and v, if checked) as one JSON object and a newline.
// It allocates nothing when buf has room. A RecordEncoder does the same
// faster for a stream of records.
func AppendJSON(buf []byte, e *Event, v *Verdict) []byte {
	var enc RecordEncoder
	return enc.Append(buf, e, v)
}

// RecordEncoder appends JSON records. It keeps the formatted date, time to
// the second and zone of the last record's timestamp, which is most of the
// cost of formatting a time, and reuses it for records of the same second.
// The zero value is ready to use; it is not safe for concurrent use.
type RecordEncoder struct {
	sec     int64
	loc     *time.Location
	prefix  [32]byte // "2006-01-02T15:04:05"
	prefixN int
	zone    [8]byte // "Z" or "+01:00"
	zoneN   int
}

// appendTime appends t as time.RFC3339Nano does.
func (c *RecordEncoder) appendTime(buf []byte, t time.Time) []byte {
	if sec := t.Unix(); sec != c.sec || t.Location() != c.loc || c.prefixN == 0 {
		whole := t.Truncate(time.Second)
		c.prefixN = len(whole.AppendFormat(c.prefix[:0], "2006-01-02T15:04:05"))
		c.zoneN = len(whole.AppendFormat(c.zone[:0], "Z07:00"))
		c.sec, c.loc = sec, t.Location()
	}
	buf = append(buf, c.prefix[:c.prefixN]...)
	if ns := t.Nanosecond(); ns != 0 {
		// Nine digits, trailing zeros dropped, as RFC3339Nano does.
		var d [10]byte
		d[0] = '.'
		for i := 9; i >= 1; i-- {
			d[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for d[n-1] == '0' {
			n--
		}
		buf = append(buf, d[:n]...)
	}
	return append(buf, c.zone[:c.zoneN]...)
}

// Append appends e (and v, if checked) as one JSON object and a newline.
func (c *RecordEncoder) Append(buf []byte, e *Event, v *Verdict) []byte {
	buf = append(buf, `{"time":"`...)
	buf = c.appendTime(buf, e.Time)
	buf = append(buf, `","ts_ns":`...)
	buf = strconv.AppendUint(buf, e.TsNs, 10)
	buf = append(buf, `,"skaddr":"0x`...)
	buf = appendHex(buf, e.Skaddr)
	buf = append(buf, `","pid":`...)
	buf = strconv.AppendUint(buf, uint64(e.Pid), 10)
	buf = append(buf, `,"comm":`...)
	buf = appendJSONString(buf, e.Comm.Bytes())
	buf = append(buf, `,"owner":"`...)
	buf = append(buf, e.ownerWord()...)
	buf = append(buf, `","cpu_pid":`...)
	buf = strconv.AppendUint(buf, uint64(e.CPUPid), 10)
	buf = append(buf, `,"cpu_comm":`...)
	buf = appendJSONString(buf, e.CPUComm.Bytes())
	buf = append(buf, `,"family":"`...)
	switch e.Family {
	case AFInet:
		buf = append(buf, "ipv4"...)
	case AFInet6:
		buf = append(buf, "ipv6"...)
	default:
		buf = append(buf, e.Family.String()...)
	}
	buf = append(buf, `","saddr":"`...)
	buf = e.Saddr.AppendTo(buf)
	buf = append(buf, `","sport":`...)
	buf = strconv.AppendUint(buf, uint64(e.Sport), 10)
	buf = append(buf, `,"daddr":"`...)
	buf = e.Daddr.AppendTo(buf)
	buf = append(buf, `","dport":`...)
	buf = strconv.AppendUint(buf, uint64(e.Dport), 10)
	buf = append(buf, `,"old":"`...)
	buf = append(buf, e.Old.String()...)
	buf = append(buf, `","new":"`...)
	buf = append(buf, e.New.String()...)
	buf = append(buf, `","old_state_ns":`...)
	if e.DurationKnown() {
		buf = strconv.AppendUint(buf, e.OldStateNs, 10)
	} else {
		buf = append(buf, "null"...)
	}
	if e.LastState != 0 {
		buf = append(buf, `,"last_state":"`...)
		buf = append(buf, e.LastState.String()...)
		buf = append(buf, '"')
	}
	if e.Netns != 0 {
		buf = append(buf, `,"netns":`...)
		buf = strconv.AppendUint(buf, uint64(e.Netns), 10)
	}
	buf = AppendCgroupKeys(buf, e)
	if e.Flags&FlagHeld != 0 {
		buf = append(buf, `,"held":true`...)
	}
	if e.New == Close {
		buf = c.appendClose(buf, e)
	}
	if e.LossKnown {
		buf = append(buf, `,"loss_seq":`...)
		buf = strconv.AppendUint(buf, e.LossSeq, 10)
		if e.LastState != 0 {
			buf = append(buf, `,"prev_loss_seq":`...)
			buf = strconv.AppendUint(buf, e.PrevLossSeq, 10)
		}
	}
	if v != nil && v.Kind != VerdictNone {
		buf = append(buf, `,"verdict":"`...)
		buf = append(buf, v.Kind.String()...)
		buf = append(buf, '"')
		if v.Reason != "" {
			buf = append(buf, `,"reason":`...)
			buf = appendJSONString(buf, []byte(v.Reason))
		}
	}
	return append(buf, "}\n"...)
}

// appendClose appends the fields of a ->CLOSE record: why and how the
// connection ended.
func (c *RecordEncoder) appendClose(buf []byte, e *Event) []byte {
	cause := e.CloseFacts.Cause()
	buf = append(buf, `,"cause":"`...)
	buf = append(buf, cause.Cause.String()...)
	buf = append(buf, '"')
	if cause.Detail != "" {
		buf = append(buf, `,"cause_detail":"`...)
		buf = append(buf, cause.Detail...)
		buf = append(buf, '"')
	}
	if e.CloseErr != 0 {
		buf = append(buf, `,"error":"`...)
		buf = append(buf, ErrnoName(e.CloseErr)...)
		buf = append(buf, '"')
	}
	if e.ResetReason != "" {
		buf = append(buf, `,"reset_reason":`...)
		buf = appendJSONString(buf, []byte(e.ResetReason))
	}
	buf = append(buf, `,"close_facts":`...)
	buf = strconv.AppendUint(buf, uint64(e.CloseFacts), 10)
	buf = AppendCounts(buf, e)
	buf = append(buf, `,"age_ns":`...)
	if e.AgeNs != 0 {
		buf = strconv.AppendUint(buf, e.AgeNs, 10)
	} else {
		buf = append(buf, "null"...)
	}
	if e.Flags&FlagAgeAtLeast != 0 {
		buf = append(buf, `,"age_at_least":true`...)
	}
	return buf
}

// AppendCounts appends a close's counts as JSON members (each after a
// comma): bytes_acked, bytes_received, retransmits and srtt_us, null when
// the kernel could not read them (FlagCounts unset).
func AppendCounts(buf []byte, e *Event) []byte {
	if e.Flags&FlagCounts == 0 {
		return append(buf, `,"bytes_acked":null,"bytes_received":null,"retransmits":null,"srtt_us":null`...)
	}
	buf = append(buf, `,"bytes_acked":`...)
	buf = strconv.AppendUint(buf, e.BytesAcked, 10)
	buf = append(buf, `,"bytes_received":`...)
	buf = strconv.AppendUint(buf, e.BytesReceived, 10)
	buf = append(buf, `,"retransmits":`...)
	buf = strconv.AppendUint(buf, uint64(e.TotalRetrans), 10)
	buf = append(buf, `,"srtt_us":`...)
	return strconv.AppendUint(buf, uint64(e.SrttUs), 10)
}

// AppendCgroupKeys appends the record's cgroup members of e (each after a
// comma): cgroup_id (omitted when 0) and what it resolved to, cgroup,
// container, container_runtime and pod_uid (each omitted when not known).
// tcpstate life's lines write them as the record does.
func AppendCgroupKeys(buf []byte, e *Event) []byte {
	if e.CgroupID != 0 {
		buf = append(buf, `,"cgroup_id":`...)
		buf = strconv.AppendUint(buf, e.CgroupID, 10)
	}
	if cg := e.Cgroup; cg != nil && cg.enc != "" {
		buf = append(buf, cg.enc...)
	} else if cg != nil {
		buf = appendCgroup(buf, cg)
	}
	return buf
}

// appendCgroup appends what is known of a socket's cgroup.
func appendCgroup(buf []byte, cg *CgroupInfo) []byte {
	if cg.Path != "" {
		buf = append(buf, `,"cgroup":`...)
		buf = appendJSONString(buf, bytesOf(cg.Path))
	}
	if c := &cg.Container; c.ID != "" {
		buf = append(buf, `,"container":`...)
		buf = appendJSONString(buf, bytesOf(c.ID))
		if c.Runtime != "" {
			buf = append(buf, `,"container_runtime":`...)
			buf = appendJSONString(buf, bytesOf(c.Runtime))
		}
	}
	// A record read back may hold anything: everything is escaped.
	if cg.Container.PodUID != "" {
		buf = append(buf, `,"pod_uid":`...)
		buf = appendJSONString(buf, bytesOf(cg.Container.PodUID))
	}
	return buf
}

// bytesOf views s as bytes without copying it, for appendJSONString, which
// only reads them: []byte(s) would allocate for every path longer than 32
// bytes, on every event.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// appendHex appends v in lower-case hex without leading zeros.
func appendHex(buf []byte, v uint64) []byte {
	var d [16]byte
	i := len(d)
	for {
		i--
		d[i] = hexDigits[v&0xf]
		v >>= 4
		if v == 0 {
			break
		}
	}
	return append(buf, d[i:]...)
}

func (e *Event) ownerWord() string {
	switch {
	case e.Flags&FlagOwnerKnown == 0:
		return "unknown"
	case e.Flags&FlagOwnerInherited != 0:
		return "inherited"
	}
	return "known"
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string, as the record's strings are
// written: for tcpstate's other JSON documents.
func AppendJSONString(buf, s []byte) []byte { return appendJSONString(buf, s) }

// appendJSONString appends s as a JSON string. Task names are arbitrary bytes:
// invalid UTF-8 becomes U+FFFD, control characters are escaped.
func appendJSONString(buf, s []byte) []byte {
	buf = append(buf, '"')
	// Most names need no escaping: copy them whole.
	plain := true
	for _, c := range s {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		buf = append(buf, s...)
		return append(buf, '"')
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				buf = append(buf, '\\', c)
			case c < 0x20 || c == 0x7f:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				buf = append(buf, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && n == 1 {
			buf = append(buf, "\ufffd"...)
		} else {
			buf = append(buf, s[i:i+n]...)
		}
		i += n
	}
	return append(buf, '"')
}

// jsonRecord mirrors the JSON record for decoding. Pointers tell a missing key
// from a zero value.
type jsonRecord struct {
	Time       *string `json:"time"`
	TsNs       *uint64 `json:"ts_ns"`
	Skaddr     *string `json:"skaddr"`
	Pid        *uint32 `json:"pid"`
	Comm       *string `json:"comm"`
	Owner      string  `json:"owner"`
	CPUPid     *uint32 `json:"cpu_pid"`
	CPUComm    *string `json:"cpu_comm"`
	Family     *string `json:"family"`
	Saddr      *string `json:"saddr"`
	Sport      *uint16 `json:"sport"`
	Daddr      *string `json:"daddr"`
	Dport      *uint16 `json:"dport"`
	Old        *string `json:"old"`
	New        *string `json:"new"`
	OldStateNs *uint64 `json:"old_state_ns"`
	LastState  string  `json:"last_state"`
	Netns      uint32  `json:"netns"`
	CgroupID   uint64  `json:"cgroup_id"`
	Cgroup     string  `json:"cgroup"`
	Container  string  `json:"container"`
	Runtime    string  `json:"container_runtime"`
	PodUID     string  `json:"pod_uid"`
	Held       bool    `json:"held"`
	LossSeq    *uint64 `json:"loss_seq"`
	CloseFacts uint16  `json:"close_facts"`
	CloseErr   string  `json:"error"`
	ResetRsn   string  `json:"reset_reason"`
	BytesAcked *uint64 `json:"bytes_acked"`
	BytesRecv  *uint64 `json:"bytes_received"`
	Retrans    *uint32 `json:"retransmits"`
	SrttUs     *uint32 `json:"srtt_us"`
	AgeNs      *uint64 `json:"age_ns"`
	AgeAtLeast bool    `json:"age_at_least"`
	PrevLoss   uint64  `json:"prev_loss_seq"`
	Verdict    string  `json:"verdict"`
	Reason     string  `json:"reason"`
}

// timeErrDetail says what time.Parse found wrong, quoting with %q as every
// ParseRecord error quotes what the line held: time.ParseError's own text
// lets DEL through raw, and check prints these errors on a terminal.
func timeErrDetail(err error) string {
	var pe *time.ParseError
	if !errors.As(err, &pe) {
		return ": " + err.Error()
	}
	if pe.Message != "" {
		return pe.Message // ": month out of range" and the like: no input in it
	}
	return fmt.Sprintf(": cannot parse %q as %q", pe.ValueElem, pe.LayoutElem)
}

// ErrNotRecord is wrapped by every ParseRecord error.
var ErrNotRecord = errors.New("not a tcpstate record")

// ParseRecord decodes one line written by AppendJSON. The verdict is returned
// as recorded (VerdictNone when the line has none); callers that check again
// ignore it.
func ParseRecord(line []byte) (Event, Verdict, error) {
	var r jsonRecord
	var e Event
	if err := json.Unmarshal(line, &r); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field == "" {
			return e, Verdict{}, fmt.Errorf("%w: a record is one JSON object per line, not a JSON %s", ErrNotRecord, te.Value)
		}
		if errors.As(err, &te) {
			return e, Verdict{}, fmt.Errorf("%w: key %q holds a JSON %s, want a %s", ErrNotRecord, te.Field, te.Value, te.Type.Kind())
		}
		return e, Verdict{}, fmt.Errorf("%w: %v", ErrNotRecord, err)
	}
	var missing []string
	need := func(ok bool, key string) {
		if !ok {
			missing = append(missing, key)
		}
	}
	need(r.Time != nil, "time")
	need(r.TsNs != nil, "ts_ns")
	need(r.Skaddr != nil, "skaddr")
	need(r.Pid != nil, "pid")
	need(r.Comm != nil, "comm")
	need(r.CPUPid != nil, "cpu_pid")
	need(r.CPUComm != nil, "cpu_comm")
	need(r.Family != nil, "family")
	need(r.Saddr != nil, "saddr")
	need(r.Sport != nil, "sport")
	need(r.Daddr != nil, "daddr")
	need(r.Dport != nil, "dport")
	need(r.Old != nil, "old")
	need(r.New != nil, "new")
	if len(missing) > 0 {
		return e, Verdict{}, fmt.Errorf("%w: missing %s", ErrNotRecord, strings.Join(missing, ", "))
	}
	var err error
	if e.Time, err = time.Parse(time.RFC3339Nano, *r.Time); err != nil {
		return e, Verdict{}, fmt.Errorf("%w: time %q%s", ErrNotRecord, *r.Time, timeErrDetail(err))
	}
	e.TsNs = *r.TsNs
	hex, ok := strings.CutPrefix(*r.Skaddr, "0x")
	if !ok {
		return e, Verdict{}, fmt.Errorf("%w: skaddr %q is not 0x-prefixed hex", ErrNotRecord, *r.Skaddr)
	}
	if e.Skaddr, err = strconv.ParseUint(hex, 16, 64); err != nil {
		return e, Verdict{}, fmt.Errorf("%w: skaddr %q is not 0x-prefixed hex", ErrNotRecord, *r.Skaddr)
	}
	e.Pid, e.Comm = *r.Pid, CommFrom(*r.Comm)
	e.CPUPid, e.CPUComm = *r.CPUPid, CommFrom(*r.CPUComm)
	switch r.Owner {
	case "known":
		e.Flags |= FlagOwnerKnown
	case "inherited":
		e.Flags |= FlagOwnerKnown | FlagOwnerInherited
	case "unknown", "":
		if r.Owner == "" && e.Pid != 0 {
			e.Flags |= FlagOwnerKnown
		}
	default:
		return e, Verdict{}, fmt.Errorf("%w: owner %q is not known, inherited or unknown", ErrNotRecord, r.Owner)
	}
	switch *r.Family {
	case "ipv4":
		e.Family = AFInet
	case "ipv6":
		e.Family = AFInet6
	default:
		return e, Verdict{}, fmt.Errorf("%w: family %q is not ipv4 or ipv6", ErrNotRecord, *r.Family)
	}
	if e.Saddr, err = netip.ParseAddr(*r.Saddr); err != nil {
		return e, Verdict{}, fmt.Errorf("%w: saddr: %v", ErrNotRecord, err)
	}
	if e.Daddr, err = netip.ParseAddr(*r.Daddr); err != nil {
		return e, Verdict{}, fmt.Errorf("%w: daddr: %v", ErrNotRecord, err)
	}
	// The kernel never reports a zone, and AppendJSON would not escape one.
	if e.Saddr.Zone() != "" || e.Daddr.Zone() != "" {
		return e, Verdict{}, fmt.Errorf("%w: addresses carry no IPv6 zone in a tcpstate record", ErrNotRecord)
	}
	// The family says what the kernel's addresses are: IPv4 ones for
	// ipv4, IPv6 ones (IPv4-mapped included) for ipv6.
	if v4 := e.Family == AFInet; e.Saddr.Is4() != v4 || e.Daddr.Is4() != v4 {
		key, a, want := "saddr", e.Saddr, "IPv6"
		if e.Saddr.Is4() == v4 {
			key, a = "daddr", e.Daddr
		}
		if v4 {
			want = "IPv4"
		}
		return e, Verdict{}, fmt.Errorf("%w: family %q, but %s %q is not an %s address", ErrNotRecord, *r.Family, key, a, want)
	}
	e.Sport, e.Dport = *r.Sport, *r.Dport
	if e.Old, err = ParseState(*r.Old); err != nil {
		return e, Verdict{}, fmt.Errorf("%w: old: %v", ErrNotRecord, err)
	}
	if e.New, err = ParseState(*r.New); err != nil {
		return e, Verdict{}, fmt.Errorf("%w: new: %v", ErrNotRecord, err)
	}
	if r.OldStateNs != nil {
		e.OldStateNs = *r.OldStateNs
		e.Flags |= FlagDurationKnown
	}
	e.Netns = r.Netns
	e.CgroupID = r.CgroupID
	if r.Cgroup != "" || r.Container != "" || r.PodUID != "" {
		e.Cgroup = &CgroupInfo{Path: r.Cgroup, Container: Container{ID: r.Container, Runtime: r.Runtime, PodUID: r.PodUID}}
	}
	if r.LastState != "" {
		if e.LastState, err = ParseState(r.LastState); err != nil {
			return e, Verdict{}, fmt.Errorf("%w: last_state: %v", ErrNotRecord, err)
		}
	}
	if r.Held {
		e.Flags |= FlagHeld
	}
	if r.LossSeq != nil {
		e.LossSeq, e.PrevLossSeq, e.LossKnown = *r.LossSeq, r.PrevLoss, true
	}
	if e.New == Close {
		e.CloseFacts, e.ResetReason = CloseFacts(r.CloseFacts), r.ResetRsn
		if r.BytesAcked != nil && r.BytesRecv != nil && r.Retrans != nil && r.SrttUs != nil {
			e.BytesAcked, e.BytesReceived, e.TotalRetrans, e.SrttUs = *r.BytesAcked, *r.BytesRecv, *r.Retrans, *r.SrttUs
			e.Flags |= FlagCounts
		}
		if r.AgeNs != nil {
			e.AgeNs = *r.AgeNs
		}
		if r.AgeAtLeast {
			e.Flags |= FlagAgeAtLeast
		}
		if r.CloseErr != "" {
			n, ok := ParseErrno(r.CloseErr)
			if !ok {
				if _, err := fmt.Sscanf(r.CloseErr, "errno %d", &n); err != nil {
					return e, Verdict{}, fmt.Errorf("%w: error %q is not an errno name", ErrNotRecord, r.CloseErr)
				}
			}
			e.CloseErr = n
		}
	}
	var v Verdict
	if r.Verdict != "" {
		k, ok := ParseVerdictKind(r.Verdict)
		if !ok {
			return e, Verdict{}, fmt.Errorf("%w: verdict %q is not ok, illegal, gap or unknown", ErrNotRecord, r.Verdict)
		}
		v = Verdict{Kind: k, Reason: r.Reason}
	}
	return e, v, nil
}

package main

import (
	"strconv"

	"github.com/tcpstate/tcpstate/model"
)

// socketDoc is one socket (model.SocketInfo) as every JSON document of
// tcpstate writes it: the stuck lists of trace's --summary-json and of
// stats, and the sockets of the reconciliation. Keys are snake_case,
// addresses and skaddr are written as in the event record; like the
// record, keys are added, never renamed.
type socketDoc struct {
	Skaddr string `json:"skaddr"` // "0x...", as in the event record
	// Kind is the kernel object a snapshot found (full, timewait,
	// request); absent for a socket the programs follow.
	Kind  string `json:"kind,omitempty"`
	State string `json:"state"`
	// InStateS is the time in State (0: unknown); InStateAtLeast says it
	// is a lower bound: the socket was already in State when tracing
	// began.
	InStateS       float64 `json:"in_state_s"`
	InStateAtLeast bool    `json:"in_state_at_least"`
	// AgeS is the time since birth (absent when unknown); AgeAtLeast says
	// it is a lower bound: born before tracing began, AgeS counts from the
	// start snapshot.
	AgeS       float64 `json:"age_s,omitempty"`
	AgeAtLeast bool    `json:"age_at_least,omitempty"`
	// The owner, as in the event record: 0 and "" when unknown.
	Pid        uint32 `json:"pid"`
	Comm       string `json:"comm"`
	OwnerKnown bool   `json:"owner_known"`
	Family     string `json:"family"`
	Saddr      string `json:"saddr"`
	Sport      uint16 `json:"sport"`
	Daddr      string `json:"daddr"`
	Dport      uint16 `json:"dport"`
	Netns      uint32 `json:"netns,omitempty"`
	// The socket's cgroup (the cgroup its creator was in): its id, path,
	// and the container and pod it names (absent when unknown).
	CgroupID  uint64 `json:"cgroup_id,omitempty"`
	Cgroup    string `json:"cgroup,omitempty"`
	Container string `json:"container,omitempty"`
	PodUID    string `json:"pod_uid,omitempty"`
	// A snapshot's sockets only (Kind set): the socket's uid, its file's
	// inode (0: none) and the processes that hold it ([] when none).
	Uid     *uint32        `json:"uid,omitempty"`
	Inode   uint64         `json:"inode,omitempty"`
	Holders []model.Holder `json:"holders,omitzero"`
}

func newSocketDoc(s *model.SocketInfo) socketDoc {
	d := socketDoc{
		Skaddr:         "0x" + strconv.FormatUint(s.Skaddr, 16),
		State:          s.State.String(),
		InStateS:       s.Since.Seconds(),
		InStateAtLeast: s.SinceAtLeast,
		AgeS:           s.Age.Seconds(),
		AgeAtLeast:     s.AgeAtLeast,
		OwnerKnown:     s.OwnerKnown,
		Family:         s.Family.String(),
		Saddr:          addrString(s.Saddr),
		Sport:          s.Sport,
		Daddr:          addrString(s.Daddr),
		Dport:          s.Dport,
		Netns:          s.Netns,
	}
	if s.OwnerKnown {
		d.Pid, d.Comm = s.Pid, s.Comm
	}
	d.CgroupID = s.CgroupID
	if cg := s.Cgroup; cg != nil {
		d.Cgroup, d.Container, d.PodUID = cg.Path, cg.Container.ID, cg.Container.PodUID
	}
	if s.Kind != 0 {
		uid := s.Uid
		d.Kind, d.Uid, d.Inode = s.Kind.String(), &uid, s.Inode
		d.Holders = append([]model.Holder{}, s.Holders...)
	}
	return d
}

// socketDocs converts a list; [] (never null) when empty.
func socketDocs(socks []model.SocketInfo) []socketDoc {
	out := make([]socketDoc, 0, len(socks))
	for i := range socks {
		out = append(out, newSocketDoc(&socks[i]))
	}
	return out
}

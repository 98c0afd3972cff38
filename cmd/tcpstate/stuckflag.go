package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tcpstate/tcpstate/model"
)

// stuckFlag is --stuck STATE=DURATION: thresholds per state over
// model.DefaultStuckThresholds. A duration of 0 (or "off") removes a state.
type stuckFlag struct {
	th map[model.State]time.Duration
}

func newStuckFlag() *stuckFlag { return &stuckFlag{th: model.DefaultStuckThresholds()} }

// stuckStates are the states a live socket can be listed in. CLOSE,
// TIME_WAIT and NEW_SYN_RECV never show (the kernel forgets a socket at
// -> CLOSE and never reports the other two), and a listener is meant to
// stay in LISTEN.
var stuckStates = []model.State{
	model.SynSent, model.SynRecv, model.Established, model.FinWait1, model.FinWait2,
	model.Closing, model.CloseWait, model.LastAck,
}

func (s *stuckFlag) String() string {
	var parts []string
	for _, st := range model.LifeOrder {
		if d, ok := s.th[st]; ok && d > 0 {
			parts = append(parts, st.String()+"="+d.String())
		}
	}
	return strings.Join(parts, ",")
}

func (s *stuckFlag) Type() string { return "STATE=DURATION" }

func (s *stuckFlag) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		name, dur, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return fmt.Errorf("%q: want STATE=DURATION, for example CLOSE_WAIT=5m", part)
		}
		st, err := model.ParseState(name)
		if err != nil {
			return err
		}
		if !slices.Contains(stuckStates, st) {
			names := make([]string, len(stuckStates))
			for i, x := range stuckStates {
				names[i] = x.String()
			}
			return fmt.Errorf("%s: no socket is listed as stuck in %s (want one of %s)", part, st, strings.Join(names, ", "))
		}
		var d time.Duration
		if dur = strings.TrimSpace(dur); dur != "off" {
			if d, err = time.ParseDuration(dur); err != nil {
				return fmt.Errorf("%s: %q is not a duration (for example 90s, 5m, or off)", part, dur)
			}
			if d < 0 {
				return fmt.Errorf("%s: the duration must not be negative", part)
			}
		}
		if d == 0 {
			delete(s.th, st)
		} else {
			s.th[st] = d
		}
	}
	return nil
}

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

// Set parses one --stuck value. Its errors say what is wrong with the
// value and what is wanted; the flag error handler puts the flag and the
// whole value in front, so a part is named only when the value has several.
func (s *stuckFlag) Set(v string) error {
	parts := strings.Split(v, ",")
	for _, part := range parts {
		if err := s.set(strings.TrimSpace(part)); err != nil {
			if len(parts) > 1 {
				return fmt.Errorf("%s: %w", part, err)
			}
			return err
		}
	}
	return nil
}

func (s *stuckFlag) set(part string) error {
	name, dur, ok := strings.Cut(part, "=")
	if !ok {
		return fmt.Errorf("want STATE=DURATION, for example CLOSE_WAIT=5m")
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
		return fmt.Errorf("no socket is listed as stuck in %s (want one of %s)", st, strings.Join(names, ", "))
	}
	var d time.Duration
	if dur = strings.TrimSpace(dur); dur != "off" {
		if d, err = time.ParseDuration(dur); err != nil {
			return fmt.Errorf("%q is not a duration (for example 90s, 5m, or off)", dur)
		}
		if d < 0 {
			return fmt.Errorf("the duration must not be negative")
		}
	}
	if d == 0 {
		delete(s.th, st)
	} else {
		s.th[st] = d
	}
	return nil
}

package model

// VerdictKind classifies one event against a transition model.
type VerdictKind uint8

// The verdicts. VerdictNone means the event was not checked.
const (
	VerdictNone VerdictKind = iota
	// VerdictOK: the edge is in the model and continues the socket's last state.
	VerdictOK
	// VerdictIllegal: the edge is not in the model.
	VerdictIllegal
	// VerdictGap: the old state is not the new state last seen for the socket.
	VerdictGap
	// VerdictUnknown: first sight of a socket in the middle of its life; not an anomaly.
	VerdictUnknown
)

var verdictNames = [...]string{
	VerdictNone:    "",
	VerdictOK:      "ok",
	VerdictIllegal: "illegal",
	VerdictGap:     "gap",
	VerdictUnknown: "unknown",
}

// String returns the verdict's JSON name ("ok", "illegal", "gap", "unknown").
func (k VerdictKind) String() string {
	if int(k) < len(verdictNames) {
		return verdictNames[k]
	}
	return "invalid"
}

// ParseVerdictKind is String's inverse; it reports false for an unknown name.
func ParseVerdictKind(s string) (VerdictKind, bool) {
	for i, n := range verdictNames {
		if n == s && i != 0 {
			return VerdictKind(i), true
		}
	}
	return VerdictNone, false
}

// Anomaly reports whether the verdict is one a user is warned about.
func (k VerdictKind) Anomaly() bool { return k == VerdictIllegal || k == VerdictGap }

// Verdict is the result of checking one event. Reason is empty for ok.
type Verdict struct {
	Kind   VerdictKind
	Reason string
}

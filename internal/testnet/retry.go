package testnet

import (
	"fmt"
	"strings"
	"testing"
)

// Problems collects what one attempt of an exact test found wrong; Fatalf
// ends the attempt (not the test).
type Problems struct{ msgs []string }

type abortAttempt struct{}

// Errorf records a problem and lets the attempt go on.
func (p *Problems) Errorf(format string, a ...any) {
	p.msgs = append(p.msgs, fmt.Sprintf(format, a...))
}

// Fatalf records a problem and ends the attempt.
func (p *Problems) Fatalf(format string, a ...any) {
	p.Errorf(format, a...)
	panic(abortAttempt{})
}

// Retry runs attempt until one finds no problem, at most 3 times, each time
// (by the attempt's own doing) in a fresh namespace. The figures such tests
// check are exact, but the kernel may skip the program for a nested event
// under load (a recursion miss, counted) or, on the project's machines,
// silently when softirq work runs on top of PID 1 (docs/kernel.md, "Loss no
// counter sees"): an exact test must not depend on one lucky run. A real bug
// fails every attempt.
// Setup failures (t.Fatal inside attempt) end the test at once.
func Retry(t testing.TB, attempt func(p *Problems)) {
	t.Helper()
	const attempts = 3
	for i := 1; ; i++ {
		p := &Problems{}
		func() {
			defer func() {
				if r := recover(); r != nil {
					if _, ok := r.(abortAttempt); !ok {
						panic(r)
					}
				}
			}()
			attempt(p)
		}()
		if len(p.msgs) == 0 {
			if i > 1 {
				t.Logf("attempt %d passed", i)
			}
			return
		}
		if i == attempts {
			t.Errorf("%d attempts failed; the last one:\n  %s", attempts, strings.Join(p.msgs, "\n  "))
			return
		}
		t.Logf("attempt %d failed, retrying in a fresh namespace:\n  %s", i, strings.Join(p.msgs, "\n  "))
	}
}

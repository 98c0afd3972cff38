package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tcpstate/tcpstate/tracer"
)

type fakeHealth struct {
	attached bool
	err      error
}

func (f fakeHealth) Attached() bool { return f.attached }
func (f fakeHealth) Counters() (tracer.Counters, error) {
	return tracer.Counters{}, f.err
}

// /healthz is 200 only while the programs are attached, the kernel's maps
// can be read and serve is not stopping; 503 otherwise, with the reason.
func TestServeHealthz(t *testing.T) {
	for _, c := range []struct {
		name     string
		src      fakeHealth
		stopping bool
		code     int
		body     string
	}{
		{"attached", fakeHealth{attached: true}, false, http.StatusOK, "ok"},
		{"detached", fakeHealth{attached: false}, false, http.StatusServiceUnavailable, "not attached"},
		{"maps unreadable", fakeHealth{attached: true, err: errors.New("bad fd")}, false, http.StatusServiceUnavailable, "cannot read the kernel's counters: bad fd"},
		{"stopping", fakeHealth{attached: true}, true, http.StatusServiceUnavailable, "stopping"},
	} {
		var stopping atomic.Bool
		stopping.Store(c.stopping)
		mux := serveMux(prometheus.NewRegistry(), c.src, &stopping)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		if rec.Code != c.code || !strings.Contains(rec.Body.String(), c.body) {
			t.Errorf("%s: /healthz %d %q, want %d with %q", c.name, rec.Code, rec.Body.String(), c.code, c.body)
		}
	}
}

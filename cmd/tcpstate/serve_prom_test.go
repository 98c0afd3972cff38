package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
)

// promServer is a Prometheus server the test runs itself: loopback only, a
// config and a data directory of its own, stopped at the test's end.
type promServer struct {
	t    *testing.T
	addr string
}

func startPrometheus(t *testing.T, bin, target string) *promServer {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: tcpstate
    static_configs:
      - targets: [%q]
`, target)), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := testnet.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := httpGet("http://" + addr + "/-/ready"); code == 200 {
			return &promServer{t: t, addr: addr}
		}
		select {
		case <-done:
			t.Fatalf("prometheus exited: %s", out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready within 30s: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type promSample struct {
	Labels map[string]string
	Value  float64
}

// query runs an instant PromQL query at time at through the HTTP API.
func (p *promServer) query(q string, at time.Time) ([]promSample, error) {
	u := fmt.Sprintf("http://%s/api/v1/query?query=%s&time=%.3f", p.addr, url.QueryEscape(q), float64(at.UnixMilli())/1e3)
	code, body := httpGet(u)
	if code != 200 {
		return nil, fmt.Errorf("query %s: HTTP %d: %s", q, code, body)
	}
	var r struct {
		Status string
		Data   struct {
			ResultType string
			Result     []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return nil, fmt.Errorf("query %s: %v: %s", q, err, body)
	}
	var out []promSample
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v", q, s.Value)
		}
		out = append(out, promSample{Labels: s.Metric, Value: v})
	}
	return out, nil
}

// scalar runs a query that yields one sample.
func (p *promServer) scalar(q string, at time.Time) (float64, error) {
	s, err := p.query(q, at)
	if err != nil {
		return 0, err
	}
	if len(s) != 1 {
		return 0, fmt.Errorf("query %s: %d samples, want 1: %v", q, len(s), s)
	}
	return s[0].Value, nil
}

// scrapedAfter waits until Prometheus holds a sample of the target scraped
// after t0, and returns a time at which queries see it.
func (p *promServer) scrapedAfter(t0 time.Time) time.Time {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		now := time.Now()
		if v, err := p.scalar(`timestamp(tcpstate_build_info)`, now); err == nil && v > float64(t0.UnixMilli())/1e3 {
			return now
		}
		if now.After(deadline) {
			p.t.Fatalf("prometheus scraped nothing after %v within 20s", t0)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A real Prometheus scrapes tcpstate serve while the test makes a known
// number of connections in its own network namespace: a PromQL query shows
// exactly the expected increase of the transition counters of its port
// (--port-label), the sockets gauge follows sockets the test holds in
// CLOSE_WAIT, and the stuck gauge counts them past --stuck.
func TestServePrometheus(t *testing.T) {
	testnet.RequireRoot(t)
	promBin := needPrometheus(t)
	bin := buildBinary(t, t.TempDir())
	testnet.Retry(t, func(p *testnet.Problems) {
		ns := testnet.New(t)
		port := ns.Port(0)
		srv := startServe(t, bin, "--port-label", fmtPort(port), "--snapshot-interval", "1s", "--stuck", "CLOSE_WAIT=2s", "--rescue-nested")
		prom := startPrometheus(t, promBin, srv.addr)
		sel := fmt.Sprintf(`tcpstate_transitions_total{job="tcpstate",port="%d"}`, port)
		t1 := prom.scrapedAfter(time.Now())
		waitStart := time.Now()
		closeWait0, err := prom.scalar(`tcpstate_sockets{state="CLOSE_WAIT"}`, t1)
		if err != nil {
			t.Fatal(err)
		}

		must := aggFDs{t}
		server := testnet.Addr(4, port)
		lfd := must.fd(ns.Listen(server))
		const conns, held = 20, 10
		// Each from its own address: the namespace has 8 ephemeral ports,
		// and the closed connections leave TIME_WAIT sockets on them.
		src := func(i int) netip.AddrPort {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)}), 0)
		}
		for i := range conns {
			c := must.fd(ns.ConnectFrom(src(i), server))
			s := must.fd(ns.Accept(lfd))
			must.ok(ns.Close(c))
			must.ok(ns.ReadEOF(s))
			must.ok(ns.Close(s))
		}
		// Sockets whose peer closed and that the test holds: CLOSE_WAIT.
		var holds []int
		for i := range held {
			c := must.fd(ns.ConnectFrom(src(conns+i), server))
			holds = append(holds, must.fd(ns.Accept(lfd)))
			must.ok(ns.Close(c))
		}
		heldAt := time.Now()
		time.Sleep(100 * time.Millisecond) // the peers' FIN arrives in softirq
		t2 := prom.scrapedAfter(time.Now().Add(1100 * time.Millisecond))
		// The gauge is host-wide: other processes' sockets may come and
		// go meanwhile (on the project's shared machines, one flapped), so
		// it must follow the held ones within 1.
		if v, err := prom.scalar(`tcpstate_sockets{state="CLOSE_WAIT"}`, t2); err != nil || math.Abs(v-(closeWait0+held)) > 1 {
			p.Errorf("tcpstate_sockets{state=\"CLOSE_WAIT\"} %v (%v) with %d held, was %v", v, err, held, closeWait0)
		}
		// Past --stuck CLOSE_WAIT=2s.
		time.Sleep(time.Until(heldAt.Add(2100 * time.Millisecond)))
		t3 := prom.scrapedAfter(time.Now().Add(1100 * time.Millisecond))
		if v, err := prom.scalar(`tcpstate_stuck_sockets{state="CLOSE_WAIT"}`, t3); err != nil || v < held {
			p.Errorf("tcpstate_stuck_sockets{state=\"CLOSE_WAIT\"} %v (%v), want at least the %d held", v, err, held)
		}
		for _, fd := range holds {
			must.ok(ns.Close(fd))
		}
		must.ok(ns.Close(lfd))
		time.Sleep(200 * time.Millisecond)
		t4 := prom.scrapedAfter(time.Now().Add(1100 * time.Millisecond))
		if v, err := prom.scalar(`tcpstate_sockets{state="CLOSE_WAIT"}`, t4); err != nil || math.Abs(v-closeWait0) > 1 {
			p.Errorf("tcpstate_sockets{state=\"CLOSE_WAIT\"} %v (%v) after closing the held sockets, want %v again", v, err, closeWait0)
		}

		// The increase of every edge of the port, in one query.
		q := fmt.Sprintf(`%s @ %.3f - %s @ %.3f`, sel, float64(t4.UnixMilli())/1e3, sel, float64(t1.UnixMilli())/1e3)
		got, err := prom.query(q, t4)
		if err != nil {
			t.Fatal(err)
		}
		n := float64(conns + held)
		want := map[[2]string]float64{
			{"CLOSE", "LISTEN"}: 1, {"LISTEN", "CLOSE"}: 1,
			{"CLOSE", "SYN_SENT"}: n, {"SYN_SENT", "ESTABLISHED"}: n, {"ESTABLISHED", "FIN_WAIT1"}: n,
			{"FIN_WAIT1", "FIN_WAIT2"}: n, {"FIN_WAIT2", "CLOSE"}: n,
			{"LISTEN", "SYN_RECV"}: n, {"SYN_RECV", "ESTABLISHED"}: n, {"ESTABLISHED", "CLOSE_WAIT"}: n,
			{"CLOSE_WAIT", "LAST_ACK"}: n, {"LAST_ACK", "CLOSE"}: n,
		}
		seen := map[[2]string]bool{}
		for _, s := range got {
			e := [2]string{s.Labels["old_state"], s.Labels["new_state"]}
			seen[e] = true
			if s.Value != want[e] {
				p.Errorf("%s -> %s increased by %v, want %v", e[0], e[1], s.Value, want[e])
			}
		}
		for e := range want {
			if !seen[e] {
				p.Errorf("%s -> %s: no series in %q", e[0], e[1], q)
			}
		}
		lost, err := prom.scalar(fmt.Sprintf(`sum(tcpstate_events_lost_total @ %.3f) - sum(tcpstate_events_lost_total @ %.3f)`,
			float64(t4.UnixMilli())/1e3, float64(t1.UnixMilli())/1e3), t4)
		if err != nil || lost != 0 {
			p.Errorf("events lost host-wide meanwhile: %v (%v)", lost, err)
		}
		if v, err := prom.scalar(`sum(tcpstate_anomalies_total{kind="illegal"})`, t4); err != nil || v != 0 {
			p.Errorf("illegal transitions under linux: %v (%v)", v, err)
		}
		if v, err := prom.scalar(`up{job="tcpstate"}`, t4); err != nil || v != 1 {
			p.Errorf("up %v (%v)", v, err)
		}
		t.Logf("setup and checks took %v", time.Since(waitStart).Round(time.Millisecond))

		// The exposition passes promtool's lint.
		code, text := httpGet("http://" + srv.addr + "/metrics")
		if code != 200 {
			t.Fatalf("/metrics: HTTP %d", code)
		}
		promtoolCheckMetrics(t, text)

		// The sockets gauge against ss -tan summed over every namespace:
		// the snapshot falls between two readings of ss (the cache is older
		// than --snapshot-interval 1s after the first), so it may differ
		// from each only by what changed between them, plus 2.
		ss1 := ssCounts(t)
		time.Sleep(1100 * time.Millisecond)
		_, text = httpGet("http://" + srv.addr + "/metrics")
		ss2 := ssCounts(t)
		for _, st := range socketStates {
			v, ok := metricValue(text, fmt.Sprintf(`tcpstate_sockets{state="%s"}`, st))
			if !ok {
				p.Errorf("no tcpstate_sockets{state=%q}", st)
				continue
			}
			lo, hi := float64(min(ss1[st], ss2[st])), float64(max(ss1[st], ss2[st]))
			slack := 2 + math.Ceil(hi/100)
			if v < lo-slack || v > hi+slack {
				p.Errorf("tcpstate_sockets{state=%q} %v, ss -tan %v and %v (tolerance %v)", st, v, ss1[st], ss2[st], slack)
			}
		}
		// SIGTERM (what systemd and Kubernetes send) detaches cleanly:
		// exit 0. (SIGINT is trace's and stats' TestStops.)
		srv.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-srv.done:
			if c := srv.cmd.ProcessState.ExitCode(); c != 0 {
				p.Errorf("serve exited %d after SIGTERM: %s", c, srv.stderr)
			}
		case <-time.After(testnet.Scaled(10 * time.Second)):
			p.Errorf("serve did not exit within %v of SIGTERM", testnet.Scaled(10*time.Second))
		}
	})
}

// aggFDs checks results of socket calls.
type aggFDs struct{ t *testing.T }

func (c aggFDs) fd(fd int, err error) int {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
	return fd
}

func (c aggFDs) ok(err error) {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
}

var _ = model.Close

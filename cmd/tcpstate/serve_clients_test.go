package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
)

// portTransitions sums tcpstate_transitions_total over the state pairs of
// one --port-label port.
func portTransitions(t *testing.T, text string, port uint16) float64 {
	t.Helper()
	var sum float64
	label := fmt.Sprintf(`port="%d"`, port)
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, "tcpstate_transitions_total{") || !strings.Contains(l, label) {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("exposition line %q: %v", l, err)
		}
		sum += v
	}
	return sum
}

// neverReader connects to addr with a 4 KiB receive buffer and never
// reads: it asks for a scrape every 10 ms, at most n times, until the test
// ends, and serve's answers fill the buffers until its write blocks.
// Paced and kept up, because a burst meets the 503 of the gathering bound:
// 512 scrapes asked at once, 4 of 8 such clients had all theirs answered
// 503, and drained instead of blocking.
func neverReader(t *testing.T, addr string, n int) {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() {
		close(stop)
		c.Close()
		<-done
	})
	go func() {
		defer close(done)
		req := []byte("GET /metrics HTTP/1.1\r\nHost: tcpstate\r\n\r\n")
		for range n {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if _, err := c.Write(req); err != nil {
				return
			}
		}
	}()
}

// scrapeIn is one scrape, on a connection of its own (a kept-alive one
// would hold one of serve's 32 slots between scrapes), that must answer
// within limit.
func scrapeIn(t *testing.T, url string, limit time.Duration) (int, string, time.Duration) {
	t.Helper()
	c := http.Client{Timeout: limit + time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	code, body := 0, ""
	if r, err := c.Get(url); err != nil {
		body = err.Error()
	} else {
		b, err := io.ReadAll(r.Body)
		r.Body.Close()
		code, body = r.StatusCode, string(b)
		if err != nil {
			code, body = 0, "reading the answer: "+err.Error()
		}
	}
	took := time.Since(start)
	if took > limit {
		t.Errorf("a scrape took %v, want at most %v", took.Round(time.Millisecond), limit)
	}
	return code, body, took
}

// TestServeHostileClients: what the help promises of serve against
// clients that misbehave, on a real serve with real connections traced.
// Clients that stopped reading hold their scrapes (more than the 4 that
// may gather at once) and a scrape still answers, exact; idle connections
// that fill all 32 slots are dropped within the 5 s header timeout; a
// storm of scrapes answers every request with the metrics or a 503 that
// says why, and costs the counts nothing; SIGTERM ends serve with the
// stuck clients still connected.
func TestServeHostileClients(t *testing.T) {
	testnet.RequireRoot(t)
	if testnet.Slowdown() > 1 {
		// Measured in the 6.1 guest: 1,357 answers of 200 in 200 s, while
		// each client needs about 100 of them to be blocked, and the 30 s
		// write timeout drops the first before the fifth is blocked.
		t.Skip("serve's bounds on its clients are user space's, the same on every kernel, and timed against its 30 s write timeout, which an emulated CPU cannot meet: the host's run checks them")
	}
	t.Parallel()
	bin := buildBinary(t, t.TempDir())
	ns := testnet.New(t)
	port := ns.Port(0)
	srv := startServe(t, bin, "--port-label", fmtPort(port), "--snapshot-interval", "1s")
	// startServe's /healthz polls keep a connection alive, which would
	// hold one of the 32 slots; this test's scrapes keep none (scrapeIn).
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	url := "http://" + srv.addr + "/metrics"
	scrapeLimit := testnet.Scaled(2 * time.Second)

	// Eight clients that never read, each asking for scrapes (35 KB each)
	// until every one of them is blocked in serve's write (2.8 MB queued,
	// measured: 80 answers).
	// promhttp_metric_handler_requests_in_flight counts them, and the
	// asking scrape: 9, and an answer, prove that a blocked write holds no
	// gathering slot (4 of them). Until their buffers fill they are a small
	// storm of their own, and a scrape may get the gathering bound's 503.
	for range 8 {
		neverReader(t, srv.addr, 20000)
	}
	deadline := time.Now().Add(testnet.Scaled(10 * time.Second))
	for {
		code, body, _ := scrapeIn(t, url, scrapeLimit)
		if code == http.StatusServiceUnavailable && strings.Contains(body, "Limit of concurrent requests reached (4)") {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if code != http.StatusOK {
			t.Fatalf("a scrape beside clients that never read: status %d\n%s", code, body)
		}
		v, ok := metricValue(body, "promhttp_metric_handler_requests_in_flight")
		if ok && v >= 9 {
			break
		}
		if time.Now().After(deadline) {
			_, lport, _ := net.SplitHostPort(srv.addr)
			ss, _ := exec.Command("ss", "-tnmi", "state", "established", "( sport = :"+lport+" )").CombinedOutput()
			t.Fatalf("the clients that never read are not stuck in serve: %v scrapes in flight (want 9: theirs and this one)\n%s\nss:\n%s",
				v, grepLines(body, "promhttp_metric_handler_requests"), ss)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Traced meanwhile, and counted exactly: 20 connections of 10
	// transitions, the listener's 2.
	connections(t, ns, port, 20)
	code, body, _ := scrapeIn(t, url, scrapeLimit)
	if got := portTransitions(t, body, port); code != http.StatusOK || got != 202 {
		t.Errorf("beside stuck clients: status %d, %v transitions on port %d, want 200 and 202", code, got, port)
	}

	// 24 idle connections take the slots left (32 in all): a scrape
	// waits in the listen queue until the server drops them, 5 s after
	// they connected without a request (ReadHeaderTimeout).
	// A connection closed after its answer keeps its slot half a second
	// more (net/http waits that long before the close, so that the peer
	// reads the answer before a reset): the last scrape's must have gone.
	time.Sleep(time.Second)
	idleAt := time.Now()
	var idle []net.Conn
	for range serveMaxConns - 8 {
		c, err := net.Dial("tcp", srv.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	time.Sleep(200 * time.Millisecond) // all accepted
	code, body, took := scrapeIn(t, url, testnet.Scaled(7*time.Second))
	if code != http.StatusOK || portTransitions(t, body, port) != 202 {
		t.Errorf("after the idle connections: status %d\n%s", code, grepLines(body, "port="))
	}
	if took < 4*time.Second {
		t.Errorf("a scrape with every slot taken answered in %v: the 32-connection bound did not hold it", took.Round(time.Millisecond))
	}
	for i, c := range idle {
		c.SetReadDeadline(idleAt.Add(testnet.Scaled(7 * time.Second)))
		if n, err := c.Read(make([]byte, 64)); err == nil || n != 0 || os.IsTimeout(err) {
			t.Errorf("idle connection %d: read %d bytes, %v after %v; want EOF, serve dropping it", i, n, err, time.Since(idleAt).Round(time.Millisecond))
			break
		}
	}

	// A storm: 16 clients scrape 10 times each, on new connections,
	// while 20 more connections are traced.
	var (
		mu     sync.Mutex
		counts = map[int]int{}
		bad    []string
		wg     sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), testnet.Scaled(60*time.Second))
	defer cancel()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := http.Client{Timeout: testnet.Scaled(10 * time.Second), Transport: &http.Transport{DisableKeepAlives: true}}
			for range 10 {
				req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
				r, err := c.Do(req)
				if err != nil {
					mu.Lock()
					bad = append(bad, err.Error())
					mu.Unlock()
					return
				}
				var b strings.Builder
				_, err = io.Copy(&b, r.Body)
				r.Body.Close()
				mu.Lock()
				counts[r.StatusCode]++
				switch {
				case err != nil:
					bad = append(bad, "reading the answer: "+err.Error())
				case r.StatusCode == http.StatusServiceUnavailable && !strings.Contains(b.String(), "Limit of concurrent requests reached (4)"):
					bad = append(bad, "503 without saying why: "+b.String())
				case r.StatusCode != http.StatusOK && r.StatusCode != http.StatusServiceUnavailable:
					bad = append(bad, fmt.Sprintf("status %d: %s", r.StatusCode, b.String()))
				}
				mu.Unlock()
			}
		}()
	}
	connectionsFrom(t, ns, port, 20, 20)
	wg.Wait()
	if len(bad) > 0 || counts[http.StatusOK] == 0 {
		t.Errorf("the storm's answers %v; failures (%d):\n%s", counts, len(bad), strings.Join(bad, "\n"))
	}
	t.Logf("storm of 16x10 scrapes beside the stuck clients: answers by status %v", counts)
	code, body, _ = scrapeIn(t, url, scrapeLimit)
	if got := portTransitions(t, body, port); code != http.StatusOK || got != 404 {
		t.Errorf("after the storm: status %d, %v transitions on port %d, want 200 and 404", code, got, port)
	}
	if hwm := procStatusKiB(t, srv.cmd.Process.Pid, "VmHWM"); hwm > 128<<10 {
		t.Errorf("serve's peak RSS %d KiB after the storm, want under 128 MiB", hwm)
	}

	// SIGTERM with the clients still stuck: the in-flight scrapes get
	// 5 s (http.Server.Shutdown), then serve detaches and exits 0.
	start := time.Now()
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	limit := 5*time.Second + testnet.Scaled(2*time.Second)
	select {
	case <-srv.done:
	case <-time.After(limit):
		t.Fatalf("serve did not exit within %v of SIGTERM with stuck clients\n%s", limit, srv.stderr)
	}
	if code := srv.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("serve exited with status %d after SIGTERM\n%s", code, srv.stderr)
	}
	t.Logf("serve exited %v after SIGTERM with clients stuck", time.Since(start).Round(time.Millisecond))
}

// procStatusKiB reads one "kB" field of /proc/PID/status.
func procStatusKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	v := procStatusField(pid, field)
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(v, "kB")))
	if err != nil {
		t.Fatalf("/proc/%d/status %s %q: %v", pid, field, v, err)
	}
	return n
}

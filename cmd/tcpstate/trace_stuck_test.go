package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
)

// trace takes --stuck as stats does.
func TestTraceStuckFlag(t *testing.T) {
	cmd := newTraceCmd()
	if err := cmd.ParseFlags([]string{"--stuck", "ESTABLISHED=2m,close-wait=off"}); err != nil {
		t.Fatal(err)
	}
	f := cmd.Flags().Lookup("stuck")
	if f == nil {
		t.Fatal("trace has no --stuck")
	}
	sf, ok := f.Value.(*stuckFlag)
	if !ok {
		t.Fatalf("--stuck is a %T, not stats' stuckFlag", f.Value)
	}
	if sf.th[model.Established] != 2*time.Minute || sf.th[model.CloseWait] != 0 || sf.th[model.LastAck] != 30*time.Second {
		t.Errorf("thresholds %v", sf.th)
	}
	if got := usageErr(t, "trace", "--stuck", "LISTEN=1s"); !strings.Contains(got, "no socket is listed as stuck in LISTEN") {
		t.Errorf("trace --stuck LISTEN=1s: %q", got)
	}
}

// TestTraceStuckList: trace's end-of-run summary lists the sockets that
// outstayed the --stuck thresholds given, not the defaults.
func TestTraceStuckList(t *testing.T) {
	ns := testnet.New(t)
	bin := buildBinary(t, t.TempDir())
	port := ns.Port(0)
	p := startTrace(t, bin, "--port", strconv.Itoa(int(port)), "--stuck", "ESTABLISHED=200ms,CLOSE_WAIT=off")
	ap := testnet.Addr(4, port)
	lfd, err := ns.Listen(ap)
	if err != nil {
		t.Fatal(err)
	}
	cfd, err := ns.Connect(ap)
	if err != nil {
		t.Fatal(err)
	}
	afd, err := ns.Accept(lfd)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond) // both ends ESTABLISHED, past 200ms
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit status %d\n%s", code, p.stderr)
	}
	for _, fd := range []int{cfd, afd, lfd} {
		if err := ns.Close(fd); err != nil {
			t.Fatal(err)
		}
	}
	stderr := p.stderr.String()
	head := "stuck sockets (in a state longer than SYN_SENT 10s, SYN_RECV 10s, ESTABLISHED 200ms, FIN_WAIT2 1m30s, LAST_ACK 30s): 2\n"
	if !strings.Contains(stderr, head) {
		t.Fatalf("summary lacks %q:\n%s", head, stderr)
	}
	rows := 0
	for _, line := range strings.Split(stderr[strings.Index(stderr, head):], "\n") {
		if strings.Contains(line, "ESTABLISHED") && strings.Contains(line, ":"+strconv.Itoa(int(port))) {
			rows++
		}
	}
	if rows != 2 {
		t.Errorf("want both ends of the connection listed as stuck in ESTABLISHED:\n%s", stderr)
	}
}

// Command latency measures how long a transition takes to reach tcpstate's
// standard output on an idle host: the price of not waking the reader per
// event. It runs `tcpstate trace -o json --port P`, makes one loopback
// connection at a time with pauses between them, and compares each record's
// kernel time with the moment its line was read. Needs root.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("tcpstate", "", "tcpstate binary (default: build ./cmd/tcpstate)")
	conns := flag.Int("connections", 20, "connections, one at a time")
	pause := flag.Duration("pause", 250*time.Millisecond, "idle time before each connection")
	port := flag.Int("port", 18999, "loopback port to listen on (and to filter on)")
	flag.Parse()
	if err := run(*bin, *conns, *pause, *port); err != nil {
		fmt.Fprintln(os.Stderr, "latency:", err)
		os.Exit(1)
	}
}

func run(bin string, conns int, pause time.Duration, port int) error {
	if conns < 1 || conns > 10000 || port < 1 || port > 65535 {
		return errors.New("--connections must be 1-10000 and --port 1-65535")
	}
	if bin == "" {
		dir, err := os.MkdirTemp("", "tcpstate-latency")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		bin = dir + "/tcpstate"
		if out, err := exec.Command("go", "build", "-o", bin, "./cmd/tcpstate").CombinedOutput(); err != nil {
			return fmt.Errorf("building tcpstate: %v\n%s", err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(conns)*(pause+time.Second)+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "trace", "-o", "json", "--port", strconv.Itoa(port))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
	}()
	errs := bufio.NewScanner(stderr)
	for errs.Scan() {
		if strings.Contains(errs.Text(), "Ctrl-C to stop") {
			break
		}
	}
	go func() { // keep stderr drained
		for errs.Scan() {
		}
	}()

	// Plain TCP (Go listeners default to MPTCP, which has its own socket).
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(ctx, "tcp4", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return err
	}
	defer ln.Close()
	d := net.Dialer{Timeout: 2 * time.Second}
	d.SetMultipathTCP(false)

	// Read continuously, so each line's latency is measured when it arrives:
	// the listener's CLOSE -> LISTEN, then 10 transitions per connection.
	want := 1 + 10*conns
	got := make(chan time.Duration, want)
	readErr := make(chan error, 1)
	go func() {
		lines := bufio.NewScanner(stdout)
		for n := 0; n < want && lines.Scan(); n++ {
			read := time.Now()
			var r struct {
				Time time.Time `json:"time"`
			}
			if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
				readErr <- fmt.Errorf("record %q: %v", lines.Text(), err)
				return
			}
			got <- read.Sub(r.Time)
		}
		readErr <- lines.Err()
	}()
	for i := 0; i < conns; i++ {
		time.Sleep(pause)
		c, err := d.DialContext(ctx, "tcp4", ln.Addr().String())
		if err != nil {
			return err
		}
		s, err := ln.Accept()
		if err != nil {
			return err
		}
		c.Close()
		s.Close()
	}
	var lat []time.Duration
	for len(lat) < want {
		select {
		case l := <-got:
			lat = append(lat, l)
		case err := <-readErr:
			if len(got) == 0 {
				return fmt.Errorf("tcpstate's output ended after %d of %d records: %v", len(lat), want, err)
			}
		case <-ctx.Done():
			return fmt.Errorf("only %d of %d records arrived", len(lat), want)
		}
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	fmt.Printf("%d events, %d connections %v apart: latency from the transition to tcpstate's output: median %.1f ms, p90 %.1f ms, max %.1f ms\n",
		len(lat), conns, pause, ms(lat[len(lat)/2]), ms(lat[len(lat)*9/10]), ms(lat[len(lat)-1]))
	return nil
}

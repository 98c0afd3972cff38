package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// scrapeEvery is how often a serve configuration is scraped during its run,
// as a Prometheus server with a 1 s scrape interval would.
const scrapeEvery = time.Second

// scraper fetches /metrics of a tcpstate serve every scrapeEvery until
// stopped, counting what it got.
type scraper struct {
	url          string
	stop         context.CancelFunc
	done         chan struct{}
	mu           sync.Mutex
	ok, failed   int
	bytes        int64
	slowest      time.Duration
	firstFailure string
	finished     bool
}

// freeLoopbackAddr finds a loopback port nothing listens on now.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func startScraper(addr string) *scraper {
	ctx, cancel := context.WithCancel(context.Background())
	s := &scraper{url: "http://" + addr + "/metrics", stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		client := http.Client{Timeout: 10 * time.Second}
		tick := time.NewTicker(scrapeEvery)
		defer tick.Stop()
		for {
			start := time.Now()
			n, err := s.once(ctx, &client)
			s.mu.Lock()
			if err != nil {
				if ctx.Err() == nil {
					s.failed++
					if s.firstFailure == "" {
						s.firstFailure = err.Error()
					}
				}
			} else {
				s.ok++
				s.bytes += n
				s.slowest = max(s.slowest, time.Since(start))
			}
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *scraper) once(ctx context.Context, c *http.Client) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return n, err
}

// finish stops the scraper and records its counts in extra.
func (s *scraper) finish(extra map[string]string) map[string]string {
	s.stop()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return extra
	}
	s.finished = true
	extra = addExtra(extra, "scrapes", strconv.Itoa(s.ok))
	extra = addExtra(extra, "scrapes_failed", strconv.Itoa(s.failed))
	extra = addExtra(extra, "scrape_slowest_ms", strconv.FormatInt(s.slowest.Milliseconds(), 10))
	if s.ok > 0 {
		extra = addExtra(extra, "scrape_bytes", strconv.FormatInt(s.bytes/int64(s.ok), 10))
	}
	if s.firstFailure != "" {
		extra = addExtra(extra, "scrape_first_failure", s.firstFailure)
	}
	return extra
}

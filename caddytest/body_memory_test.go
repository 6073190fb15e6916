package caddytest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

// TestStalledPostsHoldBoundedMemory has 300 clients each declare a
// 1,000,000-byte polling POST (max_body's default) under a random sid,
// send 999,000 bytes and stall, with no read_body timeout (issue 10,
// item 3). Caddy reads polling POST bodies whole before proxying them;
// without a process-wide budget it held every one (RSS +430 MB). With the
// default max_body_memory (32 MiB), the POSTs beyond it get 503 with
// Retry-After and the heap grows by less than 64 MB (RSS of a release
// build: about +40 MB, measured without -race).
func TestStalledPostsHoldBoundedMemory(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 1, nil)
	tester := caddytester.NewTester(t)
	loadConfig(t, tester, proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio"}.Caddyfile())

	const (
		clients  = 300
		declared = 1_000_000
		sent     = 999_000
	)
	payload := bytes.Repeat([]byte("4x"), sent/2)
	runtime.GC()
	debug.FreeOSMemory()
	before, beforeRSS := heapBytes(), rssBytes(t)

	type outcome struct {
		status     int
		retryAfter string
	}
	outcomes := make(chan outcome, clients)
	var conns []net.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := fmt.Sprintf("127.78.%d.%d", i/200, i%200+1)
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
			c, err := d.Dial("tcp", siteAddr)
			if err != nil {
				outcomes <- outcome{status: -1}
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			sid := fmt.Sprintf("stalled%013d", i)
			head := fmt.Sprintf("POST /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: %d\r\n\r\n",
				sid, siteAddr, declared)
			go func() {
				if _, err := c.Write([]byte(head)); err == nil {
					_, _ = c.Write(payload)
				}
			}()
			// a stalled POST is never answered: the read times out when
			// the test closes the connection
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return
			}
			outcomes <- outcome{res.StatusCode, res.Header.Get("Retry-After")}
		}()
	}
	// the refused POSTs are answered at once; wait until the answers stop
	refused, quiet := 0, time.Now()
	for deadline := time.Now().Add(20 * time.Second); time.Since(quiet) < 2*time.Second && time.Now().Before(deadline); {
		select {
		case o := <-outcomes:
			if o.status != http.StatusServiceUnavailable || o.retryAfter == "" {
				t.Errorf("a POST got %d (Retry-After %q), want no answer (stalled) or 503 with Retry-After", o.status, o.retryAfter)
			}
			refused++
			quiet = time.Now()
		case <-time.After(100 * time.Millisecond):
		}
	}
	runtime.GC()
	grown, grownRSS := heapBytes()-before, rssBytes(t)-beforeRSS
	t.Logf("%d stalled POSTs of %d/%d bytes: %d answered 503, %d held; heap in use grew by %.1f MB, RSS by %.1f MB (inflated under -race)",
		clients, sent, declared, refused, clients-refused, float64(grown)/1e6, float64(grownRSS)/1e6)
	mu.Lock()
	for _, c := range conns {
		_ = c.Close()
	}
	mu.Unlock()
	wg.Wait()
	if refused == 0 || refused == clients {
		t.Errorf("%d of %d POSTs refused: want the budget to hold some and refuse the rest", refused, clients)
	}
	if grown > 64<<20 {
		t.Errorf("heap in use grew by %d MB for %d stalled POSTs, want at most 64 MB", grown>>20, clients)
	}
}

// heapBytes returns the bytes of heap spans in use (Caddy runs in this
// process): what RSS measures of the Go heap, without the race
// detector's shadow memory, which makes RSS meaningless under -race.
func heapBytes() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}

// rssBytes returns the resident set size of this process (Caddy runs in
// it).
func rssBytes(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

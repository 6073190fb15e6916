package caddytest

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

// TestMetricsThroughReloads scrapes the admin endpoint's /metrics while
// clients make handshakes, session requests, requests with an unknown sid
// and malformed requests, under a configuration and two reloads, and
// checks every number against what the clients did: the counters go on
// counting after each reload (Caddy gives each configuration a new
// registry), and the sessions gauge agrees with the admin API's pins.
func TestMetricsThroughReloads(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 3, nil)
	tester := caddytester.NewTester(t)
	load := func(round int) {
		// a changed configuration each time: a real reload
		loadConfig(t, tester, proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio {\n\t\t\tfallback least_conn\n\t\t}",
			Extra: fmt.Sprintf("\t\tlb_try_interval %dms", 250+round)}.Caddyfile())
	}
	load(0)
	before := scrapeMetrics(t)
	want := map[string]float64{}
	for round := range 3 {
		if round > 0 {
			load(round)
		}
		for k := 1; k <= 6; k++ {
			ip := fmt.Sprintf("127.79.%d.%d", round, k)
			sid, node := openSession(t, nodes, ip)
			want[`caddy_socketio_requests_total{route="new"}`]++
			want[fmt.Sprintf(`caddy_socketio_handshakes_total{upstream=%q}`, node.Dial())]++
			res := rawExchange(t, ip, request("POST", "/socket.io/?EIO=4&transport=polling&sid="+sid, []string{"Content-Type: text/plain;charset=UTF-8"}, "6"))
			if res.Status != http.StatusOK {
				t.Fatalf("session request: %v", res)
			}
			want[`caddy_socketio_requests_total{route="owner"}`]++
		}
		ip := fmt.Sprintf("127.79.%d.100", round)
		res := rawExchange(t, ip, request("GET", fmt.Sprintf("/socket.io/?EIO=4&transport=polling&sid=metricsUnknown%06d", round), nil, ""))
		if res.Status != http.StatusBadRequest {
			t.Fatalf("unknown sid: %v, want the node's 400", res)
		}
		want[`caddy_socketio_requests_total{route="unknown"}`]++
		want[fmt.Sprintf(`caddy_socketio_session_unknown_total{upstream=%q}`, hashNode(nodes, ip).Dial())]++
		if res := rawExchange(t, ip, request("GET", "/socket.io/?EIO=4&transport=polling&sid=a&sid=b", nil, "")); res.Status != http.StatusBadRequest {
			t.Fatalf("repeated sid: %v, want 400 from the handler", res)
		}
		want[`caddy_socketio_refused_total{reason="repeated_param"}`]++

		got := scrapeMetrics(t)
		for series, n := range want {
			if d := got[series] - before[series]; d != n {
				t.Errorf("round %d: %s grew by %v, want %v", round, series, d, n)
			}
		}
		pins := pinsOf(t)
		for _, n := range nodes {
			series := fmt.Sprintf(`caddy_socketio_sessions{upstream=%q}`, n.Dial())
			if got[series] != float64(pins.ByUpstream[n.Dial()]) {
				t.Errorf("round %d: %s = %v, the admin API counts %d pins", round, series, got[series], pins.ByUpstream[n.Dial()])
			}
		}
	}
}

// scrapeMetrics reads the admin endpoint's /metrics: the value of each
// series of the socketio modules, keyed by name and labels as written.
func scrapeMetrics(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://localhost:%d/metrics", adminPort))
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	defer resp.Body.Close()
	series := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "caddy_socketio_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		series[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	return series
}

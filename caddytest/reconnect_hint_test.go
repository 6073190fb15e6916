package caddytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

// TestReconnectHintRecoversSessions runs three socket.io@4 nodes with
// connection state recovery and the in-memory adapter behind `fallback
// least_conn`, and 100 clients, all behind one address, that carry cookies
// across reconnects as a browser does, each receiving a numbered stream
// that keeps running while it is away. Three times, every client's
// connection is cut at once (a network failure). With the socketio
// handler's reconnect_cookie, each reconnect goes back to the node that
// holds the session: at least 99 % are recovered, with no number missing
// or duplicated, while new clients are still spread by least_conn (no node
// above 40 %). Without it, least_conn places the reconnects anywhere and
// fewer recover (issue 13).
func TestReconnectHintRecoversSessions(t *testing.T) {
	requireNode(t)
	nodes := startClusterOf(t, 3, serverSpec{
		Env:     map[string]string{"SIO_STREAM_MS": "100"},
		Options: map[string]any{"connectionStateRecovery": map[string]any{"maxDisconnectionDuration": 30000, "skipMiddlewares": true}},
	})
	tester := caddytester.NewTester(t)
	const clients = 100
	run := func(label, handler string) recoveryResult {
		t.Helper()
		site := fmt.Sprintf("\t%s\n\treverse_proxy {upstreams} {\n\t\tlb_policy socketio {\n\t\t\tfallback least_conn\n\t\t}\n\t}", handler)
		loadConfig(t, tester, proxyConfig{Nodes: nodes, Site: site}.Caddyfile())
		res := runRecoveryClients(t, "--count", fmt.Sprint(clients), "--rounds", "3", "--carry-cookie")
		t.Logf("%s: %+v, recovered %.1f %% of reconnects", label, res, 100*res.rate())
		if res.ConnectedAtEnd != clients || res.Reconnects < 3*clients {
			t.Errorf("%s: %d of %d connected at the end, %d reconnects (want %d)", label, res.ConnectedAtEnd, clients, res.Reconnects, 3*clients)
		}
		return res
	}

	with := run("with the hint", "socketio {\n\t\treconnect_cookie\n\t}")
	if with.rate() < 0.99 || with.Missing != 0 || with.Duplicates != 0 {
		t.Errorf("with the hint: %.1f %% recovered, %d numbers missing, %d duplicated; want at least 99 %% and none", 100*with.rate(), with.Missing, with.Duplicates)
	}
	for node, n := range with.FirstNodes {
		if n > clients*40/100 {
			t.Errorf("with the hint, %d of %d new clients behind one address on %s: least_conn's placement lost", n, clients, node)
		}
	}
	without := run("without the hint", "socketio")
	if without.rate() >= with.rate() {
		t.Errorf("without the hint %.1f %% recovered, with it %.1f %%: the test shows no difference", 100*without.rate(), 100*with.rate())
	}
}

// recoveryResult is the result line of testdata/recovery-clients.js.
type recoveryResult struct {
	Clients        int            `json:"clients"`
	ConnectedAtEnd int            `json:"connectedAtEnd"`
	Rounds         int            `json:"rounds"`
	Reconnects     int            `json:"reconnects"`
	Recovered      int            `json:"recovered"`
	NotRecovered   int            `json:"notRecovered"`
	Missing        int            `json:"missing"`
	Duplicates     int            `json:"duplicates"`
	Received       int            `json:"received"`
	FirstNodes     map[string]int `json:"firstNodes"`
	Errors         map[string]int `json:"errors"`
}

func (r recoveryResult) rate() float64 {
	if r.Reconnects == 0 {
		return 0
	}
	return float64(r.Recovered) / float64(r.Reconnects)
}

// runRecoveryClients runs testdata/recovery-clients.js against the test
// Caddy and returns its result.
func runRecoveryClients(t *testing.T, flags ...string) recoveryResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append([]string{filepath.Join(repoRoot(t), "caddytest", "testdata", "recovery-clients.js"), "--url", "http://" + siteAddr}, flags...)
	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.Stderr = &prefixWriter{t: t, prefix: "recovery-clients: "}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("recovery-clients: %v", err)
	}
	var res recoveryResult
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	if err := json.Unmarshal(lines[len(lines)-1], &res); err != nil {
		t.Fatalf("recovery-clients printed %q: %v", out, err)
	}
	return res
}

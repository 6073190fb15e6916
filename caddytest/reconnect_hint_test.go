package caddytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
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
	nodes := recoveryCluster(t)
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
	// with --until-stdin-ends: each client's nodes, in order
	PerClient []struct {
		Nodes        []string `json:"nodes"`
		Polling      bool     `json:"polling"`
		NotRecovered int      `json:"notRecovered"`
	} `json:"perClient"`
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

// TestReconnectHintBrowser shows the hint in a real browser: headless
// Chromium keeps the cookie by itself, so each reconnect after a network
// failure (every connection between the browser and Caddy cut at once)
// goes home and is recovered, with its stream intact.
func TestReconnectHintBrowser(t *testing.T) {
	requireNode(t)
	chromium := requireChromium(t)
	nodes := recoveryCluster(t)
	cert := newTestCert(t)
	static := t.TempDir()
	bundle, err := os.ReadFile(filepath.Join(repoRoot(t), "node_modules", "socket.io-client", "dist", "socket.io.min.js"))
	if err != nil {
		t.Fatalf("socket.io client bundle: %v (run npm ci)", err)
	}
	const cuts = 3
	for name, data := range map[string][]byte{"socket.io.min.js": bundle, "index.html": []byte(fmt.Sprintf(recoveryPage, cuts))} {
		if err := os.WriteFile(filepath.Join(static, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	reportDial, reports := reportReceiver(t)
	tester := caddytester.NewTester(t)
	loadConfig(t, tester, httpsSite{Cert: cert, Nodes: nodes, Handler: true, HandlerOpt: "reconnect_cookie",
		Policy: leastConnPolicy, Static: static, ReportDial: reportDial}.Caddyfile())
	// the browser reaches Caddy through a forwarder that can cut its
	// connections
	fw := startForwarder(t, httpsAddr)
	output, _ := startChromium(t, chromium, fmt.Sprintf("https://127.0.0.1:%d/index.html", fw.port), cert)

	var page struct {
		Phase      string `json:"phase"`
		Fatal      string `json:"fatal"`
		Connects   int    `json:"connects"`
		Reconnects int    `json:"reconnects"`
		Recovered  int    `json:"recovered"`
		Missing    int    `json:"missing"`
		Duplicates int    `json:"duplicates"`
		Received   int    `json:"received"`
	}
	for page.Phase != "done" {
		select {
		case body := <-reports:
			if err := json.Unmarshal(body, &page); err != nil || page.Fatal != "" {
				t.Fatalf("page report %q (%v)", body, err)
			}
		case <-time.After(45 * time.Second):
			t.Fatalf("no report from the browser within 45s (last: %+v); browser output:\n%s", page, tailOf(output.String(), 4000))
		}
		if page.Phase == "upgraded" && page.Connects <= cuts {
			time.Sleep(300 * time.Millisecond) // some numbers on this connection
			fw.cut()
		}
	}
	t.Logf("browser: %+v", page)
	if page.Reconnects != cuts || page.Recovered != cuts || page.Missing != 0 || page.Duplicates != 0 {
		t.Errorf("browser: %d reconnects, %d recovered, %d missing, %d duplicated; want %d recovered of %d and none missing", page.Reconnects, page.Recovered, page.Missing, page.Duplicates, cuts, cuts)
	}
}

// recoveryCluster starts three socket.io@4 nodes with connection state
// recovery (in-memory adapter) and a numbered stream per socket.
func recoveryCluster(t *testing.T) []*sioNode {
	t.Helper()
	return startClusterOf(t, 3, serverSpec{
		Env:     map[string]string{"SIO_STREAM_MS": "100"},
		Options: map[string]any{"connectionStateRecovery": map[string]any{"maxDisconnectionDuration": 30000, "skipMiddlewares": true}},
	})
}

// recoveryPage connects one socket, reports each time it is connected
// over WebSocket (the test then cuts its connections), and reports its
// counts once it has reconnected %d times.
const recoveryPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>caddy-socketio reconnect test</title></head>
<body>
<script src="/socket.io.min.js"></script>
<script>
"use strict";
const CUTS = %d;
const st = {phase: "", connects: 0, reconnects: 0, recovered: 0, missing: 0, duplicates: 0, received: 0};
const report = (phase) => { st.phase = phase; fetch("/report", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(st)}); };
window.addEventListener("error", (e) => fetch("/report", {method: "POST", body: JSON.stringify({fatal: String(e.message)})}));
let last = 0;
const socket = io({withCredentials: true, reconnectionDelay: 200, reconnectionDelayMax: 1000});
const whenUpgraded = () => {
  const e = socket.io.engine;
  if (e.transport.name === "websocket") return report("upgraded");
  e.once("upgrade", () => report("upgraded"));
};
socket.on("connect", () => {
  st.connects++;
  if (st.connects > 1) {
    st.reconnects++;
    if (socket.recovered) st.recovered++; else last = 0;
  }
  if (st.reconnects >= CUTS) return setTimeout(() => { report("done"); socket.close(); }, 1500);
  whenUpgraded();
});
socket.on("seq", (n) => {
  st.received++;
  if (n === last + 1) last = n;
  else if (n <= last) st.duplicates++;
  else { st.missing += n - last - 1; last = n; }
});
</script>
</body></html>
`

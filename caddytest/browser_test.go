package caddytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

// browserPage connects sockets with socket.io-client's defaults (polling,
// then the upgrade), checks each one's hello and an echo over the upgraded
// transport, and POSTs what it saw to /report, with the protocol
// (Resource Timing's nextHopProtocol) of every Engine.IO HTTP request.
const browserPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>caddy-socketio browser test</title></head>
<body>
<script src="/socket.io.min.js"></script>
<script>
"use strict";
const N = %d, TIMEOUT_MS = %d;
performance.setResourceTimingBufferSize(100000);
const report = (obj) => fetch("/report", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(obj)});
window.addEventListener("error", (e) => report({fatal: String(e.message)}));
const sockets = [];
function one(i) {
  return new Promise((resolve) => {
    const r = {connected: false, upgraded: false, node: "", echoNode: "", transport: "", error: ""};
    const socket = io({forceNew: true, reconnection: false, timeout: TIMEOUT_MS});
    sockets.push(socket);
    let finished = false, echoing = false;
    const finish = (err) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      if (err) r.error = String(err);
      r.transport = socket.io.engine ? socket.io.engine.transport.name : "";
      resolve(r);
    };
    const timer = setTimeout(() => finish("timeout"), TIMEOUT_MS);
    const maybeEcho = () => {
      if (echoing || !r.connected || !r.node || !r.upgraded) return;
      echoing = true;
      socket.timeout(5000).emit("echo", i, (err, res) => {
        if (err) return finish("echo: " + err.message);
        r.echoNode = res.node;
        finish();
      });
    };
    socket.on("connect", () => { r.connected = true; maybeEcho(); });
    socket.on("hello", (m) => { r.node = m.node; maybeEcho(); });
    socket.on("connect_error", (e) => finish("connect_error: " + e.message));
    socket.on("disconnect", (reason) => finish("disconnect: " + reason));
    socket.io.engine.on("upgrade", () => { r.upgraded = true; maybeEcho(); });
    socket.io.engine.on("upgradeError", (e) => finish("upgradeError: " + e.message));
  });
}
Promise.all(Array.from({length: N}, (_, i) => one(i))).then(async (results) => {
  const protocols = {};
  for (const e of performance.getEntriesByType("resource")) {
    if (e.name.includes("/socket.io/")) protocols[e.nextHopProtocol] = (protocols[e.nextHopProtocol] || 0) + 1;
  }
  await report({results, protocols, userAgent: navigator.userAgent});
  sockets.forEach((s) => s.close());
});
</script>
</body></html>
`

// browserReport is what browserPage POSTs.
type browserReport struct {
	Fatal   string `json:"fatal"`
	Results []struct {
		Connected bool   `json:"connected"`
		Upgraded  bool   `json:"upgraded"`
		Node      string `json:"node"`
		EchoNode  string `json:"echoNode"`
		Transport string `json:"transport"`
		Error     string `json:"error"`
	} `json:"results"`
	Protocols map[string]int `json:"protocols"`
	UserAgent string         `json:"userAgent"`
}

// requireChromium returns the Chromium binary. A missing browser fails the
// test: it is a broken setup (Debian package chromium), not a reason to
// skip.
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	t.Fatal("chromium is not on PATH: install the Debian package chromium (apt-get install chromium)")
	return ""
}

// startChromium runs headless Chromium on url in its own process group
// with a fresh profile, trusting only the test certificate's key. stop
// ends the whole group; it also runs when the test ends.
func startChromium(t *testing.T, bin, url string, cert testCert) (output *bytes.Buffer, stop func()) {
	t.Helper()
	profile := t.TempDir() // removed after the browser is gone (cleanups run last-in first-out)
	cmd := exec.Command(bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir="+profile,
		"--ignore-certificate-errors-spki-list="+cert.SPKIHash,
		url)
	output = new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = &lockedWriter{w: output}, &lockedWriter{w: output}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	pgid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
			}
			// the browser's helpers share its process group; wait for all
			for range 50 {
				if syscall.Kill(-pgid, 0) != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-exited
		})
	}
	t.Cleanup(stop)
	return output, stop
}

// lockedWriter lets the browser's stdout and stderr share one buffer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestBrowserH2 loads a page from Caddy over HTTPS in headless Chromium:
// the official socket.io client bundle connects sockets with its default
// transports, so it polls over HTTP/2 and upgrades; Chromium sends the
// upgrade as a WebSocket over HTTP/2 (extended CONNECT) when the server
// offers it. Every socket must connect, upgrade and get its hello and echo
// from one node, with least_conn spreading them and no "Session ID
// unknown" anywhere.
func TestBrowserH2(t *testing.T) {
	requireNode(t)
	chromium := requireChromium(t)
	nodes := startCluster(t, 3, fastPing)
	cert := newTestCert(t)
	const sockets = 20

	static := browserStatic(t, sockets)
	reportDial, reports := reportReceiver(t)
	accessLog := filepath.Join(t.TempDir(), "access.log")
	tester := caddytester.NewTester(t)
	loadConfig(t, tester, httpsSite{
		Cert: cert, Nodes: nodes, Handler: true, Policy: leastConnPolicy,
		Static: static, ReportDial: reportDial, AccessLog: accessLog,
	}.Caddyfile())
	before := statsOf(t, nodes)

	start := time.Now()
	output, stopBrowser := startChromium(t, chromium, "https://"+httpsAddr+"/index.html", cert)
	rep := awaitBrowserReport(t, reports, output)
	t.Logf("report after %s from %s", time.Since(start).Round(time.Millisecond), rep.UserAgent)
	if rep.Fatal != "" {
		t.Fatalf("page error: %s", rep.Fatal)
	}
	checkBrowserSockets(t, nodes, before, rep, sockets)

	// Caddy logs a proxied WebSocket when it closes: stop the browser, then
	// read how the upgrades reached Caddy
	stopBrowser()
	checkWebSocketsOverH2(t, accessLog, sockets)
}

// browserStatic writes the page for sockets sockets and the socket.io
// client bundle into a fresh directory and returns it.
func browserStatic(t *testing.T, sockets int) string {
	t.Helper()
	static := t.TempDir()
	bundle, err := os.ReadFile(filepath.Join(repoRoot(t), "node_modules", "socket.io-client", "dist", "socket.io.min.js"))
	if err != nil {
		t.Fatalf("socket.io client bundle: %v (run npm ci)", err)
	}
	if err := os.WriteFile(filepath.Join(static, "socket.io.min.js"), bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	page := fmt.Sprintf(browserPage, sockets, 15000)
	if err := os.WriteFile(filepath.Join(static, "index.html"), []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	return static
}

// reportReceiver is where the page POSTs its report (the site's /report
// route proxies to dial); reports delivers the bodies.
func reportReceiver(t *testing.T) (dial string, reports <-chan []byte) {
	t.Helper()
	ch := make(chan []byte, 4)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		select {
		case ch <- body:
		default:
		}
	}))
	t.Cleanup(receiver.Close)
	return strings.TrimPrefix(receiver.URL, "http://"), ch
}

// awaitBrowserReport waits for the page's report; without one the test
// fails with the end of the browser's output.
func awaitBrowserReport(t *testing.T, reports <-chan []byte, output *bytes.Buffer) browserReport {
	t.Helper()
	var rep browserReport
	select {
	case body := <-reports:
		if err := json.Unmarshal(body, &rep); err != nil {
			t.Fatalf("bad report %q: %v", body, err)
		}
	case <-time.After(45 * time.Second):
		t.Fatalf("no report from the browser within 45s; browser output:\n%s", tailOf(output.String(), 4000))
	}
	return rep
}

// checkBrowserSockets asserts that every socket connected, upgraded and
// got its hello and echo from one node, with least_conn spreading them,
// no request misrouted, and every Engine.IO request over h2.
func checkBrowserSockets(t *testing.T, nodes []*sioNode, before clusterStats, rep browserReport, sockets int) {
	t.Helper()
	perNode := map[string]int{}
	connected, upgraded := 0, 0
	var errs []string
	for i, r := range rep.Results {
		if r.Connected {
			connected++
		}
		if r.Upgraded && r.Transport == "websocket" {
			upgraded++
		}
		switch {
		case r.Error != "":
			errs = append(errs, fmt.Sprintf("socket %d: %s", i, r.Error))
		case r.Node == "" || r.EchoNode != r.Node:
			errs = append(errs, fmt.Sprintf("socket %d: hello from %q, echo acked by %q", i, r.Node, r.EchoNode))
		default:
			perNode[r.Node]++
		}
	}
	after := statsOf(t, nodes)
	unknown := after.UnknownSID - before.UnknownSID
	t.Logf("connected %d, upgraded %d of %d; per node %v; Engine.IO requests by protocol %v; \"Session ID unknown\": %d",
		connected, upgraded, sockets, perNode, rep.Protocols, unknown)
	if len(rep.Results) != sockets || connected != sockets || upgraded != sockets || len(errs) != 0 {
		t.Errorf("%d results, connected %d, upgraded %d of %d; errors: %v", len(rep.Results), connected, upgraded, sockets, errs)
	}
	checkNoMisroutedRequests(t, "browser sessions", before, after)
	if n := sumUpgrades(after) - sumUpgrades(before); n != sockets {
		t.Errorf("nodes saw %d upgrades for %d sockets", n, sockets)
	}
	for _, n := range nodes {
		if len(errs) == 0 && perNode[n.Name] == 0 {
			t.Errorf("%s got none of the %d sockets: least_conn did not place them", n.Name, sockets)
		}
	}
	if len(rep.Protocols) != 1 || rep.Protocols["h2"] == 0 {
		t.Errorf("the browser's Engine.IO requests went over %v, want h2 only", rep.Protocols)
	}
}

// checkWebSocketsOverH2 asserts that Caddy's access log shows every
// socket's WebSocket as an HTTP/2 extended CONNECT (once the browser is
// gone: Caddy logs a proxied WebSocket when it closes).
func checkWebSocketsOverH2(t *testing.T, accessLog string, sockets int) {
	t.Helper()
	var ws map[string]int
	for range 50 {
		if ws = engineIORequests(t, accessLog, "websocket"); sumCounts(ws) >= sockets {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("Engine.IO requests in Caddy's access log: polling %v, websocket %v",
		engineIORequests(t, accessLog, "polling"), ws)
	if ws[h2WebSocket] != sockets {
		t.Errorf("Caddy saw %v websocket requests, want %d %q (Chromium's WebSocket over HTTP/2; see h2ExtendedConnectDisabled)", ws, sockets, h2WebSocket)
	}
}

// h2WebSocket is how an access log entry of an RFC 8441 WebSocket reads.
const h2WebSocket = "HTTP/2.0 CONNECT 200"

func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func tailOf(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// engineIORequests counts the requests for an Engine.IO transport in
// Caddy's JSON access log by protocol, method and status, e.g.
// "HTTP/2.0 CONNECT 200".
func engineIORequests(t *testing.T, accessLog, transport string) map[string]int {
	t.Helper()
	data, err := os.ReadFile(accessLog)
	if err != nil {
		t.Errorf("access log: %v", err)
		return nil
	}
	counts := map[string]int{}
	for _, line := range strings.Split(string(data), "\n") {
		var entry struct {
			Request struct {
				Proto  string `json:"proto"`
				Method string `json:"method"`
				URI    string `json:"uri"`
			} `json:"request"`
			Status int `json:"status"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil || !strings.Contains(entry.Request.URI, "transport="+transport) {
			continue
		}
		counts[fmt.Sprintf("%s %s %d", entry.Request.Proto, entry.Request.Method, entry.Status)]++
	}
	return counts
}

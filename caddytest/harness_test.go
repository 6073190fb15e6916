// Package caddytest runs the caddy-socketio modules in a real Caddy in front
// of real Socket.IO servers (the official Node packages, spawned from
// testdata/) and drives them with the official socket.io-client.
//
// Caddy runs in-process (caddytest, admin on localhost:2999, sites on
// 127.0.0.1:9080), once per test binary, so every integration test lives
// in this one package and none runs in parallel. To run two copies of the
// suite on one machine, give each its own ports with SOCKETIO_TEST_ADMIN_PORT
// and SOCKETIO_TEST_HTTP_PORT. The tests need Node.js and the npm packages
// of the repository root (`npm ci`); `make test` does both.
package caddytest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/caddy-socketio/caddy-socketio"
)

// Ports of the test Caddy: the admin API and the HTTP sites (HTTPS on
// httpPort+363, as 9443 is to 9080).
var (
	adminPort = envPort("SOCKETIO_TEST_ADMIN_PORT", 2999)
	httpPort  = envPort("SOCKETIO_TEST_HTTP_PORT", 9080)
	siteAddr  = fmt.Sprintf("127.0.0.1:%d", httpPort)
)

func envPort(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		if p, err := strconv.Atoi(v); err == nil && p > 0 && p < 65536 {
			return p
		}
		panic(name + " must be a TCP port number")
	}
	return def
}

func TestMain(m *testing.M) {
	caddytester.Default.AdminPort = adminPort
	code := m.Run()
	if goServer.bin != "" {
		_ = os.RemoveAll(filepath.Dir(goServer.bin))
	}
	os.Exit(code)
}

// repoRoot returns the repository root (where package.json lives).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Dir(filepath.Dir(file))
}

// requireNode fails the test unless node and the npm packages are there:
// a missing dependency is a broken setup, not a reason to skip.
func requireNode(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs Node.js and a real Caddy; not run with -short")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not on PATH: install Node.js 20+ (see README)")
	}
	for _, pkg := range []string{"socket.io", "socket.io-client", "sio2", "sio2-client", "undici"} {
		if _, err := os.Stat(filepath.Join(repoRoot(t), "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("npm package %s is missing: run `npm ci` in the repository root (make test does)", pkg)
		}
	}
}

// sioNode is one Socket.IO server process.
type sioNode struct {
	Name string
	Host string // the address it listens on
	Port int
	cmd  *exec.Cmd
	done chan struct{}
}

// Dial is the node's address as an upstream.
func (n *sioNode) Dial() string { return net.JoinHostPort(n.Host, strconv.Itoa(n.Port)) }

// serverSpec says which Socket.IO server implementation a node runs and
// how. Every implementation follows the contract of testdata/README.md:
// PORT, NODE_NAME and SIO_OPTIONS in, a "listening" line and /__stats out.
type serverSpec struct {
	// Impl is "node" (testdata/sio-node.js, the default), "python"
	// (testdata/sio-python.py) or "go" (testdata/gosio).
	Impl string
	// Env adds environment variables, e.g. SIO_VERSION=2.
	Env map[string]string
	// Options are the server options, passed as SIO_OPTIONS.
	Options map[string]any
	// Host and Port are where the node listens; default 127.0.0.1 and a
	// free port (every implementation reads HOST and PORT).
	Host string
	Port int
}

// serverCommand returns the command that runs spec's implementation.
func serverCommand(t testing.TB, spec serverSpec) *exec.Cmd {
	t.Helper()
	testdata := filepath.Join(repoRoot(t), "caddytest", "testdata")
	switch spec.Impl {
	case "", "node":
		return exec.Command("node", filepath.Join(testdata, "sio-node.js"))
	case "python":
		// Debian's python3-socketio lives in the system interpreter's
		// dist-packages, which another python3 on PATH may not see
		return exec.Command(systemPython, filepath.Join(testdata, "sio-python.py"))
	case "go":
		return exec.Command(goServerBinary(t))
	default:
		t.Fatalf("unknown server implementation %q", spec.Impl)
		return nil
	}
}

// systemPython is the interpreter Debian's python3-socketio is installed
// for (.ci/run installs python3-socketio, python3-engineio and
// python3-aiohttp).
const systemPython = "/usr/bin/python3"

// requirePython fails the test unless the python-socketio server can run.
func requirePython(t testing.TB) {
	t.Helper()
	out, err := exec.Command(systemPython, "-c", "import socketio, engineio, aiohttp").CombinedOutput()
	if err != nil {
		t.Fatalf("python-socketio is not installed for %s (apt-get install python3-socketio python3-engineio python3-aiohttp; .ci/run does): %v\n%s", systemPython, err, out)
	}
}

var goServer struct {
	once sync.Once
	bin  string
	err  error
}

// goServerBinary builds testdata/gosio (a zishang520/socket.io server in a
// module of its own) once per test binary and returns its path.
func goServerBinary(t testing.TB) string {
	t.Helper()
	goServer.once.Do(func() {
		dir, err := os.MkdirTemp("", "gosio")
		if err != nil {
			goServer.err = err
			return
		}
		goServer.bin = filepath.Join(dir, "gosio")
		cmd := exec.Command("go", "build", "-o", goServer.bin, ".")
		cmd.Dir = filepath.Join(repoRoot(t), "caddytest", "testdata", "gosio")
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
		if out, err := cmd.CombinedOutput(); err != nil {
			goServer.err = fmt.Errorf("building testdata/gosio: %v\n%s", err, out)
		}
	})
	if goServer.err != nil {
		t.Fatal(goServer.err)
	}
	return goServer.bin
}

// startServer starts one node as spec says and waits until it listens.
// The node is stopped when the test ends.
func startServer(t testing.TB, name string, spec serverSpec) *sioNode {
	t.Helper()
	if spec.Options == nil {
		spec.Options = map[string]any{}
	}
	optJSON, err := json.Marshal(spec.Options)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Host == "" {
		spec.Host = "127.0.0.1"
	}
	cmd := serverCommand(t, spec)
	cmd.Env = append(os.Environ(), "HOST="+spec.Host, "PORT="+strconv.Itoa(spec.Port), "NODE_NAME="+name, "SIO_OPTIONS="+string(optJSON))
	for k, v := range spec.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stderr = &prefixWriter{t: t, prefix: name + ": "}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	n := &sioNode{Name: name, Host: spec.Host, cmd: cmd, done: make(chan struct{})}
	t.Cleanup(n.stop)

	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		_ = cmd.Wait()
		close(n.done)
	}()
	select {
	case line := <-lines:
		var ev struct {
			Event string `json:"event"`
			Port  int    `json:"port"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Event != "listening" || ev.Port == 0 {
			t.Fatalf("%s: unexpected first line %q", name, line)
		}
		n.Port = ev.Port
	case <-n.done:
		t.Fatalf("%s exited before listening", name)
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not start listening within 15s", name)
	}
	return n
}

// startCluster starts count socket.io@4 nodes named node1, node2, ….
func startCluster(t testing.TB, count int, opts map[string]any) []*sioNode {
	t.Helper()
	return startClusterOf(t, count, serverSpec{Options: opts})
}

// startClusterOf starts count nodes as spec says, named node1, node2, ….
func startClusterOf(t testing.TB, count int, spec serverSpec) []*sioNode {
	t.Helper()
	nodes := make([]*sioNode, count)
	for i := range nodes {
		nodes[i] = startServer(t, fmt.Sprintf("node%d", i+1), spec)
	}
	return nodes
}

// stop terminates the node (SIGTERM, then SIGKILL) and waits for it.
func (n *sioNode) stop() {
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// nodeStats is the part of a node's /__stats the tests read.
type nodeStats struct {
	Node             string `json:"node"`
	Handshakes       int    `json:"handshakes"`
	IOConnections    int    `json:"ioConnections"`
	OpenSessions     int    `json:"openSessions"`
	Upgrades         int    `json:"upgrades"`
	ConnectionErrors struct {
		Total  int            `json:"total"`
		ByCode map[string]int `json:"byCode"`
		// sio-node.js only (0 elsewhere): the "Session ID unknown"
		// answers to late requests of a session the node minted and had
		// already ended
		UnknownSIDEnded int `json:"unknownSidEnded"`
		// the last few errors, oldest first: which requests they were
		Recent []struct {
			Code          any    `json:"code"`
			Method        string `json:"method"`
			URL           string `json:"url"`
			RemoteAddress string `json:"remoteAddress"`
			At            string `json:"at"`
			// sio-node.js only: whether the node minted the sid,
			// and how long before the request its session ended
			MintedHere  bool   `json:"mintedHere"`
			ClosedMsAgo *int64 `json:"closedMsAgo"`
			CloseReason string `json:"closeReason"`
		} `json:"recent"`
	} `json:"connectionErrors"`
	Requests struct {
		Total      int `json:"total"`
		WithSid    int `json:"withSid"`
		WithoutSid int `json:"withoutSid"`
	} `json:"requests"`
	// sio-node.js only: handshake answers that set the io cookie, and
	// that were compressed
	HandshakeCookies     int `json:"handshakeCookies"`
	CompressedHandshakes int `json:"compressedHandshakes"`
}

// UnknownSID is how many requests this node answered "Session ID unknown".
func (s nodeStats) UnknownSID() int { return s.ConnectionErrors.ByCode["1"] }

func (n *sioNode) stats(t testing.TB) nodeStats {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/__stats", n.Dial()))
	if err != nil {
		t.Fatalf("%s stats: %v", n.Name, err)
	}
	defer resp.Body.Close()
	var s nodeStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("%s stats: %v", n.Name, err)
	}
	return s
}

// clusterStats sums what matters across nodes.
type clusterStats struct {
	PerNode              map[string]nodeStats
	UnknownSID           int
	UnknownSIDEnded      int
	Handshakes           int
	HandshakeCookies     int
	CompressedHandshakes int
}

func statsOf(t testing.TB, nodes []*sioNode) clusterStats {
	t.Helper()
	cs := clusterStats{PerNode: map[string]nodeStats{}}
	for _, n := range nodes {
		s := n.stats(t)
		cs.PerNode[n.Name] = s
		cs.UnknownSID += s.UnknownSID()
		cs.UnknownSIDEnded += s.ConnectionErrors.UnknownSIDEnded
		cs.Handshakes += s.Handshakes
		cs.HandshakeCookies += s.HandshakeCookies
		cs.CompressedHandshakes += s.CompressedHandshakes
	}
	return cs
}

// settle waits, up to limit, until no node holds an open session, and
// then a moment longer. The last requests of a client's shutdown (its
// disconnect and close packets, a poll cut short) reach the nodes after
// the client process has exited: they belong to the run that made them,
// not to the next one.
func settle(t testing.TB, nodes []*sioNode, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		open := 0
		for _, s := range statsOf(t, nodes).PerNode {
			open += s.OpenSessions
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Logf("settle: %d sessions still open after %v", open, limit)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
}

// checkNoMisroutedRequests fails the test if, between before and after,
// any node answered "Session ID unknown" to a request whose sid it never
// minted: a request the proxy routed to the wrong node. The owner's own
// answer to a late request of a session it had already ended (a client's
// request racing its session's close, as happens without any proxy) is
// no routing failure: it is logged, not failed. Servers that cannot tell
// the two apart (python-socketio, zishang520) count every answer as
// misrouted. what names the run in messages.
func checkNoMisroutedRequests(t testing.TB, what string, before, after clusterStats) {
	t.Helper()
	ended := after.UnknownSIDEnded - before.UnknownSIDEnded
	misrouted := after.UnknownSID - before.UnknownSID - ended
	if misrouted != 0 {
		t.Errorf("%s: nodes answered %d requests for sids they never minted with \"Session ID unknown\" (and %d late requests of sessions they had ended); their recent errors:%s",
			what, misrouted, ended, after.recentErrors())
	} else if ended != 0 {
		t.Logf("%s: the owners answered %d late requests of sessions they had already ended with \"Session ID unknown\"; their recent errors:%s",
			what, ended, after.recentErrors())
	}
}

// recentErrors describes the last connection errors each node recorded,
// for failure messages: which requests a count of errors stands for.
func (cs clusterStats) recentErrors() string {
	var b strings.Builder
	for name, s := range cs.PerNode {
		for _, e := range s.ConnectionErrors.Recent {
			fmt.Fprintf(&b, "\n\t%s: code %v, %s %s from %s at %s", name, e.Code, e.Method, e.URL, e.RemoteAddress, e.At)
			switch {
			case !e.MintedHere:
				b.WriteString(" (sid not minted by this node)")
			case e.ClosedMsAgo != nil:
				fmt.Fprintf(&b, " (sid minted here, session ended %d ms before: %s)", *e.ClosedMsAgo, e.CloseReason)
			default:
				b.WriteString(" (sid minted here, session open)")
			}
		}
	}
	return b.String()
}

// messageCount is an error message and how many clients saw it.
type messageCount struct {
	Message string `json:"message"`
	Count   int    `json:"count"`
}

// clientResult is the summary sio-clients.js prints at the end.
type clientResult struct {
	Event                 string         `json:"event"`
	Total                 int            `json:"total"`
	Connected             int            `json:"connected"`
	Failed                int            `json:"failed"`
	Upgraded              int            `json:"upgraded"`
	PerNode               map[string]int `json:"perNode"`
	TransportsAtEnd       map[string]int `json:"transportsAtEnd"`
	AliveAtEnd            int            `json:"aliveAtEnd"`
	EchoOK                int            `json:"echoOk"`
	EchoFailed            int            `json:"echoFailed"`
	ConnectErrors         []messageCount `json:"connectErrors"`
	UpgradeErrors         []messageCount `json:"upgradeErrors"`
	DisconnectsDuringHold struct {
		Count   int            `json:"count"`
		Reasons map[string]int `json:"reasons"`
		Details map[string]int `json:"details"`
	} `json:"disconnectsDuringHold"`
	EchoNodeMismatch  int            `json:"echoNodeMismatch"`
	Reconnects        int            `json:"reconnects"`
	ReconnectAttempts int            `json:"reconnectAttempts"`
	PerNodeAtEnd      map[string]int `json:"perNodeAtEnd"`
	EchoErrors        map[string]int `json:"echoErrors"`
	EchoSkipped       int            `json:"echoSkipped"`
	ConnectPhaseMs    int            `json:"connectPhaseMs"`
	DurationMs        int            `json:"durationMs"`
	Clients           []clientRecord `json:"clients"`
}

// clientRecord is one client's compact record in the result.
type clientRecord struct {
	Node         string   `json:"node"`
	LastNode     string   `json:"lastNode"` // only when it differs from Node
	LocalAddress string   `json:"localAddress"`
	Reconnects   int      `json:"reconnects"`
	Alive        *bool    `json:"alive"` // false only for a connected client that was not alive at the end
	Error        string   `json:"error"`
	Transport    string   `json:"transport"`
	Upgraded     bool     `json:"upgraded"`
	Disconnects  []string `json:"disconnects"`
}

// FinalNode is the node that served the client last.
func (c clientRecord) FinalNode() string {
	if c.LastNode != "" {
		return c.LastNode
	}
	return c.Node
}

// readyCounts is the clients' "ready" line: the end of the connect phase.
type readyCounts struct {
	Connected int `json:"connected"`
	Failed    int `json:"failed"`
}

// clientRun is a running sio-clients.js.
type clientRun struct {
	t      testing.TB
	ready  chan readyCounts
	result chan clientResult
	errs   chan error
}

// startClients starts sio-clients.js against the test Caddy with the given
// flags. Ready returns once every client connected or failed; Result waits
// for the end of the run.
func startClients(t testing.TB, flags ...string) *clientRun {
	t.Helper()
	args := append([]string{filepath.Join(repoRoot(t), "caddytest", "testdata", "sio-clients.js"), "--url", "http://" + siteAddr}, flags...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.Stderr = &prefixWriter{t: t, prefix: "clients: "}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting clients: %v", err)
	}
	run := &clientRun{t: t, ready: make(chan readyCounts, 1), result: make(chan clientResult, 1), errs: make(chan error, 1)}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		defer cancel()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
		var got bool
		for sc.Scan() {
			line := sc.Bytes()
			var ev struct {
				Event string `json:"event"`
			}
			if json.Unmarshal(line, &ev) != nil {
				continue
			}
			switch ev.Event {
			case "ready":
				var r readyCounts
				_ = json.Unmarshal(line, &r)
				select {
				case run.ready <- r:
				default:
				}
			case "result":
				var res clientResult
				if err := json.Unmarshal(line, &res); err != nil {
					run.fail(fmt.Errorf("decoding result: %v", err))
					continue
				}
				got = true
				run.result <- res
			case "watchdog":
				run.fail(fmt.Errorf("sio-clients watchdog fired: %s", line))
			}
		}
		err := cmd.Wait()
		if !got {
			run.fail(fmt.Errorf("clients ended without a result: %v", err))
		}
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	return run
}

// fail reports the run's first error; later ones are dropped.
func (c *clientRun) fail(err error) {
	select {
	case c.errs <- err:
	default:
	}
}

// Ready waits until the connect phase is over.
func (c *clientRun) Ready() readyCounts {
	c.t.Helper()
	return c.ReadyWithin(4 * time.Minute)
}

// ReadyWithin is Ready with a deadline.
func (c *clientRun) ReadyWithin(timeout time.Duration) readyCounts {
	c.t.Helper()
	select {
	case r := <-c.ready:
		return r
	case err := <-c.errs:
		c.t.Fatal(err)
	case <-time.After(timeout):
		c.t.Fatalf("clients not ready within %s", timeout)
	}
	return readyCounts{}
}

// Result waits for the run to end and returns its summary.
func (c *clientRun) Result() clientResult {
	c.t.Helper()
	return c.ResultWithin(5 * time.Minute)
}

// ResultWithin is Result with a deadline.
func (c *clientRun) ResultWithin(timeout time.Duration) clientResult {
	c.t.Helper()
	select {
	case res := <-c.result:
		return res
	case err := <-c.errs:
		c.t.Fatal(err)
	case <-time.After(timeout):
		c.t.Fatalf("clients did not finish within %s", timeout)
	}
	return clientResult{}
}

// runClients runs sio-clients.js to the end.
func runClients(t testing.TB, flags ...string) clientResult {
	t.Helper()
	return startClients(t, flags...).Result()
}

// proxyConfig is a Caddyfile for the test Caddy: one site on siteAddr whose
// route runs the socketio handler (unless handler is false) and a
// reverse_proxy to the nodes with the given lb_policy block and extra
// reverse_proxy lines.
type proxyConfig struct {
	Nodes    []*sioNode
	Handler  bool
	Policy   string // e.g. "socketio", "socketio {\n fallback least_conn\n}", "round_robin"
	Extra    string // more reverse_proxy subdirectives
	GlobalEx string // more global options
	// Site, if set, replaces the generated site body; "{upstreams}" in it
	// becomes the nodes' dial addresses.
	Site string
}

func (pc proxyConfig) Caddyfile() string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin localhost:%d\n\thttp_port %d\n\thttps_port %d\n\tauto_https off\n\tgrace_period 5s\n%s}\n",
		adminPort, httpPort, httpPort+363, pc.GlobalEx)
	fmt.Fprintf(&b, "http://%s {\n", siteAddr)
	if pc.Site != "" {
		dials := make([]string, len(pc.Nodes))
		for i, n := range pc.Nodes {
			dials[i] = n.Dial()
		}
		b.WriteString(strings.ReplaceAll(pc.Site, "{upstreams}", strings.Join(dials, " ")))
		b.WriteString("\n}\n")
		return b.String()
	}
	if pc.Handler {
		b.WriteString("\tsocketio\n")
	}
	b.WriteString("\treverse_proxy")
	for _, n := range pc.Nodes {
		b.WriteString(" " + n.Dial())
	}
	b.WriteString(" {\n")
	if pc.Policy != "" {
		fmt.Fprintf(&b, "\t\tlb_policy %s\n", pc.Policy)
	}
	if pc.Extra != "" {
		b.WriteString(pc.Extra + "\n")
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// loadConfig (re)loads the test Caddy with cfg.
func loadConfig(t testing.TB, tester *caddytester.Tester, caddyfile string) {
	t.Helper()
	tester.InitServer(caddyfile, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
}

// forceReload loads caddyfile through the admin API even if it adapts
// to the running config. caddytest's InitServer (like `caddy reload`
// without --force) posts to /load, which Caddy ignores when the config is
// unchanged ("config is unchanged"): a comment added to the Caddyfile is
// not a reload. `Cache-Control: must-revalidate` forces it. Unlike
// loadConfig it fails the test only if the load fails, so that a test
// whose reload made the race detector report goes on to its assertions.
func forceReload(t testing.TB, caddyfile string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("http://localhost:%d/load", adminPort), strings.NewReader(caddyfile))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	req.Header.Set("Cache-Control", "must-revalidate")
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("forced reload: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("forced reload: %s: %s", resp.Status, body)
	}
}

// pinReport is the test Caddy's /socketio/sessions answer.
type pinReport struct {
	Loaded     bool           `json:"loaded"`
	Pins       int            `json:"pins"`
	Tombstones int            `json:"tombstones"`
	ByUpstream map[string]int `json:"by_upstream"`
	Pinned     uint64         `json:"pinned"`
	Collisions uint64         `json:"collisions"`
	Evicted    uint64         `json:"evicted"`
	Expired    uint64         `json:"expired"`
	Dropped    uint64         `json:"dropped"`
	Refused    uint64         `json:"refused"`
}

// pinsOf reads the test Caddy's pin store through the admin API.
func pinsOf(t testing.TB) pinReport {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://localhost:%d/socketio/sessions", adminPort))
	if err != nil {
		t.Fatalf("admin API: %v", err)
	}
	defer resp.Body.Close()
	var r pinReport
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("admin API: %v", err)
	}
	return r
}

// prefixWriter sends a child's stderr to the test log, line by line.
type prefixWriter struct {
	t      testing.TB
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		w.t.Log(w.prefix + string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

var _ io.Writer = (*prefixWriter)(nil)

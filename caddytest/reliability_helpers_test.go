package caddytest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-socketio/caddy-socketio/internal/eioclient"
	"github.com/caddy-socketio/caddy-socketio/internal/wsframe"
)

// This file holds what the reliability tests need beyond the shared
// harness: the admin API calls that change the pool and read the upstreams' health,
// SIGKILL for a node, and two kinds of Engine.IO sessions
// (internal/eioclient): polling ones whose every request may come from
// another source address, and websocket-only ones that report how their
// connection was closed.
// Names start with rel so that they cannot collide with other files of
// the package.

// relKill kills the node with SIGKILL (no close packets, no FIN from an
// orderly shutdown: the sockets die with the process) and waits for it.
func relKill(t testing.TB, n *sioNode) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("killing %s: %v", n.Name, err)
	}
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not exit after SIGKILL", n.Name)
	}
}

// relWaitFor polls cond every interval until it holds or timeout passes,
// and reports how long it took.
func relWaitFor(timeout, interval time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for i := 0; ; i++ {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) >= timeout || i > 100000 {
			return time.Since(start), false
		}
		time.Sleep(interval)
	}
}

// --- admin API ---

func relAdmin(t testing.TB, method, path string, body any) []byte {
	t.Helper()
	return relAdminAt(t, adminPort, method, path, body)
}

// relAdminAt is relAdmin for the Caddy whose admin API listens on port.
func relAdminAt(t testing.TB, port int, method, path string, body any) []byte {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, fmt.Sprintf("http://localhost:%d%s", port, path), rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{Timeout: 60 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("admin API %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("admin API %s %s: %s: %s", method, path, resp.Status, out)
	}
	return out
}

// relProxyPath finds the one reverse_proxy handler in the running config
// and returns its admin API path, e.g.
// /config/apps/http/servers/srv0/routes/0/handle/0/routes/0/handle/1.
func relProxyPath(t testing.TB) string {
	t.Helper()
	return relProxyPathAt(t, adminPort)
}

// relProxyPathAt is relProxyPath for the Caddy whose admin API listens on
// port.
func relProxyPathAt(t testing.TB, port int) string {
	t.Helper()
	var cfg any
	if err := json.Unmarshal(relAdminAt(t, port, http.MethodGet, "/config/", nil), &cfg); err != nil {
		t.Fatalf("decoding /config/: %v", err)
	}
	var found []string
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "reverse_proxy" {
				found = append(found, path)
			}
			for k, c := range v {
				walk(c, path+"/"+k)
			}
		case []any:
			for i, c := range v {
				walk(c, path+"/"+strconv.Itoa(i))
			}
		}
	}
	walk(cfg, "/config")
	if len(found) != 1 {
		t.Fatalf("want one reverse_proxy handler in the config, found %d: %v", len(found), found)
	}
	return found[0]
}

// relUpstreamDials returns the dial addresses of the reverse_proxy at path.
func relUpstreamDials(t testing.TB, path string) []string {
	t.Helper()
	return relUpstreamDialsAt(t, adminPort, path)
}

// relUpstreamDialsAt is relUpstreamDials for the Caddy whose admin API
// listens on port.
func relUpstreamDialsAt(t testing.TB, port int, path string) []string {
	t.Helper()
	var ups []struct {
		Dial string `json:"dial"`
	}
	if err := json.Unmarshal(relAdminAt(t, port, http.MethodGet, path+"/upstreams", nil), &ups); err != nil {
		t.Fatal(err)
	}
	dials := make([]string, len(ups))
	for i, u := range ups {
		dials[i] = u.Dial
	}
	return dials
}

// relUpstreamHealth is an entry of the admin API's /reverse_proxy/upstreams.
type relUpstreamHealth struct {
	Address     string `json:"address"`
	NumRequests int    `json:"num_requests"`
	Fails       int    `json:"fails"`
}

func relUpstreams(t testing.TB) map[string]relUpstreamHealth {
	t.Helper()
	var list []relUpstreamHealth
	if err := json.Unmarshal(relAdmin(t, http.MethodGet, "/reverse_proxy/upstreams", nil), &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]relUpstreamHealth{}
	for _, u := range list {
		out[u.Address] = u
	}
	return out
}

// relLogFile returns a fresh file path for Caddy's default log, and a
// function that reads what was logged so far.
func relLogFile(t testing.TB, name string) (path string, read func() string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), name+".log")
	return path, func() string {
		b, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return string(b)
	}
}

// --- Engine.IO sessions (internal/eioclient) from chosen source addresses ---

// relDialer dials from the source address local ("": any).
func relDialer(local string) *net.Dialer {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	return d
}

// relTransport opens a TCP connection from local for each request.
func relTransport(local string) *http.Transport {
	return &http.Transport{DialContext: relDialer(local).DialContext, DisableKeepAlives: true}
}

func relHTTPClient(local string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: relTransport(local)}
}

// relEIO is an Engine.IO v4 polling session whose every request opens its
// own TCP connection from the address given to from, as a browser whose
// network changed would. Every answer must come from the handshake's node;
// log records each exchange as "what address status node".
type relEIO struct {
	*eioclient.Client
	local string // the source address of the requests being sent
	log   []string
}

func newRelEIO(base string) *relEIO {
	c := &relEIO{}
	c.Client = &eioclient.Client{Base: base, Timeout: 10 * time.Second, Pinned: true,
		Observe: func(what string, resp *http.Response) {
			c.log = append(c.log, fmt.Sprintf("%s %s %d %s", what, c.local, resp.StatusCode, resp.Header.Get("X-Sio-Node")))
		}}
	return c
}

// from sends the session's next requests from local.
func (c *relEIO) from(local string) *eioclient.Client {
	c.local, c.Transport = local, relTransport(local)
	return c.Client
}

// handshake opens the session from local.
func (c *relEIO) handshake(ctx context.Context, local string) error {
	if _, err := c.from(local).Handshake(ctx); err != nil {
		return fmt.Errorf("from %s: %w", local, err)
	}
	return nil
}

// relMovingSession runs one polling session whose source address changes
// after the handshake: handshake from addrs[0], then, from each later
// address in turn, a POST (the socket.io CONNECT first, then an echo) and
// the polls that bring its answer. It returns the handshake's node and
// the first failure.
func relMovingSession(ctx context.Context, base string, addrs []string) (node string, log []string, err error) {
	c := newRelEIO(base)
	defer func() { log = c.log }()
	if err := c.handshake(ctx, addrs[0]); err != nil {
		return "", nil, err
	}
	for r, local := range addrs[1:] {
		// 42<id>["echo",<id>] is acknowledged by 43<id>[{node,payload}]
		send, answer := eioclient.EchoPacket(r), eioclient.HasPrefix(fmt.Sprintf("43%d[", r))
		if r == 0 {
			// socket.io CONNECT to "/"; the node answers 40{sid} and emits hello
			send, answer = "40", eioclient.HasPrefix(`42["hello"`)
		}
		if err := c.from(local).Post(ctx, send); err != nil {
			return c.Node, nil, fmt.Errorf("from %s: %w", local, err)
		}
		if _, err := c.Await(ctx, 3, answer); err != nil {
			return c.Node, nil, fmt.Errorf("from %s: %w", local, err)
		}
	}
	c.from(addrs[len(addrs)-1]).Close(ctx)
	return c.Node, nil, nil
}

// relWS is a websocket-only Engine.IO session over HTTP/1.1 that answers
// pings and records how its connection ended.
type relWS struct {
	*eioclient.WS

	done      chan struct{}
	mu        sync.Mutex
	closeCode int   // status code of the close frame received, 0 if none
	endErr    error // what ended the read loop
}

// relDialWS opens a websocket-only session through the test Caddy from
// local and connects socket.io's "/" namespace.
func relDialWS(local string) (*relWS, error) {
	conn, err := relDialer(local).Dial("tcp", siteAddr)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	ws, err := relConnectWS(conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	go ws.loop()
	return ws, nil
}

// relConnectWS opens the session over conn: the upgrade, the open packet,
// then CONNECT "/" and its answer.
func relConnectWS(conn net.Conn) (*relWS, error) {
	ws, err := eioclient.Upgrade(conn, siteAddr, "/socket.io/?EIO=4&transport=websocket")
	if err != nil {
		return nil, err
	}
	p, err := ws.ReadMessage()
	if err == nil {
		_, err = eioclient.ParseOpen(p)
	}
	if err != nil {
		return nil, fmt.Errorf("websocket open packet: %w", err)
	}
	if err := ws.WriteText("40"); err != nil {
		return nil, err
	}
	if _, err := ws.Await(5, eioclient.HasPrefix("40")); err != nil {
		return nil, fmt.Errorf("websocket: no socket.io CONNECT answer: %w", err)
	}
	return &relWS{WS: ws, done: make(chan struct{})}, nil
}

// loop answers Engine.IO pings (wsframe answers WebSocket pings) until the
// connection ends; it echoes the server's close frame.
func (ws *relWS) loop() {
	defer close(ws.done)
	for i := 0; i < 1_000_000; i++ {
		msg, err := ws.ReadMessage()
		var closed *wsframe.CloseError
		switch {
		case errors.As(err, &closed):
			ws.mu.Lock()
			if len(closed.Payload) >= 2 {
				ws.closeCode = int(binary.BigEndian.Uint16(closed.Payload[:2]))
			} else {
				ws.closeCode = 1005 // no status received
			}
			ws.mu.Unlock()
			_ = ws.WriteFrame(wsframe.OpClose, closed.Payload[:min(len(closed.Payload), 2)])
			ws.Close()
			return
		case err != nil:
			ws.mu.Lock()
			ws.endErr = err
			ws.mu.Unlock()
			return
		case msg == "2": // Engine.IO ping
			_ = ws.WriteText("3")
		}
	}
}

// ended reports whether the connection ended, and how.
func (ws *relWS) ended() (bool, int, error) {
	select {
	case <-ws.done:
		ws.mu.Lock()
		defer ws.mu.Unlock()
		return true, ws.closeCode, ws.endErr
	default:
		return false, 0, nil
	}
}

func (ws *relWS) stop() {
	ws.Close()
	select {
	case <-ws.done:
	case <-time.After(5 * time.Second):
	}
}

// relErrorAnswer is an error Caddy answered itself (503 no upstream
// available, 502 upstream unreachable), as its error log records it.
type relErrorAnswer struct {
	At     time.Time
	Status int
	Method string
	Msg    string
}

// relCaddyErrors reads Caddy's JSON log and returns the errors it answered
// before until, per client, the client being the index of its address in
// the range that starts at first (as sio-clients.js --local-address-range
// numbers them). Answers that merely pass a backend's status on are not
// there: the nodes count their own.
//
// Caddy's access log would have every answer, but with it the race
// detector reports caddyhttp's logRequest reading the request body's byte
// count while reverse_proxy's transport may still be copying that body
// upstream (Caddy v2.11.9), which fails any -race run.
func relCaddyErrors(t testing.TB, log, first string, until time.Time) map[int][]relErrorAnswer {
	t.Helper()
	base := binary.BigEndian.Uint32(net.ParseIP(first).To4())
	out := map[int][]relErrorAnswer{}
	for _, line := range strings.Split(log, "\n") {
		var e struct {
			TS      float64 `json:"ts"`
			Logger  string  `json:"logger"`
			Msg     string  `json:"msg"`
			Status  int     `json:"status"`
			Request struct {
				RemoteIP string `json:"remote_ip"`
				Method   string `json:"method"`
			} `json:"request"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || e.Logger != "http.log.error" {
			continue
		}
		at := time.Unix(0, int64(e.TS*1e9))
		ip := net.ParseIP(e.Request.RemoteIP).To4()
		if at.After(until) || ip == nil {
			continue
		}
		i := int(binary.BigEndian.Uint32(ip) - base)
		out[i] = append(out[i], relErrorAnswer{At: at, Status: e.Status, Method: e.Request.Method, Msg: e.Msg})
	}
	return out
}

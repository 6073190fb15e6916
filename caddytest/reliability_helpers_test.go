package caddytest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
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

	"github.com/caddy-socketio/caddy-socketio/internal/wsframe"
)

// This file holds what the reliability tests need beyond the shared
// harness: the admin API calls that change the pool and read the upstreams' health,
// SIGKILL for a node, and two raw Engine.IO clients written in Go: a
// polling one whose every request may come from another source address,
// and a websocket-only one that reports how its connection was closed.
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
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, fmt.Sprintf("http://localhost:%d%s", adminPort, path), rd)
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
	var cfg any
	if err := json.Unmarshal(relAdmin(t, http.MethodGet, "/config/", nil), &cfg); err != nil {
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
	var ups []struct {
		Dial string `json:"dial"`
	}
	if err := json.Unmarshal(relAdmin(t, http.MethodGet, path+"/upstreams", nil), &ups); err != nil {
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

// --- raw Engine.IO v4 polling client, one source address per request ---

// relEIO is a hand-made Engine.IO v4 polling session. Every request opens
// its own TCP connection from the address given, as a browser whose
// network changed would.
type relEIO struct {
	base string // http://host:port/socket.io/
	sid  string
	node string // X-Sio-Node of the handshake
	log  []string
}

// relEIOError is a request of a session that failed or reached a node
// other than the handshake's.
type relEIOError struct {
	What   string
	From   string
	Status int
	Node   string
	Body   string
	Err    error
}

func (e *relEIOError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s from %s: %v", e.What, e.From, e.Err)
	}
	return fmt.Sprintf("%s from %s: %d from %s: %.80q", e.What, e.From, e.Status, e.Node, e.Body)
}

func relHTTPClient(local string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
	}
}

// do sends one request of the session from local and returns the body;
// any status but 200, or an answer from another node, is an error.
func (c *relEIO) do(ctx context.Context, what, local, method, body string) (string, error) {
	u := c.base + "?EIO=4&transport=polling"
	if c.sid != "" {
		u += "&sid=" + c.sid
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return "", err
	}
	if body != "" {
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	}
	resp, err := relHTTPClient(local).Do(req)
	if err != nil {
		return "", &relEIOError{What: what, From: local, Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	node := resp.Header.Get("X-Sio-Node")
	c.log = append(c.log, fmt.Sprintf("%s %s %d %s", what, local, resp.StatusCode, node))
	switch {
	case err != nil:
		return "", &relEIOError{What: what, From: local, Err: err}
	case resp.StatusCode != http.StatusOK || (c.node != "" && node != c.node):
		return "", &relEIOError{What: what, From: local, Status: resp.StatusCode, Node: node, Body: string(b)}
	}
	if c.node == "" {
		c.node = node
	}
	return string(b), nil
}

// handshake opens the session from local.
func (c *relEIO) handshake(ctx context.Context, local string) error {
	body, err := c.do(ctx, "handshake", local, http.MethodGet, "")
	if err != nil {
		return err
	}
	first, _, _ := strings.Cut(body, "\x1e") // Engine.IO v4 payload separator
	var open struct {
		SID string `json:"sid"`
	}
	if !strings.HasPrefix(first, "0") || json.Unmarshal([]byte(first[1:]), &open) != nil || open.SID == "" {
		return fmt.Errorf("handshake from %s: no open packet in %.80q", local, body)
	}
	c.sid = open.SID
	return nil
}

// send POSTs packets, joined by the v4 separator.
func (c *relEIO) send(ctx context.Context, local string, packets ...string) error {
	body, err := c.do(ctx, "post", local, http.MethodPost, strings.Join(packets, "\x1e"))
	if err == nil && body != "ok" {
		err = fmt.Errorf("post from %s: answer %.80q", local, body)
	}
	return err
}

// awaitPacket long-polls from local until a packet satisfying match
// arrives, answering the server's pings; at most polls requests.
func (c *relEIO) awaitPacket(ctx context.Context, local string, polls int, match func(string) bool) error {
	for i := 0; i < polls; i++ {
		body, err := c.do(ctx, "poll", local, http.MethodGet, "")
		if err != nil {
			return err
		}
		var found bool
		for _, p := range strings.Split(body, "\x1e") {
			switch {
			case p == "2": // ping: answer before pingTimeout
				if err := c.send(ctx, local, "3"); err != nil {
					return err
				}
			case p == "1": // the server closed the session
				return fmt.Errorf("poll from %s: session closed by the server", local)
			case match(p):
				found = true
			}
		}
		if found {
			return nil
		}
	}
	return fmt.Errorf("poll from %s: expected packet not received in %d polls", local, polls)
}

// close ends the session politely (best effort).
func (c *relEIO) close(ctx context.Context, local string) {
	_, _ = c.do(ctx, "close", local, http.MethodPost, "1")
}

// relMovingSession runs one polling session whose source address changes
// after the handshake: handshake from addrs[0], then, from each later
// address in turn, a POST (the socket.io CONNECT first, then an echo) and
// the polls that bring its answer. It returns the handshake's node and
// the first failure.
func relMovingSession(ctx context.Context, base string, addrs []string) (node string, log []string, err error) {
	c := &relEIO{base: base}
	defer func() { log = c.log }()
	if err := c.handshake(ctx, addrs[0]); err != nil {
		return "", nil, err
	}
	for r, local := range addrs[1:] {
		if r == 0 {
			// socket.io CONNECT to "/"; the node answers 40{sid} and emits hello
			if err := c.send(ctx, local, "40"); err != nil {
				return c.node, nil, err
			}
			if err := c.awaitPacket(ctx, local, 3, func(p string) bool { return strings.HasPrefix(p, `42["hello"`) }); err != nil {
				return c.node, nil, err
			}
			continue
		}
		// 42<id>["echo",<id>] is acknowledged by 43<id>[{node,payload}]
		if err := c.send(ctx, local, fmt.Sprintf(`42%d["echo",%d]`, r, r)); err != nil {
			return c.node, nil, err
		}
		ack := fmt.Sprintf(`43%d[`, r)
		if err := c.awaitPacket(ctx, local, 3, func(p string) bool { return strings.HasPrefix(p, ack) }); err != nil {
			return c.node, nil, err
		}
	}
	c.close(ctx, addrs[len(addrs)-1])
	return c.node, nil, nil
}

// --- raw Engine.IO v4 websocket-only client ---

// relWS is a websocket-only Engine.IO session that answers pings and
// records how its connection ended.
type relWS struct {
	conn net.Conn
	br   *bufio.Reader
	node string

	done      chan struct{}
	mu        sync.Mutex
	closeCode int   // status code of the close frame received, 0 if none
	endErr    error // what ended the read loop
}

// relDialWS opens a websocket-only session through the test Caddy from
// local and connects socket.io's "/" namespace.
func relDialWS(local string) (*relWS, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	conn, err := d.Dial("tcp", siteAddr)
	if err != nil {
		return nil, err
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	req := "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: " + siteAddr +
		"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
		base64.StdEncoding.EncodeToString(key[:]) + "\r\n\r\n"
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, fmt.Errorf("websocket handshake: %s", resp.Status)
	}
	ws := &relWS{conn: conn, br: br, node: resp.Header.Get("X-Sio-Node"), done: make(chan struct{})}
	// open packet, then CONNECT "/" and its answer
	if op, msg, err := ws.read(); err != nil || op != 1 || !strings.HasPrefix(msg, "0{") {
		conn.Close()
		return nil, fmt.Errorf("websocket open packet: op %d %.80q %v", op, msg, err)
	}
	if err := ws.write(1, []byte("40")); err != nil {
		conn.Close()
		return nil, err
	}
	for i := 0; i < 5; i++ {
		op, msg, err := ws.read()
		if err != nil {
			conn.Close()
			return nil, err
		}
		if op == 1 && strings.HasPrefix(msg, "40") {
			_ = conn.SetDeadline(time.Time{})
			go ws.loop()
			return ws, nil
		}
	}
	conn.Close()
	return nil, errors.New("websocket: no socket.io CONNECT answer")
}

// read reads one frame from the server (the Engine.IO packets of these
// sessions are never fragmented).
func (ws *relWS) read() (op byte, msg string, err error) {
	_, op, p, err := wsframe.ReadFrame(ws.br)
	return op, string(p), err
}

// write sends one frame, masked as a client must (RFC 6455 5.3).
func (ws *relWS) write(op byte, payload []byte) error {
	return wsframe.WriteFrame(ws.conn, op, payload)
}

// loop answers Engine.IO pings until the connection ends.
func (ws *relWS) loop() {
	defer close(ws.done)
	for i := 0; i < 1_000_000; i++ {
		op, msg, err := ws.read()
		if err != nil {
			ws.mu.Lock()
			ws.endErr = err
			ws.mu.Unlock()
			return
		}
		switch {
		case op == 8: // close
			ws.mu.Lock()
			if len(msg) >= 2 {
				ws.closeCode = int(binary.BigEndian.Uint16([]byte(msg[:2])))
			} else {
				ws.closeCode = 1005 // no status received
			}
			ws.mu.Unlock()
			_ = ws.write(8, []byte(msg[:min(len(msg), 2)]))
			ws.conn.Close()
			return
		case op == 9: // websocket ping
			_ = ws.write(10, []byte(msg))
		case op == 1 && msg == "2": // Engine.IO ping
			_ = ws.write(1, []byte("3"))
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
	_ = ws.conn.Close()
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

package eioclient

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseOpen(t *testing.T) {
	open, err := ParseOpen(`0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000}`)
	if err != nil || open.SID != "abc" || len(open.Upgrades) != 1 || open.PingInterval != 25000 || open.PingTimeout != 20000 {
		t.Errorf("ParseOpen = %+v, %v", open, err)
	}
	for _, bad := range []string{"", "40", `0{"sid":""}`, `0{"sid":`, `1{"sid":"abc"}`} {
		if _, err := ParseOpen(bad); err == nil {
			t.Errorf("ParseOpen(%q) accepted it", bad)
		}
	}
}

func TestSocketIOPackets(t *testing.T) {
	if got := HelloNode(`42["hello",{"node":"node2"}]`); got != "node2" {
		t.Errorf("HelloNode = %q", got)
	}
	for _, p := range []string{`42["hi",{"node":"node2"}]`, `42["hello"]`, `42["hello",{"node":`, "3"} {
		if got := HelloNode(p); got != "" {
			t.Errorf("HelloNode(%q) = %q, want none", p, got)
		}
	}
	if node, ok := AckNode(`437[{"node":"node3","payload":7}]`, 7); !ok || node != "node3" {
		t.Errorf("AckNode = %q, %v", node, ok)
	}
	for _, p := range []string{`4371[{"node":"node3"}]`, `437[]`, `427["echo",7]`} {
		if _, ok := AckNode(p, 7); ok {
			t.Errorf("AckNode(%q, 7) took it", p)
		}
	}
	if got := EchoPacket(3); got != `423["echo",3]` {
		t.Errorf("EchoPacket = %q", got)
	}
}

// fakeServer is an Engine.IO polling endpoint with one session, "s1", of
// node "node1": each long-poll answers the next of polls; POSTs are
// recorded. A request for another sid gets engine.io's "Session ID
// unknown" from node "node2".
type fakeServer struct {
	mu    sync.Mutex
	polls []string
	posts []string
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := r.URL.Query()
	if q.Get("EIO") != "4" || q.Get("transport") != "polling" {
		http.Error(w, "bad query", http.StatusBadRequest)
		return
	}
	switch sid := q.Get("sid"); {
	case sid == "":
		w.Header().Set("X-Sio-Node", "node1")
		io.WriteString(w, `0{"sid":"s1","upgrades":[],"pingInterval":25000,"pingTimeout":20000}`+Separator+"2")
	case sid != "s1":
		w.Header().Set("X-Sio-Node", "node2")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"code":1,"message":"Session ID unknown"}`)
	case r.Method == http.MethodPost:
		b, _ := io.ReadAll(r.Body)
		f.posts = append(f.posts, string(b))
		w.Header().Set("X-Sio-Node", "node1")
		io.WriteString(w, "ok")
	case len(f.polls) > 0:
		w.Header().Set("X-Sio-Node", "node1")
		io.WriteString(w, f.polls[0])
		f.polls = f.polls[1:]
	default:
		w.Header().Set("X-Sio-Node", "node1")
		io.WriteString(w, "6") // noop
	}
}

func TestClientPolling(t *testing.T) {
	f := &fakeServer{polls: []string{"40", `42["hello",{"node":"node1"}]` + Separator + "2", "1"}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	defer srv.Client().CloseIdleConnections()
	ctx := context.Background()
	c := &Client{Base: srv.URL + "/socket.io/", Transport: srv.Client().Transport, Proto: 1, Pinned: true}
	open, err := c.Handshake(ctx)
	if err != nil || open.SID != "s1" || c.SID != "s1" || c.Node != "node1" || len(c.Pending) != 1 {
		t.Fatalf("Handshake = %+v, %v; client %+v", open, err, c)
	}
	// the handshake's ping is answered, "40" dropped, hello matched, the
	// ping after it left pending
	hello, err := c.Await(ctx, 2, func(p string) bool { return HelloNode(p) != "" })
	if err != nil || HelloNode(hello) != "node1" || len(c.Pending) != 1 {
		t.Fatalf("Await = %q, %v; pending %q", hello, err, c.Pending)
	}
	if _, err := c.Await(ctx, 5, PacketIs("never")); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Await over a close packet: %v", err)
	}
	if got := strings.Join(f.posts, ","); got != "3,3" {
		t.Errorf("posts %q, want two pongs", got)
	}
	if _, err := c.Await(ctx, 1, PacketIs("never")); err == nil || !strings.Contains(err.Error(), "within 1 polls") {
		t.Errorf("Await without a match: %v", err)
	}

	// an answer from another node
	c.SID = "s2"
	err = c.Post(ctx, "6")
	var e *Error
	if err == nil || !strings.Contains(err.Error(), "answered by node2, the session belongs to node1") || errors.As(err, &e) {
		t.Errorf("Post to another node: %v", err)
	}
	// the same unpinned: engine.io's "Session ID unknown"
	c.Pinned = false
	err = c.Post(ctx, "6")
	if !errors.Is(err, ErrSessionUnknown) || !errors.As(err, &e) || e.Status != 400 || e.Node != "node2" || e.Method != http.MethodPost {
		t.Errorf("Post with an unknown sid: %v (%+v)", err, e)
	}
}

func TestClientTransportError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL + "/socket.io/"
	srv.Close()
	c := &Client{Base: base, Transport: &http.Transport{}}
	_, err := c.Handshake(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.Status != 0 || e.IsStatus() || e.What != "handshake" {
		t.Errorf("handshake with nobody listening: %v", err)
	}
}

func TestUpgrade(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	done := make(chan error, 1)
	go func() {
		defer server.Close()
		br := bufio.NewReader(server)
		req, err := http.ReadRequest(br)
		if err != nil {
			done <- err
			return
		}
		if req.Header.Get("Upgrade") != "websocket" || req.Header.Get("Sec-WebSocket-Key") == "" || req.URL.RawQuery != "EIO=4&transport=websocket" {
			done <- errors.New("not an upgrade: " + req.URL.String())
			return
		}
		io.WriteString(server, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Sio-Node: node3\r\n\r\n")
		// net.Pipe is synchronous: the pong is read before "40" is sent
		server.Write([]byte{0x81, 1, '2'}) // Engine.IO ping
		// the pong: a final text frame, masked, of 1 byte
		var pong [7]byte
		_, err = io.ReadFull(br, pong[:])
		if err == nil && (pong[0] != 0x81 || pong[1] != 0x81 || pong[6]^pong[2] != '3') {
			err = fmt.Errorf("no pong: %x", pong)
		}
		server.Write([]byte{0x81, 2, '4', '0'})
		done <- err
	}()
	ws, err := Upgrade(client, "example.test", "/socket.io/?EIO=4&transport=websocket")
	if err != nil {
		t.Fatal(err)
	}
	if ws.Node != "node3" {
		t.Errorf("Node %q", ws.Node)
	}
	if p, err := ws.Await(2, HasPrefix("40")); err != nil || p != "40" {
		t.Errorf("Await = %q, %v", p, err)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
	ws.Close()
}

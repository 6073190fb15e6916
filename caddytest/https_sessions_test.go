package caddytest

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-socketio/caddy-socketio/internal/eioclient"
)

// httpsClient is a session through the HTTPS site, over the HTTP major
// version proto, whose every answer must come from its owner.
func httpsClient(rt http.RoundTripper, proto int) *eioclient.Client {
	return &eioclient.Client{Transport: rt, Base: "https://" + httpsAddr + "/socket.io/", Proto: proto, Pinned: true}
}

// WebSockets over HTTP/2 and HTTP/3.
var (
	h2Connect = eioclient.ExtendedConnect(2, "websocket")
	h3Connect = eioclient.ExtendedConnect(3, "websocket")
)

// pollingSession runs one polling session: handshake, Socket.IO connect,
// then rounds of POST echo + long-poll for its ack. Every response must
// come from the owner (eioclient.Client checks X-Sio-Node), and the hello and
// every ack must name it too. It returns the owner.
func pollingSession(ctx context.Context, c *eioclient.Client, rounds int) (string, error) {
	if _, err := c.Handshake(ctx); err != nil {
		return "", err
	}
	defer c.Close(ctx)
	if err := socketOverPolling(ctx, c); err != nil {
		return c.Node, err
	}
	for i := 1; i <= rounds; i++ {
		if err := c.Post(ctx, eioclient.EchoPacket(i)); err != nil {
			return c.Node, err
		}
		var node string
		if _, err := c.Await(ctx, 5, func(p string) bool {
			n, ok := eioclient.AckNode(p, i)
			node = n
			return ok
		}); err != nil {
			return c.Node, fmt.Errorf("waiting for ack %d: %w", i, err)
		}
		if node != c.Node {
			return c.Node, fmt.Errorf("ack %d from %s, session on %s", i, node, c.Node)
		}
	}
	return c.Node, nil
}

// upgradeSession runs what a browser does by default: a polling handshake
// and the Socket.IO connect over polling, then the WebSocket upgrade probe
// with the sid over an extended CONNECT stream ("2probe" -> "3probe", then
// "5"), then an echo over the WebSocket. Everything must come from the
// owner.
func upgradeSession(ctx context.Context, c *eioclient.Client, connect eioclient.ConnectFunc) (string, error) {
	if _, err := c.Handshake(ctx); err != nil {
		return "", err
	}
	if err := socketOverPolling(ctx, c); err != nil {
		c.Close(ctx)
		return c.Node, err
	}
	ws, err := c.OpenStream(ctx, connect)
	if err != nil {
		c.Close(ctx)
		return c.Node, err
	}
	defer ws.CloseNormal()
	if err := ws.WriteText("2probe"); err != nil {
		return c.Node, err
	}
	if _, err := ws.Await(3, eioclient.PacketIs("3probe")); err != nil {
		return c.Node, fmt.Errorf("upgrade probe: %w", err)
	}
	if err := ws.WriteText("5"); err != nil {
		return c.Node, err
	}
	return c.Node, echoOverWS(ws, c.Node)
}

// websocketOnlySession opens a session on the WebSocket transport alone
// (`transports: ["websocket"]`): no sid, any node may take it.
func websocketOnlySession(ctx context.Context, c *eioclient.Client, connect eioclient.ConnectFunc) (string, error) {
	ws, err := c.OpenStream(ctx, connect)
	if err != nil {
		return "", err
	}
	defer ws.CloseNormal()
	p, err := ws.ReadMessage()
	if err != nil {
		return ws.Node, err
	}
	if _, err := eioclient.ParseOpen(p); err != nil {
		return ws.Node, err
	}
	if err := ws.WriteText("40"); err != nil {
		return ws.Node, err
	}
	hello, err := ws.Await(5, func(p string) bool { return eioclient.HelloNode(p) != "" })
	if err != nil {
		return ws.Node, fmt.Errorf("waiting for hello over websocket: %w", err)
	}
	if got := eioclient.HelloNode(hello); got != ws.Node {
		return ws.Node, fmt.Errorf("hello over websocket from %s, CONNECT answered by %s", got, ws.Node)
	}
	return ws.Node, echoOverWS(ws, ws.Node)
}

// socketOverPolling connects the Socket.IO namespace over polling and
// checks that hello comes from the session's owner.
func socketOverPolling(ctx context.Context, c *eioclient.Client) error {
	if err := c.Post(ctx, "40"); err != nil {
		return err
	}
	hello, err := c.Await(ctx, 5, func(p string) bool { return eioclient.HelloNode(p) != "" })
	if err != nil {
		return fmt.Errorf("waiting for hello: %w", err)
	}
	if got := eioclient.HelloNode(hello); got != c.Node {
		return fmt.Errorf("hello from %s, handshake from %s", got, c.Node)
	}
	return nil
}

// echoOverWS checks that an echo over the WebSocket is acked by node.
func echoOverWS(ws *eioclient.WS, node string) error {
	if err := ws.WriteText(eioclient.EchoPacket(1)); err != nil {
		return err
	}
	var acked string
	if _, err := ws.Await(5, func(p string) bool {
		n, ok := eioclient.AckNode(p, 1)
		acked = n
		return ok
	}); err != nil {
		return fmt.Errorf("waiting for echo ack over websocket: %w", err)
	}
	if acked != node {
		return fmt.Errorf("echo over websocket acked by %s, session on %s", acked, node)
	}
	return nil
}

// sessionRun is what runSessions saw: sessions per owner and the errors.
type sessionRun struct {
	PerNode map[string]int
	Errors  []string // one per failed session, "client i: …"
}

func (r sessionRun) String() string {
	errs := r.Errors
	if len(errs) > 5 {
		errs = append(errs[:5:5], fmt.Sprintf("… and %d more", len(r.Errors)-5))
	}
	return fmt.Sprintf("per node %v, %d failed: %s", r.PerNode, len(r.Errors), strings.Join(errs, "; "))
}

// runSessions runs count sessions at once, each bounded by timeout.
func runSessions(count int, timeout time.Duration, session func(ctx context.Context, i int) (string, error)) sessionRun {
	run := sessionRun{PerNode: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range count {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			node, err := session(ctx, i)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				run.Errors = append(run.Errors, fmt.Sprintf("client %d: %v", i, err))
				return
			}
			run.PerNode[node]++
		})
	}
	wg.Wait()
	sort.Strings(run.Errors)
	return run
}

// checkSessions asserts that every session worked, spread over every node
// (least_conn placement, so learning was needed) and that no node answered
// "Session ID unknown".
func checkSessions(t *testing.T, nodes []*sioNode, before clusterStats, run sessionRun, count int) clusterStats {
	t.Helper()
	after := statsOf(t, nodes)
	t.Logf("%s", run)
	if len(run.Errors) != 0 {
		t.Errorf("%d of %d sessions failed", len(run.Errors), count)
	} else {
		for _, n := range nodes {
			if run.PerNode[n.Name] == 0 {
				t.Errorf("%s owns none of the %d sessions: least_conn did not place them, so the test proves no learning", n.Name, count)
			}
		}
	}
	checkNoMisroutedRequests(t, "sessions", before, after)
	return after
}

// webSocketSessions runs TestH2WebSocket and TestH3WebSocket over one HTTP
// major version: newTransport makes the client (and what closes it),
// connect builds its extended CONNECT.
func webSocketSessions(t *testing.T, proto int, newTransport func(*x509.CertPool) (http.RoundTripper, func()), connect eioclient.ConnectFunc) {
	nodes, cert, _ := httpsCluster(t)
	const sessions = 30
	tests := []struct {
		name    string
		session func(context.Context, *eioclient.Client, eioclient.ConnectFunc) (string, error)
		upgrade bool
	}{
		{name: "upgrade-probe", session: upgradeSession, upgrade: true},
		{name: "websocket-only", session: websocketOnlySession},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt, closeTransport := newTransport(cert.Roots)
			defer closeTransport()
			before := statsOf(t, nodes)
			run := runSessions(sessions, 20*time.Second, func(ctx context.Context, i int) (string, error) {
				c := httpsClient(rt, proto)
				return tt.session(ctx, c, connect)
			})
			if len(run.Errors) > 0 && strings.Contains(run.Errors[0], "extended connect not supported") {
				t.Fatalf("Caddy's HTTP/%d server did not enable extended CONNECT (see h2ExtendedConnectDisabled): %s", proto, run.Errors[0])
			}
			after := checkSessions(t, nodes, before, run, sessions)
			if tt.upgrade {
				if n := sumUpgrades(after) - sumUpgrades(before); n != sessions {
					t.Errorf("nodes saw %d upgrades for %d sessions", n, sessions)
				}
			}
		})
	}
}

func sumUpgrades(cs clusterStats) int {
	n := 0
	for _, s := range cs.PerNode {
		n += s.Upgrades
	}
	return n
}

//lint:file-ignore SA1019 x/net/http2.Transport is deprecated, but net/http's Transport cannot send extended CONNECT (see newH2Transport)

package caddytest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
	_ "unsafe" // go:linkname, see h2ExtendedConnectDisabled

	"golang.org/x/net/http2"

	"github.com/caddy-socketio/caddy-socketio/internal/eioclient"
)

// h2ExtendedConnectDisabled is golang.org/x/net/http2's switch for
// WebSockets over HTTP/2 (RFC 8441 extended CONNECT) in its server, which
// Caddy uses (http2.ConfigureServer). It is off unless the process starts
// with GODEBUG=http2xconnect=1: x/net reads os.Getenv("GODEBUG") once, in
// its init, and http2xconnect is no registered setting, so a //go:debug
// directive cannot set it (the go command refuses the build: "unknown
// //go:debug setting"). The test binary turns it on here, after x/net's
// init and before any Caddy server exists, so that the in-process Caddy
// advertises SETTINGS_ENABLE_CONNECT_PROTOCOL as a Caddy started with
// GODEBUG=http2xconnect=1 does. Only HTTPS listeners speak HTTP/2; the
// other tests of this package use HTTP/1.1.
//
// If x/net renames the variable or stops using it (built with Go 1.27,
// its server wraps net/http's), the link still succeeds but the assignment
// has no effect: TestH2WebSocket then fails with "extended connect not
// supported by peer". Running the tests with GODEBUG=http2xconnect=1 in
// the environment works without this assignment.
//
//go:linkname h2ExtendedConnectDisabled golang.org/x/net/http2.disableExtendedConnectProtocol
var h2ExtendedConnectDisabled bool

func init() { h2ExtendedConnectDisabled = false }

// newH2Transport speaks HTTP/2 only, trusting the test CA; with a local
// address every connection comes from it (a distinct client on loopback).
// It is x/net's Transport, deprecated in favour of net/http's, because
// net/http's Transport refuses a ":protocol" header ("invalid header field
// name") and so cannot send an RFC 8441 extended CONNECT.
func newH2Transport(roots *x509.CertPool, local string) *http2.Transport {
	tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	if local != "" {
		d := &tls.Dialer{NetDialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}}
		tr.DialTLSContext = func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			d.Config = cfg
			return d.DialContext(ctx, network, addr)
		}
	}
	return tr
}

// TestH2Polling runs Engine.IO polling sessions over HTTP/2 through an
// HTTPS site, as browsers do when Caddy serves HTTPS: every handshake is
// learned and every poll and POST of the session reaches its owner, both
// with one connection per client and with many sessions multiplexed on one
// connection. The control run without the handler shows that the same
// sessions break when nothing learns them.
func TestH2Polling(t *testing.T) {
	nodes, cert, tester := httpsCluster(t)
	const sessions, rounds = 30, 4

	tests := []struct {
		name   string
		shared bool // one HTTP/2 connection for every session
	}{
		{name: "connection-per-client"},
		{name: "one-connection", shared: true},
	}
	for ci, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			shared := newH2Transport(cert.Roots, "")
			defer shared.CloseIdleConnections()
			before := statsOf(t, nodes)
			run := runSessions(sessions, 20*time.Second, func(ctx context.Context, i int) (string, error) {
				tr := shared
				if !tt.shared {
					tr = newH2Transport(cert.Roots, fmt.Sprintf("127.8.%d.%d", ci, i+1))
					defer tr.CloseIdleConnections()
				}
				c := httpsClient(tr, 2)
				return pollingSession(ctx, c, rounds)
			})
			after := checkSessions(t, nodes, before, run, sessions)
			if n := after.Handshakes - before.Handshakes; n != sessions {
				t.Errorf("nodes saw %d handshakes for %d sessions", n, sessions)
			}
		})
	}

	t.Run("control/without-handler", func(t *testing.T) {
		loadConfig(t, tester, httpsSite{Cert: cert, Nodes: nodes, Policy: leastConnPolicy}.Caddyfile())
		tr := newH2Transport(cert.Roots, "")
		defer tr.CloseIdleConnections()
		before := statsOf(t, nodes)
		run := runSessions(sessions, 20*time.Second, func(ctx context.Context, i int) (string, error) {
			c := httpsClient(tr, 2)
			return pollingSession(ctx, c, rounds)
		})
		unknown := statsOf(t, nodes).UnknownSID - before.UnknownSID
		t.Logf("without the handler: %s; \"Session ID unknown\": %d", run, unknown)
		if len(run.Errors) == 0 || unknown == 0 {
			t.Error("sessions placed by least_conn survived over HTTP/2 without the handler learning them")
		}
	})
}

// TestH2WebSocket upgrades sessions to WebSockets over HTTP/2 extended
// CONNECT (RFC 8441), which carries no Connection or Upgrade header and
// which reverse_proxy turns into an HTTP/1.1 upgrade toward the node: the
// probe with the session's sid must reach its owner (the probe completes,
// then Socket.IO works over it), and a WebSocket-only session (no sid) must
// pass the handler untouched.
func TestH2WebSocket(t *testing.T) {
	webSocketSessions(t, 2, func(roots *x509.CertPool) (http.RoundTripper, func()) {
		tr := newH2Transport(roots, "")
		return tr, tr.CloseIdleConnections
	}, h2Connect)
}

// TestH2ExtendedConnectRefused sends HTTP/2 and HTTP/3 extended CONNECTs
// that the handler refuses in their HTTP/1.1 form (README, "Which requests
// the handler refuses"): a WebSocket on a request for the polling
// transport, and a :protocol other than websocket (the analogue of
// `Upgrade: h2c`). Each must get 400 from Caddy without reaching a node.
func TestH2ExtendedConnectRefused(t *testing.T) {
	nodes, cert, _ := httpsCluster(t)
	h2 := newH2Transport(cert.Roots, "")
	defer h2.CloseIdleConnections()
	h3 := newH3Transport(cert.Roots)
	defer h3.Close()

	tests := []struct {
		name      string
		rt        http.RoundTripper
		proto     int
		protocol  string // :protocol
		transport string // Engine.IO transport in the query
	}{
		{name: "h2/websocket-on-polling", rt: h2, proto: 2, protocol: "websocket", transport: "polling"},
		{name: "h3/websocket-on-polling", rt: h3, proto: 3, protocol: "websocket", transport: "polling"},
		{name: "h2/protocol-h2c", rt: h2, proto: 2, protocol: "h2c", transport: "websocket"},
		{name: "h3/protocol-h2c", rt: h3, proto: 3, protocol: "h2c", transport: "websocket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c := httpsClient(tt.rt, tt.proto)
			if _, err := c.Handshake(ctx); err != nil {
				t.Fatal(err)
			}
			before := statsOf(t, nodes)

			url := c.Base + "?EIO=4&transport=" + tt.transport + "&sid=" + c.SID
			pr, pw := io.Pipe()
			defer pw.Close()
			req, err := eioclient.ExtendedConnect(tt.proto, tt.protocol)(ctx, url, pr)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Sec-WebSocket-Version", "13")
			status := 0
			resp, err := tt.rt.RoundTrip(req)
			if err == nil {
				// not read to its end: a tunnel the node accepted stays open
				status = resp.StatusCode
				resp.Body.Close()
			}
			reached := 0
			for name, s := range statsOf(t, nodes).PerNode {
				reached += s.Requests.Total - before.PerNode[name].Requests.Total
			}
			t.Logf("CONNECT :protocol %s on transport=%s: status %d (error %v); node requests: %d",
				tt.protocol, tt.transport, status, err, reached)
			if status != http.StatusBadRequest || reached != 0 {
				t.Errorf("got status %d (error %v) with %d requests reaching a node, want 400 from the handler and none", status, err, reached)
			}
		})
	}
}

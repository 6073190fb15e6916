//lint:file-ignore SA1019 x/net/http2.Transport is deprecated, but net/http's Transport cannot send extended CONNECT (see newH2Transport)

package caddytest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	_ "unsafe" // go:linkname, see h2ExtendedConnectDisabled

	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"

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

// httpsAddr is where the HTTPS sites of these tests listen, TCP (h1, h2)
// and UDP (h3).
var httpsAddr = fmt.Sprintf("127.0.0.1:%d", httpPort+363)

// testCert is a CA and a leaf certificate for 127.0.0.1 and localhost,
// made for one test: no network, no trust store, no Caddy PKI.
type testCert struct {
	CertFile, KeyFile string         // PEM: leaf then CA; leaf key
	Roots             *x509.CertPool // the CA
	SPKIHash          string         // base64 SHA-256 of the leaf's public key (Chromium's --ignore-certificate-errors-spki-list)
}

// newTestCert writes the files into a fresh directory. Their names must
// not end in .crt or .key: caddytest rewrites such paths in a config.
func newTestCert(t testing.TB) testCert {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "caddy-socketio test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tc := testCert{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"), Roots: x509.NewCertPool()}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...)
	if err := os.WriteFile(tc.CertFile, chain, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tc.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	tc.Roots.AddCert(ca)
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	tc.SPKIHash = base64.StdEncoding.EncodeToString(spki[:])
	return tc
}

// httpsSite is a Caddyfile with one HTTPS site on httpsAddr serving h1, h2
// and h3: the socketio handler (if Handler) and a reverse_proxy to the
// nodes on the Engine.IO path, and, if Static is set, files from that
// directory and a /report route to ReportDial everywhere else.
type httpsSite struct {
	Cert       testCert
	Nodes      []*sioNode
	Handler    bool
	Policy     string
	Static     string // directory served by file_server
	ReportDial string // where POST /report goes
	AccessLog  string // file for the site's JSON access log
}

func (s httpsSite) Caddyfile() string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin localhost:%d\n\thttp_port %d\n\thttps_port %d\n\tauto_https off\n\tgrace_period 1s\n",
		adminPort, httpPort, httpPort+363)
	b.WriteString("\tservers {\n\t\tprotocols h1 h2 h3\n\t}\n}\n")
	fmt.Fprintf(&b, "https://%s {\n\ttls %s %s\n", httpsAddr, s.Cert.CertFile, s.Cert.KeyFile)
	if s.AccessLog != "" {
		fmt.Fprintf(&b, "\tlog {\n\t\toutput file %s\n\t\tformat json\n\t}\n", s.AccessLog)
	}
	b.WriteString("\thandle /socket.io/* {\n")
	if s.Handler {
		b.WriteString("\t\tsocketio\n")
	}
	b.WriteString("\t\treverse_proxy")
	for _, n := range s.Nodes {
		b.WriteString(" " + n.Dial())
	}
	fmt.Fprintf(&b, " {\n\t\t\tlb_policy %s\n\t\t}\n\t}\n", s.Policy)
	if s.ReportDial != "" {
		fmt.Fprintf(&b, "\thandle /report {\n\t\treverse_proxy %s\n\t}\n", s.ReportDial)
	}
	if s.Static != "" {
		fmt.Fprintf(&b, "\thandle {\n\t\troot * %s\n\t\tfile_server\n\t}\n", s.Static)
	}
	b.WriteString("}\n")
	return b.String()
}

// leastConnPolicy places new sessions by least_conn, so that only
// learning keeps a session's requests on its owner: without a pin they are
// routed by client-IP hash, which agrees with least_conn only by chance.
const leastConnPolicy = "socketio {\n\t\t\t\tfallback least_conn\n\t\t\t}"

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

// newH3Transport speaks HTTP/3 only, trusting the test CA.
func newH3Transport(roots *x509.CertPool) *http3.Transport {
	return &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
}

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

// httpsCluster starts three nodes and loads an HTTPS site in front of
// them with the handler and `fallback least_conn`.
func httpsCluster(t *testing.T) ([]*sioNode, testCert, *caddytester.Tester) {
	t.Helper()
	requireNode(t)
	nodes := startCluster(t, 3, fastPing)
	cert := newTestCert(t)
	tester := caddytester.NewTester(t)
	loadConfig(t, tester, httpsSite{Cert: cert, Nodes: nodes, Handler: true, Policy: leastConnPolicy}.Caddyfile())
	return nodes, cert, tester
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

// TestH3Polling runs the polling sessions of TestH2Polling over HTTP/3
// (QUIC on the HTTPS port's UDP twin).
func TestH3Polling(t *testing.T) {
	nodes, cert, _ := httpsCluster(t)
	const sessions, rounds = 30, 4
	tr := newH3Transport(cert.Roots)
	defer tr.Close()
	before := statsOf(t, nodes)
	run := runSessions(sessions, 20*time.Second, func(ctx context.Context, i int) (string, error) {
		c := httpsClient(tr, 3)
		return pollingSession(ctx, c, rounds)
	})
	after := checkSessions(t, nodes, before, run, sessions)
	if n := after.Handshakes - before.Handshakes; n != sessions {
		t.Errorf("nodes saw %d handshakes for %d sessions", n, sessions)
	}
}

// TestH3WebSocket upgrades sessions to WebSockets over HTTP/3 extended
// CONNECT (RFC 9220; quic-go's server enables it by default).
func TestH3WebSocket(t *testing.T) {
	webSocketSessions(t, 3, func(roots *x509.CertPool) (http.RoundTripper, func()) {
		tr := newH3Transport(roots)
		return tr, func() { _ = tr.Close() }
	}, h3Connect)
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

func sumUpgrades(cs clusterStats) int {
	n := 0
	for _, s := range cs.PerNode {
		n += s.Upgrades
	}
	return n
}

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

	reports := make(chan []byte, 4)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		select {
		case reports <- body:
		default:
		}
	}))
	defer receiver.Close()

	accessLog := filepath.Join(t.TempDir(), "access.log")
	tester := caddytester.NewTester(t)
	loadConfig(t, tester, httpsSite{
		Cert: cert, Nodes: nodes, Handler: true, Policy: leastConnPolicy,
		Static: static, ReportDial: strings.TrimPrefix(receiver.URL, "http://"), AccessLog: accessLog,
	}.Caddyfile())
	before := statsOf(t, nodes)

	start := time.Now()
	output, stopBrowser := startChromium(t, chromium, "https://"+httpsAddr+"/index.html", cert)
	var rep browserReport
	select {
	case body := <-reports:
		if err := json.Unmarshal(body, &rep); err != nil {
			t.Fatalf("bad report %q: %v", body, err)
		}
	case <-time.After(45 * time.Second):
		t.Fatalf("no report from the browser within 45s; browser output:\n%s", tailOf(output.String(), 4000))
	}
	t.Logf("report after %s from %s", time.Since(start).Round(time.Millisecond), rep.UserAgent)
	if rep.Fatal != "" {
		t.Fatalf("page error: %s", rep.Fatal)
	}

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

	// Caddy logs a proxied WebSocket when it closes: stop the browser, then
	// read how the upgrades reached Caddy
	stopBrowser()
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

package caddytest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddy-socketio/caddy-socketio/internal/wsframe"
)

// eioClient is a raw Engine.IO v4 client, just enough to drive a session
// over HTTP/2 or HTTP/3 and to see every HTTP exchange of it: the polling
// handshake, long-polls, POSTs, and the WebSocket upgrade probe over an
// extended CONNECT stream (RFC 8441, RFC 9220).
//
// Every response must come from the node that answered the handshake (the
// X-Sio-Node header sio-node.js sets), over the HTTP major version asked
// for; the first exchange that breaks either rule ends the session with an
// error that says so.
type eioClient struct {
	rt    http.RoundTripper // h2 or h3; also opens extended CONNECT streams
	base  string            // e.g. https://127.0.0.1:9443/socket.io/
	proto int               // the HTTP major version every response must have

	sid  string
	node string // X-Sio-Node of the handshake: the session's owner

	pending []string // packets read but not yet consumed by await
}

// eioOpen is the Engine.IO v4 open packet's payload.
type eioOpen struct {
	SID          string   `json:"sid"`
	Upgrades     []string `json:"upgrades"`
	PingInterval int      `json:"pingInterval"`
	PingTimeout  int      `json:"pingTimeout"`
}

// Engine.IO v4 separates the packets of a polling payload with a record
// separator (engine.io-parser encodePayload).
const eioSeparator = "\x1e"

// errSessionUnknown: a node answered engine.io's 400 {"code":1,"message":
// "Session ID unknown"}, i.e. the request reached a node that did not mint
// the sid.
var errSessionUnknown = errors.New(`"Session ID unknown"`)

func (c *eioClient) url(transport string) string {
	v := url.Values{"EIO": {"4"}, "transport": {transport}}
	if c.sid != "" {
		v.Set("sid", c.sid)
	}
	return c.base + "?" + v.Encode()
}

// do sends one request and checks the rules above. It returns the body of
// a 200 response.
func (c *eioClient) do(ctx context.Context, method, body string) (string, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url("polling"), rd)
	if err != nil {
		return "", err
	}
	if body != "" {
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	}
	what := method + " session"
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("%s: reading body: %w", what, err)
	}
	if err := c.check(resp, what); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		if bytes.Contains(data, []byte(`"code":1`)) {
			err = errSessionUnknown
		} else {
			err = errors.New("not 200")
		}
		return "", fmt.Errorf("%s: status %d from %q: %q: %w", what, resp.StatusCode, resp.Header.Get("X-Sio-Node"), data, err)
	}
	return string(data), nil
}

// check applies the rules every response of the session must follow.
func (c *eioClient) check(resp *http.Response, what string) error {
	if resp.ProtoMajor != c.proto {
		return fmt.Errorf("%s: answered over %s, want HTTP/%d", what, resp.Proto, c.proto)
	}
	if c.node != "" {
		switch got := resp.Header.Get("X-Sio-Node"); got {
		case c.node:
		case "":
			return fmt.Errorf("%s: status %d without X-Sio-Node (not from a node), the session belongs to %s", what, resp.StatusCode, c.node)
		default:
			return fmt.Errorf("%s: answered by %s, the session belongs to %s (status %d)", what, got, c.node, resp.StatusCode)
		}
	}
	return nil
}

// handshake opens a session with a polling handshake and remembers its sid
// and owner.
func (c *eioClient) handshake(ctx context.Context) (eioOpen, error) {
	c.sid, c.node, c.pending = "", "", nil
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("polling"), nil)
	if err != nil {
		return eioOpen{}, err
	}
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		return eioOpen{}, fmt.Errorf("handshake: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return eioOpen{}, fmt.Errorf("handshake: reading body: %w", err)
	}
	if err := c.check(resp, "GET handshake"); err != nil {
		return eioOpen{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return eioOpen{}, fmt.Errorf("handshake: status %d: %q", resp.StatusCode, data)
	}
	packets := strings.Split(string(data), eioSeparator)
	open, err := parseOpen(packets[0])
	if err != nil {
		return eioOpen{}, fmt.Errorf("handshake: %w", err)
	}
	c.sid, c.node = open.SID, resp.Header.Get("X-Sio-Node")
	if c.node == "" {
		return eioOpen{}, errors.New("handshake: no X-Sio-Node header")
	}
	c.pending = append(c.pending, packets[1:]...)
	return open, nil
}

func parseOpen(packet string) (eioOpen, error) {
	var open eioOpen
	if !strings.HasPrefix(packet, "0") {
		return open, fmt.Errorf("not an open packet: %q", packet)
	}
	if err := json.Unmarshal([]byte(packet[1:]), &open); err != nil || open.SID == "" {
		return open, fmt.Errorf("bad open packet %q: %v", packet, err)
	}
	return open, nil
}

// post sends packets in one POST.
func (c *eioClient) post(ctx context.Context, packets ...string) error {
	body, err := c.do(ctx, http.MethodPost, strings.Join(packets, eioSeparator))
	if err != nil {
		return err
	}
	if body != "ok" {
		return fmt.Errorf("POST session: body %q, want ok", body)
	}
	return nil
}

// poll makes one long-poll and returns its packets.
func (c *eioClient) poll(ctx context.Context) ([]string, error) {
	body, err := c.do(ctx, http.MethodGet, "")
	if err != nil {
		return nil, err
	}
	return strings.Split(body, eioSeparator), nil
}

// await polls until a packet matching match arrives and returns it,
// answering the server's pings on the way. Packets that do not match are
// dropped. At most maxPolls long-polls are made.
func (c *eioClient) await(ctx context.Context, maxPolls int, match func(string) bool) (string, error) {
	for range maxPolls {
		for len(c.pending) > 0 {
			p := c.pending[0]
			c.pending = c.pending[1:]
			switch {
			case match(p):
				return p, nil
			case p == "2":
				if err := c.post(ctx, "3"); err != nil {
					return "", err
				}
			case p == "1":
				return "", errors.New("server closed the session")
			}
		}
		packets, err := c.poll(ctx)
		if err != nil {
			return "", err
		}
		c.pending = packets
	}
	return "", fmt.Errorf("no matching packet within %d polls", maxPolls)
}

// close ends the session (Engine.IO close packet), best effort.
func (c *eioClient) close(ctx context.Context) {
	if c.sid != "" {
		_ = c.post(ctx, "1")
	}
}

// helloNode reads the node name out of a Socket.IO `hello` event packet
// (`42["hello",{"node":"node1"}]`), or "".
func helloNode(packet string) string {
	if !strings.HasPrefix(packet, `42["hello",`) {
		return ""
	}
	var ev []json.RawMessage
	var body struct {
		Node string `json:"node"`
	}
	if json.Unmarshal([]byte(packet[2:]), &ev) != nil || len(ev) != 2 || json.Unmarshal(ev[1], &body) != nil {
		return ""
	}
	return body.Node
}

// ackNode reads the node out of the ack of an `echo` event sent with ack id
// id (`43<id>[{"node":"node1","payload":…}]`); ok is false for any other
// packet.
func ackNode(packet string, id int) (node string, ok bool) {
	prefix := fmt.Sprintf("43%d[", id)
	if !strings.HasPrefix(packet, prefix) {
		return "", false
	}
	var args []struct {
		Node string `json:"node"`
	}
	if json.Unmarshal([]byte(packet[len(prefix)-1:]), &args) != nil || len(args) != 1 {
		return "", false
	}
	return args[0].Node, true
}

// echoPacket is a Socket.IO `echo` event with ack id id.
func echoPacket(id int) string { return fmt.Sprintf(`42%d["echo",%d]`, id, id) }

// openStream opens an extended CONNECT stream for the WebSocket transport
// of the session (with its sid, the upgrade probe) or, before a
// handshake, a WebSocket-only session. newConnectRequest builds the
// request in the form the round tripper wants (":protocol" header for
// x/net/http2, Proto for quic-go's http3).
func (c *eioClient) openStream(ctx context.Context, newConnectRequest func(ctx context.Context, url string, body io.Reader) (*http.Request, error)) (*wsConn, error) {
	pr, pw := io.Pipe()
	req, err := newConnectRequest(ctx, c.url("websocket"), pr)
	if err != nil {
		return nil, err
	}
	// browsers send the version, as RFC 8441 section 5 asks; no key, no
	// Connection, no Upgrade
	req.Header.Set("Sec-WebSocket-Version", "13")
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		pw.Close()
		return nil, fmt.Errorf("CONNECT websocket: %w", err)
	}
	if err := c.check(resp, "CONNECT websocket"); err != nil {
		pw.Close()
		resp.Body.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		pw.Close()
		resp.Body.Close()
		if bytes.Contains(data, []byte(`"code":1`)) {
			err = errSessionUnknown
		} else {
			err = errors.New("not 200")
		}
		return nil, fmt.Errorf("CONNECT websocket: status %d from %q: %q: %w", resp.StatusCode, resp.Header.Get("X-Sio-Node"), data, err)
	}
	return &wsConn{Conn: wsframe.NewConn(bufio.NewReader(resp.Body), pw), w: pw, body: resp.Body, node: resp.Header.Get("X-Sio-Node")}, nil
}

// wsConn is the client end of a WebSocket over an extended CONNECT stream:
// RFC 6455 framing (wsframe), text messages. The request's context bounds
// every read and write: cancelling it resets the stream.
type wsConn struct {
	*wsframe.Conn
	w    *io.PipeWriter
	body io.Closer
	node string // X-Sio-Node of the CONNECT response
}

// await reads Engine.IO packets (one per message) until match accepts one,
// answering the server's pings; at most maxMessages are read.
func (ws *wsConn) await(maxMessages int, match func(string) bool) (string, error) {
	for range maxMessages {
		p, err := ws.ReadMessage()
		if err != nil {
			return "", err
		}
		switch {
		case match(p):
			return p, nil
		case p == "2":
			if err := ws.WriteText("3"); err != nil {
				return "", err
			}
		case p == "1":
			return "", errors.New("server closed the session")
		}
	}
	return "", fmt.Errorf("no matching packet within %d messages", maxMessages)
}

// close sends a close frame and ends the stream.
func (ws *wsConn) close() {
	_ = ws.WriteFrame(wsframe.OpClose, []byte{0x03, 0xE8}) // 1000 normal closure
	_ = ws.w.Close()
	_ = ws.body.Close()
}

// packetIs matches the packet want.
func packetIs(want string) func(string) bool { return func(p string) bool { return p == want } }

// Package eioclient is the Engine.IO v4 (Socket.IO 4) client of this
// project's Go tests and load tools: a raw client, just enough to drive a
// session over HTTP/1.1, HTTP/2 or HTTP/3 and to see every exchange of it.
// It speaks the polling transport (the handshake, POSTs, long-polls) and
// opens the WebSocket transport over an HTTP/1.1 upgrade or an extended
// CONNECT stream (RFC 8441, RFC 9220), framed by internal/wsframe.
//
// It is not a general Socket.IO client: no reconnection, no binary
// packets, no JSONP; the helpers of socketio.go read the packets of the
// test nodes of caddytest (testdata/sio-node.js).
package eioclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Separator separates the packets of an Engine.IO v4 polling payload (a
// record separator, engine.io-parser's encodePayload).
const Separator = "\x1e"

// maxBody bounds the answers read.
const maxBody = 1 << 20

// ErrSessionUnknown is a node's 400 {"code":1,"message":"Session ID
// unknown"}: the request reached a node that did not mint the sid.
var ErrSessionUnknown = errors.New(`"Session ID unknown"`)

// ErrStatus is any other answer than 200 (and than ErrSessionUnknown).
var ErrStatus = errors.New("not 200")

// Error is a request of a session that got no usable answer: a transport
// error, an answer whose body could not be read, or a status other than
// 200. Err tells which: the transport's error, the reading error, or
// ErrSessionUnknown or ErrStatus.
type Error struct {
	What   string // the exchange, e.g. "handshake", "poll", "CONNECT websocket"
	Method string // the request's method
	Status int    // the answer's status, 0 if none came
	Node   string // the answer's X-Sio-Node header
	Body   string // the start of the answer's body
	Err    error
}

func (e *Error) Error() string {
	if e.IsStatus() {
		return fmt.Sprintf("%s: status %d from %q: %q: %v", e.What, e.Status, e.Node, e.Body, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.What, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// IsStatus reports whether the request was answered with a status other
// than 200 (rather than failing in the transport or while its body was
// read).
func (e *Error) IsStatus() bool {
	return errors.Is(e.Err, ErrSessionUnknown) || errors.Is(e.Err, ErrStatus)
}

// statusError is the Error for an answer of status other than 200.
func statusError(what, method string, resp *http.Response, body []byte) *Error {
	err := ErrStatus
	if bytes.Contains(body, []byte(`"code":1`)) {
		err = ErrSessionUnknown
	}
	return &Error{What: what, Method: method, Status: resp.StatusCode, Node: resp.Header.Get("X-Sio-Node"), Body: string(body), Err: err}
}

// Open is the payload of the Engine.IO v4 open packet.
type Open struct {
	SID          string   `json:"sid"`
	Upgrades     []string `json:"upgrades"`
	PingInterval int      `json:"pingInterval"`
	PingTimeout  int      `json:"pingTimeout"`
}

// ParseOpen reads an open packet (`0{"sid":…}`); it must carry a sid.
func ParseOpen(packet string) (Open, error) {
	var open Open
	if !strings.HasPrefix(packet, "0") {
		return open, fmt.Errorf("not an open packet: %q", packet)
	}
	if err := json.Unmarshal([]byte(packet[1:]), &open); err != nil || open.SID == "" {
		return open, fmt.Errorf("bad open packet %q: %v", packet, err)
	}
	return open, nil
}

// Client is one Engine.IO v4 session, driven by hand. Set the fields
// above SID, then call Handshake (or OpenStream for a WebSocket-only
// session).
//
// Once the handshake is done, Do, Post and Poll may run concurrently (a
// long-poll beside a POST); Handshake, Await and OpenStream may not run
// beside any other call.
type Client struct {
	// Base is the Engine.IO endpoint, e.g. https://127.0.0.1:9443/socket.io/.
	Base string
	// Transport sends every request of the session and opens its extended
	// CONNECT streams; it may be replaced between requests (to send each
	// from another source address).
	Transport http.RoundTripper
	// Timeout, if not zero, bounds each polling request, the reading of
	// its answer included.
	Timeout time.Duration
	// Proto, if not zero, is the HTTP major version every answer must have.
	Proto int
	// Pinned requires the handshake's answer to name the node that gave it
	// (the X-Sio-Node header of the test nodes) and every later answer of
	// the session to come from that node. The first answer that breaks
	// either rule ends the exchange with an error that says so.
	Pinned bool
	// Observe, if not nil, sees every answer before it is judged, its body
	// read (e.g. to log the session's exchanges).
	Observe func(what string, resp *http.Response)

	// SID is the session's id: "" before the handshake.
	SID string
	// Node is the X-Sio-Node header of the handshake's answer: the
	// session's owner.
	Node string
	// Pending holds the packets read but not yet consumed by Await.
	Pending []string
}

// URL is the session's URL for the transport ("polling" or "websocket"),
// with its sid once it has one.
func (c *Client) URL(transport string) string {
	v := url.Values{"EIO": {"4"}, "transport": {transport}}
	if c.SID != "" {
		v.Set("sid", c.SID)
	}
	return c.Base + "?" + v.Encode()
}

// check applies the rules (Proto, Pinned) every answer of the session
// must follow.
func (c *Client) check(resp *http.Response, what string) error {
	if c.Observe != nil {
		c.Observe(what, resp)
	}
	if c.Proto != 0 && resp.ProtoMajor != c.Proto {
		return fmt.Errorf("%s: answered over %s, want HTTP/%d", what, resp.Proto, c.Proto)
	}
	if c.Pinned && c.Node != "" {
		switch got := resp.Header.Get("X-Sio-Node"); got {
		case c.Node:
		case "":
			return fmt.Errorf("%s: status %d without X-Sio-Node (not from a node), the session belongs to %s", what, resp.StatusCode, c.Node)
		default:
			return fmt.Errorf("%s: answered by %s, the session belongs to %s (status %d)", what, got, c.Node, resp.StatusCode)
		}
	}
	return nil
}

// Do sends one polling request of the session (a GET when body is "", or
// a POST of body) and returns the body of its 200 answer. what names the
// exchange in errors and for Observe.
func (c *Client) Do(ctx context.Context, what, method, body string) (string, error) {
	data, _, err := c.do(ctx, what, method, body)
	return data, err
}

// do is Do that also returns the answer's X-Sio-Node header.
func (c *Client) do(ctx context.Context, what, method, body string) (data, node string, err error) {
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL("polling"), rd)
	if err != nil {
		return "", "", err
	}
	if body != "" {
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	}
	resp, err := c.Transport.RoundTrip(req)
	if err != nil {
		return "", "", &Error{What: what, Method: method, Err: err}
	}
	defer resp.Body.Close()
	node = resp.Header.Get("X-Sio-Node")
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return "", node, &Error{What: what, Method: method, Status: resp.StatusCode, Node: node, Err: fmt.Errorf("reading body: %w", err)}
	}
	if err := c.check(resp, what); err != nil {
		return "", node, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", node, statusError(what, method, resp, b)
	}
	return string(b), node, nil
}

// Handshake opens a session with a polling handshake and remembers its
// sid and owner; packets after the open packet wait in Pending.
func (c *Client) Handshake(ctx context.Context) (Open, error) {
	c.SID, c.Node, c.Pending = "", "", nil
	body, node, err := c.do(ctx, "handshake", http.MethodGet, "")
	if err != nil {
		return Open{}, err
	}
	packets := strings.Split(body, Separator)
	open, err := ParseOpen(packets[0])
	if err != nil {
		return Open{}, fmt.Errorf("handshake: %w", err)
	}
	if c.Pinned && node == "" {
		return Open{}, errors.New("handshake: no X-Sio-Node header")
	}
	c.SID, c.Node = open.SID, node
	c.Pending = append(c.Pending, packets[1:]...)
	return open, nil
}

// Post sends packets in one POST, which must be answered "ok".
func (c *Client) Post(ctx context.Context, packets ...string) error {
	body, err := c.Do(ctx, "post", http.MethodPost, strings.Join(packets, Separator))
	if err != nil {
		return err
	}
	if body != "ok" {
		return fmt.Errorf("post: body %q, want ok", body)
	}
	return nil
}

// Poll makes one long-poll and returns its packets.
func (c *Client) Poll(ctx context.Context) ([]string, error) {
	body, err := c.Do(ctx, "poll", http.MethodGet, "")
	if err != nil {
		return nil, err
	}
	return strings.Split(body, Separator), nil
}

// Await takes packets from Pending, then from long-polls, until one
// matches and returns it, answering the server's pings on the way.
// Packets that do not match are dropped; those after the match stay in
// Pending. At most maxPolls long-polls are made; the server's close packet
// ends the wait with an error.
func (c *Client) Await(ctx context.Context, maxPolls int, match func(string) bool) (string, error) {
	for polls := 0; ; polls++ {
		for len(c.Pending) > 0 {
			p := c.Pending[0]
			c.Pending = c.Pending[1:]
			switch {
			case match(p):
				return p, nil
			case p == "2":
				if err := c.Post(ctx, "3"); err != nil {
					return "", err
				}
			case p == "1":
				return "", errors.New("server closed the session")
			}
		}
		if polls == maxPolls {
			return "", fmt.Errorf("no matching packet within %d polls", maxPolls)
		}
		packets, err := c.Poll(ctx)
		if err != nil {
			return "", err
		}
		c.Pending = packets
	}
}

// Close ends the session with a close packet, best effort.
func (c *Client) Close(ctx context.Context) {
	if c.SID != "" {
		_ = c.Post(ctx, "1")
	}
}

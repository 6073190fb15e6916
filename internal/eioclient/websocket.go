package eioclient

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/caddy-socketio/caddy-socketio/internal/wsframe"
)

// WS is the client end of a session's WebSocket, over an HTTP/1.1
// connection (Upgrade) or an extended CONNECT stream (OpenStream): RFC
// 6455 framing (wsframe), one Engine.IO packet per text message.
type WS struct {
	*wsframe.Conn
	// Node is the X-Sio-Node header of the answer that opened the
	// WebSocket.
	Node string

	closers []io.Closer // what Close closes, in order
}

// Await reads Engine.IO packets (one per message) until match accepts one
// and returns it, answering the server's pings; at most maxMessages are
// read. The server's close packet ends the wait with an error.
func (ws *WS) Await(maxMessages int, match func(string) bool) (string, error) {
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

// Close ends the connection or stream without a close frame, as a client
// that goes away does.
func (ws *WS) Close() {
	for _, c := range ws.closers {
		_ = c.Close()
	}
}

// CloseNormal sends a close frame (1000, normal closure), then ends the
// connection or stream.
func (ws *WS) CloseNormal() {
	_ = ws.WriteFrame(wsframe.OpClose, []byte{0x03, 0xE8})
	ws.Close()
}

// ConnectFunc builds an extended CONNECT request for url, whose body
// carries what the client sends on the stream.
type ConnectFunc = func(ctx context.Context, url string, body io.Reader) (*http.Request, error)

// ExtendedConnect builds extended CONNECT requests with the given
// :protocol for the HTTP/2 (RFC 8441) or HTTP/3 (RFC 9220) client: x/net's
// HTTP/2 Transport takes the pseudo-header from a ":protocol" header,
// quic-go's http3 from Proto.
func ExtendedConnect(major int, protocol string) ConnectFunc {
	return func(ctx context.Context, url string, body io.Reader) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodConnect, url, body)
		if err != nil {
			return nil, err
		}
		if major == 3 {
			req.Proto = protocol
		} else {
			req.Header[":protocol"] = []string{protocol}
		}
		return req, nil
	}
}

// OpenStream opens the session's WebSocket transport as an extended
// CONNECT stream: with the sid, the upgrade probe's stream; before a
// handshake, a WebSocket-only session. connect builds the request in the
// form c.Transport wants (see ExtendedConnect). ctx bounds the stream's
// whole life: cancelling it resets the stream. The answer must follow the
// rules of every answer of the session (Proto, Pinned).
func (c *Client) OpenStream(ctx context.Context, connect ConnectFunc) (*WS, error) {
	const what = "CONNECT websocket"
	pr, pw := io.Pipe()
	req, err := connect(ctx, c.URL("websocket"), pr)
	if err != nil {
		return nil, err
	}
	// browsers send the version, as RFC 8441 section 5 asks; no key, no
	// Connection, no Upgrade
	req.Header.Set("Sec-WebSocket-Version", "13")
	resp, err := c.Transport.RoundTrip(req)
	if err != nil {
		pw.Close()
		return nil, &Error{What: what, Method: http.MethodConnect, Err: err}
	}
	if err := c.check(resp, what); err != nil {
		pw.Close()
		resp.Body.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		pw.Close()
		resp.Body.Close()
		return nil, statusError(what, http.MethodConnect, resp, data)
	}
	return &WS{
		Conn:    wsframe.NewConn(bufio.NewReader(resp.Body), pw),
		Node:    resp.Header.Get("X-Sio-Node"),
		closers: []io.Closer{pw, resp.Body},
	}, nil
}

// Upgrade opens a WebSocket over conn, an HTTP/1.1 connection to host: a
// GET of target (e.g. /socket.io/?EIO=4&transport=websocket) with the
// upgrade headers, which must be answered 101. conn's deadlines bound it;
// on failure conn is left open. The WebSocket's Close closes conn.
func Upgrade(conn net.Conn, host, target string) (*WS, error) {
	var key [16]byte
	_, _ = rand.Read(key[:])
	req := "GET " + target + " HTTP/1.1\r\nHost: " + host +
		"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
		base64.StdEncoding.EncodeToString(key[:]) + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, fmt.Errorf("websocket handshake: %s", resp.Status)
	}
	return &WS{Conn: wsframe.NewConn(br, conn), Node: resp.Header.Get("X-Sio-Node"), closers: []io.Closer{conn}}, nil
}

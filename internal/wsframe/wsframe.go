// Package wsframe reads and writes the client side of WebSocket framing
// (RFC 6455, section 5) over any byte stream: an HTTP/1.1 connection after
// its upgrade, or an HTTP/2 or HTTP/3 extended CONNECT stream (RFC 8441,
// RFC 9220). It is the framing of this project's test and load clients,
// not a general WebSocket library: no extensions, frames of at most
// MaxPayload bytes.
package wsframe

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// Opcodes (RFC 6455, section 5.2).
const (
	OpContinuation byte = 0x0
	OpText         byte = 0x1
	OpBinary       byte = 0x2
	OpClose        byte = 0x8
	OpPing         byte = 0x9
	OpPong         byte = 0xA
)

// MaxPayload bounds the frames ReadFrame accepts.
const MaxPayload = 1 << 20

// WriteFrame writes one final frame with a fresh masking key, as every
// frame a client sends must be masked (RFC 6455, section 5.3), in one
// Write call.
func WriteFrame(w io.Writer, opcode byte, payload []byte) error {
	frame := make([]byte, 0, 14+len(payload))
	frame = append(frame, 0x80|opcode)
	switch n := len(payload); {
	case n < 126:
		frame = append(frame, 0x80|byte(n))
	case n <= 0xFFFF:
		frame = append(frame, 0x80|126)
		frame = binary.BigEndian.AppendUint16(frame, uint16(n))
	default:
		frame = append(frame, 0x80|127)
		frame = binary.BigEndian.AppendUint64(frame, uint64(n))
	}
	var key [4]byte
	if _, err := rand.Read(key[:]); err != nil {
		return err
	}
	frame = append(frame, key[:]...)
	start := len(frame)
	frame = append(frame, payload...)
	for i := range payload {
		frame[start+i] ^= key[i%4]
	}
	_, err := w.Write(frame)
	return err
}

// ReadFrame reads one frame sent by a server, which must not be masked.
func ReadFrame(r io.Reader) (fin bool, opcode byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return false, 0, nil, err
	}
	fin, opcode = h[0]&0x80 != 0, h[0]&0x0F
	if h[1]&0x80 != 0 {
		return false, 0, nil, fmt.Errorf("websocket: server sent a masked frame")
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return false, 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return false, 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > MaxPayload {
		return false, 0, nil, fmt.Errorf("websocket: %d-byte frame", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return false, 0, nil, err
	}
	return fin, opcode, payload, nil
}

// CloseError is the server's close frame, ending a connection.
type CloseError struct {
	// Payload is the close frame's body: a 2-byte status code, maybe
	// followed by a reason.
	Payload []byte
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("websocket: closed by the server: %x", e.Payload)
}

// Conn is the client end of a WebSocket: messages in, frames out, with
// writes serialized so that a reader answering pings and a writer sending
// messages never interleave their frames.
type Conn struct {
	r  io.Reader
	w  io.Writer
	mu sync.Mutex // serializes writes to w
}

// NewConn reads the server's frames from r and writes the client's to w.
func NewConn(r io.Reader, w io.Writer) *Conn { return &Conn{r: r, w: w} }

// WriteFrame writes one final frame.
func (c *Conn) WriteFrame(opcode byte, payload []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return WriteFrame(c.w, opcode, payload)
}

// WriteText sends one text message.
func (c *Conn) WriteText(s string) error { return c.WriteFrame(OpText, []byte(s)) }

// ReadMessage returns the next text or binary message, answering pings
// and joining fragments; the server's close frame ends it with a
// *CloseError.
func (c *Conn) ReadMessage() (string, error) {
	var msg []byte
	for {
		fin, opcode, payload, err := ReadFrame(c.r)
		if err != nil {
			return "", err
		}
		switch opcode {
		case OpPing:
			if err := c.WriteFrame(OpPong, payload); err != nil {
				return "", err
			}
		case OpPong:
		case OpClose:
			return "", &CloseError{Payload: payload}
		case OpText, OpBinary, OpContinuation:
			msg = append(msg, payload...)
			if fin {
				return string(msg), nil
			}
		default:
			return "", fmt.Errorf("websocket: unknown opcode %#x", opcode)
		}
	}
}

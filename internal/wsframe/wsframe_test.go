package wsframe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serverFrame is a frame as a server sends it: unmasked.
func serverFrame(fin bool, opcode byte, payload []byte) []byte {
	b := []byte{opcode}
	if fin {
		b[0] |= 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// unmask reads a client frame the way a server does.
func unmask(t *testing.T, frame []byte) (opcode byte, payload []byte) {
	t.Helper()
	if frame[0]&0x80 == 0 || frame[1]&0x80 == 0 {
		t.Fatalf("frame %x is not final and masked", frame[:2])
	}
	n, off := uint64(frame[1]&0x7F), 2
	switch n {
	case 126:
		n, off = uint64(binary.BigEndian.Uint16(frame[2:])), 4
	case 127:
		n, off = binary.BigEndian.Uint64(frame[2:]), 10
	}
	key := frame[off : off+4]
	payload = frame[off+4:]
	if uint64(len(payload)) != n {
		t.Fatalf("length field %d, payload %d bytes", n, len(payload))
	}
	out := make([]byte, len(payload))
	for i, b := range payload {
		out[i] = b ^ key[i%4]
	}
	return frame[0] & 0x0F, out
}

func TestWriteFrame(t *testing.T) {
	for _, size := range []int{0, 1, 125, 126, 0xFFFF, 0x10000} {
		payload := bytes.Repeat([]byte("ab"), size/2+1)[:size]
		var w bytes.Buffer
		if err := WriteFrame(&w, OpText, payload); err != nil {
			t.Fatal(err)
		}
		op, got := unmask(t, w.Bytes())
		if op != OpText || !bytes.Equal(got, payload) {
			t.Errorf("size %d: opcode %d, payload of %d bytes differs", size, op, len(got))
		}
	}
}

func TestReadFrame(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		payload string
		err     string
	}{
		{name: "ok/short", in: serverFrame(true, OpText, []byte("40")), payload: "40"},
		{name: "ok/16-bit length", in: serverFrame(true, OpText, bytes.Repeat([]byte("x"), 300)), payload: strings.Repeat("x", 300)},
		{name: "ok/64-bit length", in: serverFrame(true, OpBinary, bytes.Repeat([]byte("y"), 70000)), payload: strings.Repeat("y", 70000)},
		{name: "fail/masked", in: []byte{0x81, 0x82, 1, 2, 3, 4, 5, 6}, err: "masked"},
		{name: "fail/too large", in: append([]byte{0x82, 127}, binary.BigEndian.AppendUint64(nil, MaxPayload+1)...), err: "frame"},
		{name: "fail/cut short", in: serverFrame(true, OpText, []byte("hello"))[:4], err: io.ErrUnexpectedEOF.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, payload, err := ReadFrame(bytes.NewReader(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one with %q", err, tt.err)
				}
				return
			}
			if err != nil || string(payload) != tt.payload {
				t.Fatalf("payload of %d bytes, error %v", len(payload), err)
			}
		})
	}
}

func TestReadMessage(t *testing.T) {
	var in bytes.Buffer
	in.Write(serverFrame(false, OpText, []byte("42[\"ec")))
	in.Write(serverFrame(true, OpPing, []byte("p")))
	in.Write(serverFrame(true, OpContinuation, []byte("ho\"]")))
	in.Write(serverFrame(true, OpClose, []byte{0x03, 0xE9}))
	var out bytes.Buffer
	c := NewConn(&in, &out)

	msg, err := c.ReadMessage()
	if err != nil || msg != `42["echo"]` {
		t.Fatalf("message %q, error %v; want the two fragments joined", msg, err)
	}
	if op, payload := unmask(t, out.Bytes()); op != OpPong || string(payload) != "p" {
		t.Errorf("answered the ping with opcode %d %q, want a pong with its payload", op, payload)
	}
	_, err = c.ReadMessage()
	var closed *CloseError
	if !errors.As(err, &closed) || !bytes.Equal(closed.Payload, []byte{0x03, 0xE9}) {
		t.Fatalf("after the close frame: %v, want a CloseError with its payload", err)
	}
}

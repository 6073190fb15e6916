package engineio

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// socket.io@2.5 (engine.io 3.6) answers a handshake with the open packet
// and the Socket.IO connect packet, length-prefixed.
const capturedSIO2 = `96:0{"sid":"ZB1PdhZ_LBB7xJSbAAAA","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000}2:40`

func gzipBytes(t testing.TB, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = zw.Write([]byte(s))
	_ = zw.Close()
	return b.Bytes()
}

func zlibBytes(t testing.TB, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zlib.NewWriter(&b)
	_, _ = zw.Write([]byte(s))
	_ = zw.Close()
	return b.Bytes()
}

func rawDeflateBytes(t testing.TB, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw, _ := flate.NewWriter(&b, flate.DefaultCompression)
	_, _ = zw.Write([]byte(s))
	_ = zw.Close()
	return b.Bytes()
}

// binaryFrame encodes a string packet in engine.io-parser v2's binary
// payload framing.
func binaryFrame(packet string) string {
	var b strings.Builder
	b.WriteByte(0)
	for _, d := range strconv.Itoa(len(packet)) {
		b.WriteByte(byte(d - '0'))
	}
	b.WriteByte(0xff)
	b.WriteString(packet)
	return b.String()
}

// jsonp wraps a payload as engine.io's JSONP polling does.
func jsonp(payload string) string {
	lit, _ := jsonQuote(payload)
	return "___eio[3](" + lit + ");"
}

func jsonQuote(s string) (string, error) {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String(), nil
}

func TestHandshakeSID(t *testing.T) {
	uni := `0{"sid":"uni","note":"é😀"}` // 1 + 21 bytes... counted below
	uniLen := 1 + utf16Len([]byte(uni[1:]))
	ok := []struct {
		name, body, encoding, want string
	}{
		{"ok/v4 text", capturedV4, "", capturedV4SID},
		{"ok/v4 identity encoding", capturedV4, "identity", capturedV4SID},
		{"ok/v3 text from socket.io 2", capturedSIO2, "", "ZB1PdhZ_LBB7xJSbAAAA"},
		{"ok/v3 text from socket.io 4 with allowEIO3", capturedV3, "", "nH43h-Nm7kVRS9W8AAAC"},
		{"ok/v3 length counts UTF-16 units", strconv.Itoa(uniLen) + ":" + uni + "2:40", "", "uni"},
		{"ok/v3 binary framing", binaryFrame(capturedSIO2[3:99]) + "\x00\x02\xff40", "", "ZB1PdhZ_LBB7xJSbAAAA"},
		{"ok/jsonp v4 captured", capturedJSONP, "", "Lx8c3oaRpBR4tInvAAAD"},
		{"ok/jsonp v3", jsonp(capturedSIO2), "", "ZB1PdhZ_LBB7xJSbAAAA"},
		{"ok/jsonp with escaped line separators", `___eio[0]("0{\"sid\":\"ls\",\"x\":\"\u2028\"}");`, "", "ls"},
		{"ok/gzip v4", string(gzipBytes(t, capturedV4)), "gzip", capturedV4SID},
		{"ok/gzip v3", string(gzipBytes(t, capturedSIO2)), "GZIP", "ZB1PdhZ_LBB7xJSbAAAA"},
		{"ok/x-gzip", string(gzipBytes(t, capturedV4)), "x-gzip", capturedV4SID},
		{"ok/deflate (zlib, as Node sends)", string(zlibBytes(t, capturedV4)), "deflate", capturedV4SID},
		{"ok/raw deflate", string(rawDeflateBytes(t, capturedV4)), "deflate", capturedV4SID},
		{"ok/gzip jsonp", string(gzipBytes(t, capturedJSONP)), "gzip", "Lx8c3oaRpBR4tInvAAAD"},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			got, err := HandshakeSID([]byte(tt.body), tt.encoding, true)
			if err != nil || got != tt.want {
				t.Fatalf("HandshakeSID = %q, %v; want %q", got, err, tt.want)
			}
		})
	}

	bomb := gzipBytes(t, "0{\"sid\":\"bomb\",\"x\":\""+strings.Repeat("A", 10<<20)+"\"}")
	fail := []struct {
		name, body, encoding string
		want                 error
	}{
		{"fail/empty", "", "", ErrNotOpenPacket},
		{"fail/html", "<html>502</html>", "", ErrNotOpenPacket},
		{"fail/socket.io connect packet", capturedSIOConnect, "", ErrNotOpenPacket},
		{"fail/v3 length too short", "95" + capturedSIO2[2:], "", ErrNotOpenPacket},
		{"fail/v3 length too long", "97" + capturedSIO2[2:], "", ErrNotOpenPacket},
		{"fail/v3 length counted in bytes", strconv.Itoa(len(uni)) + ":" + uni, "", ErrNotOpenPacket},
		{"fail/v3 first packet not open", "2:40" + capturedSIO2, "", ErrNotOpenPacket},
		{"fail/v3 no colon", "96" + capturedSIO2[3:], "", ErrNotOpenPacket},
		{"fail/v3 huge length", "99999999:0{}", "", ErrNotOpenPacket},
		{"fail/v3 ends early", capturedSIO2[:50], "", ErrNotOpenPacket},
		{"fail/binary digit out of range", "\x00\x0a\xff0{\"sid\":\"x\"}", "", ErrNotOpenPacket},
		{"fail/binary no digits", "\x00\xff0{}", "", ErrNotOpenPacket},
		{"fail/binary packet", "\x01\x01\xff0", "", ErrNotOpenPacket},
		{"fail/jsonp not a string", "___eio[0](0);", "", ErrNotOpenPacket},
		{"fail/jsonp no index", `___eio[]("0{\"sid\":\"x\"}");`, "", ErrNotOpenPacket},
		{"fail/jsonp nested", jsonp(jsonp(capturedV4)), "", ErrNotOpenPacket},
		{"fail/jsonp unterminated", `___eio[0]("0{\"sid\":\"x\"}`, "", ErrNotOpenPacket},
		{"fail/jsonp wrong head", `___xyz[0]("0{\"sid\":\"x\"}");`, "", ErrNotOpenPacket},
		{"fail/gzip bomb", string(bomb), "gzip", ErrNotOpenPacket},
		{"fail/gzip garbage", "\x1f\x8b\x08\x00garbage-garbage-garbage", "gzip", ErrNotOpenPacket},
		{"fail/gzip truncated", string(gzipBytes(t, capturedV4)[:20]), "gzip", ErrNotOpenPacket},
		{"fail/plain body labelled gzip", capturedV4, "gzip", ErrNotOpenPacket},
		{"fail/brotli", "\x0b\x02\x80hello", "br", ErrUnsupportedEncoding},
		{"fail/two encodings", string(gzipBytes(t, capturedV4)), "gzip, br", ErrUnsupportedEncoding},
	}
	for _, tt := range fail {
		t.Run(tt.name, func(t *testing.T) {
			got, err := HandshakeSID([]byte(tt.body), tt.encoding, true)
			if !errors.Is(err, tt.want) {
				t.Fatalf("HandshakeSID = %q, %v; want error %v", got, err, tt.want)
			}
		})
	}
	if len(bomb) > MaxHandshakeBytes {
		t.Logf("note: the bomb is %d bytes compressed; the handler caps what it buffers first", len(bomb))
	}
}

// TestHandshakeSIDPrefixes feeds every prefix of each framing: a prefix is
// either incomplete or already decided with the right sid, never a
// different answer.
func TestHandshakeSIDPrefixes(t *testing.T) {
	bodies := []struct {
		name, body, encoding, want string
	}{
		{"v4", capturedV4, "", capturedV4SID},
		{"v3", capturedSIO2, "", "ZB1PdhZ_LBB7xJSbAAAA"},
		{"binary", binaryFrame(capturedSIO2[3:99]), "", "ZB1PdhZ_LBB7xJSbAAAA"},
		{"jsonp", capturedJSONP, "", "Lx8c3oaRpBR4tInvAAAD"},
		{"gzip", string(gzipBytes(t, capturedV4)), "gzip", capturedV4SID},
		{"deflate", string(zlibBytes(t, capturedSIO2)), "deflate", "ZB1PdhZ_LBB7xJSbAAAA"},
	}
	for _, tt := range bodies {
		t.Run("ok/"+tt.name, func(t *testing.T) {
			for i := 0; i < len(tt.body); i++ {
				got, err := HandshakeSID([]byte(tt.body[:i]), tt.encoding, false)
				switch {
				case errors.Is(err, ErrIncomplete):
				case err == nil && got == tt.want:
				default:
					t.Fatalf("prefix of %d bytes: %q, %v", i, got, err)
				}
			}
			if got, err := HandshakeSID([]byte(tt.body), tt.encoding, true); err != nil || got != tt.want {
				t.Fatalf("whole body: %q, %v", got, err)
			}
		})
	}
}

func FuzzHandshakeSID(f *testing.F) {
	for _, s := range handshakeSeeds {
		f.Add([]byte(s), "", 0)
	}
	f.Add([]byte(capturedSIO2), "", 10)
	f.Add([]byte(binaryFrame(capturedSIO2[3:99])), "", 5)
	f.Add(gzipBytes(f, capturedV4), "gzip", 12)
	f.Add(zlibBytes(f, capturedSIO2), "deflate", 3)
	f.Add([]byte(jsonp(capturedSIO2)), "", 40)
	f.Fuzz(func(t *testing.T, body []byte, encoding string, split int) {
		whole, wholeErr := HandshakeSID(body, encoding, true)
		if wholeErr == nil {
			q, err := ParseQuery("EIO=4&transport=polling&sid=" + whole)
			if err != nil || q.SID != whole {
				t.Fatalf("sid %q from %q does not survive a query string: %q, %v", whole, body, q.SID, err)
			}
		}
		if split < 0 || split > len(body) {
			return
		}
		// a prefix never contradicts the whole body
		part, err := HandshakeSID(body[:split], encoding, false)
		if err == nil && (wholeErr != nil || part != whole) {
			t.Fatalf("prefix %q decided %q, whole body %q (%v)", body[:split], part, whole, wholeErr)
		}
	})
}

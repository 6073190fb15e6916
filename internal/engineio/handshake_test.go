package engineio

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Bodies captured from a real socket.io@4.8.4 / engine.io@6.6.12 server
// (node, 127.0.0.1) with curl; the same bytes seed the fuzz corpus under
// testdata/fuzz.
const (
	// GET /socket.io/?EIO=4&transport=polling
	capturedV4    = "0{\"sid\":\"j6ND45I1iVJGN1DyAAAA\",\"upgrades\":[\"websocket\"],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}"
	capturedV4SID = "j6ND45I1iVJGN1DyAAAA"
	// the same, from a server that queued a message right after the open
	// packet: engine.io-parser joins the packets with \x1e
	capturedV4Second    = "0{\"sid\":\"6LyOH7hc1nY-uWURAAAA\",\"upgrades\":[\"websocket\"],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}\x1e4hello"
	capturedV4SecondSID = "6LyOH7hc1nY-uWURAAAA"
	// GET /socket.io/?EIO=3&transport=polling (allowEIO3)
	capturedV3 = "118:0{\"sid\":\"nH43h-Nm7kVRS9W8AAAC\",\"upgrades\":[\"websocket\"],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}"
	// GET /socket.io/?EIO=4&transport=polling&j=0
	capturedJSONP = "___eio[0](\"0{\\\"sid\\\":\\\"Lx8c3oaRpBR4tInvAAAD\\\",\\\"upgrades\\\":[\\\"websocket\\\"],\\\"pingInterval\\\":25000,\\\"pingTimeout\\\":20000,\\\"maxPayload\\\":1000000}\");"
	// GET ?sid=<sid> after POST "40": the Socket.IO CONNECT answer, whose
	// sid is the socket id, not the engine session id
	capturedSIOConnect = "40{\"sid\":\"McPDAxLqJLK8yOUgAAAA\"}"
	// 400 answers
	capturedUnknownSID       = "{\"code\":1,\"message\":\"Session ID unknown\"}"
	capturedTransportUnknown = "{\"code\":0,\"message\":\"Transport unknown\"}"
	capturedBadHandshake     = "{\"code\":2,\"message\":\"Bad handshake method\"}"
	capturedBadRequest       = "{\"code\":3,\"message\":\"Bad request\"}"
)

// the order zishang520/socket.io (Go) writes its keys in: sid last
const zishangV4 = `0{"upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000,"sid":"ABCDEFGHIJKLMNOPQRSTUVWX"}`

func TestOpenPacketSID(t *testing.T) {
	ok := []struct {
		name string
		body string
		want string
	}{
		{"ok/captured socket.io 4.8", capturedV4, capturedV4SID},
		{"ok/captured with second packet", capturedV4Second, capturedV4SecondSID},
		{"ok/record separator, nothing after", capturedV4 + "\x1e", capturedV4SID},
		{"ok/record separator, junk after", capturedV4 + "\x1e\x00<html>", capturedV4SID},
		{"ok/sid last (zishang520)", zishangV4, "ABCDEFGHIJKLMNOPQRSTUVWX"},
		{"ok/minimal", `0{"sid":"x"}`, "x"},
		{"ok/sid 1", `0{"sid":"1"}`, "1"},
		{"ok/sid 36 (UUID)", `0{"sid":"123e4567-e89b-12d3-a456-426614174000"}`, "123e4567-e89b-12d3-a456-426614174000"},
		{"ok/sid MaxSIDLength", `0{"sid":"` + strings.Repeat("s", MaxSIDLength) + `"}`, strings.Repeat("s", MaxSIDLength)},
		{"ok/nested objects and arrays before sid", `0{"a":{"b":[{"c":[1,2,{"d":{}}]}],"e":[[],[[]]]},"upgrades":["websocket"],"sid":"nested"}`, "nested"},
		{"ok/nested sid is not the sid", `0{"x":{"sid":"inner"},"sid":"outer"}`, "outer"},
		{"ok/escaped quote and braces in string before sid", `0{"note":"a \"}\" b } ] { [","sid":"esc"}`, "esc"},
		{"ok/escaped backslash before closing quote", `0{"note":"a\\","sid":"bs"}`, "bs"},
		{"ok/escaped key", `0{"\u0073id":"ukey"}`, "ukey"},
		{"ok/escaped sid chars", `0{"sid":"a\u002Db"}`, "a-b"},
		{"ok/whitespace inside object", "0{ \"sid\" :\n\t\"ws\" }", "ws"},
		{"ok/duplicate sid key, last wins as in JSON.parse", `0{"sid":"first","sid":"last"}`, "last"},
		{"ok/sid with visible punctuation", `0{"sid":"a-b_c.d~e!f*g(h)i"}`, "a-b_c.d~e!f*g(h)i"},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			for _, final := range []bool{false, true} {
				got, err := OpenPacketSID([]byte(tc.body), final)
				if mayWait(tc.body, final, err) {
					continue
				}
				if err != nil || got != tc.want {
					t.Errorf("OpenPacketSID(%q, %v) = %q, %v; want %q, nil", tc.body, final, got, err, tc.want)
				}
			}
		})
	}

	fail := []struct {
		name string
		body string
		want error
	}{
		{"fail/socket.io connect packet (captured)", capturedSIOConnect, ErrNotOpenPacket},
		{"fail/socket.io connect packet", `40{"sid":"x"}`, ErrNotOpenPacket},
		{"fail/close packet", "1", ErrNotOpenPacket},
		{"fail/message packet", "4hello", ErrNotOpenPacket},
		{"fail/open packet with array", "0[]", ErrNotOpenPacket},
		{"fail/open packet with string", `0"sid"`, ErrNotOpenPacket},
		{"fail/open packet with space before object", `0 {"sid":"x"}`, ErrNotOpenPacket},
		{"fail/empty sid", `0{"sid":""}`, ErrNotOpenPacket},
		{"fail/null sid", `0{"sid":null}`, ErrNotOpenPacket},
		{"fail/no sid", `0{"upgrades":["websocket"],"pingInterval":25000}`, ErrNotOpenPacket},
		{"fail/numeric sid", `0{"sid":123}`, ErrNotOpenPacket},
		{"fail/object sid", `0{"sid":{"a":"b"}}`, ErrNotOpenPacket},
		{"fail/sid with &", `0{"sid":"a&b"}`, ErrBadSID},
		{"fail/sid with =", `0{"sid":"a=b"}`, ErrBadSID},
		{"fail/sid with %", `0{"sid":"a%41"}`, ErrBadSID},
		{"fail/sid with +", `0{"sid":"a+b"}`, ErrBadSID},
		{"fail/sid with #", `0{"sid":"a#b"}`, ErrBadSID},
		{"fail/sid with escaped &", `0{"sid":"a\u0026b"}`, ErrBadSID},
		{"fail/sid with space", `0{"sid":"a b"}`, ErrBadSID},
		{"fail/sid with escaped control char", `0{"sid":"a\u0001b"}`, ErrBadSID},
		{"fail/sid with escaped NUL", `0{"sid":"a\u0000b"}`, ErrBadSID},
		{"fail/sid with escaped newline", `0{"sid":"a\nb"}`, ErrBadSID},
		{"fail/sid with DEL", "0{\"sid\":\"a\x7fb\"}", ErrBadSID},
		{"fail/sid with unicode", `0{"sid":"café"}`, ErrBadSID},
		{"fail/sid MaxSIDLength+1", `0{"sid":"` + strings.Repeat("s", MaxSIDLength+1) + `"}`, ErrBadSID},
		{"fail/sid 10 kB", `0{"sid":"` + strings.Repeat("s", 10<<10) + `"}`, ErrBadSID},
		{"fail/raw control char in string", "0{\"sid\":\"a\x01b\"}", ErrNotOpenPacket},
		{"fail/invalid JSON trailing comma", `0{"sid":"x",}`, ErrNotOpenPacket},
		{"fail/invalid JSON single quotes", `0{'sid':'x'}`, ErrNotOpenPacket},
		{"fail/invalid JSON missing colon", `0{"sid" "x"}`, ErrNotOpenPacket},
		{"fail/invalid JSON unquoted key", `0{sid:"x"}`, ErrNotOpenPacket},
		{"fail/mismatched brackets", `0{"sid":"x","a":[}]`, ErrNotOpenPacket},
		{"fail/close before open", `0}`, ErrNotOpenPacket},
		{"fail/junk after object", capturedV4 + "junk", ErrNotOpenPacket},
		{"fail/newline after object", capturedV4 + "\n", ErrNotOpenPacket},
		{"fail/second object after object", `0{"sid":"x"}{"sid":"y"}`, ErrNotOpenPacket},
		{"fail/v3 length-prefixed payload (captured, not read)", capturedV3, ErrNotOpenPacket},
		{"fail/JSONP payload (captured, not read)", capturedJSONP, ErrNotOpenPacket},
		{"fail/v3 binary framing (not read)", "\x00\x09\x07\xff" + `0{"sid":"x"}`, ErrNotOpenPacket},
		{"fail/HTML error page", "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>", ErrNotOpenPacket},
		{"fail/HTML error page starting with 0", "0<html><body>error</body></html>", ErrNotOpenPacket},
		{"fail/engine.io error body", capturedUnknownSID, ErrNotOpenPacket},
		{"fail/gzip magic", "\x1f\x8b\x08\x00\x00\x00\x00\x00", ErrNotOpenPacket},
	}
	for _, tc := range fail {
		t.Run(tc.name, func(t *testing.T) {
			for _, final := range []bool{false, true} {
				got, err := OpenPacketSID([]byte(tc.body), final)
				if mayWait(tc.body, final, err) {
					continue
				}
				if !errors.Is(err, tc.want) || got != "" {
					t.Errorf("OpenPacketSID(%.80q, %v) = %q, %v; want \"\", %v", tc.body, final, got, err, tc.want)
				}
			}
		})
	}

	for _, body := range []string{"", "0", "0{", `0{"sid":"x"`} {
		t.Run(fmt.Sprintf("fail/unfinished body %q", body), func(t *testing.T) {
			if got, err := OpenPacketSID([]byte(body), false); !errors.Is(err, ErrIncomplete) || got != "" {
				t.Errorf("OpenPacketSID(%q, false) = %q, %v; want ErrIncomplete", body, got, err)
			}
			if got, err := OpenPacketSID([]byte(body), true); !errors.Is(err, ErrNotOpenPacket) || got != "" {
				t.Errorf("OpenPacketSID(%q, true) = %q, %v; want ErrNotOpenPacket", body, got, err)
			}
		})
	}
	t.Run("fail/nil body", func(t *testing.T) {
		if got, err := OpenPacketSID(nil, true); !errors.Is(err, ErrNotOpenPacket) || got != "" {
			t.Errorf("OpenPacketSID(nil, true) = %q, %v; want ErrNotOpenPacket", got, err)
		}
	})
}

// TestOpenPacketSIDCaseSensitiveKey checks that the sid is read from the
// key "sid" exactly, as every client does (engine.io-client reads
// JSON.parse(data).sid; Go and Python clients likewise), and not from "SID"
// or "Sid", which encoding/json matches case-insensitively.
func TestOpenPacketSIDCaseSensitiveKey(t *testing.T) {
	cases := []struct {
		name string
		body string
		want string
		err  error
	}{
		// JSON.parse gives .sid === "real"; the proxy must pin "real"
		{"ok/sid then SID", `0{"sid":"real","SID":"other"}`, "real", nil},
		{"ok/sid then Sid", `0{"sid":"real","Sid":"other"}`, "real", nil},
		// a client finds no sid here at all
		{"fail/only SID", `0{"SID":"upper"}`, "", ErrNotOpenPacket},
		// U+017F LATIN SMALL LETTER LONG S folds to 's' in encoding/json
		{"fail/only long-s sid", `0{"ſid":"longs"}`, "", ErrNotOpenPacket},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := OpenPacketSID([]byte(tc.body), true)
			if got != tc.want || !errors.Is(err, tc.err) {
				t.Errorf("OpenPacketSID(%q) = %q, %v; want %q, %v", tc.body, got, err, tc.want, tc.err)
			}
		})
	}
}

// mayWait reports whether err is an allowed ErrIncomplete: a body that
// ends exactly at the open packet's closing brace may be answered at once
// or only once the next byte (\x1e or junk) or the end of the body is seen.
func mayWait(body string, final bool, err error) bool {
	if final || !errors.Is(err, ErrIncomplete) || len(body) < 2 || body[0] != '0' {
		return false
	}
	end, e := jsonObjectEnd([]byte(body[1:]))
	return e == nil && 1+end == len(body)
}

// objectEnd returns the length of the "0{...}" open packet at the start of
// a valid body.
func objectEnd(t *testing.T, body string) int {
	t.Helper()
	end, err := jsonObjectEnd([]byte(body[1:]))
	if err != nil {
		t.Fatalf("jsonObjectEnd(%q): %v", body, err)
	}
	return 1 + end
}

func TestOpenPacketSIDIncremental(t *testing.T) {
	cases := []struct {
		name string
		body string
		want string
	}{
		{"ok/captured socket.io 4.8", capturedV4, capturedV4SID},
		{"ok/captured with second packet", capturedV4Second, capturedV4SecondSID},
		{"ok/sid last", zishangV4, "ABCDEFGHIJKLMNOPQRSTUVWX"},
		{"ok/escapes and nesting", `0{"n":{"a":["}",{"b":"\"{"}]},"s":"\\","sid":"inc"}` + "\x1e2", "inc"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			end := objectEnd(t, tc.body)
			for k := 0; k <= len(tc.body); k++ {
				prefix := []byte(tc.body[:k])
				gotOpen, errOpen := OpenPacketSID(prefix, false)
				gotFinal, errFinal := OpenPacketSID(prefix, true)
				if k < end {
					if !errors.Is(errOpen, ErrIncomplete) || gotOpen != "" {
						t.Errorf("prefix %d/%d, final=false: %q, %v; want ErrIncomplete", k, len(tc.body), gotOpen, errOpen)
					}
					if !errors.Is(errFinal, ErrNotOpenPacket) || gotFinal != "" {
						t.Errorf("prefix %d/%d, final=true: %q, %v; want ErrNotOpenPacket", k, len(tc.body), gotFinal, errFinal)
					}
					continue
				}
				if errFinal != nil || gotFinal != tc.want {
					t.Errorf("prefix %d/%d, final=true: %q, %v; want %q", k, len(tc.body), gotFinal, errFinal, tc.want)
				}
				// a complete object may be answered at once, or after the
				// byte that says how the body goes on
				if errors.Is(errOpen, ErrIncomplete) && k == end {
					continue
				}
				if errOpen != nil || gotOpen != tc.want {
					t.Errorf("prefix %d/%d, final=false: %q, %v; want %q", k, len(tc.body), gotOpen, errOpen, tc.want)
				}
			}
		})
	}
}

// TestOpenPacketSIDChunking checks that a learner that feeds the body as it
// arrives (final=false, stopping at the first answer that is not
// ErrIncomplete) decides exactly as one that reads the whole body at once:
// where the backend's writes happen to split the body must not matter.
func TestOpenPacketSIDChunking(t *testing.T) {
	cases := []struct {
		name string
		body string
	}{
		{"ok/captured socket.io 4.8", capturedV4},
		{"ok/captured with second packet", capturedV4Second},
		{"fail/junk after object", capturedV4 + "junk"},
		{"fail/newline after object", `0{"sid":"x"}` + "\n"},
		{"fail/second object after object", `0{"sid":"x"}{"sid":"y"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantSID, wantErr := OpenPacketSID([]byte(tc.body), true)
			for k := 0; k <= len(tc.body); k++ {
				gotSID, gotErr := learnInTwoChunks([]byte(tc.body), k)
				if gotSID != wantSID || (gotErr == nil) != (wantErr == nil) {
					t.Errorf("split at %d/%d: learned %q, %v; whole body gives %q, %v", k, len(tc.body), gotSID, gotErr, wantSID, wantErr)
				}
			}
		})
	}
}

// learnInTwoChunks feeds body[:k] with final=false, then, if that was not
// decisive, the whole body with final=true: what the handler (module/response.go) does when
// the backend writes the body in two pieces.
func learnInTwoChunks(body []byte, k int) (string, error) {
	sid, err := OpenPacketSID(body[:k:k], false)
	if !errors.Is(err, ErrIncomplete) {
		return sid, err
	}
	return OpenPacketSID(body, true)
}

func TestIsSessionUnknown(t *testing.T) {
	cases := []struct {
		name string
		body string
		want bool
	}{
		{"ok/captured Session ID unknown", capturedUnknownSID, true},
		{"ok/code only", `{"code":1}`, true},
		{"ok/message first", `{"message":"Session ID unknown","code":1}`, true},
		{"ok/whitespace", "{ \"code\" : 1 }", true},
		{"ok/captured then more bytes", capturedUnknownSID + "\n", true},
		{"fail/captured Transport unknown (code 0)", capturedTransportUnknown, false},
		{"fail/captured Bad handshake method (code 2)", capturedBadHandshake, false},
		{"fail/captured Bad request (code 3)", capturedBadRequest, false},
		{"fail/Forbidden (code 4)", `{"code":4,"message":"Forbidden"}`, false},
		{"fail/Unsupported protocol version (code 5)", `{"code":5,"message":"Unsupported protocol version"}`, false},
		{"fail/no code", `{"message":"Session ID unknown"}`, false},
		{"fail/null code", `{"code":null,"message":"Session ID unknown"}`, false},
		{"fail/string code", `{"code":"1","message":"Session ID unknown"}`, false},
		{"fail/float code", `{"code":1.5}`, false},
		{"fail/nested code", `{"error":{"code":1}}`, false},
		{"ok/python-engineio (captured)", `"Invalid session PNEBcFiqR68PzIg7AAB4"`, true},
		{"ok/python-engineio, long sid cut off", `"Invalid session ` + strings.Repeat("x", 100), true},
		{"fail/python-engineio message without sid", `"Invalid session"`, false},
		{"fail/python-engineio other error", `"Invalid transport"`, false},
		{"fail/unquoted text", "Invalid session abc", false},
		{"fail/python-engineio text", "Session is disconnected", false},
		{"fail/non-JSON", "Bad Request", false},
		{"fail/HTML", "<html><body>400 Bad Request</body></html>", false},
		{"fail/array", `[{"code":1}]`, false},
		{"fail/leading space", ` {"code":1}`, false},
		{"fail/empty", "", false},
		{"fail/truncated", capturedUnknownSID[:len(capturedUnknownSID)-1], false},
		{"fail/truncated after code", `{"code":1`, false},
		{"fail/invalid JSON", `{"code":1,}`, false},
		{"fail/open packet", capturedV4, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsSessionUnknown([]byte(tc.body)); got != tc.want {
				t.Errorf("IsSessionUnknown(%q) = %v, want %v", tc.body, got, tc.want)
			}
		})
	}
}

func TestOpenPacketSIDAllocsBounded(t *testing.T) {
	// not a hot path (once per handshake), but it must not grow with junk
	body := []byte(capturedV4)
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = OpenPacketSID(body, false)
	})
	if allocs > 8 {
		t.Errorf("OpenPacketSID allocates %v times per handshake, want a handful", allocs)
	}
}

var handshakeSeeds = []string{
	capturedV4,
	capturedV4Second,
	capturedV3,
	capturedJSONP,
	capturedSIOConnect,
	capturedUnknownSID,
	zishangV4,
	`0{"sid":"x"}`,
	`0{"n":{"a":["}",{"b":"\"{"}]},"sid":"inc"}` + "\x1e2",
	`0{"sid":"a&b"}`,
	"0{\"sid\":\"x\"}\x1e",
	"0",
	"",
	"<html></html>",
}

func FuzzOpenPacketSID(f *testing.F) {
	for _, s := range handshakeSeeds {
		f.Add([]byte(s), uint16(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, body []byte, split uint16) {
		sid, err := OpenPacketSID(body, true)
		sid2, err2 := OpenPacketSID(body, true)
		if sid != sid2 || err != err2 {
			t.Fatalf("OpenPacketSID(%q) not deterministic", body)
		}
		switch {
		case err == nil:
			if sid == "" {
				t.Fatalf("OpenPacketSID(%q) = \"\", nil", body)
			}
			// a learned sid must route the requests that carry it
			q, qerr := ParseQuery("sid=" + sid + "&EIO=4&transport=polling")
			if qerr != nil || q.SID != sid {
				t.Fatalf("OpenPacketSID(%q) = %q, which ParseQuery reads as %+v, %v", body, sid, q, qerr)
			}
			// and must be what a client reads: JSON.parse(data).sid, an
			// exact, case-sensitive key where the last duplicate wins
			if want, ok := clientSID(body); !ok || want != sid {
				t.Fatalf("OpenPacketSID(%q) = %q, a client reads sid %q (found: %v)", body, sid, want, ok)
			}
		case sid != "":
			t.Fatalf("OpenPacketSID(%q) = %q with error %v", body, sid, err)
		case !errors.Is(err, ErrNotOpenPacket) && !errors.Is(err, ErrBadSID):
			t.Fatalf("OpenPacketSID(%q, true) error = %v, want ErrNotOpenPacket or ErrBadSID", body, err)
		}

		// incremental use must agree with reading the whole body
		k := int(split)
		if len(body) > 0 {
			k %= len(body) + 1
		} else {
			k = 0
		}
		// (which error says why nothing is learned may differ: only the
		// sid is acted on)
		gotSID, gotErr := learnInTwoChunks(body, k)
		if gotSID != sid {
			t.Fatalf("OpenPacketSID(%q): split at %d learns %q, %v; whole body gives %q, %v", body, k, gotSID, gotErr, sid, err)
		}
	})
}

// clientSID is a reference for what an Engine.IO client takes as the sid of
// a complete open packet: the "sid" member of the JSON object after '0',
// matched exactly (a Go map, unlike a struct, does not fold case).
func clientSID(body []byte) (string, bool) {
	if len(body) < 2 || body[0] != '0' {
		return "", false
	}
	end, err := jsonObjectEnd(body[1:])
	if err != nil {
		return "", false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(body[1:1+end], &m) != nil {
		return "", false
	}
	var sid string
	if json.Unmarshal(m["sid"], &sid) != nil {
		return "", false
	}
	return sid, true
}

func FuzzIsSessionUnknown(f *testing.F) {
	for _, s := range []string{
		capturedUnknownSID,
		capturedTransportUnknown,
		capturedBadHandshake,
		capturedBadRequest,
		capturedV4,
		`{"code":1}`,
		`{"code":1`,
		`{"code":"1"}`,
		"Session is disconnected",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got := IsSessionUnknown(body)
		if got != IsSessionUnknown(body) {
			t.Fatalf("IsSessionUnknown(%q) not deterministic", body)
		}
		if got && (len(body) == 0 || body[0] != '{') {
			t.Fatalf("IsSessionUnknown(%q) = true for a body that is not a JSON object", body)
		}
	})
}

package engineio

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParseQuery(t *testing.T) {
	sid20 := "j6ND45I1iVJGN1DyAAAA"                 // socket.io@4.8 (base64id)
	sid24 := "ABCDEFGHIJKLMNOPQRSTUVWX"             // zishang520
	sid32 := "0123456789abcdef0123456789abcdef"     // old python-engineio (hex)
	sid36 := "123e4567-e89b-12d3-a456-426614174000" // UUID (netty-socketio, generateId)
	maxSID := strings.Repeat("a", MaxSIDLength)

	ok := []struct {
		name string
		raw  string
		want Query
		eio  bool // want.IsEngineIO()
	}{
		{"ok/handshake", "EIO=4&transport=polling&t=Nxyz", Query{EIO: 4, Transport: TransportPolling}, true},
		{"ok/poll with sid", "EIO=4&transport=polling&t=Nxyz.1&sid=" + sid20, Query{EIO: 4, Transport: TransportPolling, SID: sid20}, true},
		{"ok/sid first", "sid=" + sid20 + "&EIO=4&transport=polling", Query{EIO: 4, Transport: TransportPolling, SID: sid20}, true},
		{"ok/websocket probe", "EIO=4&transport=websocket&sid=" + sid20, Query{EIO: 4, Transport: TransportWebSocket, SID: sid20}, true},
		{"ok/websocket only", "EIO=4&transport=websocket", Query{EIO: 4, Transport: TransportWebSocket}, true},
		{"ok/EIO=3", "EIO=3&transport=polling&t=Nxyz&b64=1", Query{EIO: 3, Transport: TransportPolling}, true},
		{"ok/EIO=99", "EIO=99&transport=polling", Query{EIO: 99, Transport: TransportPolling}, true},
		{"ok/JSONP j=0", "EIO=4&transport=polling&j=0&t=Nxyz", Query{EIO: 4, Transport: TransportPolling, JSONP: true}, true},
		{"ok/JSONP j without value", "EIO=4&transport=polling&j", Query{EIO: 4, Transport: TransportPolling, JSONP: true}, true},
		{"ok/percent-encoded sid", "EIO=4&transport=polling&sid=a%2Db", Query{EIO: 4, Transport: TransportPolling, SID: "a-b"}, true},
		{"ok/percent-encoded key", "EIO=4&transport=polling&%73id=x", Query{EIO: 4, Transport: TransportPolling, SID: "x"}, true},
		{"ok/percent-encoded EIO key", "%45IO=4&transport=polling", Query{EIO: 4, Transport: TransportPolling}, true},
		{"ok/undecodable key is not a parameter", "EIO=4&transport=polling&%zzsid=x", Query{EIO: 4, Transport: TransportPolling}, true},
		{"ok/sid 20 chars", "EIO=4&transport=polling&sid=" + sid20, Query{EIO: 4, Transport: TransportPolling, SID: sid20}, true},
		{"ok/sid 24 chars", "EIO=4&transport=polling&sid=" + sid24, Query{EIO: 4, Transport: TransportPolling, SID: sid24}, true},
		{"ok/sid 32 chars", "EIO=4&transport=polling&sid=" + sid32, Query{EIO: 4, Transport: TransportPolling, SID: sid32}, true},
		{"ok/sid 36 chars", "EIO=4&transport=polling&sid=" + sid36, Query{EIO: 4, Transport: TransportPolling, SID: sid36}, true},
		{"ok/sid 1", "EIO=4&transport=polling&sid=1", Query{EIO: 4, Transport: TransportPolling, SID: "1"}, true},
		{"ok/sid MaxSIDLength", "EIO=4&transport=polling&sid=" + maxSID, Query{EIO: 4, Transport: TransportPolling, SID: maxSID}, true},
		{"ok/sid MaxSIDLength percent-encoded", "EIO=4&transport=polling&sid=" + strings.Repeat("%61", MaxSIDLength), Query{EIO: 4, Transport: TransportPolling, SID: maxSID}, true},
		{"ok/sid with equals sign in value", "EIO=4&transport=polling&sid=a=b", Query{EIO: 4, Transport: TransportPolling, SID: "a=b"}, true},
		{"ok/no EIO (static file)", "v=4.8.4", Query{}, false},
		{"ok/empty", "", Query{}, false},
		{"ok/app query with sid, no EIO", "sid=x", Query{SID: "x"}, false},
		{"ok/EIO without transport", "EIO=4", Query{EIO: 4}, false},
		{"ok/transport without EIO", "transport=polling", Query{Transport: TransportPolling}, false},
		{"ok/unknown transport", "EIO=4&transport=webtransport", Query{EIO: 4, Transport: TransportUnknown}, true},
		{"ok/empty transport", "EIO=4&transport=", Query{EIO: 4, Transport: TransportUnknown}, true},
		{"ok/transport is case-sensitive", "EIO=4&transport=Polling", Query{EIO: 4, Transport: TransportUnknown}, true},
		{"ok/keys are case-sensitive", "EIO=4&transport=polling&SID=x&Sid=y", Query{EIO: 4, Transport: TransportPolling}, true},
		{"ok/empty pairs", "&&EIO=4&&transport=polling&", Query{EIO: 4, Transport: TransportPolling}, true},
		{"ok/repeated j and other params", "EIO=4&transport=polling&j=0&j=1&t=a&t=b", Query{EIO: 4, Transport: TransportPolling, JSONP: true}, true},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseQuery(tc.raw)
			if err != nil {
				t.Fatalf("ParseQuery(%q) error = %v, want nil", tc.raw, err)
			}
			if got != tc.want {
				t.Errorf("ParseQuery(%q) = %+v, want %+v", tc.raw, got, tc.want)
			}
			if got.IsEngineIO() != tc.eio {
				t.Errorf("ParseQuery(%q).IsEngineIO() = %v, want %v", tc.raw, got.IsEngineIO(), tc.eio)
			}
		})
	}

	fail := []struct {
		name string
		raw  string
		want error
	}{
		{"fail/repeated sid", "EIO=4&transport=polling&sid=a&sid=b", ErrRepeatedParam},
		{"fail/repeated identical sid", "EIO=4&transport=polling&sid=a&sid=a", ErrRepeatedParam},
		{"fail/repeated sid via encoded key", "EIO=4&transport=polling&sid=a&%73id=b", ErrRepeatedParam},
		{"fail/repeated sid via fully encoded key", "EIO=4&transport=polling&%73%69%64=a&sid=b", ErrRepeatedParam},
		{"fail/repeated sid, second without value", "EIO=4&transport=polling&sid=a&sid", ErrRepeatedParam},
		{"fail/repeated EIO", "EIO=4&EIO=3&transport=polling", ErrRepeatedParam},
		{"fail/repeated EIO via encoded key", "EIO=4&%45IO=4&transport=polling", ErrRepeatedParam},
		{"fail/repeated transport", "EIO=4&transport=polling&transport=websocket", ErrRepeatedParam},
		{"fail/repeated transport via encoded key", "EIO=4&transport=polling&%74ransport=polling", ErrRepeatedParam},
		{"fail/empty sid", "EIO=4&transport=polling&sid=", ErrEmptySID},
		{"fail/sid without =", "EIO=4&transport=polling&sid", ErrEmptySID},
		{"fail/sid MaxSIDLength+1", "EIO=4&transport=polling&sid=" + strings.Repeat("a", MaxSIDLength+1), ErrSIDTooLong},
		{"fail/sid MaxSIDLength+1 percent-encoded", "EIO=4&transport=polling&sid=" + strings.Repeat("%61", MaxSIDLength) + "a", ErrSIDTooLong},
		{"fail/sid 10 kB", "EIO=4&transport=polling&sid=" + strings.Repeat("A", 10<<10), ErrSIDTooLong},
		{"fail/sid 10 kB percent-encoded", "EIO=4&transport=polling&sid=" + strings.Repeat("%41", 10<<10), ErrSIDTooLong},
		{"fail/sid with %00", "EIO=4&transport=polling&sid=ab%00cd", ErrSIDInvalid},
		{"fail/sid with encoded control char", "EIO=4&transport=polling&sid=ab%1Fcd", ErrSIDInvalid},
		{"fail/sid with raw control char", "EIO=4&transport=polling&sid=ab\x01cd", ErrSIDInvalid},
		{"fail/sid with raw tab", "EIO=4&transport=polling&sid=ab\tcd", ErrSIDInvalid},
		{"fail/sid with DEL", "EIO=4&transport=polling&sid=ab%7Fcd", ErrSIDInvalid},
		{"fail/sid with space via +", "EIO=4&transport=polling&sid=ab+cd", ErrSIDInvalid},
		{"fail/sid with space via %20", "EIO=4&transport=polling&sid=ab%20cd", ErrSIDInvalid},
		{"fail/sid unicode", "EIO=4&transport=polling&sid=caf%C3%A9", ErrSIDInvalid},
		{"fail/sid raw unicode", "EIO=4&transport=polling&sid=café", ErrSIDInvalid},
		{"fail/sid invalid percent-encoding", "EIO=4&transport=polling&sid=ab%zz", ErrSIDInvalid},
		{"fail/sid truncated percent-encoding", "EIO=4&transport=polling&sid=ab%4", ErrSIDInvalid},
		{"fail/sid lone percent", "EIO=4&transport=polling&sid=%", ErrSIDInvalid},
		{"fail/EIO=abc", "EIO=abc&transport=polling", ErrBadEIO},
		{"fail/EIO=0", "EIO=0&transport=polling", ErrBadEIO},
		{"fail/EIO=00", "EIO=00&transport=polling", ErrBadEIO},
		{"fail/EIO=100", "EIO=100&transport=polling", ErrBadEIO},
		{"fail/EIO=-4", "EIO=-4&transport=polling", ErrBadEIO},
		{"fail/EIO=+4", "EIO=+4&transport=polling", ErrBadEIO},
		{"fail/EIO empty", "EIO=&transport=polling", ErrBadEIO},
		{"fail/EIO without =", "EIO&transport=polling", ErrBadEIO},
		{"fail/EIO huge", "EIO=" + strings.Repeat("9", 40) + "&transport=polling", ErrBadEIO},
		{"fail/bad sid without EIO", "sid=", ErrEmptySID},
	}
	for _, tc := range fail {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseQuery(tc.raw)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParseQuery(%.80q) error = %v, want %v", tc.raw, err, tc.want)
			}
			if got != (Query{}) {
				t.Errorf("ParseQuery(%.80q) = %+v with error, want zero Query", tc.raw, got)
			}
		})
	}
}

// TestParseQueryAgreesWithServers checks that the parameters mean to the
// proxy what they mean to engine.io, which reads its query with WHATWG
// URLSearchParams: keys AND values are percent-decoded. Values that only an
// unusual client would encode, but that a server reads as a known value,
// must not be classified differently by the proxy.
func TestParseQueryAgreesWithServers(t *testing.T) {
	cases := []struct {
		name string
		raw  string
		want Query
	}{
		// engine.io reads transport "polling" here and answers a
		// handshake; the handler must learn it like any other
		{"ok/percent-encoded transport value", "EIO=4&transport=%70olling", Query{EIO: 4, Transport: TransportPolling}},
		{"ok/percent-encoded websocket value", "EIO=4&transport=%77ebsocket&sid=x", Query{EIO: 4, Transport: TransportWebSocket, SID: "x"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseQuery(tc.raw)
			if err != nil {
				t.Fatalf("ParseQuery(%q) error = %v, want nil", tc.raw, err)
			}
			if got != tc.want {
				t.Errorf("ParseQuery(%q) = %+v, want %+v (what engine.io reads)", tc.raw, got, tc.want)
			}
		})
	}
}

func TestTransportString(t *testing.T) {
	for tr, want := range map[Transport]string{
		TransportNone:      "",
		TransportPolling:   "polling",
		TransportWebSocket: "websocket",
		TransportUnknown:   "unknown",
		Transport(200):     "unknown",
	} {
		t.Run("ok/"+want, func(t *testing.T) {
			if got := tr.String(); got != want {
				t.Errorf("Transport(%d).String() = %q, want %q", tr, got, want)
			}
		})
	}
}

func TestParseQueryAllocs(t *testing.T) {
	cases := []struct {
		name string
		raw  string
	}{
		{"ok/poll", "EIO=4&transport=polling&t=PabcXYZ.1&sid=j6ND45I1iVJGN1DyAAAA"},
		{"ok/handshake", "EIO=4&transport=polling&t=PabcXYZ"},
		{"ok/websocket probe", "EIO=4&transport=websocket&sid=j6ND45I1iVJGN1DyAAAA"},
		{"ok/not engine.io", "v=4.8.4&utm_source=x&page=2"},
		{"ok/empty", ""},
		{"ok/refused repeated sid", "EIO=4&transport=polling&sid=a&sid=b"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var sink Query
			allocs := testing.AllocsPerRun(200, func() {
				sink, _ = ParseQuery(tc.raw)
			})
			_ = sink
			if allocs != 0 {
				t.Errorf("ParseQuery(%q) allocates %v times, want 0", tc.raw, allocs)
			}
		})
	}
}

func BenchmarkParseQuery(b *testing.B) {
	raw := "EIO=4&transport=polling&t=PabcXYZ.1&sid=j6ND45I1iVJGN1DyAAAA"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseQuery(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"",
		"EIO=4&transport=polling&t=Nxyz",
		"EIO=4&transport=polling&t=Pabc123",
		"EIO=4&transport=polling&t=Nxyz&sid=j6ND45I1iVJGN1DyAAAA",
		"EIO=4&transport=websocket&sid=j6ND45I1iVJGN1DyAAAA",
		"EIO=4&transport=websocket",
		"EIO=3&transport=polling&j=0&t=Nxyz",
		"EIO=4&transport=polling&sid=a%2Db",
		"EIO=4&transport=polling&%73id=x",
		"EIO=4&transport=polling&sid=a&sid=b",
		"EIO=4&transport=polling&sid=",
		"EIO=4&transport=polling&sid",
		"EIO=4&transport=polling&sid=ab+cd",
		"EIO=4&transport=polling&sid=caf%C3%A9",
		"EIO=4&transport=polling&sid=%zz",
		"EIO=abc&transport=polling",
		"EIO=100",
		"sid=x",
		"EIO=4&transport=polling&sid=" + strings.Repeat("%41", MaxSIDLength),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := ParseQuery(raw)
		q2, err2 := ParseQuery(raw)
		if q != q2 || err != err2 {
			t.Fatalf("ParseQuery(%q) not deterministic: %+v, %v then %+v, %v", raw, q, err, q2, err2)
		}
		if err != nil {
			if q != (Query{}) {
				t.Fatalf("ParseQuery(%q) = %+v with error %v, want zero Query", raw, q, err)
			}
			return
		}
		if q.EIO < 0 || q.EIO > 99 {
			t.Fatalf("ParseQuery(%q).EIO = %d, want 0..99", raw, q.EIO)
		}
		if q.Transport > TransportUnknown {
			t.Fatalf("ParseQuery(%q).Transport = %d", raw, q.Transport)
		}
		// the backend must see the same sid: one "sid" key, same value
		sids := urlSearchParams(raw, "sid")
		switch {
		case q.SID == "" && len(sids) != 0:
			t.Fatalf("ParseQuery(%q) found no sid, engine.io reads %q", raw, sids)
		case q.SID != "" && (len(sids) != 1 || sids[0] != q.SID):
			t.Fatalf("ParseQuery(%q).SID = %q, engine.io reads %q", raw, q.SID, sids)
		}
		if n := len(urlSearchParams(raw, "EIO")); n > 1 || (n == 1) != (q.EIO != 0) {
			t.Fatalf("ParseQuery(%q).EIO = %d, engine.io reads %d values", raw, q.EIO, n)
		}
		if q.SID == "" {
			return
		}
		if len(q.SID) > MaxSIDLength {
			t.Fatalf("ParseQuery(%q).SID has %d bytes, want at most %d", raw, len(q.SID), MaxSIDLength)
		}
		for i := 0; i < len(q.SID); i++ {
			if c := q.SID[i]; c <= ' ' || c >= 0x7f {
				t.Fatalf("ParseQuery(%q).SID = %q holds byte %#x, want visible ASCII", raw, q.SID, c)
			}
		}
		// the decoded sid, escaped again, must name the same session
		again, err := ParseQuery("EIO=4&transport=polling&sid=" + url.QueryEscape(q.SID))
		if err != nil || again.SID != q.SID {
			t.Fatalf("re-escaped sid %q: ParseQuery = %+v, %v", q.SID, again, err)
		}
		// a second sid must always be refused, never joined or chosen
		if _, err := ParseQuery(raw + "&sid=other"); !errors.Is(err, ErrRepeatedParam) {
			t.Fatalf("ParseQuery(%q + \"&sid=other\") error = %v, want ErrRepeatedParam", raw, err)
		}
	})
}

// urlSearchParams returns the values of key in raw as engine.io reads them
// (WHATWG URLSearchParams, application/x-www-form-urlencoded parsing):
// pairs split on '&' and the first '=', '+' is a space, and percent
// sequences that are not valid are kept as they are.
func urlSearchParams(raw, key string) []string {
	var vals []string
	for _, pair := range strings.Split(raw, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if formDecode(k) == key {
			vals = append(vals, formDecode(v))
		}
	}
	return vals
}

func formDecode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b.WriteByte(' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

func TestClaimsEngineIO(t *testing.T) {
	tests := []struct {
		raw  string
		want bool
	}{
		{"EIO=4&transport=polling&sid=a&sid=b", true},
		{"sid=&EIO=abc&transport=", true},
		{"%45IO=4&transport=polling", true},
		{"EIO=4&sid=a&sid=b", false},
		{"transport=polling", false},
		{"sid=1&sid=2", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := ClaimsEngineIO(tt.raw); got != tt.want {
			t.Errorf("ClaimsEngineIO(%q) = %v, want %v", tt.raw, got, tt.want)
		}
	}
}

package caddytest

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"

	"github.com/caddy-socketio/caddy-socketio/selection"
)

// reach says which node a hostile request may reach.
type reach uint8

const (
	// reachNone: refused in front of the nodes; no node sees it.
	reachNone reach = iota
	// reachHash: the node client-IP hashing picks for the client's
	// address (the default fallback for new sessions, and the route of
	// a sid that is not pinned).
	reachHash
	// reachOwner: the node that minted the session's sid.
	reachOwner
	// reachHashParser: sent to the hashed node, whose HTTP parser
	// answers before the request is counted (Node's 16 KiB header
	// limit): the log's upstream is the witness.
	reachHashParser
)

func (r reach) String() string {
	return [...]string{"none", "hash", "owner", "hash (parser)"}[r]
}

// hostileEnv is what a case's request is built from.
type hostileEnv struct {
	mark  string   // "hx=<n>": a query parameter no one reads, to find the case in the log
	sid   string   // a live session's sid (cases with session)
	owner *sioNode // the node that minted sid
}

// q returns an Engine.IO path with the given query and the case marker.
func (e hostileEnv) q(query string) string { return "/socket.io/?" + query + "&" + e.mark }

const wsKey = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="

// refusedBy are the log lines of a request the handler refuses: its own
// debug line and Caddy's error log line for the 400.
func refusedBy(err string) func(hostileEnv) []logWant {
	return refusedWith(err, 400)
}

// refusedWith is refusedBy for another status.
func refusedWith(err string, status int) func(hostileEnv) []logWant {
	return func(e hostileEnv) []logWant {
		return []logWant{
			{Logger: logHandler, Msg: "refused Engine.IO request", Level: "debug", Fields: map[string]string{"error": err}, URI: e.mark},
			{Logger: logError, Msg: err, Level: "debug", Fields: map[string]string{"status": fmt.Sprint(status)}, URI: e.mark},
		}
	}
}

// hostileRequest is a case of TestHostileClientRequests.
type hostileRequest struct {
	name    string
	session bool // open a session (from another address) first
	req     func(e hostileEnv) []byte
	// next, if set, is pipelined after req on the same connection
	// and must be answered with an open packet: reach, pinned and
	// logs then cover both requests
	next   func(e hostileEnv) []byte
	status int
	body   string // substring of the response body
	reach  reach
	pinned bool // the request is a real handshake: a new pin to the node reached
	logs   func(e hostileEnv) []logWant
}

// TestHostileClientRequests sends malformed, ambiguous and malicious
// requests through the socketio handler and policy in front of three
// socket.io@4 nodes. Each case asserts the status, which node (if any)
// received the request (the nodes' own counters and X-Sio-Node), that
// the pin store neither gained nor moved a pin unless a real handshake
// was forwarded, and the line Caddy logged about it (global log at debug
// level, read back from a file).
func TestHostileClientRequests(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 3, nil)
	tester := caddytester.NewTester(t)
	clog := newCaddyLog(t)
	loadConfig(t, tester, proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio", GlobalEx: clog.GlobalEx()}.Caddyfile())
	logStart := clog.Offset(t)

	sid128 := strings.Repeat("s", 128)
	hugeHeader := "X-Junk: " + strings.Repeat("h", 1<<20+8<<10)
	junk := func(n int) string { return "pad=" + strings.Repeat("j", n) }

	cases := []hostileRequest{
		// sid values the handler refuses: ParseQuery rules
		{name: "refused/sid 10 kB", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&sid="+strings.Repeat("a", 10<<10)), nil, "")
		}, status: 400, logs: refusedBy("sid too long")},
		{name: "refused/sid 129 bytes", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&sid="+strings.Repeat("s", 129)), nil, "")
		}, status: 400, logs: refusedBy("sid too long")},
		{name: "refused/sid %00", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&sid=%00"), nil, "")
		}, status: 400, logs: refusedBy("sid contains invalid characters")},
		{name: "refused/sid unicode %C3%A9", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&sid=%C3%A9"), nil, "")
		}, status: 400, logs: refusedBy("sid contains invalid characters")},
		{name: "refused/sid bad escape %zz", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&sid=%zz"), nil, "")
		}, status: 400, logs: refusedBy("sid contains invalid characters")},
		{name: "refused/sid with + (a space)", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&sid=a+b"), nil, "")
		}, status: 400, logs: refusedBy("sid contains invalid characters")},
		{name: "refused/sid empty", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&sid="), nil, "")
		}, status: 400, logs: refusedBy("empty sid")},
		{name: "refused/sid repeated", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&sid=a&sid=b"), nil, "")
		}, status: 400, logs: refusedBy("engine.io parameter repeated")},
		{name: "refused/sid repeated via %73id", session: true, req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&sid="+e.sid+"&%73id=b"), nil, "")
		}, status: 400, logs: refusedBy("engine.io parameter repeated")},
		{name: "refused/sid repeated without trailing slash", req: func(e hostileEnv) []byte {
			return request("GET", "/socket.io?EIO=4&transport=polling&sid=a&sid=b&"+e.mark, nil, "")
		}, status: 400, logs: refusedBy("engine.io parameter repeated")},
		// EIO and transport
		{name: "refused/EIO=abc", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=abc&transport=polling"), nil, "")
		}, status: 400, logs: refusedBy("invalid EIO protocol version")},
		{name: "refused/EIO=0", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=0&transport=polling"), nil, "")
		}, status: 400, logs: refusedBy("invalid EIO protocol version")},
		{name: "refused/EIO empty", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=&transport=polling"), nil, "")
		}, status: 400, logs: refusedBy("invalid EIO protocol version")},
		{name: "refused/EIO repeated", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&EIO=4&transport=polling"), nil, "")
		}, status: 400, logs: refusedBy("engine.io parameter repeated")},
		{name: "refused/transport repeated", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&transport=websocket"), nil, "")
		}, status: 400, logs: refusedBy("engine.io parameter repeated")},
		// upgrades
		{name: "refused/Upgrade h2c with HTTP2-Settings", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling"),
				[]string{"Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"}, "")
		}, status: 400, logs: refusedBy("upgrade to a protocol other than websocket")},
		{name: "refused/Upgrade websocket on a polling request", session: true, req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&sid="+e.sid),
				[]string{"Connection: Upgrade", "Upgrade: websocket", wsKey, "Sec-WebSocket-Version: 13"}, "")
		}, status: 400, logs: refusedBy("websocket upgrade on a request for another transport")},

		// well-formed for the proxy: forwarded, the backend decides
		{name: "forwarded/sid 128 bytes, unknown", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&sid="+sid128), nil, "")
		}, status: 400, body: `"code":1`, reach: reachHash, logs: routed("unknown", 400)},
		{name: "forwarded/sid ../", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&sid=../../etc/passwd"), nil, "")
		}, status: 400, body: `"code":1`, reach: reachHash, logs: routed("unknown", 400)},
		{name: "forwarded/sid %2e%2e%2f", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&sid=%2e%2e%2f"), nil, "")
		}, status: 400, body: `"code":1`, reach: reachHash, logs: routed("unknown", 400)},
		{name: "forwarded/sid via %73id alone reaches the owner", session: true, req: func(e hostileEnv) []byte {
			return request("POST", e.q("EIO=4&transport=polling&%73id="+e.sid), []string{"Content-Type: text/plain;charset=UTF-8"}, "6")
		}, status: 200, body: "ok", reach: reachOwner, logs: routed("owner", 200)},
		{name: "forwarded/EIO=99", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=99&transport=polling"), nil, "")
		}, status: 400, body: `"code":5`, reach: reachHash, logs: routed("new", 400)},
		{name: "forwarded/unknown transport", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=carrier-pigeon"), nil, "")
		}, status: 400, body: `"code":0`, reach: reachHash, logs: routed("new", 400)},
		// a POST carries a session's packets: without a sid it has none
		// to carry, and its body would reach whichever node the fallback
		// picks (issue 10, item 1)
		{name: "refused/POST without sid", req: func(e hostileEnv) []byte {
			return request("POST", e.q("EIO=4&transport=polling"), []string{"Content-Type: text/plain;charset=UTF-8"}, "40")
		}, status: 400, reach: reachNone, logs: refusedBy("POST that is not a polling request of a session")},
		{name: "forwarded/Upgrade websocket without Connection", session: true, req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=websocket&sid="+e.sid), []string{"Upgrade: websocket", wsKey, "Sec-WebSocket-Version: 13"}, "")
		}, status: 101, reach: reachOwner, logs: upgraded},
		// no Upgrade, no switch of protocols (RFC 9110 §7.8): the node
		// gets a plain GET, whatever Sec-WebSocket-* it carries (issue
		// 10, item 8)
		{name: "forwarded/WebSocket key without Upgrade or Connection", session: true, req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=websocket&sid="+e.sid), []string{wsKey, "Sec-WebSocket-Version: 13"}, "")
		}, status: 400, body: `"code":3`, reach: reachOwner, logs: routed("owner", 400)},
		{name: "forwarded/Upgrade h2c, websocket", session: true, req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=websocket&sid="+e.sid),
				[]string{"Connection: Upgrade", "Upgrade: h2c, websocket", wsKey, "Sec-WebSocket-Version: 13"}, "")
		}, status: 101, reach: reachOwner, logs: upgraded},
		{name: "forwarded/Connection upgrade without Upgrade on a handshake", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling"), []string{"Connection: upgrade"}, "")
		}, status: 200, body: `0{"sid":`, reach: reachHash, pinned: true, logs: func(e hostileEnv) []logWant {
			return append(routed("new", 200)(e), logWant{Logger: logHandler, Msg: "learned session", Level: "debug"})
		}},
		{name: "forwarded/Connection upgrade without Upgrade on the websocket transport", session: true, req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=websocket&sid="+e.sid), []string{"Connection: upgrade"}, "")
		}, status: 400, body: `"code":3`, reach: reachOwner, logs: routed("owner", 400)},
		{name: "forwarded/collision: another client's sid reaches its owner", session: true, req: func(e hostileEnv) []byte {
			return request("POST", e.q("EIO=4&transport=polling&sid="+e.sid), []string{"Content-Type: text/plain;charset=UTF-8"}, "6")
		}, status: 200, body: "ok", reach: reachOwner, logs: routed("owner", 200)},
		{name: "forwarded/collision: another client's sid upgraded on its owner", session: true, req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=websocket&sid="+e.sid),
				[]string{"Connection: Upgrade", "Upgrade: websocket", wsKey, "Sec-WebSocket-Version: 13"}, "")
		}, status: 101, reach: reachOwner, logs: upgraded},
		{name: "forwarded/query 8 kB", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&"+junk(8<<10)), nil, "")
		}, status: 200, body: `0{"sid":`, reach: reachHash, pinned: true, logs: func(e hostileEnv) []logWant {
			return append(routed("new", 200)(e), logWant{Logger: logHandler, Msg: "learned session", Level: "debug"})
		}},
		// Caddy reads 16 KiB of request head (max_header_size, plus
		// net/http's 4 KiB slack); Node.js reads 16 KiB, counting the
		// headers Caddy adds: between the two, the node answers itself
		{name: "forwarded/query 18 kB: the node's own 431", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&"+junk(18<<10)), nil, "")
		}, status: 431, reach: reachHashParser, logs: routed("new", 431)},

		// not Engine.IO (no EIO, no transport, not on the path): the
		// handler passes it on untouched, and the README's policy table
		// sends "not Engine.IO" to the fallback; an application's own
		// query may well repeat or empty a parameter named sid
		{name: "forwarded/outside the path, sid repeated", req: func(e hostileEnv) []byte {
			return request("GET", "/app/items?sid=1&sid=2&"+e.mark, nil, "")
		}, status: 404, reach: reachHash, logs: routed("new", 404)},
		{name: "forwarded/outside the path, sid empty", req: func(e hostileEnv) []byte {
			return request("GET", "/app/search?sid=&"+e.mark, nil, "")
		}, status: 404, reach: reachHash, logs: routed("new", 404)},

		{name: "refused/pipelined: refused, then a handshake on the same connection", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=abc&transport=polling"), nil, "")
		}, next: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling"), nil, "")
		}, status: 400, reach: reachHash, pinned: true, logs: func(e hostileEnv) []logWant {
			return append(refusedBy("invalid EIO protocol version")(e), logWant{Logger: logHandler, Msg: "learned session", Level: "debug"})
		}},

		// request framing: net/http parses it, reverse_proxy re-frames
		// the body for the upstream
		{name: "forwarded/POST with Content-Length and Transfer-Encoding", session: true, req: func(e hostileEnv) []byte {
			// RFC 9112 §6.3: Transfer-Encoding wins and Content-Length
			// is dropped; the node gets one body, framed by Caddy
			return request("POST", e.q("EIO=4&transport=polling&sid="+e.sid),
				[]string{"Content-Type: text/plain;charset=UTF-8", "Content-Length: 30", "Transfer-Encoding: chunked"},
				"1\r\n6\r\n0\r\n\r\n")
		}, status: 200, body: "ok", reach: reachOwner, logs: routed("owner", 200)},
		// the client's body is malformed, not the upstream's answer: the
		// handler reads polling POST bodies whole before proxying, so the
		// client gets 400 and the node never sees it (Caddy v2.11.9 alone
		// answers 502 and counts a failure against the node; see
		// TestHostileBodiesDoNotFailTheOwner)
		{name: "refused/POST with bad chunked framing", session: true, req: func(e hostileEnv) []byte {
			return request("POST", e.q("EIO=4&transport=polling&sid="+e.sid),
				[]string{"Content-Type: text/plain;charset=UTF-8", "Transfer-Encoding: chunked"}, "zz\r\n6\r\n0\r\n\r\n")
		}, status: 400, reach: reachNone, logs: refusedBy("reading request body: invalid byte in chunk length")},
		{name: "refused/POST body over max_body", session: true, req: func(e hostileEnv) []byte {
			return request("POST", e.q("EIO=4&transport=polling&sid="+e.sid),
				[]string{"Content-Type: text/plain;charset=UTF-8", "Content-Length: 1000001"}, strings.Repeat("4", 1000001))
		}, status: 413, reach: reachNone, logs: refusedWith("request body larger than max_body", 413)},

		// refused by Go's HTTP server before any handler runs: no
		// handler, no log line (net/http writes these itself)
		{name: "net-http/header 1 MB", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling"), []string{hugeHeader}, "")
		}, status: 431},
		{name: "net-http/two Content-Length values", session: true, req: func(e hostileEnv) []byte {
			return request("POST", e.q("EIO=4&transport=polling&sid="+e.sid), []string{"Content-Length: 1", "Content-Length: 2"}, "6")
		}, status: 400},
		{name: "net-http/Transfer-Encoding gzip, chunked", session: true, req: func(e hostileEnv) []byte {
			return request("POST", e.q("EIO=4&transport=polling&sid="+e.sid), []string{"Transfer-Encoding: gzip, chunked"}, "1\r\n6\r\n0\r\n\r\n")
		}, status: 501},
		{name: "net-http/NUL in a header value", session: true, req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&sid="+e.sid), []string{"X-Evil: a\x00b"}, "")
		}, status: 400},
		{name: "net-http/query 64 kB", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&"+junk(64<<10)), nil, "")
		}, status: 431},
		{name: "net-http/query 1 MB", req: func(e hostileEnv) []byte {
			return request("GET", e.q("EIO=4&transport=polling&"+junk(1<<20+8<<10)), nil, "")
		}, status: 431},
	}

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { checkHostileRequest(t, i, tc, nodes, clog) })
	}
	checkNoPanic(t, clog, logStart)
}

// checkHostileRequest sends case i of TestHostileClientRequests and checks
// the answer, which nodes it reached, the pins and Caddy's log lines.
func checkHostileRequest(t *testing.T, i int, tc hostileRequest, nodes []*sioNode, clog *caddyLog) {
	e := hostileEnv{mark: fmt.Sprintf("hx=%d", i)}
	ip := fmt.Sprintf("127.77.0.%d", i+1)
	if tc.session {
		e.sid, e.owner = openSession(t, nodes, fmt.Sprintf("127.77.1.%d", i+1))
		// a client the hash would send elsewhere: only the pin
		// can bring its requests to the owner
		ip = addressAwayFrom(t, nodes, e.owner, i)
	}
	hashed := hashNode(nodes, ip)
	beforeSeen := seenBy(t, nodes)
	beforePins := pinsOf(t)
	offset := clog.Offset(t)

	var res, last rawResponse
	if tc.next != nil {
		both := rawPipeline(t, ip, append(tc.req(e), tc.next(e)...), 2)
		res, last = both[0], both[1]
		if last.Err != nil || last.Status != 200 || !bytes.HasPrefix(last.Body, []byte(`0{"sid":`)) {
			t.Errorf("pipelined handshake: got %v, want 200 and an open packet", last)
		}
		if h := res.Header.Get("X-Sio-Node"); h != "" {
			t.Errorf("refused request answered by X-Sio-Node %q", h)
		}
	} else {
		res = rawExchange(t, ip, tc.req(e))
		last = res
	}

	if res.Err != nil || res.Status != tc.status {
		t.Errorf("got %v, want status %d", res, tc.status)
	}
	if tc.body != "" && !bytes.Contains(res.Body, []byte(tc.body)) {
		t.Errorf("body %q does not contain %q", trim(res.Body), tc.body)
	}
	var want *sioNode
	switch tc.reach {
	case reachHash, reachHashParser:
		want = hashed
	case reachOwner:
		want = e.owner
	}
	got := seenBy(t, nodes).delta(beforeSeen)
	switch tc.reach {
	case reachNone, reachHashParser:
		if len(got) != 0 {
			t.Errorf("nodes received %v, want none", got)
		}
	default:
		if len(got) != 1 || got[want.Name] != 1 {
			t.Errorf("nodes received %v, want exactly one request on %s (%s)", got, want.Name, tc.reach)
		}
	}
	wantHeader := ""
	if tc.reach == reachHash || tc.reach == reachOwner {
		wantHeader = want.Name
	}
	if h := last.Header.Get("X-Sio-Node"); h != wantHeader {
		t.Errorf("answered by X-Sio-Node %q, want %q", h, wantHeader)
	}
	afterPins := pinsOf(t)
	checkPins(t, beforePins, afterPins, tc.pinned, want)

	if tc.logs != nil {
		wants := tc.logs(e)
		if want != nil {
			for j := range wants {
				if wants[j].Fields["upstream"] == "{want}" {
					wants[j].Fields["upstream"] = want.Dial()
				}
			}
		}
		clog.Await(t, offset, wants...)
	} else {
		// net/http answered on its own: nothing reached a handler
		time.Sleep(200 * time.Millisecond)
		for _, line := range clog.Since(t, offset) {
			if line.Logger == logHandler || line.Logger == logPolicy || line.Logger == logProxy {
				t.Errorf("a handler saw the request: %s", trim([]byte(line.Raw)))
			}
		}
	}
}

// routed are the log lines of a request the policy routed (route "new",
// "owner" or "unknown") and its upstream answered with status.
func routed(route string, status int) func(hostileEnv) []logWant {
	return func(e hostileEnv) []logWant {
		return []logWant{
			{Logger: logPolicy, Msg: "selected upstream", Level: "debug", Fields: map[string]string{"route": route, "upstream": "{want}"}},
			{Logger: logProxy, Msg: "upstream roundtrip", Level: "debug", Fields: map[string]string{"status": fmt.Sprint(status)}, URI: e.mark},
		}
	}
}

// upgraded are the log lines of a WebSocket upgrade routed to a pinned
// owner and proxied.
func upgraded(e hostileEnv) []logWant {
	return []logWant{
		{Logger: logPolicy, Msg: "selected upstream", Level: "debug", Fields: map[string]string{"route": "owner", "upstream": "{want}"}},
		{Logger: logProxy, Msg: "upstream roundtrip", Level: "debug", Fields: map[string]string{"status": "101"}, URI: e.mark},
		{Logger: logProxy, Msg: "upgrading connection", Level: "debug"},
	}
}

// checkPins compares the pin store before and after a request: unchanged,
// or (pinned) exactly one new pin, to node.
func checkPins(t *testing.T, before, after pinReport, pinned bool, node *sioNode) {
	t.Helper()
	wantPinned, wantPins := before.Pinned, before.Pins
	wantBy := map[string]int{}
	for k, v := range before.ByUpstream {
		wantBy[k] = v
	}
	if pinned {
		wantPinned++
		wantPins++
		wantBy[node.Dial()]++
	}
	// the store is the process's: pins of earlier tests may expire (or be
	// evicted) meanwhile, which takes them out of Pins and ByUpstream
	gone := int((after.Expired - before.Expired) + (after.Evicted - before.Evicted))
	if after.Pinned != wantPinned || after.Pins != wantPins-gone || after.Collisions != before.Collisions ||
		after.Dropped != before.Dropped || after.Refused != before.Refused || !countsWithin(after.ByUpstream, wantBy, gone) {
		t.Errorf("pin store went from %+v to %+v (a new pin expected: %v)", before, after, pinned)
	}
}

// countsWithin reports whether every count of got is the one in want, or
// at most slack below it, with slack in all.
func countsWithin(got, want map[string]int, slack int) bool {
	if slack == 0 {
		return equalCounts(got, want)
	}
	for k, v := range got {
		if v > want[k] {
			return false
		}
	}
	for k, v := range want {
		slack -= v - got[k]
	}
	return slack >= 0
}

func equalCounts(a, b map[string]int) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// openSession makes a polling handshake through Caddy from ip and returns
// the sid and the node that minted it.
func openSession(t *testing.T, nodes []*sioNode, ip string) (string, *sioNode) {
	t.Helper()
	res := rawExchange(t, ip, request("GET", "/socket.io/?EIO=4&transport=polling", nil, ""))
	if res.Err != nil || res.Status != 200 {
		t.Fatalf("handshake: %v", res)
	}
	sid, err := handshakeSID(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Name == res.Header.Get("X-Sio-Node") {
			return sid, n
		}
	}
	t.Fatalf("handshake answered by unknown node %q", res.Header.Get("X-Sio-Node"))
	return "", nil
}

// addressAwayFrom returns a client address that client-IP hashing sends
// to a node other than owner.
func addressAwayFrom(t *testing.T, nodes []*sioNode, owner *sioNode, i int) string {
	t.Helper()
	for k := 2; k < 200; k++ {
		ip := fmt.Sprintf("127.77.%d.%d", k, i+1)
		if hashNode(nodes, ip) != owner {
			return ip
		}
	}
	t.Fatal("no address hashes away from the owner")
	return ""
}

// checkNoPanic fails if Caddy logged a panic since offset.
func checkNoPanic(t *testing.T, clog *caddyLog, offset int64) {
	t.Helper()
	for _, line := range clog.Since(t, offset) {
		if strings.Contains(strings.ToLower(line.Msg), "panic") || strings.Contains(line.Raw, "goroutine ") {
			t.Errorf("Caddy logged a panic: %s", trim([]byte(line.Raw)))
		}
	}
}

func trim(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// TestHostileRandomSIDs sends 1,000 polls with random sids that no node
// minted: each is routed by client-IP hash to one node, which answers
// "Session ID unknown", and none of them creates, moves or drops a pin.
func TestHostileRandomSIDs(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 3, nil)
	tester := caddytester.NewTester(t)
	clog := newCaddyLog(t)
	loadConfig(t, tester, proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio", GlobalEx: clog.GlobalEx()}.Caddyfile())

	const requests = 1000
	const ip = "127.77.200.1"
	want := hashNode(nodes, ip)
	// a live session, so that the store is not empty
	openSession(t, nodes, "127.77.200.2")

	beforeSeen := seenBy(t, nodes)
	beforePins := pinsOf(t)
	offset := clog.Offset(t)
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 1,
		},
	}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(2 * time.Minute)
	statuses := map[string]int{}
	for i := 0; i < requests && time.Now().Before(deadline); i++ {
		var raw [15]byte
		_, _ = rand.Read(raw[:])
		sid := base64.RawURLEncoding.EncodeToString(raw[:]) // 20 chars, like engine.io's
		resp, err := client.Get(fmt.Sprintf("http://%s/socket.io/?EIO=4&transport=polling&sid=%s", siteAddr, sid))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		key := fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("X-Sio-Node"))
		if !bytes.Contains(body, []byte(`"code":1`)) {
			key += " " + string(body)
		}
		statuses[key]++
	}
	wantKey := fmt.Sprintf("400 %s", want.Name)
	if len(statuses) != 1 || statuses[wantKey] != requests {
		t.Errorf("answers %v, want %d × %q (Session ID unknown)", statuses, requests, wantKey)
	}
	if got := seenBy(t, nodes).delta(beforeSeen); len(got) != 1 || got[want.Name] != requests {
		t.Errorf("nodes received %v, want %d on %s", got, requests, want.Name)
	}
	checkPins(t, beforePins, pinsOf(t), false, nil)
	clog.Await(t, offset, logWant{Logger: logPolicy, Msg: "selected upstream", Fields: map[string]string{"route": "unknown", "upstream": want.Dial()}})
	if n := clog.Count(t, offset, logWant{Logger: logPolicy, Msg: "selected upstream", Fields: map[string]string{"route": "unknown"}}); n != requests {
		t.Errorf("policy logged %d routes by client IP for unknown sids, want %d", n, requests)
	}
	checkNoPanic(t, clog, offset)
}

// fakeNode is a malicious or broken upstream: a plain net/http server in
// the test process that answers each polling handshake as the request's
// `case` parameter says.
type fakeNode struct {
	srv  *http.Server
	ln   net.Listener
	mu   sync.Mutex
	hits map[string]int
	oks  int
}

func (f *fakeNode) Dial() string { return f.ln.Addr().String() }

func (f *fakeNode) hitsOf(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[key]
}

// openPacket is a valid v4 open packet for sid.
func openPacket(sid string) string {
	return `0{"sid":"` + sid + `","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`
}

// backendBody is a response body, written the same way by the fake node
// and by the test that computes what the client must receive.
type backendBody func(w io.Writer)

func bodyOf(s string) backendBody {
	return func(w io.Writer) { _, _ = io.WriteString(w, s) }
}

func (b backendBody) digest() (int64, string) {
	h := sha256.New()
	cw := &countWriter{w: h}
	b(cw)
	return cw.n, hex.EncodeToString(h.Sum(nil))
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.w.Write(p)
}

// hijacked answers with raw bytes on the connection and closes it.
func hijacked(raw string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString(raw)
		_ = brw.Flush()
	}
}

// TestHostileBackends puts a malicious or broken upstream behind the
// socketio handler and policy. For every odd answer to a polling
// handshake: Caddy does not panic and keeps serving (a normal handshake
// right after is learned), the client gets the upstream's response
// unchanged (or the usual 502 / aborted response), no pin is created, the
// handler or Caddy logs why, and the heap stays bounded.
func TestHostileBackends(t *testing.T) {
	requireNode(t)
	clog := newCaddyLog(t)
	tester := caddytester.NewTester(t)

	chunk := bytes.Repeat([]byte("x"), 64<<10)
	oversize := backendBody(func(w io.Writer) {
		_, _ = io.WriteString(w, "0{")
		for range 160 { // 10 MiB
			_, _ = w.Write(chunk)
		}
	})
	bombPlain := 100 << 20
	gzipBomb := compress(t, "gzip", `0{"sid":"`, bombPlain)
	zlibBomb := compress(t, "deflate", `0{"sid":"`, bombPlain)
	junk := make([]byte, 64<<10)
	rng := mrand.NewChaCha8([32]byte{42})
	_, _ = rng.Read(junk)
	// v3 binary framing with too many length digits, then noise
	binaryJunk := append([]byte{0x00, 9, 9, 9, 9, 9, 9, 9, 9, 0xff}, junk...)

	type backendCase struct {
		name       string
		headers    map[string]string // response headers (plain cases)
		body       backendBody       // plain cases: the body, with its Content-Length
		raw        http.HandlerFunc  // raw cases: the whole answer
		reqHeaders []string          // more request headers
		status     int               // 0: no complete response (aborted)
		// what the client must receive, when not the upstream's body and
		// headers unchanged ("" header value: absent)
		clientBody    backendBody
		clientHeaders map[string]string
		logs          []logWant
		memLimit      uint64 // if set: at most this many bytes allocated while it runs
	}
	notLearned := func(err string) []logWant {
		return []logWant{{Logger: logHandler, Msg: "handshake response not learned", Level: "debug", Fields: map[string]string{"error": err}}}
	}
	text := map[string]string{"Content-Type": "text/plain; charset=UTF-8"}
	cases := []backendCase{
		{name: "body 10 MiB after 0{", headers: text, body: oversize, status: 200,
			logs: notLearned("incomplete open packet"), memLimit: 10 << 20 / 4},
		{name: "truncated body", raw: hijacked("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: 1000\r\n\r\n" + `0{"sid":"truncated1","upgr`),
			logs: []logWant{{Logger: logProxy, Msg: "aborting with incomplete response", Level: "warn"}}},
		{name: "bad chunked framing", raw: hijacked("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=UTF-8\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + `0{"sid":"chunky1"` + "\r\nzz\r\n"),
			logs: []logWant{{Logger: logProxy, Msg: "aborting with incomplete response", Level: "warn"}}},
		{name: `invalid JSON 0{"sid":`, headers: text, body: bodyOf(`0{"sid":`), status: 200,
			logs: notLearned("not an engine.io open packet")},
		{name: "binary junk", headers: map[string]string{"Content-Type": "application/octet-stream"}, body: bodyOf(string(binaryJunk)), status: 200,
			logs: notLearned("not an engine.io open packet")},
		{name: "gzip bomb", headers: map[string]string{"Content-Type": "text/plain; charset=UTF-8", "Content-Encoding": "gzip"}, body: bodyOf(string(gzipBomb)),
			reqHeaders: []string{"Accept-Encoding: gzip"}, status: 200,
			logs: notLearned("not an engine.io open packet"), memLimit: uint64(bombPlain) / 20},
		// a client that sends no Accept-Encoding lets Caddy's transport
		// (Go's, compression on by default) ask for gzip itself and
		// inflate the answer: 100 MiB stream through, in constant memory
		{name: "gzip bomb, client without Accept-Encoding", headers: map[string]string{"Content-Type": "text/plain; charset=UTF-8", "Content-Encoding": "gzip"}, body: bodyOf(string(gzipBomb)),
			status: 200, clientBody: repeated(`0{"sid":"`, 'a', bombPlain), clientHeaders: map[string]string{"Content-Type": "text/plain; charset=UTF-8", "Content-Encoding": ""},
			logs: notLearned("incomplete open packet"), memLimit: uint64(bombPlain) / 20},
		{name: "deflate bomb", headers: map[string]string{"Content-Type": "text/plain; charset=UTF-8", "Content-Encoding": "deflate"}, body: bodyOf(string(zlibBomb)), status: 200,
			logs: notLearned("not an engine.io open packet"), memLimit: uint64(bombPlain) / 20},
		{name: "unknown content encoding", headers: map[string]string{"Content-Type": "text/plain; charset=UTF-8", "Content-Encoding": "br"}, body: bodyOf("\x1b\x00\xf8\xa5\x40\x02"), status: 200,
			logs: notLearned("unsupported content encoding")},
		{name: "sid with &", headers: text, body: bodyOf(openPacket("a&sid=b")), status: 200,
			logs: notLearned("open packet carries an invalid sid")},
		{name: "sid 200 bytes", headers: text, body: bodyOf(openPacket(strings.Repeat("s", 200))), status: 200,
			logs: notLearned("open packet carries an invalid sid")},
		{name: "sid 10 kB", headers: text, body: bodyOf(openPacket(strings.Repeat("s", 10<<10))), status: 200,
			logs: notLearned("incomplete open packet")},
		{name: `connect packet 40{"sid":"x"}`, headers: text, body: bodyOf(`40{"sid":"x"}`), status: 200,
			logs: notLearned("not an engine.io open packet")},
		{name: "200 with HTML", headers: map[string]string{"Content-Type": "text/html; charset=utf-8"}, body: bodyOf("<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>\n"), status: 200,
			logs: notLearned("not an engine.io open packet")},
		{name: "HTML with an unusable io cookie", headers: map[string]string{"Content-Type": "text/html", "Set-Cookie": "io=a&sid=b; Path=/; HttpOnly"}, body: bodyOf("<html></html>"), status: 200,
			logs: notLearned("not an engine.io open packet")},
		{name: "connection closed without an answer", raw: hijacked(""), status: 502,
			logs: []logWant{{Logger: logError, Msg: "EOF", Level: "error", Fields: map[string]string{"status": "502"}}}},
		{name: "not HTTP", raw: hijacked("SSH-2.0-OpenSSH_9.2\r\n\r\n"), status: 502,
			logs: []logWant{{Logger: logError, Level: "error", Msg: `net/http: HTTP/1.x transport connection broken: malformed HTTP response "SSH-2.0-OpenSSH_9.2"`, Fields: map[string]string{"status": "502"}}}},
		// reverse_proxy drops a 101 the request did not ask for without
		// writing anything, and net/http then sends an empty 200: the
		// client should see the upstream failure, a 502
		{name: "101 to a polling handshake", raw: hijacked("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"), status: 502,
			logs: []logWant{{Logger: logProxy, Msg: "backend tried to switch to unexpected protocol via Upgrade header", Level: "debug"}}},
	}

	handlers := map[string]http.HandlerFunc{}
	for i, bc := range cases {
		key := fmt.Sprintf("c%d", i)
		if bc.raw != nil {
			handlers[key] = bc.raw
			continue
		}
		handlers[key] = func(w http.ResponseWriter, r *http.Request) {
			n, _ := bc.body.digest()
			for k, v := range bc.headers {
				w.Header().Set(k, v)
			}
			w.Header().Set("Content-Length", fmt.Sprint(n))
			w.WriteHeader(http.StatusOK)
			bc.body(w)
		}
	}
	fake := startFakeNode(t, handlers)
	site := fmt.Sprintf("\tsocketio\n\treverse_proxy %s {\n\t\tlb_policy socketio\n\t}", fake.Dial())
	loadConfig(t, tester, proxyConfig{Site: site, GlobalEx: clog.GlobalEx()}.Caddyfile())
	logStart := clog.Offset(t)

	for i, bc := range cases {
		t.Run(bc.name, func(t *testing.T) {
			key := fmt.Sprintf("c%d", i)
			ip := fmt.Sprintf("127.78.0.%d", i+1)
			beforePins := pinsOf(t)
			offset := clog.Offset(t)
			var heap *heapWatch
			if bc.memLimit > 0 {
				heap = watchHeap()
			}

			res := rawExchange(t, ip, request("GET", "/socket.io/?EIO=4&transport=polling&case="+key, bc.reqHeaders, ""))
			t.Logf("client got %v", res)

			if heap != nil {
				allocated, growth := heap.Stop()
				t.Logf("heap: %d kB allocated, in-use peak +%d kB", allocated>>10, growth>>10)
				if allocated > bc.memLimit || growth > bc.memLimit {
					t.Errorf("heap: %d bytes allocated, in-use peak +%d bytes; want at most %d", allocated, growth, bc.memLimit)
				}
			}
			switch {
			case bc.status == 0:
				if res.Err == nil && res.BodyErr == nil {
					t.Errorf("got a complete response %v, want it aborted", res)
				}
			case res.Err != nil || res.Status != bc.status:
				t.Errorf("got %v, want status %d", res, bc.status)
			case bc.body != nil:
				body, headers := bc.body, bc.headers
				if bc.clientBody != nil {
					body, headers = bc.clientBody, bc.clientHeaders
				}
				n, sum := body.digest()
				if res.BodyLen != n || res.BodySHA != sum || res.BodyErr != nil {
					t.Errorf("body of %d bytes (%v) differs from the expected %d bytes", res.BodyLen, res.BodyErr, n)
				}
				for k, v := range headers {
					if got := res.Header.Get(k); got != v {
						t.Errorf("header %s: %q, want the upstream's %q", k, got, v)
					}
				}
			}
			if n := fake.hitsOf(key); n != 1 {
				t.Errorf("the upstream got %d requests, want 1", n)
			}
			checkPins(t, beforePins, pinsOf(t), false, nil)
			clog.Await(t, offset, bc.logs...)

			// Caddy keeps serving and learning
			beforePins = pinsOf(t)
			offset = clog.Offset(t)
			ok := rawExchange(t, ip, request("GET", "/socket.io/?EIO=4&transport=polling&case=ok", nil, ""))
			if ok.Err != nil || ok.Status != 200 || !bytes.HasPrefix(ok.Body, []byte(`0{"sid":"ok`)) {
				t.Fatalf("normal handshake afterwards: %v", ok)
			}
			afterPins := pinsOf(t)
			if afterPins.Pinned != beforePins.Pinned+1 || afterPins.ByUpstream[fake.Dial()] != beforePins.ByUpstream[fake.Dial()]+1 {
				t.Errorf("normal handshake afterwards not pinned: %+v -> %+v", beforePins, afterPins)
			}
			clog.Await(t, offset, logWant{Logger: logHandler, Msg: "learned session", Level: "debug", Fields: map[string]string{"upstream": fake.Dial()}})
		})
	}
	checkNoPanic(t, clog, logStart)
}

// repeated is prefix followed by n bytes c.
func repeated(prefix string, c byte, n int) backendBody {
	return func(w io.Writer) {
		_, _ = io.WriteString(w, prefix)
		chunk := bytes.Repeat([]byte{c}, 64<<10)
		for left := n; left > 0; {
			k := min(left, len(chunk))
			_, _ = w.Write(chunk[:k])
			left -= k
		}
	}
}

// compress returns prefix followed by n bytes of 'a' (n a multiple of
// 1 MiB), compressed: gzip as concatenated members (RFC 1952 §2.2; every
// gzip reader, Go's included, reads them as one stream), each 1 MiB
// compressed once, so that building a 100 MiB bomb is quick; deflate
// (zlib) at the fastest level.
func compress(t *testing.T, encoding, prefix string, n int) []byte {
	t.Helper()
	const mib = 1 << 20
	chunk := bytes.Repeat([]byte("a"), mib)
	var buf bytes.Buffer
	switch encoding {
	case "gzip":
		member := func(data ...[]byte) []byte {
			var m bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&m, gzip.BestCompression)
			for _, d := range data {
				_, _ = zw.Write(d)
			}
			if err := zw.Close(); err != nil {
				t.Fatal(err)
			}
			return m.Bytes()
		}
		buf.Write(member([]byte(prefix), chunk))
		rest := member(chunk)
		for i := 1; i < n/mib; i++ {
			buf.Write(rest)
		}
	case "deflate":
		zw, _ := zlib.NewWriterLevel(&buf, zlib.BestSpeed)
		_, _ = io.WriteString(zw, prefix)
		for i := 0; i < n/mib; i++ {
			_, _ = zw.Write(chunk)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// startFakeNode serves handlers by the request's `case` parameter on a
// loopback port; `case=ok` answers a fresh, valid open packet. Every
// answer closes its connection, so that no request is retried on a
// reused one.
func startFakeNode(t *testing.T, handlers map[string]http.HandlerFunc) *fakeNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNode{ln: ln, hits: map[string]int{}}
	f.srv = &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			key := r.URL.Query().Get("case")
			f.mu.Lock()
			f.hits[key]++
			if key == "ok" {
				f.oks++
			}
			oks := f.oks
			f.mu.Unlock()
			if key == "ok" {
				w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
				_, _ = io.WriteString(w, openPacket(fmt.Sprintf("ok%d", oks)))
				return
			}
			if h := handlers[key]; h != nil {
				h(w, r)
				return
			}
			http.Error(w, "no such case", http.StatusNotFound)
		}),
	}
	f.srv.SetKeepAlivesEnabled(false)
	go func() { _ = f.srv.Serve(ln) }()
	t.Cleanup(func() { _ = f.srv.Close() })
	return f
}

// TestHostileBodiesDoNotFailTheOwner runs the strictest passive health
// checks (max_fails 1, as in the README's recommended settings) and has
// one client send bodies with bad chunked framing, on requests of every
// kind, on the node of another client's session (issue 10, item 1). A
// client's malformed body is not a failure of the node: the other
// session must keep working after each. Caddy alone answers these 502
// and counts the error of reading the client's body as an upstream
// failure, so the node would leave the pool and every request of its
// sessions would get 503.
func TestHostileBodiesDoNotFailTheOwner(t *testing.T) {
	requireNode(t)
	tester := caddytester.NewTester(t)
	nodes := startCluster(t, 2, nil)
	clog := newCaddyLog(t)
	loadConfig(t, tester, proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio",
		Extra: "\t\tfail_duration 30s\n\t\tmax_fails 1", GlobalEx: clog.GlobalEx()}.Caddyfile())
	const victim = "127.77.210.1"
	vsid, owner := openSession(t, nodes, victim)
	attacker := ""
	for k := 1; k < 200 && attacker == ""; k++ {
		if ip := fmt.Sprintf("127.77.211.%d", k); hashNode(nodes, ip) == owner {
			attacker = ip
		}
	}
	const (
		chunked   = "Transfer-Encoding: chunked"
		malformed = "zz\r\n40\r\n0\r\n\r\n"
	)
	ws := []string{"Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", chunked}
	attacks := []struct {
		name    string
		req     func(asid string) []byte
		refused bool // 400 from the handler; else whatever Caddy answers a broken body, but no 5xx
	}{
		{"fail/polling POST", func(asid string) []byte {
			return request("POST", "/socket.io/?EIO=4&transport=polling&sid="+asid, []string{chunked}, malformed)
		}, true},
		{"fail/GET poll", func(asid string) []byte {
			return request("GET", "/socket.io/?EIO=4&transport=polling&sid="+asid, []string{chunked}, malformed)
		}, true},
		{"fail/CORS preflight", func(asid string) []byte {
			return request("OPTIONS", "/socket.io/?EIO=4&transport=polling&sid="+asid, []string{"Origin: http://example.test", chunked}, malformed)
		}, true},
		{"fail/websocket upgrade", func(asid string) []byte {
			return request("GET", "/socket.io/?EIO=4&transport=websocket&sid="+asid, ws, malformed)
		}, true},
		{"fail/POST without sid", func(string) []byte {
			return request("POST", "/socket.io/?EIO=4&transport=polling", []string{chunked}, malformed)
		}, true},
		{"fail/POST with an unknown transport", func(asid string) []byte {
			return request("POST", "/socket.io/?EIO=4&transport=webtransport&sid="+asid, []string{chunked}, malformed)
		}, false},
		{"fail/not Engine.IO, under the path", func(string) []byte {
			return request("POST", "/socket.io/upload", []string{chunked}, malformed)
		}, false},
		{"fail/outside the path", func(string) []byte {
			return request("POST", "/api/upload", []string{chunked}, malformed)
		}, false},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			// the attacker's own session, on the victim's node
			// (client-IP hashing places it there)
			asid, node := openSession(t, nodes, attacker)
			if node != owner {
				t.Fatalf("attacker's session on %s, want %s", node.Name, owner.Name)
			}
			seen := seenBy(t, nodes)
			res := rawExchange(t, attacker, a.req(asid))
			switch {
			case a.refused && res.Status != http.StatusBadRequest:
				t.Errorf("got %v, want 400 from the handler", res)
			case a.refused && len(seenBy(t, nodes).delta(seen)) != 0:
				t.Errorf("a refused request reached a node")
			case res.Status >= 500:
				t.Errorf("got %v: a client's broken body answered as a server error", res)
			}
			res = rawExchange(t, victim, request("POST", "/socket.io/?EIO=4&transport=polling&sid="+vsid, []string{"Content-Type: text/plain;charset=UTF-8"}, "6"))
			if res.Err != nil || res.Status != 200 || res.Header.Get("X-Sio-Node") != owner.Name {
				t.Fatalf("victim's session after the attack: got %v, want 200 from %s", res, owner.Name)
			}
		})
	}
}

// TestHostileBackendMintsLiveSID has a malicious upstream mint the sid of
// a live session of another node (colluding with a client that asks for
// it). The handler pins it beside the first owner (a collision, logged
// as a warning) instead of moving the pin: the session's own client keeps
// reaching the node that minted it, and only the colluding client's
// requests go to the malicious one.
func TestHostileBackendMintsLiveSID(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 1, nil)
	real := nodes[0]
	fake := startFakeNode(t, map[string]http.HandlerFunc{
		"mint": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
			_, _ = io.WriteString(w, openPacket(r.URL.Query().Get("mint")))
		},
	})
	tester := caddytester.NewTester(t)
	clog := newCaddyLog(t)
	// new sessions are placed by the X-Place header, so that the test
	// chooses the upstream of each handshake
	site := fmt.Sprintf("\tsocketio\n\treverse_proxy %s %s {\n\t\tlb_policy socketio {\n\t\t\tfallback header X-Place\n\t\t}\n\t}", real.Dial(), fake.Dial())
	loadConfig(t, tester, proxyConfig{Site: site, GlobalEx: clog.GlobalEx()}.Caddyfile())
	place := map[string]string{}
	pool := []*sioNode{real, {Name: "fake"}}
	dials := map[*sioNode]string{pool[0]: real.Dial(), pool[1]: fake.Dial()}
	for k := 0; k < 100 && len(place) < 2; k++ {
		v := fmt.Sprintf("p%d", k)
		i := selectionHash(pool, func(n *sioNode) string { return dials[n] }, v)
		if _, ok := place[pool[i].Name]; !ok {
			place[pool[i].Name] = v
		}
	}
	const victim, attacker = "127.77.220.1", "127.77.220.2"

	res := rawExchange(t, victim, request("GET", "/socket.io/?EIO=4&transport=polling", []string{"X-Place: " + place[real.Name]}, ""))
	sid, err := handshakeSID(res.Body)
	if err != nil || res.Header.Get("X-Sio-Node") != real.Name {
		t.Fatalf("victim's handshake: %v (%v)", res, err)
	}

	before := pinsOf(t)
	offset := clog.Offset(t)
	res = rawExchange(t, attacker, request("GET", "/socket.io/?EIO=4&transport=polling&case=mint&mint="+sid, []string{"X-Place: " + place["fake"]}, ""))
	if got, _ := handshakeSID(res.Body); res.Status != 200 || got != sid {
		t.Fatalf("malicious handshake: %v", res)
	}
	after := pinsOf(t)
	if after.Collisions != before.Collisions+1 || after.Pinned != before.Pinned+1 || after.ByUpstream[real.Dial()] != before.ByUpstream[real.Dial()] {
		t.Errorf("pin store went from %+v to %+v, want one collision beside the live pin", before, after)
	}
	clog.Await(t, offset, logWant{Logger: logHandler, Msg: "two upstreams minted the same Engine.IO session id", Prefix: true, Level: "warn", Fields: map[string]string{"upstream": fake.Dial()}})

	// the session's own client still reaches the node that minted it
	seenBefore := seenBy(t, nodes)
	offset = clog.Offset(t)
	res = rawExchange(t, victim, request("POST", "/socket.io/?EIO=4&transport=polling&sid="+sid, []string{"Content-Type: text/plain;charset=UTF-8"}, "6"))
	if res.Status != 200 || res.Header.Get("X-Sio-Node") != real.Name || string(res.Body) != "ok" {
		t.Errorf("victim's POST: %v, want 200 ok from %s", res, real.Name)
	}
	if got := seenBy(t, nodes).delta(seenBefore); got[real.Name] != 1 {
		t.Errorf("nodes received %v, want one request on %s", got, real.Name)
	}
	clog.Await(t, offset, logWant{Logger: logPolicy, Msg: "selected upstream", Fields: map[string]string{"route": "owner", "upstream": real.Dial()}})

	// the colluding client's requests go to the node that minted it for them
	seenBefore = seenBy(t, nodes)
	fakeBefore := fake.hitsOf("")
	res = rawExchange(t, attacker, request("POST", "/socket.io/?EIO=4&transport=polling&sid="+sid, []string{"Content-Type: text/plain;charset=UTF-8"}, "6"))
	if got := seenBy(t, nodes).delta(seenBefore); len(got) != 0 || fake.hitsOf("") != fakeBefore+1 {
		t.Errorf("attacker's POST (%v) reached %v and the malicious upstream %d times, want only the malicious upstream", res, got, fake.hitsOf("")-fakeBefore)
	}
}

// selectionHash is hashNode for any pool: Caddy's rendezvous hashing of key.
func selectionHash(pool []*sioNode, dial func(*sioNode) string, key string) int {
	return selection.Hash(selection.Pool[*sioNode]{Upstreams: pool, Dial: dial, Available: func(*sioNode) bool { return true }}, key)
}

package caddytest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// nodeStats is the part of a node's /__stats the tests read.
type nodeStats struct {
	Node             string `json:"node"`
	Handshakes       int    `json:"handshakes"`
	IOConnections    int    `json:"ioConnections"`
	OpenSessions     int    `json:"openSessions"`
	Upgrades         int    `json:"upgrades"`
	ConnectionErrors struct {
		Total  int            `json:"total"`
		ByCode map[string]int `json:"byCode"`
		// sio-node.js only (0 elsewhere): the "Session ID unknown"
		// answers to late requests of a session the node minted and had
		// already ended
		UnknownSIDEnded int `json:"unknownSidEnded"`
		// the last few errors, oldest first: which requests they were
		Recent []struct {
			Code          any    `json:"code"`
			Method        string `json:"method"`
			URL           string `json:"url"`
			RemoteAddress string `json:"remoteAddress"`
			At            string `json:"at"`
			// sio-node.js only: whether the node minted the sid,
			// and how long before the request its session ended
			MintedHere  bool   `json:"mintedHere"`
			ClosedMsAgo *int64 `json:"closedMsAgo"`
			CloseReason string `json:"closeReason"`
		} `json:"recent"`
	} `json:"connectionErrors"`
	Requests struct {
		Total      int `json:"total"`
		WithSid    int `json:"withSid"`
		WithoutSid int `json:"withoutSid"`
	} `json:"requests"`
	// sio-node.js only: handshake answers that set the io cookie, and
	// that were compressed
	HandshakeCookies     int `json:"handshakeCookies"`
	CompressedHandshakes int `json:"compressedHandshakes"`
}

// UnknownSID is how many requests this node answered "Session ID unknown".
func (s nodeStats) UnknownSID() int { return s.ConnectionErrors.ByCode["1"] }

func (n *sioNode) stats(t testing.TB) nodeStats {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/__stats", n.Dial()))
	if err != nil {
		t.Fatalf("%s stats: %v", n.Name, err)
	}
	defer resp.Body.Close()
	var s nodeStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("%s stats: %v", n.Name, err)
	}
	return s
}

// clusterStats sums what matters across nodes.
type clusterStats struct {
	PerNode              map[string]nodeStats
	UnknownSID           int
	UnknownSIDEnded      int
	Handshakes           int
	HandshakeCookies     int
	CompressedHandshakes int
}

func statsOf(t testing.TB, nodes []*sioNode) clusterStats {
	t.Helper()
	cs := clusterStats{PerNode: map[string]nodeStats{}}
	for _, n := range nodes {
		s := n.stats(t)
		cs.PerNode[n.Name] = s
		cs.UnknownSID += s.UnknownSID()
		cs.UnknownSIDEnded += s.ConnectionErrors.UnknownSIDEnded
		cs.Handshakes += s.Handshakes
		cs.HandshakeCookies += s.HandshakeCookies
		cs.CompressedHandshakes += s.CompressedHandshakes
	}
	return cs
}

// settle waits, up to limit, until no node holds an open session, and
// then a moment longer. The last requests of a client's shutdown (its
// disconnect and close packets, a poll cut short) reach the nodes after
// the client process has exited: they belong to the run that made them,
// not to the next one.
func settle(t testing.TB, nodes []*sioNode, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		open := 0
		for _, s := range statsOf(t, nodes).PerNode {
			open += s.OpenSessions
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Logf("settle: %d sessions still open after %v", open, limit)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
}

// checkNoMisroutedRequests fails the test if, between before and after,
// any node answered "Session ID unknown" to a request whose sid it never
// minted: a request the proxy routed to the wrong node. The owner's own
// answer to a late request of a session it had already ended (a client's
// request racing its session's close, as happens without any proxy) is
// no routing failure: it is logged, not failed. Servers that cannot tell
// the two apart (python-socketio, zishang520) count every answer as
// misrouted. what names the run in messages.
func checkNoMisroutedRequests(t testing.TB, what string, before, after clusterStats) {
	t.Helper()
	ended := after.UnknownSIDEnded - before.UnknownSIDEnded
	misrouted := after.UnknownSID - before.UnknownSID - ended
	if misrouted != 0 {
		t.Errorf("%s: nodes answered %d requests for sids they never minted with \"Session ID unknown\" (and %d late requests of sessions they had ended); their recent errors:%s",
			what, misrouted, ended, after.recentErrors())
	} else if ended != 0 {
		t.Logf("%s: the owners answered %d late requests of sessions they had already ended with \"Session ID unknown\"; their recent errors:%s",
			what, ended, after.recentErrors())
	}
}

// recentErrors describes the last connection errors each node recorded,
// for failure messages: which requests a count of errors stands for.
func (cs clusterStats) recentErrors() string {
	var b strings.Builder
	for name, s := range cs.PerNode {
		for _, e := range s.ConnectionErrors.Recent {
			fmt.Fprintf(&b, "\n\t%s: code %v, %s %s from %s at %s", name, e.Code, e.Method, e.URL, e.RemoteAddress, e.At)
			switch {
			case !e.MintedHere:
				b.WriteString(" (sid not minted by this node)")
			case e.ClosedMsAgo != nil:
				fmt.Fprintf(&b, " (sid minted here, session ended %d ms before: %s)", *e.ClosedMsAgo, e.CloseReason)
			default:
				b.WriteString(" (sid minted here, session open)")
			}
		}
	}
	return b.String()
}

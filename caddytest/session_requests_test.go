package caddytest

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

// rawResult is what testdata/eio-raw.js reports for one session.
type rawResult struct {
	SID           string         `json:"sid"`
	HandshakeNode string         `json:"handshakeNode"`
	Nodes         map[string]int `json:"nodes"`
	SameNode      bool           `json:"sameNode"`
	Statuses      map[string]int `json:"statuses"`
	OK            bool           `json:"ok"`
	Error         string         `json:"error"`
}

// runRaw runs one hand-made Engine.IO session through the test Caddy.
func runRaw(t *testing.T, flags ...string) rawResult {
	t.Helper()
	args := append([]string{filepath.Join(repoRoot(t), "caddytest", "testdata", "eio-raw.js"), "--url", "http://" + siteAddr}, flags...)
	out, err := exec.Command("node", args...).Output()
	if err != nil {
		t.Fatalf("eio-raw %v: %v", flags, err)
	}
	var res rawResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("eio-raw output %q: %v", out, err)
	}
	return res
}

// TestSessionRequestsReachOwner makes sessions by hand, request by request,
// in every framing a client may use — CORS preflights (which carry no
// cookies), POSTs and polls, protocol v3 and v4, JSONP, compressed
// answers — and checks that every request of each session reached the
// node that minted its sid. New sessions are placed by least_conn, so only
// the learned pins keep them together.
func TestSessionRequestsReachOwner(t *testing.T) {
	requireNode(t)
	tester := caddytester.NewTester(t)
	cors := map[string]any{"cors": map[string]any{"origin": "*"}}
	gzip0 := map[string]any{"httpCompression": map[string]any{"threshold": 0}}
	tests := []struct {
		name   string
		server serverSpec
		flags  []string
		want   string // a status every session must show, e.g. "preflight:204"
	}{
		{"v4 polling with preflights", serverSpec{Options: cors}, []string{"--preflights", "3"}, "preflight:204"},
		{"v4 JSONP", serverSpec{Options: cors}, []string{"--jsonp", "--preflights", "0"}, "post:200"},
		{"v4 gzip", serverSpec{Options: merge(cors, gzip0)}, []string{"--accept-encoding", "gzip", "--preflights", "1"}, "preflight:204"},
		{"v3 on socket.io@4 allowEIO3", serverSpec{Options: merge(cors, map[string]any{"allowEIO3": true})}, []string{"--eio", "3", "--preflights", "2"}, "preflight:204"},
		{"v3 on socket.io@2", serverSpec{Env: map[string]string{"SIO_VERSION": "2"}}, []string{"--eio", "3", "--preflights", "2"}, "preflight:200"},
		{"v3 JSONP on socket.io@2", serverSpec{Env: map[string]string{"SIO_VERSION": "2"}}, []string{"--eio", "3", "--jsonp", "--preflights", "0"}, "post:200"},
		{"v3 deflate on socket.io@2", serverSpec{Env: map[string]string{"SIO_VERSION": "2"}, Options: gzip0}, []string{"--eio", "3", "--accept-encoding", "deflate", "--preflights", "0"}, "post:200"},
	}
	const sessions = 9
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := startClusterOf(t, 3, tt.server)
			loadConfig(t, tester, proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio {\n\t\t\tfallback round_robin\n\t\t}"}.Caddyfile())
			before := statsOf(t, nodes)
			pinned := pinsOf(t).Pinned
			perNode := map[string]int{}
			for s := 0; s < sessions; s++ {
				res := runRaw(t, append([]string{"--local-address", fmt.Sprintf("127.9.%d.%d", i, s+1)}, tt.flags...)...)
				if !res.OK || !res.SameNode || res.Statuses[tt.want] == 0 {
					t.Errorf("session %d: ok %v, same node %v, nodes %v, statuses %v, error %q",
						s, res.OK, res.SameNode, res.Nodes, res.Statuses, res.Error)
				}
				perNode[res.HandshakeNode]++
			}
			after := statsOf(t, nodes)
			checkNoMisroutedRequests(t, "session requests", before, after)
			if n := pinsOf(t).Pinned - pinned; n != sessions {
				t.Errorf("learned %d of %d handshakes", n, sessions)
			}
			if len(perNode) != 3 {
				t.Errorf("handshakes on %d nodes, want 3 (round robin): %v", len(perNode), perNode)
			}
		})
	}
}

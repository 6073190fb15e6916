package caddytest

import (
	"fmt"
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

// dialect is a Socket.IO server setup and the official client that goes
// with it.
type dialect struct {
	name        string
	server      serverSpec
	clientFlags []string // sio-clients.js flags every run of this dialect needs
	// check asserts what proves the dialect was really exercised
	check func(t *testing.T, before, after clusterStats, clients int)
	// wantCollisions: nodes mint the same sids, and the pin store must
	// have seen them collide
	wantCollisions bool
}

var dialects = []dialect{
	{
		name:        "socket.io@2 with socket.io-client@2",
		server:      serverSpec{Env: map[string]string{"SIO_VERSION": "2"}, Options: fastPing},
		clientFlags: []string{"--client-version", "2"},
		check: func(t *testing.T, before, after clusterStats, clients int) {
			// engine.io 3 sets the io cookie on every handshake by default
			if n := after.HandshakeCookies - before.HandshakeCookies; n != clients {
				t.Errorf("%d handshakes set the io cookie, want %d", n, clients)
			}
		},
	},
	{
		name:        "socket.io@4 allowEIO3 with socket.io-client@2",
		server:      serverSpec{Options: merge(fastPing, map[string]any{"allowEIO3": true})},
		clientFlags: []string{"--client-version", "2"},
	},
	{
		name:        "socket.io@4 with cookie",
		server:      serverSpec{Options: merge(fastPing, map[string]any{"cookie": true})},
		clientFlags: []string{"--with-credentials"},
		check: func(t *testing.T, before, after clusterStats, clients int) {
			if n := after.HandshakeCookies - before.HandshakeCookies; n != clients {
				t.Errorf("%d handshakes set the io cookie, want %d", n, clients)
			}
		},
	},
	{
		name:        "socket.io@4 with httpCompression threshold 0",
		server:      serverSpec{Options: merge(fastPing, map[string]any{"httpCompression": map[string]any{"threshold": 0}})},
		clientFlags: []string{"--accept-encoding", "gzip"},
		check: func(t *testing.T, before, after clusterStats, clients int) {
			if n := after.CompressedHandshakes - before.CompressedHandshakes; n != clients {
				t.Errorf("%d handshake answers were compressed, want %d", n, clients)
			}
		},
	},
	{
		name:   "python-socketio 5 (aiohttp) with socket.io-client@4",
		server: serverSpec{Impl: "python", Options: fastPing},
	},
	{
		name:   "zishang520/socket.io v3 (Go) with socket.io-client@4",
		server: serverSpec{Impl: "go", Options: fastPing},
	},
	{
		// every node mints "1", "2", …: the same sids at once on several
		// nodes, told apart by client address
		name:           "socket.io@4 minting colliding sids",
		server:         serverSpec{Env: map[string]string{"SIO_SID_MODE": "sequential"}, Options: fastPing},
		wantCollisions: true,
	},
}

func merge(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// TestDialects runs a three-node cluster of each Socket.IO server setup
// behind Caddy with the socketio handler and `fallback least_conn` (so that
// every session depends on its handshake having been learned), with its
// own official client, default transports and polling only: every client
// connects (and upgrades), sessions keep working, and no node ever answers
// "Session ID unknown".
func TestDialects(t *testing.T) {
	requireNode(t)
	tester := caddytester.NewTester(t)
	const clients = 30
	for di, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			if d.server.Impl == "python" {
				requirePython(t)
			}
			nodes := startClusterOf(t, 3, d.server)
			loadConfig(t, tester, proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio {\n\t\t\tfallback least_conn\n\t\t}"}.Caddyfile())
			for ti, transports := range []string{"polling,websocket", "polling"} {
				t.Run(transports, func(t *testing.T) {
					before := statsOf(t, nodes)
					pinsBefore := pinsOf(t)
					flags := append([]string{
						"--count", fmt.Sprint(clients), "--transports", transports,
						"--local-address-range", fmt.Sprintf("127.8.%d.1-127.8.%d.250", 2*di+ti, 2*di+ti),
						"--connect-timeout-ms", "8000", "--hold-ms", "1500", "--echo-interval-ms", "300",
					}, d.clientFlags...)
					if transports != "polling" {
						flags = append(flags, "--expect-upgrade")
					}
					res := runClients(t, flags...)
					settle(t, nodes, 5*time.Second)
					after := statsOf(t, nodes)
					pinsAfter := pinsOf(t)

					if res.Connected != clients {
						t.Errorf("connected %d of %d; errors %+v", res.Connected, clients, res.ConnectErrors)
					}
					if transports != "polling" && res.Upgraded != clients {
						t.Errorf("upgraded %d of %d; errors %+v", res.Upgraded, clients, res.UpgradeErrors)
					}
					if res.EchoFailed != 0 || res.EchoNodeMismatch != 0 || res.DisconnectsDuringHold.Count != 0 {
						t.Errorf("echo failures %d, answers from another node %d, disconnects %d",
							res.EchoFailed, res.EchoNodeMismatch, res.DisconnectsDuringHold.Count)
					}
					checkNoMisroutedRequests(t, transports, before, after)
					if n := pinsAfter.Pinned - pinsBefore.Pinned; n != uint64(clients) {
						t.Errorf("the handler learned %d handshakes, want %d", n, clients)
					}
					if d.check != nil {
						d.check(t, before, after, clients)
					}
					if d.wantCollisions && pinsAfter.Collisions == pinsBefore.Collisions {
						t.Error("no sid collision happened: the test does not exercise the collision rule")
					}
					t.Logf("per node %v; collisions so far %d", res.PerNode, pinsAfter.Collisions)
				})
			}
		})
	}
}

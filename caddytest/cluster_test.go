package caddytest

import (
	"fmt"
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

// fastPing keeps the servers' heartbeat short so that broken sessions show
// within a test's few seconds.
var fastPing = map[string]any{"pingInterval": 2000, "pingTimeout": 2000}

// crowdedPing is fastPing with room for a crowded machine: with hundreds
// of sessions and a Caddy built with -race on two cores, a client or
// node can be kept from the CPU for more than pingTimeout, and then ends a
// healthy session ("ping timeout") that no routing decision touched.
var crowdedPing = map[string]any{"pingInterval": 2000, "pingTimeout": 6000}

// TestClusterTransports runs three socket.io@4 nodes behind Caddy with the
// socketio handler and policy, and clients with each transport setup: every
// client connects, every upgrade succeeds, every session keeps working
// through a hold with echoes, and no node ever answers "Session ID
// unknown".
func TestClusterTransports(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 3, fastPing)
	tester := caddytester.NewTester(t)
	loadConfig(t, tester, proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio"}.Caddyfile())

	tests := []struct {
		name          string
		transports    string
		expectUpgrade bool
	}{
		{name: "default", transports: "polling,websocket", expectUpgrade: true},
		{name: "polling-only", transports: "polling"},
		{name: "websocket-only", transports: "websocket"},
	}
	const clients = 30
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := statsOf(t, nodes)
			flags := []string{
				"--count", fmt.Sprint(clients), "--transports", tt.transports,
				"--local-address-range", fmt.Sprintf("127.2.%d.1-127.2.%d.250", i, i),
				"--hold-ms", "2500", "--echo-interval-ms", "500",
			}
			if tt.expectUpgrade {
				flags = append(flags, "--expect-upgrade")
			}
			res := runClients(t, flags...)
			settle(t, nodes, 5*time.Second)
			after := statsOf(t, nodes)

			if res.Connected != clients {
				t.Errorf("connected %d of %d clients; errors: %+v", res.Connected, clients, res.ConnectErrors)
			}
			if tt.expectUpgrade && res.Upgraded != clients {
				t.Errorf("upgraded %d of %d clients; errors: %+v", res.Upgraded, clients, res.UpgradeErrors)
			}
			if res.EchoFailed != 0 || res.EchoOK == 0 {
				t.Errorf("echo ok %d, failed %d", res.EchoOK, res.EchoFailed)
			}
			if res.DisconnectsDuringHold.Count != 0 {
				t.Errorf("%d sessions dropped during the hold: %v", res.DisconnectsDuringHold.Count, res.DisconnectsDuringHold.Reasons)
			}
			checkNoMisroutedRequests(t, tt.name, before, after)
			if n := after.Handshakes - before.Handshakes; n != clients {
				t.Errorf("nodes saw %d handshakes for %d clients (reconnects?)", n, clients)
			}
			t.Logf("per node: %v; transports at end: %v", res.PerNode, res.TransportsAtEnd)
		})
	}
}

// TestRoundRobinBreaksSessions shows the failure the project exists for and
// its fix on the same cluster and clients: behind round robin, requests of a
// session reach nodes that did not mint it, which answer "Session ID
// unknown", and clients fail or never upgrade; behind the socketio policy
// every client connects and upgrades.
func TestRoundRobinBreaksSessions(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 3, fastPing)
	tester := caddytester.NewTester(t)
	const clients = 30
	flags := []string{"--count", fmt.Sprint(clients), "--expect-upgrade", "--connect-timeout-ms", "5000"}

	t.Run("round_robin", func(t *testing.T) {
		loadConfig(t, tester, proxyConfig{Nodes: nodes, Policy: "round_robin"}.Caddyfile())
		before := statsOf(t, nodes)
		res := runClients(t, append(flags, "--local-address-range", "127.3.0.1-127.3.0.250")...)
		settle(t, nodes, 5*time.Second)
		after := statsOf(t, nodes)
		unknown := after.UnknownSID - before.UnknownSID
		t.Logf("round_robin: connected %d, upgraded %d of %d; \"Session ID unknown\" answers: %d; errors: %+v",
			res.Connected, res.Upgraded, clients, unknown, res.ConnectErrors)
		if unknown == 0 {
			t.Error("no node answered \"Session ID unknown\" behind round robin")
		}
		if res.Connected == clients && res.Upgraded == clients {
			t.Error("every client connected and upgraded behind round robin")
		}
	})
	t.Run("socketio", func(t *testing.T) {
		loadConfig(t, tester, proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio"}.Caddyfile())
		before := statsOf(t, nodes)
		res := runClients(t, append(flags, "--local-address-range", "127.3.1.1-127.3.1.250")...)
		settle(t, nodes, 5*time.Second)
		after := statsOf(t, nodes)
		if res.Connected != clients || res.Upgraded != clients {
			t.Errorf("socketio: connected %d, upgraded %d of %d; errors: %+v %+v",
				res.Connected, res.Upgraded, clients, res.ConnectErrors, res.UpgradeErrors)
		}
		checkNoMisroutedRequests(t, "socketio", before, after)
	})
}

// TestOneSourceAddress puts 60 clients behind one address, as behind a NAT.
// Client-IP hashing (nginx's ip_hash, and the default fallback) piles them
// all on one node; with `fallback least_conn` and the handler learning each
// handshake, they spread over every node and all of them work. Without the
// handler, the same fallback breaks sessions: that is what learning buys.
func TestOneSourceAddress(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 3, fastPing)
	tester := caddytester.NewTester(t)
	const clients = 60
	leastConn := "socketio {\n\t\t\tfallback least_conn\n\t\t}"

	run := func(t *testing.T, cfg proxyConfig, addr string) (clientResult, int) {
		loadConfig(t, tester, cfg.Caddyfile())
		before := statsOf(t, nodes)
		res := runClients(t, "--count", fmt.Sprint(clients), "--expect-upgrade", "--local-address", addr,
			"--connect-timeout-ms", "5000", "--hold-ms", "1500", "--echo-interval-ms", "500")
		settle(t, nodes, 5*time.Second)
		after := statsOf(t, nodes)
		return res, after.UnknownSID - before.UnknownSID
	}

	t.Run("least_conn", func(t *testing.T) {
		res, unknown := run(t, proxyConfig{Nodes: nodes, Handler: true, Policy: leastConn}, "127.4.0.1")
		t.Logf("per node: %v", res.PerNode)
		if res.Connected != clients || res.Upgraded != clients || res.EchoFailed != 0 {
			t.Errorf("connected %d, upgraded %d of %d, echo failures %d; errors: %+v %+v",
				res.Connected, res.Upgraded, clients, res.EchoFailed, res.ConnectErrors, res.UpgradeErrors)
		}
		for _, n := range nodes {
			if got := res.PerNode[n.Name]; got < clients/5 {
				t.Errorf("%s got %d of %d sessions, want at least 20%%", n.Name, got, clients)
			}
		}
		if unknown != 0 {
			t.Errorf("nodes answered %d requests with \"Session ID unknown\"", unknown)
		}
	})
	t.Run("client_ip_hash", func(t *testing.T) {
		res, unknown := run(t, proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio"}, "127.4.0.2")
		t.Logf("per node: %v", res.PerNode)
		if res.Connected != clients || unknown != 0 {
			t.Errorf("connected %d of %d, %d \"Session ID unknown\"", res.Connected, clients, unknown)
		}
		if len(res.PerNode) != 1 {
			t.Errorf("client-IP hashing spread one address over %d nodes: %v", len(res.PerNode), res.PerNode)
		}
	})
	t.Run("least_conn_without_handler", func(t *testing.T) {
		res, unknown := run(t, proxyConfig{Nodes: nodes, Policy: leastConn}, "127.4.0.3")
		t.Logf("connected %d, upgraded %d; \"Session ID unknown\": %d", res.Connected, res.Upgraded, unknown)
		if unknown == 0 || (res.Connected == clients && res.Upgraded == clients) {
			t.Error("sessions placed by least_conn survived without the handler learning them")
		}
	})
}

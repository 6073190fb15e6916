package caddytest

import (
	"fmt"
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

// TestReloadKeepsPollingSessions holds polling-only sessions, echoing every
// 300 ms, while Caddy reloads the same config and then a config with one
// more upstream. Adding an upstream moves a quarter of the client-IP hash
// space, so only the pins, which must outlive both reloads, keep every
// session on its node.
func TestReloadKeepsPollingSessions(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 4, fastPing)
	tester := caddytester.NewTester(t)
	cfg := proxyConfig{Nodes: nodes[:3], Handler: true, Policy: "socketio"}
	loadConfig(t, tester, cfg.Caddyfile())

	const clients = 60
	before := statsOf(t, nodes)
	run := startClients(t, "--count", fmt.Sprint(clients), "--transports", "polling",
		"--local-address-range", "127.5.0.1-127.5.0.250",
		"--hold-ms", "9000", "--echo-interval-ms", "300")
	run.Ready()

	loadConfig(t, tester, cfg.Caddyfile()+"\n# same config, reloaded\n")
	time.Sleep(2 * time.Second)
	cfg.Nodes = nodes
	loadConfig(t, tester, cfg.Caddyfile())

	res := run.Result()
	after := statsOf(t, nodes)
	t.Logf("connected %d, echo ok %d, failed %d, per node %v", res.Connected, res.EchoOK, res.EchoFailed, res.PerNode)
	if res.Connected != clients {
		t.Fatalf("connected %d of %d clients before the reloads; errors: %+v", res.Connected, clients, res.ConnectErrors)
	}
	if res.DisconnectsDuringHold.Count != 0 || res.AliveAtEnd != clients {
		t.Errorf("%d sessions dropped across the reloads (%v); %d alive at the end",
			res.DisconnectsDuringHold.Count, res.DisconnectsDuringHold.Reasons, res.AliveAtEnd)
	}
	if res.EchoFailed != 0 || res.EchoNodeMismatch != 0 {
		t.Errorf("echo failures %d, answers from another node %d", res.EchoFailed, res.EchoNodeMismatch)
	}
	if n := after.UnknownSID - before.UnknownSID; n != 0 {
		t.Errorf("nodes answered %d requests with \"Session ID unknown\"", n)
	}
	if n := after.Handshakes - before.Handshakes; n != clients {
		t.Errorf("nodes saw %d handshakes for %d clients", n, clients)
	}
}

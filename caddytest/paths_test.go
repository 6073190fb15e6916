package caddytest

import (
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

// TestCustomPaths runs clusters whose Engine.IO endpoint is not the
// default: servers and clients configured with another path (the handler
// given the same path), and a site that mounts the cluster under a prefix
// that handle_path strips before proxying. Least-connections placement
// makes every session depend on the handler having learned it.
func TestCustomPaths(t *testing.T) {
	requireNode(t)
	tester := caddytester.NewTester(t)
	leastConn := "lb_policy socketio {\n\t\t\tfallback least_conn\n\t\t}"
	tests := []struct {
		name       string
		serverPath string // the servers' path option
		clientPath string // the clients' path option
		site       string
	}{
		{
			name:       "ok/path option",
			serverPath: "/realtime/",
			clientPath: "/realtime/",
			site:       "\tsocketio {\n\t\tpath /realtime/\n\t}\n\treverse_proxy {upstreams} {\n\t\t" + leastConn + "\n\t}",
		},
		{
			name:       "ok/handle_path prefix",
			serverPath: "/socket.io/",
			clientPath: "/chat/socket.io/",
			site:       "\thandle_path /chat/* {\n\t\tsocketio\n\t\treverse_proxy {upstreams} {\n\t\t\t" + leastConn + "\n\t\t}\n\t}\n\trespond 404",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := startCluster(t, 3, map[string]any{"pingInterval": 2000, "pingTimeout": 2000, "path": tt.serverPath})
			loadConfig(t, tester, proxyConfig{Nodes: nodes, Site: tt.site}.Caddyfile())
			const clients = 30
			for _, transports := range []string{"polling,websocket", "polling"} {
				before := statsOf(t, nodes)
				flags := []string{"--count", "30", "--path", tt.clientPath, "--transports", transports,
					"--local-address", "127.6.0.1", "--connect-timeout-ms", "5000", "--hold-ms", "1000", "--echo-interval-ms", "300"}
				if transports != "polling" {
					flags = append(flags, "--expect-upgrade")
				}
				res := runClients(t, flags...)
				settle(t, nodes, 5*time.Second)
				after := statsOf(t, nodes)
				if res.Connected != clients || res.EchoFailed != 0 || (transports != "polling" && res.Upgraded != clients) {
					t.Errorf("%s: connected %d, upgraded %d of %d, echo failures %d; errors %+v %+v",
						transports, res.Connected, res.Upgraded, clients, res.EchoFailed, res.ConnectErrors, res.UpgradeErrors)
				}
				checkNoMisroutedRequests(t, transports, before, after)
				if len(res.PerNode) != 3 {
					t.Errorf("%s: sessions on %d nodes, want all 3: %v", transports, len(res.PerNode), res.PerNode)
				}
			}
		})
	}
}

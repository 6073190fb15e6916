package caddytest

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

// startSharedPortCluster starts count socket.io@4 nodes on one port, each
// on its own loopback address (first, first+1, …), as the replicas of a
// Docker or Kubernetes service are: one name, one port, several IPs.
func startSharedPortCluster(t *testing.T, count int, first netip.Addr, opts map[string]any) []*sioNode {
	t.Helper()
	nodes := make([]*sioNode, count)
	addr := first
	for i := range nodes {
		spec := serverSpec{Options: opts, Host: addr.String()}
		if i > 0 {
			spec.Port = nodes[0].Port
		}
		nodes[i] = startServer(t, fmt.Sprintf("node%d", i+1), spec)
		addr = addr.Next()
	}
	return nodes
}

func hostsOf(nodes []*sioNode) []netip.Addr {
	addrs := make([]netip.Addr, len(nodes))
	for i, n := range nodes {
		addrs[i] = netip.MustParseAddr(n.Host)
	}
	return addrs
}

// TestDynamicUpstreams runs the cluster behind `dynamic a`, the way Docker
// and Kubernetes users find their nodes: a name that resolves to one IP
// per replica. The pool is no longer in the configuration, so nothing
// tells the policy when a node goes; the pins, keyed by dial address,
// still route every session to its node, and when a node leaves the DNS
// answer (scaled down, or no longer ready) its sessions fail fast at
// Caddy and reconnect onto the remaining nodes, while every other session
// keeps its node and no request ever reaches a node that did not mint its
// sid.
func TestDynamicUpstreams(t *testing.T) {
	requireNode(t)
	nodes := startSharedPortCluster(t, 3, netip.MustParseAddr("127.40.0.1"), fastPing)
	const name = "sio-nodes.test."
	dns := startDNS(t, name, hostsOf(nodes))
	tester := caddytester.NewTester(t)
	site := fmt.Sprintf(`	socketio
	reverse_proxy {
		dynamic a %s %d {
			resolvers %s
			refresh 500ms
			versions ipv4
		}
		lb_policy socketio {
			fallback least_conn
		}
	}`, name, nodes[0].Port, dns.Addr())
	loadConfig(t, tester, proxyConfig{Nodes: nodes, Site: site}.Caddyfile())

	t.Run("sessions keep their node", func(t *testing.T) {
		const clients = 30
		for ti, transports := range []string{"polling,websocket", "polling"} {
			before, pinsBefore := statsOf(t, nodes), pinsOf(t)
			flags := []string{"--count", fmt.Sprint(clients), "--transports", transports,
				"--local-address-range", fmt.Sprintf("127.41.%d.1-127.41.%d.250", ti, ti),
				"--connect-timeout-ms", "8000", "--hold-ms", "1500", "--echo-interval-ms", "300"}
			if transports != "polling" {
				flags = append(flags, "--expect-upgrade")
			}
			res := runClients(t, flags...)
			settle(t, nodes, 5*time.Second)
			after, pinsAfter := statsOf(t, nodes), pinsOf(t)
			t.Logf("%s: connected %d, upgraded %d of %d, per node %v, echo ok %d", transports, res.Connected, res.Upgraded, clients, res.PerNode, res.EchoOK)
			if res.Connected != clients || (transports != "polling" && res.Upgraded != clients) {
				t.Errorf("%s: connected %d, upgraded %d of %d; errors %+v %+v", transports, res.Connected, res.Upgraded, clients, res.ConnectErrors, res.UpgradeErrors)
			}
			if res.EchoFailed != 0 || res.EchoNodeMismatch != 0 || res.DisconnectsDuringHold.Count != 0 {
				t.Errorf("%s: echo failures %d, answers from another node %d, disconnects %d", transports, res.EchoFailed, res.EchoNodeMismatch, res.DisconnectsDuringHold.Count)
			}
			checkNoMisroutedRequests(t, transports, before, after)
			if n := pinsAfter.Pinned - pinsBefore.Pinned; n != clients {
				t.Errorf("%s: the handler learned %d handshakes, want %d", transports, n, clients)
			}
			// least_conn over the resolved pool: every node takes sessions,
			// so every session's later requests depended on its pin
			for _, n := range nodes {
				if res.PerNode[n.Name] == 0 {
					t.Errorf("%s: %s got none of the sessions: the dynamic pool was not balanced", transports, n.Name)
				}
			}
		}
		if dns.Asked() == 0 {
			t.Error("Caddy never asked the test DNS server: the upstreams were not dynamic")
		}
	})

	t.Run("a node leaves the DNS answer", func(t *testing.T) {
		const clients = 60
		gone := nodes[2]
		before := statsOf(t, nodes)
		run := startClients(t, "--count", fmt.Sprint(clients), "--transports", "polling", "--reconnect",
			"--local-address-range", "127.41.2.1-127.41.2.250",
			"--connect-timeout-ms", "10000", "--hold-ms", "9000", "--echo-interval-ms", "500", "--echo-timeout-ms", "4000")
		if ready := run.ReadyWithin(60 * time.Second); ready.Connected != clients {
			t.Fatalf("connected %d of %d clients", ready.Connected, clients)
		}
		time.Sleep(1500 * time.Millisecond)
		dns.Set(hostsOf(nodes[:2]))
		removedAt := time.Now()
		res := run.ResultWithin(time.Minute)
		settle(t, nodes, 5*time.Second)
		after := statsOf(t, nodes)

		t.Logf("removed %s from the DNS answer at %s; sessions per node %v, at the end %v; disconnects %d %v; reconnects %d; alive at end %d; echo ok %d, failed %d",
			gone.Name, removedAt.Format("15:04:05.000"), res.PerNode, res.PerNodeAtEnd, res.DisconnectsDuringHold.Count,
			res.DisconnectsDuringHold.Details, res.Reconnects, res.AliveAtEnd, res.EchoOK, res.EchoFailed)
		onGone := res.PerNode[gone.Name]
		if onGone == 0 {
			t.Fatalf("no session was on %s: the test proves nothing", gone.Name)
		}
		for i, c := range res.Clients {
			switch {
			case c.Node == gone.Name && (len(c.Disconnects) != 1 || c.Reconnects != 1 || c.FinalNode() == gone.Name):
				t.Errorf("client %d (on %s, which left the pool): disconnects %v, reconnects %d, now on %s; want one disconnect and one reconnect onto a remaining node",
					i, c.Node, c.Disconnects, c.Reconnects, c.FinalNode())
			case c.Node != gone.Name && (len(c.Disconnects) != 0 || c.FinalNode() != c.Node):
				t.Errorf("client %d (on %s): disconnects %v, now on %s; its node stayed in the pool", i, c.Node, c.Disconnects, c.FinalNode())
			}
		}
		if res.AliveAtEnd != clients || res.EchoNodeMismatch != 0 {
			t.Errorf("alive at the end %d of %d, echoes answered by another node %d", res.AliveAtEnd, clients, res.EchoNodeMismatch)
		}
		// the sessions of the node that left failed at Caddy: none of their
		// requests reached a remaining node, which would not know them
		checkNoMisroutedRequests(t, "after "+gone.Name+" left", before, after)
		if n := after.PerNode[gone.Name].Handshakes - before.PerNode[gone.Name].Handshakes; n != onGone {
			t.Errorf("%s took %d handshakes, want only its first %d sessions: new sessions were placed on it after it left the DNS answer", gone.Name, n, onGone)
		}
	})
}

package caddytest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"

	"github.com/caddy-socketio/caddy-socketio/internal/store/redis/redistest"
)

// TestSharedStore runs three Caddy instances (this test's own and two
// processes built from the working tree) behind a front, a stock Caddy
// (only standard modules: reverse_proxy with `lb_policy round_robin`)
// that sends every request to the next instance in turn, three socket.io@4
// nodes, and `fallback least_conn`: a session's handshake goes through one
// instance and its next request through another.
//
//   - memory store (the control): the other instances do not know the
//     session and hash the client's address to some node, which answers
//     "Session ID unknown";
//   - Redis store: every session works, and instance B found the pins in
//     Redis;
//   - 60 clients behind one address: least_conn spreads them, no node
//     takes more than 40 % (nor less than 20 %);
//   - the second instance restarted (drained, stopped, started) under live
//     sessions: none breaks, and it reads their pins from Redis;
//   - Redis killed under 200 live sessions: none breaks, new sessions connect
//     (placed by client-IP hash, which every instance computes alike), and
//     after Redis is back new sessions are placed by the fallback again;
//   - a fourth node added, then one of the three removed, through each
//     instance's admin API in turn (drained first, the shared drain) under
//     60 live sessions: none breaks but the removed node's, each of which
//     reconnects once (sharedPoolChange).
func TestSharedStore(t *testing.T) {
	requireNode(t)
	redisSrv := redistest.Start(t, "")
	// the fourth node joins the instances' pool in the last subtest
	nodes := startCluster(t, 4, crowdedPing)
	pool := nodes[:3]
	tester := caddytester.NewTester(t)

	health := t.TempDir()
	memory := func(admin, http int) string { return instanceCaddyfile(admin, http, pool, "", health) }
	shared := func(admin, http int) string {
		return instanceCaddyfile(admin, http, pool, redisOption(redisSrv.Addr), health)
	}
	loadConfig(t, tester, memory(adminPort, httpPort))
	b := startCaddyProcess(t, "instance-b", memory)
	c := startCaddyProcess(t, "instance-c", memory)
	front := startFront(t, health, siteAddr, b.Addr(), c.Addr())

	const clients = 30 // without Redis: enough to show the breakage
	flags := func(count int, addrRange string, extra ...string) []string {
		return append([]string{"--url", front.URL, "--count", fmt.Sprint(count), "--local-address-range", addrRange,
			"--connect-timeout-ms", "5000"}, extra...)
	}

	t.Run("memory store breaks sessions", func(t *testing.T) {
		before := statsOf(t, nodes)
		res := runClients(t, flags(clients, "127.6.0.1-127.6.0.250", "--expect-upgrade")...)
		settle(t, nodes, 5*time.Second)
		after := statsOf(t, nodes)
		unknown := after.UnknownSID - before.UnknownSID
		t.Logf("memory: connected %d, upgraded %d of %d; \"Session ID unknown\": %d",
			res.Connected, res.Upgraded, clients, unknown)
		if unknown == 0 {
			t.Error("no node answered \"Session ID unknown\" with a memory store per instance")
		}
		if res.Connected == clients && res.Upgraded == clients {
			t.Error("every client connected and upgraded with a memory store per instance")
		}
	})

	loadConfig(t, tester, shared(adminPort, httpPort))
	b.Load(shared(b.AdminPort, b.HTTPPort))
	c.Load(shared(c.AdminPort, c.HTTPPort))
	waitShared(t, "every instance reaches Redis", true, b, c)

	const sharedClients = 100
	tests := []struct {
		name, transports, addrs string
		upgrade                 bool
	}{
		{name: "redis store/polling and websocket", transports: "polling,websocket", addrs: "127.6.1.1-127.6.1.250", upgrade: true},
		{name: "redis store/polling only", transports: "polling", addrs: "127.6.2.1-127.6.2.250"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			beforeB := b.Sessions(t).Shared
			before := statsOf(t, nodes)
			extra := []string{"--transports", tt.transports, "--hold-ms", "3000", "--echo-interval-ms", "500"}
			if tt.upgrade {
				extra = append(extra, "--expect-upgrade")
			}
			res := runClients(t, flags(sharedClients, tt.addrs, extra...)...)
			settle(t, nodes, 5*time.Second)
			after := statsOf(t, nodes)
			checkSessionsWorked(t, res, sharedClients, tt.upgrade)
			checkNoMisroutedRequests(t, tt.name, before, after)
			afterB := b.Sessions(t).Shared
			hits := afterB.RemoteHits - beforeB.RemoteHits
			announced := afterB.Announced - beforeB.Announced
			t.Logf("per node %v; instance B learned %d pins from announcements and found %d in Redis (%d lookups); Redis timeouts: A %d, B %d",
				res.PerNode, announced, hits, afterB.RemoteLookups-beforeB.RemoteLookups,
				sessionsAt(t, adminPort).Shared.Timeouts, afterB.Timeouts)
			if hits+announced == 0 {
				t.Error("instance B learned no pin of another instance: the sessions did not cross instances")
			}
		})
	}

	t.Run("one address spread by least_conn", func(t *testing.T) {
		const n = 60
		before := statsOf(t, nodes)
		res := runClients(t, "--url", front.URL, "--count", fmt.Sprint(n), "--local-address", "127.6.7.1",
			"--expect-upgrade", "--hold-ms", "2000", "--echo-interval-ms", "500", "--connect-timeout-ms", "5000")
		settle(t, nodes, 5*time.Second)
		checkSessionsWorked(t, res, n, true)
		checkNoMisroutedRequests(t, "one address", before, statsOf(t, nodes))
		// each instance's least_conn counts only the requests it
		// proxies itself; but with every request spread over the
		// instances, each one carries about a third of every session's
		// long-polls, so each sees the nodes' load in proportion
		for _, node := range pool {
			if count := res.PerNode[node.Name]; count > n*2/5 || count < n/5 {
				t.Errorf("%s took %d of %d clients behind one address (want 20 %% to 40 %%): %v", node.Name, count, n, res.PerNode)
			}
		}
		t.Logf("per node: %v", res.PerNode)
	})

	t.Run("instance restarted under live sessions", func(t *testing.T) {
		before := statsOf(t, nodes)
		held := startClients(t, "--url", front.URL, "--count", "100", "--local-address-range", "127.6.6.1-127.6.6.250",
			"--transports", "polling", "--hold-ms", "10000", "--echo-interval-ms", "500", "--connect-timeout-ms", "5000")
		if r := held.Ready(); r.Connected != 100 {
			t.Fatalf("connected %d of 100 before the restart", r.Connected)
		}
		// a deploy: the balancer drains the instance, it stops
		// gracefully, starts with empty memory, and takes traffic again
		front.Drain(1, true) // B; waits for the front's health check
		time.Sleep(500 * time.Millisecond)
		b.Stop()
		b.Start()
		waitShared(t, "the restarted instance reaches Redis", true, b)
		front.Drain(1, false)
		res := held.Result()
		if res.DisconnectsDuringHold.Count != 0 || res.EchoFailed != 0 || res.AliveAtEnd != 100 {
			t.Errorf("sessions broken by the restart: %d disconnects %v, echo failed %d, alive at end %d of 100",
				res.DisconnectsDuringHold.Count, res.DisconnectsDuringHold.Reasons, res.EchoFailed, res.AliveAtEnd)
		}
		settle(t, nodes, 5*time.Second)
		checkNoMisroutedRequests(t, "restart", before, statsOf(t, nodes))
		// the sessions were made before B restarted: it can only have
		// learned them from Redis
		shared := b.Sessions(t).Shared
		t.Logf("the restarted instance found %d pins in Redis", shared.RemoteHits)
		if shared.RemoteHits == 0 {
			t.Error("the restarted instance found no pin in Redis")
		}
	})

	t.Run("redis killed under live sessions", func(t *testing.T) {
		before := statsOf(t, nodes)
		held := startClients(t, "--url", front.URL, "--count", "200", "--local-address-range", "127.6.3.1-127.6.3.250",
			"--transports", "polling", "--hold-ms", "12000", "--echo-interval-ms", "500", "--connect-timeout-ms", "5000")
		if r := held.Ready(); r.Connected != 200 {
			t.Fatalf("connected %d of 200 before the outage", r.Connected)
		}
		time.Sleep(2 * time.Second)
		redisSrv.Stop()
		waitShared(t, "every instance notices the outage", false, b, c)

		// during the outage new sessions connect, placed by client-IP
		// hash (which every instance computes alike): clients behind one
		// address all land on one node
		during := runClients(t, "--url", front.URL, "--count", "20", "--local-address", "127.6.4.1",
			"--expect-upgrade", "--connect-timeout-ms", "5000")
		checkSessionsWorked(t, during, 20, true)
		if len(during.PerNode) != 1 {
			t.Errorf("during the outage one address's sessions went to %v: want one node (client-IP hash)", during.PerNode)
		}

		redisSrv.Restart()
		waitShared(t, "every instance reaches Redis again", true, b, c)
		res := held.Result()
		if res.DisconnectsDuringHold.Count != 0 || res.EchoFailed != 0 || res.AliveAtEnd != 200 {
			t.Errorf("sessions broken by the outage: %d disconnects %v, echo failed %d, alive at end %d of 200",
				res.DisconnectsDuringHold.Count, res.DisconnectsDuringHold.Reasons, res.EchoFailed, res.AliveAtEnd)
		}

		// back to the fallback: least_conn spreads one address's sessions
		back := runClients(t, "--url", front.URL, "--count", "20", "--local-address", "127.6.5.1",
			"--expect-upgrade", "--connect-timeout-ms", "5000")
		checkSessionsWorked(t, back, 20, true)
		if len(back.PerNode) < 2 {
			t.Errorf("after the outage one address's sessions went to %v: want them spread (least_conn)", back.PerNode)
		}
		settle(t, nodes, 5*time.Second)
		checkNoMisroutedRequests(t, "outage", before, statsOf(t, nodes))
		t.Logf("held sessions: %d echo ok; during: %v; after: %v; B: %+v", res.EchoOK, during.PerNode, back.PerNode, *b.Sessions(t).Shared)
	})

	t.Run("pool changed through each instance's admin API", func(t *testing.T) {
		sharedPoolChange(t, front, pool, nodes[3], b, c)
	})
}

// checkSessionsWorked fails the test unless every client connected (and
// upgraded, if upgrade) and no session broke during the hold.
func checkSessionsWorked(t testing.TB, res clientResult, clients int, upgrade bool) {
	t.Helper()
	if res.Connected != clients {
		t.Errorf("connected %d of %d clients; errors: %+v", res.Connected, clients, res.ConnectErrors)
	}
	if upgrade && res.Upgraded != clients {
		t.Errorf("upgraded %d of %d clients; errors: %+v", res.Upgraded, clients, res.UpgradeErrors)
	}
	if res.DisconnectsDuringHold.Count != 0 || res.EchoFailed != 0 {
		t.Errorf("%d sessions dropped during the hold (%v); %d echoes failed",
			res.DisconnectsDuringHold.Count, res.DisconnectsDuringHold.Reasons, res.EchoFailed)
	}
}

// waitShared waits until the test's Caddy and every one of procs report
// the shared store reachable (or not).
func waitShared(t testing.TB, what string, reachable bool, procs ...*caddyProcess) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok := true
		states := []string{}
		reports := []sessionsReport{sessionsAt(t, adminPort)}
		for _, p := range procs {
			reports = append(reports, p.Sessions(t))
		}
		for _, r := range reports {
			ok = ok && r.Shared != nil && r.Shared.Reachable == reachable
			states = append(states, fmt.Sprintf("%+v", r.Shared))
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s: %v", what, states)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loadCaddyfileInto loads a Caddyfile into the Caddy whose admin API
// listens on adminPort.
func loadCaddyfileInto(t testing.TB, adminPort int, caddyfile string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("http://localhost:%d/load", adminPort), strings.NewReader(caddyfile))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("load: %s: %s", resp.Status, body)
	}
}

// TestSharedStorePassword connects to a Redis that requires a password,
// given as an environment placeholder: the store reaches Redis, and the
// password shows neither in the configuration the admin API serves nor in
// its sessions report.
func TestSharedStorePassword(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: not run with -short")
	}
	const secret = "caddy-socketio-test-secret"
	redisSrv := redistest.Start(t, secret)
	tester := caddytester.NewTester(t)
	config := func(env string) string {
		return proxyConfig{
			GlobalEx: fmt.Sprintf("\tsocketio {\n\t\tstore redis {\n\t\t\taddress %s\n\t\t\tpassword {env.%s}\n\t\t}\n\t}\n", redisSrv.Addr, env),
			Site:     "\tsocketio\n\treverse_proxy 127.0.0.1:9 {\n\t\tlb_policy socketio\n\t}",
		}.Caddyfile()
	}
	t.Setenv("SOCKETIO_TEST_REDIS_PASSWORD", secret)
	t.Setenv("SOCKETIO_TEST_REDIS_WRONG", secret+"x")

	t.Run("ok/password from the environment", func(t *testing.T) {
		loadConfig(t, tester, config("SOCKETIO_TEST_REDIS_PASSWORD"))
		deadline := time.Now().Add(10 * time.Second)
		for r := sessionsAt(t, adminPort); r.Shared == nil || !r.Shared.Reachable; r = sessionsAt(t, adminPort) {
			if time.Now().After(deadline) {
				t.Fatalf("Redis not reachable with the password: %+v", r.Shared)
			}
			time.Sleep(50 * time.Millisecond)
		}
		for _, path := range []string{"/config/", "/socketio/sessions"} {
			resp, err := http.Get(fmt.Sprintf("http://localhost:%d%s", adminPort, path))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), secret) {
				t.Errorf("%s shows the password: %s", path, body)
			}
		}
	})
	t.Run("fail/wrong password", func(t *testing.T) {
		loadConfig(t, tester, config("SOCKETIO_TEST_REDIS_WRONG"))
		time.Sleep(1500 * time.Millisecond)
		if r := sessionsAt(t, adminPort); r.Shared == nil || r.Shared.Reachable {
			t.Fatalf("Redis reachable with a wrong password: %+v", r.Shared)
		}
	})
}

// sharedPoolChange adds spare to the pool of every instance and removes
// one of pool's nodes, through each instance's admin API in turn, as
// docs/deploying.md says, under 60 live polling sessions that reconnect
// when they break:
//
//   - to add: drain spare's address through one instance (the drain is
//     shared), add it to each instance's reverse_proxy (a POST to its
//     upstreams, one instance after the other), undrain it. While one
//     instance routes to it and the others do not, new sessions work and
//     none is placed on it; undrained, it takes new sessions;
//   - to remove: drain the node holding the most sessions through another
//     instance, delete it from each instance's upstreams in turn.
//
// No session breaks but the removed node's, and each of those reconnects
// once, onto a node that stays.
func sharedPoolChange(t *testing.T, front *caddyFront, pool []*sioNode, spare *sioNode, procs ...*caddyProcess) {
	admins := []int{adminPort}
	for _, p := range procs {
		admins = append(admins, p.AdminPort)
	}
	drain := func(admin int, action, dial string) {
		t.Helper()
		relAdminAt(t, admin, http.MethodPost, "/socketio/upstreams/"+action, map[string]string{"address": dial})
		time.Sleep(1500 * time.Millisecond) // every instance reads the shared drain set each second
	}
	const n = 60
	held := startClients(t, "--url", front.URL, "--count", fmt.Sprint(n), "--local-address-range", "127.6.8.1-127.6.8.250",
		"--transports", "polling", "--reconnect", "--hold-ms", "35000", "--echo-interval-ms", "1000",
		"--echo-timeout-ms", "8000", "--connect-timeout-ms", "10000")
	if r := held.Ready(); r.Connected != n {
		t.Fatalf("connected %d of %d before the pool changes", r.Connected, n)
	}
	readyAt := time.Now()

	// add spare, drained
	drain(admins[0], "drain", spare.Dial())
	for i, admin := range admins {
		proxy := relProxyPathAt(t, admin)
		relAdminAt(t, admin, http.MethodPost, proxy+"/upstreams", map[string]string{"dial": spare.Dial()})
		if dials := relUpstreamDialsAt(t, admin, proxy); !slices.Contains(dials, spare.Dial()) {
			t.Fatalf("instance %d's upstreams after the addition: %v", i, dials)
		}
		if i == 0 {
			// one instance routes to spare, the others do not yet
			mid := runClients(t, "--url", front.URL, "--count", "20", "--local-address-range", "127.6.9.1-127.6.9.250",
				"--transports", "polling", "--hold-ms", "1500", "--echo-interval-ms", "500", "--connect-timeout-ms", "10000")
			checkSessionsWorked(t, mid, 20, false)
			if mid.PerNode[spare.Name] != 0 {
				t.Errorf("while only one instance routed to the drained %s, new sessions went %v", spare.Name, mid.PerNode)
			}
			t.Logf("spare added to one instance: new sessions per node %v", mid.PerNode)
		}
		time.Sleep(time.Second)
	}
	drain(admins[1], "undrain", spare.Dial())
	added := runClients(t, "--url", front.URL, "--count", "30", "--local-address-range", "127.6.10.1-127.6.10.250",
		"--transports", "polling", "--hold-ms", "1500", "--echo-interval-ms", "500", "--connect-timeout-ms", "10000")
	checkSessionsWorked(t, added, 30, false)
	if added.PerNode[spare.Name] == 0 {
		t.Errorf("undrained on every instance, %s got none of 30 new sessions: %v", spare.Name, added.PerNode)
	}
	t.Logf("spare undrained: new sessions per node %v (+%s)", added.PerNode, time.Since(readyAt).Round(time.Millisecond))

	// remove the node holding the most held sessions
	var ups struct {
		Upstreams []upstreamEntry `json:"upstreams"`
	}
	if err := json.Unmarshal(relAdminAt(t, admins[0], http.MethodGet, "/socketio/upstreams", nil), &ups); err != nil {
		t.Fatal(err)
	}
	sessions := map[string]int{}
	for _, u := range ups.Upstreams {
		sessions[u.Address] = u.Sessions
	}
	removed := pool[0]
	for _, node := range pool {
		if sessions[node.Dial()] > sessions[removed.Dial()] {
			removed = node
		}
	}
	drain(admins[2], "drain", removed.Dial())
	for i, admin := range admins {
		proxy := relProxyPathAt(t, admin)
		idx := slices.Index(relUpstreamDialsAt(t, admin, proxy), removed.Dial())
		if idx < 0 {
			t.Fatalf("instance %d does not route to %s", i, removed.Dial())
		}
		relAdminAt(t, admin, http.MethodDelete, fmt.Sprintf("%s/upstreams/%d", proxy, idx), nil)
		time.Sleep(time.Second)
	}
	removedAt := time.Since(readyAt)
	drain(admins[0], "undrain", removed.Dial()) // no instance routes to it any more
	res := held.Result()

	var onRemoved int
	for i, c := range res.Clients {
		if c.Node == removed.Name {
			onRemoved++
			if len(c.Disconnects) != 1 || c.Reconnects != 1 || c.FinalNode() == removed.Name {
				t.Errorf("client %d (on the removed %s): disconnects %v, reconnects %d, now on %s: want one reconnect onto another node",
					i, removed.Name, c.Disconnects, c.Reconnects, c.FinalNode())
			}
		} else if len(c.Disconnects) != 0 || c.Reconnects != 0 || c.FinalNode() != c.Node {
			t.Errorf("client %d (on %s): disconnects %v, reconnects %d, now on %s: a session of a remaining node broke",
				i, c.Node, c.Disconnects, c.Reconnects, c.FinalNode())
		}
	}
	t.Logf("held sessions per node %v, at the end %v; removed %s (%d sessions) by +%s; disconnects %d %v, reconnects %d; echo ok %d, failed %d %v",
		res.PerNode, res.PerNodeAtEnd, removed.Name, onRemoved, removedAt.Round(time.Millisecond), res.DisconnectsDuringHold.Count,
		res.DisconnectsDuringHold.Reasons, res.Reconnects, res.EchoOK, res.EchoFailed, res.EchoErrors)
	if onRemoved == 0 {
		t.Error("no held session was on the removed node: the test proves nothing")
	}
	if res.AliveAtEnd != n || res.PerNodeAtEnd[removed.Name] != 0 {
		t.Errorf("alive at the end %d of %d, per node %v", res.AliveAtEnd, n, res.PerNodeAtEnd)
	}
	if res.EchoNodeMismatch != 0 {
		t.Errorf("%d echoes answered by a node other than the session's", res.EchoNodeMismatch)
	}
	// an echo waiting when its session broke fails with it
	for msg, k := range res.EchoErrors {
		if msg != "socket has been disconnected" {
			t.Errorf("%d echoes failed with %q", k, msg)
		}
	}
}

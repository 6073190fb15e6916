package caddytest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

// TestReliabilityPoolChangesThroughAdminAPI holds 300 polling-only
// sessions, each from its own address, behind the socketio handler and
// policy (default fallback client_ip_hash), and changes the pool through
// the admin API as an orchestrator would: it adds a fourth upstream, then
// deletes one of the original three. Adding an upstream moves a quarter of
// the client-IP hash space, so only the pins keep the sessions where they
// are; deleting one must end exactly the sessions of that node, whose pins
// become tombstones, and each of them must come back on a live node after
// one reconnect.
//
// Caddy's error log tells who got an error answer from Caddy, the nodes'
// counters who got "Session ID unknown". Two effects outside the policy's
// control are accounted for, not hidden:
//   - a reload closes the old listening socket, and connections queued on
//     it (SO_REUSEPORT hands a share of new connections to each socket
//     while both exist) are reset: a client that opens a connection per
//     request, as engine.io-client does in Node, can lose one request, and
//     its session, to a reset without any HTTP answer;
//   - until the old config is cleaned up, which Caddy does right after the
//     new one starts serving, the removed upstream is still in use, so its
//     pins are not yet tombstones and a request of its sessions can be
//     hashed to another node, which answers "Session ID unknown"
//     (TestReliabilityRemovedUpstreamFailsFast shows that window alone).
func TestReliabilityPoolChangesThroughAdminAPI(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 4, crowdedPing)
	tester := caddytester.NewTester(t)
	logPath, readLog := relLogFile(t, "caddy")
	// proxyConfig sets grace_period 5s, above the nodes' pingInterval
	// (2s): a reload lets the long-polls in flight finish
	loadConfig(t, tester, proxyConfig{Nodes: nodes[:3], Handler: true, Policy: "socketio", GlobalEx: relLogTo(logPath)}.Caddyfile())
	proxy := relProxyPath(t)
	t.Logf("reverse_proxy in the config: %s", proxy)

	const clients = 300
	before := statsOf(t, nodes)
	pinsBefore := pinsOf(t)
	run := startClients(t, "--count", fmt.Sprint(clients), "--transports", "polling", "--reconnect",
		"--local-address-range", "127.11.0.1-127.11.1.250", "--concurrency", "10",
		"--connect-timeout-ms", "20000", "--hold-ms", "16000", "--echo-interval-ms", "2000",
		"--echo-timeout-ms", "8000")
	ready := run.ReadyWithin(90 * time.Second)
	readyAt := time.Now()
	if ready.Connected != clients {
		t.Fatalf("connected %d of %d clients", ready.Connected, clients)
	}
	start := time.Now()

	removed, pinsAdded, pinsRemoved, deleting := changePool(t, proxy, nodes, start)

	// read the counters before the hold ends: when it does, the clients
	// close their sessions and requests still on the way may be refused
	time.Sleep(time.Until(readyAt.Add(14 * time.Second)))
	after := statsOf(t, nodes)
	pinsAfter := pinsOf(t)
	res := run.ResultWithin(2 * time.Minute)
	// what Caddy refused during the hold (when it ends the clients close
	// their sessions, and requests still on the way fail)
	refusals := relCaddyErrors(t, readLog(), "127.11.0.1", readyAt.Add(15500*time.Millisecond))

	var onRemoved int
	for _, c := range res.Clients {
		if c.Node == removed.Name {
			onRemoved++
		}
	}
	unknown := map[string]int{}
	var unknownElsewhere int
	for _, n := range nodes {
		unknown[n.Name] = after.PerNode[n.Name].UnknownSID() - before.PerNode[n.Name].UnknownSID()
		if n != removed {
			unknownElsewhere += unknown[n.Name]
		}
	}
	t.Logf("sessions per node %v; on the removed %s: %d", res.PerNode, removed.Name, onRemoved)
	t.Logf("disconnects %d %v, reconnects %d (attempts %d), alive at end %d, per node at end %v",
		res.DisconnectsDuringHold.Count, res.DisconnectsDuringHold.Reasons, res.Reconnects, res.ReconnectAttempts, res.AliveAtEnd, res.PerNodeAtEnd)
	t.Logf("echo ok %d, failed %d %v, from another node %d", res.EchoOK, res.EchoFailed, res.EchoErrors, res.EchoNodeMismatch)
	t.Logf("pins after the addition %v, right after the deletion %v (tombstones %d), at the end %v (tombstones %d)",
		pinsAdded.ByUpstream, pinsRemoved.ByUpstream, pinsRemoved.Tombstones, pinsAfter.ByUpstream, pinsAfter.Tombstones)
	t.Logf("\"Session ID unknown\" answers per node: %v", unknown)

	if res.Connected != clients {
		t.Fatalf("connected %d of %d", res.Connected, clients)
	}
	if onRemoved == 0 {
		t.Fatal("no session was on the removed node: the test proves nothing")
	}
	// adding an upstream moved no session
	for _, n := range nodes[:3] {
		if got, want := pinsAdded.ByUpstream[n.Dial()], res.PerNode[n.Name]; got < want {
			t.Errorf("after the addition %s holds %d pins, fewer than its %d sessions", n.Name, got, want)
		}
	}
	// the deletion turned exactly the removed node's pins into tombstones
	if got := pinsRemoved.ByUpstream[removed.Dial()]; got != 0 {
		t.Errorf("right after the deletion %d live pins still name the removed upstream", got)
	}
	// (the store is shared by every test of the binary: earlier tests'
	// tombstones may expire meanwhile, so count, not difference)
	if pinsRemoved.Tombstones < onRemoved {
		t.Errorf("right after the deletion the store holds %d tombstones, want at least %d (the removed node's sessions)", pinsRemoved.Tombstones, onRemoved)
	}

	// every session of the removed node ended once and came back on a
	// live node; every other session kept its node. Besides, a listener
	// reset at a reload (no HTTP answer at all, "error (0)"; a node's or
	// Caddy's answer reads "(400)", "(503)") may cut any session once per
	// reload; it then reconnects like the others, possibly to the node
	// about to be removed.
	refused, windowed, resets, removedReset := classifyPoolChangeClients(t, res, refusals, removed, deleting, start)
	t.Logf("of the removed node's %d sessions, %d were refused by Caddy (503), %d ended otherwise, %d by a connection reset; %d sessions lost a request to a connection reset at a reload",
		onRemoved, refused, windowed, removedReset, resets)
	if unknownElsewhere > 0 {
		t.Logf("the nodes' recent errors:%s", after.recentErrors())
	}
	// the removed node's sessions end on their tombstones (503); only
	// those caught between the new config's start and the old one's
	// clean-up can end on another node's "Session ID unknown", and that
	// gap is short. (Those a listener reset ended first never asked for
	// their tombstone: they reconnected at once.)
	if byAnswer := onRemoved - removedReset; refused == 0 || refused < byAnswer/2 || windowed > unknownElsewhere {
		t.Errorf("of the removed node's %d sessions that ended on an HTTP answer only %d were refused by Caddy; %d ended otherwise, with %d \"Session ID unknown\" answers from other nodes",
			byAnswer, refused, windowed, unknownElsewhere)
	}
	// Caddy's listener handover resets more connections the busier the
	// machine (see TestReloadKeepsPollingSessions): bounded loosely
	if resets > clients/2 {
		t.Errorf("%d of %d sessions lost a request to a connection reset at a reload", resets, clients)
	}
	if want := refused + windowed + resets; res.DisconnectsDuringHold.Count != want || res.Reconnects != want {
		t.Errorf("%d disconnects and %d reconnects, want %d each (%d sessions of the removed node ended, %d resets)",
			res.DisconnectsDuringHold.Count, res.Reconnects, want, refused+windowed, resets)
	}
	if res.AliveAtEnd != clients {
		t.Errorf("%d of %d sessions alive at the end", res.AliveAtEnd, clients)
	}
	if res.EchoNodeMismatch != 0 {
		t.Errorf("%d echoes answered by a node other than the session's", res.EchoNodeMismatch)
	}
	// an echo still waiting when its session broke fails with it; none
	// may be lost on a live session (that would time out)
	for msg, n := range res.EchoErrors {
		if msg != "socket has been disconnected" {
			t.Errorf("%d echoes failed with %q", n, msg)
		}
	}
	// "Session ID unknown" on a remaining node can only be a request of a
	// removed session caught in the reload window (checked per client
	// above); never one of another session
	if unknownElsewhere > onRemoved {
		t.Errorf("remaining nodes answered %d requests with \"Session ID unknown\", more than the %d removed sessions", unknownElsewhere, onRemoved)
	}
	if n := pinsAfter.Pinned - pinsBefore.Pinned; n != uint64(clients+res.Reconnects) {
		t.Errorf("%d handshakes learned, want %d sessions + %d reconnects", n, clients, res.Reconnects)
	}
	if res.PerNodeAtEnd[removed.Name] != 0 {
		t.Errorf("sessions on the removed node at the end: %v", res.PerNodeAtEnd)
	}
}

// changePool is the pool change of TestReliabilityPoolChangesThroughAdminAPI:
// it adds nodes[3] through the admin API, then deletes the original
// upstream holding the most sessions, and returns it, the pins after each
// change, and when the deletion started.
func changePool(t *testing.T, proxy string, nodes []*sioNode, start time.Time) (removed *sioNode, pinsAdded, pinsRemoved pinReport, deleting time.Time) {
	t.Helper()
	// add a fourth upstream: POST to an array appends to it
	relAdmin(t, http.MethodPost, proxy+"/upstreams", map[string]string{"dial": nodes[3].Dial()})
	if dials := relUpstreamDials(t, proxy); len(dials) != 4 {
		t.Fatalf("upstreams after the addition: %v", dials)
	}
	added := time.Now()
	time.Sleep(3 * time.Second)
	pinsAdded = pinsOf(t)

	// delete the original upstream holding the most sessions
	removed = nodes[0]
	for _, n := range nodes[1:3] {
		if pinsAdded.ByUpstream[n.Dial()] > pinsAdded.ByUpstream[removed.Dial()] {
			removed = n
		}
	}
	idx := slices.Index(relUpstreamDials(t, proxy), removed.Dial())
	deleting = time.Now()
	relAdmin(t, http.MethodDelete, fmt.Sprintf("%s/upstreams/%d", proxy, idx), nil)
	deleted := time.Now()
	pinsRemoved = pinsOf(t)
	if dials := relUpstreamDials(t, proxy); len(dials) != 3 || slices.Contains(dials, removed.Dial()) {
		t.Fatalf("upstreams after the deletion: %v", dials)
	}
	t.Logf("added %s at +%s, removed %s (%s) at +%s (the DELETE took %s)", nodes[3].Dial(), added.Sub(start),
		removed.Name, removed.Dial(), deleting.Sub(start), deleted.Sub(deleting))
	return removed, pinsAdded, pinsRemoved, deleting
}

// classifyPoolChangeClients checks each client of
// TestReliabilityPoolChangesThroughAdminAPI: every session of the removed
// node ended once and came back on a live node, every other session kept
// its node, and Caddy answered only the removed node's sessions (503,
// after the deletion). It counts the removed node's sessions refused by
// Caddy, those ended otherwise, and the connection resets of the reloads.
func classifyPoolChangeClients(t *testing.T, res clientResult, refusals map[int][]relErrorAnswer, removed *sioNode, deleting, start time.Time) (refused, windowed, resets, removedReset int) {
	t.Helper()
	for i, c := range res.Clients {
		errs := refusals[i]
		var r int
		for _, d := range c.Disconnects {
			if strings.Contains(d, " error (0)") {
				r++
			}
		}
		resets += r
		ended := len(c.Disconnects) - r // sessions ended by an HTTP answer
		mayBeRemoved := c.Node == removed.Name || r > 0
		switch {
		case ended > 1 || (ended == 1 && !mayBeRemoved):
			t.Errorf("client %d (on %s): disconnects %v, Caddy's answers %+v: a session of a remaining node ended", i, c.Node, c.Disconnects, errs)
		case ended == 1 && len(errs) > 0:
			refused++ // by its tombstone
		case ended == 1:
			windowed++ // before the clean-up made it a tombstone
		case c.Node == removed.Name:
			removedReset++ // ended by a reset, before its tombstone was asked
		}
		for _, e := range errs {
			if !mayBeRemoved || e.Status != http.StatusServiceUnavailable || e.At.Before(deleting) {
				t.Errorf("client %d (on %s) was answered %d %q by Caddy at +%s", i, c.Node, e.Status, e.Msg, e.At.Sub(start))
			}
		}
		switch {
		case c.Reconnects != len(c.Disconnects):
			t.Errorf("client %d (on %s): %d reconnects for disconnects %v", i, c.Node, c.Reconnects, c.Disconnects)
		case c.Node == removed.Name && (len(c.Disconnects) == 0 || c.FinalNode() == removed.Name):
			t.Errorf("client %d (on the removed node): final node %s, disconnects %v", i, c.FinalNode(), c.Disconnects)
		case c.Node != removed.Name && r == 0 && c.FinalNode() != c.Node:
			t.Errorf("client %d (on %s) moved to %s", i, c.Node, c.FinalNode())
		case r > 0:
			t.Logf("client %d (on %s) lost a request to a connection reset: %v, now on %s", i, c.Node, c.Disconnects, c.FinalNode())
		}
	}
	return refused, windowed, resets, removedReset
}

// passiveHealth is the health-check setup the README recommends: a node
// that fails a request (a dial error, a broken connection, a 5xx) leaves
// the pool for fail_duration, and a request that failed to reach it is
// tried again on another node for up to lb_try_duration. 400 is not in
// unhealthy_status: engine.io answers 400 "Session ID unknown" to stale
// sessions, which says nothing about the node's health.
const passiveHealth = "\t\tlb_try_duration 1s\n\t\tfail_duration 10s\n\t\tmax_fails 1\n\t\tunhealthy_status 5xx"

// warn400 is the start of the warning the policy logs when passive health
// checks would count 400 answers as failures.
const warn400 = "passive health checks count 400 answers as failures"

// relLogTo returns global options that send Caddy's default log, as JSON,
// to path.
func relLogTo(path string) string {
	return "\tlog {\n\t\toutput file " + path + "\n\t\tformat json\n\t}\n"
}

// TestReliabilityNodeFailure kills one of three nodes (SIGKILL) under 60
// polling sessions that echo twice a second, behind the socketio handler
// and policy with the recommended passive health checks. The dead node's
// sessions must fail fast and come back on live nodes after one reconnect
// each; no request may reach a node that did not mint its sid; the dead
// node's pins are kept, not tombstoned (an owner that is down may come
// back within lb_try_duration, see TestOwnerBackWithinTryDuration); and
// engine.io's 400 "Session ID
// unknown" must not count against a healthy node. The negative case shows
// why the plugin warns about `unhealthy_status 400`: the same burst of
// stale sids then takes every healthy node out of the pool.
func TestReliabilityNodeFailure(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 3, fastPing)
	victim, survivors := nodes[1], []*sioNode{nodes[0], nodes[2]}
	tester := caddytester.NewTester(t)

	t.Run("unhealthy_status 5xx", func(t *testing.T) { nodeFailureFailsFast(t, tester, nodes, victim, survivors) })
	t.Run("unhealthy_status 400", func(t *testing.T) { nodeFailureWith400(t, tester, survivors) })
}

// nodeFailureFailsFast is the first half of TestReliabilityNodeFailure:
// the recommended passive health checks (unhealthy_status 5xx), 60
// polling clients, victim killed; then a burst of stale sids.
func nodeFailureFailsFast(t *testing.T, tester *caddytester.Tester, nodes []*sioNode, victim *sioNode, survivors []*sioNode) {
	logPath, readLog := relLogFile(t, "5xx")
	loadConfig(t, tester, proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio", Extra: passiveHealth, GlobalEx: relLogTo(logPath)}.Caddyfile())
	if strings.Contains(readLog(), warn400) {
		t.Errorf("the policy warned about 400 in unhealthy_status, which is 5xx only")
	}

	const clients = 60
	run := startClients(t, "--count", fmt.Sprint(clients), "--transports", "polling", "--reconnect",
		"--local-address-range", "127.12.0.1-127.12.0.250", "--connect-timeout-ms", "15000",
		"--hold-ms", "18000", "--echo-interval-ms", "500")
	if ready := run.ReadyWithin(60 * time.Second); ready.Connected != clients {
		t.Fatalf("connected %d of %d clients", ready.Connected, clients)
	}
	time.Sleep(time.Second)
	before := statsOf(t, survivors)
	pinsBefore := pinsOf(t)
	killed := victim.stats(t).OpenSessions
	if killed == 0 {
		t.Fatalf("no session on %s", victim.Name)
	}
	if got := pinsBefore.ByUpstream[victim.Dial()]; got != killed {
		t.Errorf("%s has %d sessions but %d pins", victim.Name, killed, got)
	}

	relKill(t, victim)
	killedAt := time.Now()
	// every session of the dead node makes a new handshake, which is
	// learned: the time until all are learned is the outage they saw
	recovery, recovered := relWaitFor(15*time.Second, 50*time.Millisecond, func() bool {
		return pinsOf(t).Pinned-pinsBefore.Pinned >= uint64(killed)
	})
	pinsKilled := pinsOf(t)
	t.Logf("killed %s with %d of %d sessions; all of them re-handshaked within %s (%v); pins per upstream %v, dropped to tombstones %d",
		victim.Name, killed, clients, recovery, recovered, pinsKilled.ByUpstream, pinsKilled.Dropped-pinsBefore.Dropped)

	// read the counters before the hold ends (then the clients close
	// their sessions, and requests still on the way may fail)
	time.Sleep(time.Until(killedAt.Add(12 * time.Second)))
	after := statsOf(t, survivors)
	res := run.ResultWithin(2 * time.Minute)
	t.Logf("disconnects %d %v, reconnects %d (attempts %d), alive at end %d, per node at end %v; echo ok %d, failed %d %v",
		res.DisconnectsDuringHold.Count, res.DisconnectsDuringHold.Reasons, res.Reconnects, res.ReconnectAttempts, res.AliveAtEnd, res.PerNodeAtEnd,
		res.EchoOK, res.EchoFailed, res.EchoErrors)

	if !recovered || recovery > 5*time.Second {
		t.Errorf("the dead node's %d sessions took %s to re-handshake (all: %v), want at most pingInterval + pingTimeout + the client's reconnect delay (5s)", killed, recovery, recovered)
	}
	// an owner that is only unavailable keeps its pins (it may be
	// back within lb_try_duration); the sessions end by the clients
	// giving up on them, and their pins by expiry or by the node's
	// own "Session ID unknown" once it is back
	if dropped := pinsKilled.Dropped - pinsBefore.Dropped; dropped != 0 || pinsKilled.ByUpstream[victim.Dial()] != killed {
		t.Errorf("the dead node's pins: %d live, %d dropped to tombstones, want its %d pins kept and none dropped",
			pinsKilled.ByUpstream[victim.Dial()], dropped, killed)
	}
	if res.DisconnectsDuringHold.Count != killed || res.Reconnects != killed {
		t.Errorf("%d disconnects and %d reconnects, want %d each (the dead node's sessions)", res.DisconnectsDuringHold.Count, res.Reconnects, killed)
	}
	if res.AliveAtEnd != clients {
		t.Errorf("%d of %d sessions alive at the end", res.AliveAtEnd, clients)
	}
	for i, c := range res.Clients {
		switch {
		case c.Node == victim.Name && (c.Reconnects != 1 || c.FinalNode() == victim.Name):
			t.Errorf("client %d (on the dead node): reconnects %d, final node %s, disconnects %v", i, c.Reconnects, c.FinalNode(), c.Disconnects)
		case c.Node != victim.Name && (c.Reconnects != 0 || c.FinalNode() != c.Node || len(c.Disconnects) != 0):
			t.Errorf("client %d (on %s): reconnects %d, final node %s, disconnects %v", i, c.Node, c.Reconnects, c.FinalNode(), c.Disconnects)
		}
	}
	if res.EchoNodeMismatch != 0 {
		t.Errorf("%d echoes answered by a node other than the session's", res.EchoNodeMismatch)
	}
	checkNoMisroutedRequests(t, "surviving nodes", before, after)
	health := relUpstreams(t)
	t.Logf("upstreams after the failure: %+v (killed at %s)", health, killedAt.Format("15:04:05.000"))
	for _, n := range survivors {
		if h := health[n.Dial()]; h.Fails != 0 {
			t.Errorf("%s counts %d failures before the burst", n.Name, h.Fails)
		}
	}

	// a burst of stale sids: each is answered 400 code 1 by a healthy node
	const burst = 60
	time.Sleep(time.Second) // the clients' last requests settle
	beforeBurst := statsOf(t, survivors)
	statuses := relStaleBurst(t, burst, "127.12.2")
	afterBurst := statsOf(t, survivors)
	health = relUpstreams(t)
	t.Logf("stale-sid burst: statuses %v, \"Session ID unknown\" per node %d/%d, upstreams %+v", statuses,
		afterBurst.PerNode[survivors[0].Name].UnknownSID()-beforeBurst.PerNode[survivors[0].Name].UnknownSID(),
		afterBurst.PerNode[survivors[1].Name].UnknownSID()-beforeBurst.PerNode[survivors[1].Name].UnknownSID(), health)
	if statuses[http.StatusBadRequest] != burst || afterBurst.UnknownSID-beforeBurst.UnknownSID < burst {
		t.Errorf("burst of %d stale sids: statuses %v, %d \"Session ID unknown\" answers; want all 400 from the nodes", burst, statuses, afterBurst.UnknownSID-beforeBurst.UnknownSID)
	}
	for _, n := range survivors {
		if afterBurst.PerNode[n.Name].UnknownSID() == beforeBurst.PerNode[n.Name].UnknownSID() {
			t.Errorf("the burst never reached %s: the test does not show that it stays in rotation", n.Name)
		}
		if h := health[n.Dial()]; h.Fails != 0 {
			t.Errorf("%s counts %d failures after answering stale sids", n.Name, h.Fails)
		}
	}
	// and both healthy nodes still take new sessions
	fresh := startClients(t, "--count", "20", "--transports", "polling",
		"--local-address-range", "127.12.3.1-127.12.3.250", "--connect-timeout-ms", "15000").ResultWithin(time.Minute)
	t.Logf("new sessions after the burst: connected %d, per node %v", fresh.Connected, fresh.PerNode)
	if fresh.Connected != 20 || len(fresh.PerNode) != len(survivors) || fresh.PerNode[victim.Name] != 0 {
		t.Errorf("new sessions after the burst: connected %d of 20, per node %v; want every surviving node", fresh.Connected, fresh.PerNode)
	}
}

// nodeFailureWith400 is the second half of TestReliabilityNodeFailure:
// with 400 in unhealthy_status, a burst of stale sids takes the healthy
// nodes out of the pool.
func nodeFailureWith400(t *testing.T, tester *caddytester.Tester, survivors []*sioNode) {
	logPath, readLog := relLogFile(t, "400")
	extra := strings.Replace(passiveHealth, "unhealthy_status 5xx", "unhealthy_status 400 5xx", 1)
	loadConfig(t, tester, proxyConfig{Nodes: survivors, Handler: true, Policy: "socketio", Extra: extra, GlobalEx: relLogTo(logPath)}.Caddyfile())
	if _, logged := relWaitFor(5*time.Second, 50*time.Millisecond, func() bool { return strings.Contains(readLog(), warn400) }); !logged {
		t.Errorf("the policy did not warn %q at config load", warn400)
	}
	before := relUpstreams(t)
	statuses := relStaleBurst(t, 60, "127.12.4")
	health := relUpstreams(t)
	handshakes := relHandshakes(t, 10, "127.12.5")
	t.Logf("fails before the burst %+v; burst statuses %v; after it %+v; new handshakes %v", before, statuses, health, handshakes)
	for _, n := range survivors {
		if h := health[n.Dial()]; h.Fails == 0 {
			t.Errorf("%s counts no failure after answering 400 with unhealthy_status 400", n.Name)
		}
	}
	if handshakes[http.StatusOK] != 0 {
		t.Errorf("new handshakes still reached a node: %v; with unhealthy_status 400 stale sids should have taken every node out", handshakes)
	}
}

// relStaleBurst sends count polling requests with sids no node minted,
// all at once, each from its own address prefix.N, and returns the
// statuses.
func relStaleBurst(t testing.TB, count int, prefix string) map[int]int {
	t.Helper()
	return relParallelGets(t, count, prefix, func(i int) string {
		return fmt.Sprintf("http://%s/socket.io/?EIO=4&transport=polling&sid=stale%015d", siteAddr, i)
	})
}

// relHandshakes makes count polling handshakes at once, each from its own
// address prefix.N, and returns the statuses.
func relHandshakes(t testing.TB, count int, prefix string) map[int]int {
	t.Helper()
	return relParallelGets(t, count, prefix, func(int) string {
		return fmt.Sprintf("http://%s/socket.io/?EIO=4&transport=polling", siteAddr)
	})
}

func relParallelGets(t testing.TB, count int, prefix string, url func(i int) string) map[int]int {
	t.Helper()
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		statuses = map[int]int{}
	)
	for i := 1; i <= count; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status := -1 // no HTTP answer
			resp, err := relHTTPClient(fmt.Sprintf("%s.%d", prefix, i)).Get(url(i))
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
			}
			mu.Lock()
			statuses[status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return statuses
}

// TestReliabilityClientAddressChange runs 30 hand-made polling sessions
// whose client address changes after the handshake, as a phone's does
// when it leaves Wi-Fi: the handshake comes from 127.x.i.1, the socket.io
// CONNECT and its poll from 127.x.i.2, then an echo and its poll from
// .3 and from .4, each request on its own connection. Behind the socketio
// handler and policy with the default fallback (client_ip_hash), every
// request reaches the node that minted the sid, because the handshake was
// learned. Behind plain client_ip_hash (nginx's ip_hash), each new address
// is hashed afresh and most sessions break; the socketio policy without
// the handler is no better, as nothing learned the sessions.
func TestReliabilityClientAddressChange(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 3, fastPing)
	tester := caddytester.NewTester(t)
	const sessions = 30

	run := func(t *testing.T, cfg proxyConfig, subnet int) (broken int, unknown int) {
		loadConfig(t, tester, cfg.Caddyfile())
		before := statsOf(t, nodes)
		base := fmt.Sprintf("http://%s/socket.io/", siteAddr)
		type outcome struct {
			node string
			log  []string
			err  error
		}
		results := make([]outcome, sessions)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 6)
		for i := range sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				addrs := make([]string, 4)
				for j := range addrs {
					addrs[j] = fmt.Sprintf("127.%d.%d.%d", subnet, i, j+1)
				}
				node, log, err := relMovingSession(ctx, base, addrs)
				results[i] = outcome{node, log, err}
			}()
		}
		wg.Wait()
		after := statsOf(t, nodes)
		perNode := map[string]int{}
		for i, r := range results {
			perNode[r.node]++
			if r.err != nil {
				broken++
				if broken <= 3 {
					t.Logf("session %d broke: %v (%s)", i, r.err, strings.Join(r.log, ", "))
				}
			}
		}
		unknown = after.UnknownSID - before.UnknownSID
		t.Logf("%d of %d sessions broke; handshakes per node %v; \"Session ID unknown\" answers %d", broken, sessions, perNode, unknown)
		return broken, unknown
	}

	t.Run("socketio", func(t *testing.T) {
		broken, unknown := run(t, proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio"}, 13)
		if broken != 0 || unknown != 0 {
			t.Errorf("%d sessions broke and nodes answered %d \"Session ID unknown\" when clients changed address", broken, unknown)
		}
	})
	t.Run("client_ip_hash", func(t *testing.T) {
		broken, unknown := run(t, proxyConfig{Nodes: nodes, Policy: "client_ip_hash"}, 14)
		if broken < sessions/2 || unknown == 0 {
			t.Errorf("only %d of %d sessions broke (%d \"Session ID unknown\") behind client_ip_hash; the comparison shows nothing", broken, sessions, unknown)
		}
	})
	t.Run("socketio_without_handler", func(t *testing.T) {
		broken, unknown := run(t, proxyConfig{Nodes: nodes, Policy: "socketio"}, 15)
		if broken < sessions/2 || unknown == 0 {
			t.Errorf("only %d of %d sessions broke (%d \"Session ID unknown\") without the handler learning them", broken, sessions, unknown)
		}
	})
}

// TestReliabilityWebSocketsAcrossReloads holds 30 upgraded (websocket)
// clients echoing every 500 ms, plus three raw websocket-only sessions
// that report how their connection ends, while Caddy reloads the same
// config and then a changed one. With `stream_close_delay 5m` no client
// notices; without it, reverse_proxy closes every proxied websocket at the
// first reload with 1001 (going away) and every client disconnects. This
// is the evidence behind the README's recommendation.
func TestReliabilityWebSocketsAcrossReloads(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 3, fastPing)
	tester := caddytester.NewTester(t)
	const clients = 30

	run := func(t *testing.T, extra string, subnet int) (clientResult, []*relWS) {
		cfg := proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio", Extra: extra}
		loadConfig(t, tester, cfg.Caddyfile())
		clientRun := startClients(t, "--count", fmt.Sprint(clients), "--expect-upgrade",
			"--local-address-range", fmt.Sprintf("127.%d.0.1-127.%d.0.250", subnet, subnet), "--connect-timeout-ms", "15000",
			"--hold-ms", "8000", "--echo-interval-ms", "500")
		var raw []*relWS
		for i := 1; i <= 3; i++ {
			ws, err := relDialWS(fmt.Sprintf("127.%d.1.%d", subnet, i))
			if err != nil {
				t.Fatalf("raw websocket session %d: %v", i, err)
			}
			t.Cleanup(ws.stop)
			raw = append(raw, ws)
		}
		if ready := clientRun.ReadyWithin(60 * time.Second); ready.Connected != clients {
			t.Fatalf("connected %d of %d clients", ready.Connected, clients)
		}
		forceReload(t, cfg.Caddyfile()) // the same config
		time.Sleep(2 * time.Second)
		cfg.Policy = "socketio {\n\t\t\tttl 120s\n\t\t}"
		forceReload(t, cfg.Caddyfile())
		time.Sleep(2 * time.Second)
		res := clientRun.ResultWithin(2 * time.Minute)
		t.Logf("upgraded %d, transports at end %v, alive at end %d, disconnects %d %v, echo ok %d, failed %d",
			res.Upgraded, res.TransportsAtEnd, res.AliveAtEnd, res.DisconnectsDuringHold.Count, res.DisconnectsDuringHold.Reasons, res.EchoOK, res.EchoFailed)
		for i, ws := range raw {
			ended, code, err := ws.ended()
			t.Logf("raw websocket %d (on %s): ended %v, close code %d, %v", i, ws.Node, ended, code, err)
		}
		return res, raw
	}

	t.Run("stream_close_delay 5m", func(t *testing.T) {
		res, raw := run(t, "\t\tstream_close_delay 5m", 16)
		if res.Upgraded != clients || res.TransportsAtEnd["websocket"] != clients {
			t.Errorf("upgraded %d of %d, transports at end %v: the test needs websockets", res.Upgraded, clients, res.TransportsAtEnd)
		}
		if res.DisconnectsDuringHold.Count != 0 || res.AliveAtEnd != clients || res.EchoFailed != 0 {
			t.Errorf("across two reloads: %d disconnects %v, %d of %d alive, %d echoes failed",
				res.DisconnectsDuringHold.Count, res.DisconnectsDuringHold.Reasons, res.AliveAtEnd, clients, res.EchoFailed)
		}
		for i, ws := range raw {
			if ended, code, err := ws.ended(); ended {
				t.Errorf("raw websocket %d ended across the reloads: close code %d, %v", i, code, err)
			}
		}
	})
	t.Run("without stream_close_delay", func(t *testing.T) {
		res, raw := run(t, "", 17)
		if res.Upgraded != clients {
			t.Errorf("upgraded %d of %d: the test needs websockets", res.Upgraded, clients)
		}
		if res.DisconnectsDuringHold.Count != clients || res.AliveAtEnd != 0 {
			t.Errorf("%d disconnects %v and %d alive at the end; want every one of the %d websockets closed by the reload",
				res.DisconnectsDuringHold.Count, res.DisconnectsDuringHold.Reasons, res.AliveAtEnd, clients)
		}
		for i, ws := range raw {
			if ended, code, err := ws.ended(); !ended || code != 1001 {
				t.Errorf("raw websocket %d: ended %v with close code %d (%v), want 1001 going away", i, ended, code, err)
			}
		}
	})
}

// TestReliabilityHandshakeAcrossReload sends a polling handshake that its
// upstream answers only after Caddy has reloaded. On a reload Caddy cleans
// the old config up as soon as the new one runs, without waiting for the
// old config's requests (grace_period lets them finish): the answer goes
// through the old config's handler and policy, which must still learn the
// sid and deliver the open packet, not crash the request.
func TestReliabilityHandshakeAcrossReload(t *testing.T) {
	requireNode(t)
	tester := caddytester.NewTester(t)
	const sid = "slowhandshake0000001"
	slow := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(1500 * time.Millisecond)
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		fmt.Fprintf(w, `0{"sid":%q,"upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`, sid)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = slow.Serve(ln) }()
	t.Cleanup(func() { _ = slow.Close() })
	cfg := proxyConfig{Site: "\tsocketio\n\treverse_proxy " + ln.Addr().String() + " {\n\t\tlb_policy socketio\n\t}"}
	loadConfig(t, tester, cfg.Caddyfile())
	pinsBefore := pinsOf(t)

	type answer struct {
		status int
		body   string
		err    error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := relHTTPClient("").Get(fmt.Sprintf("http://%s/socket.io/?EIO=4&transport=polling", siteAddr))
		if err != nil {
			done <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- answer{status: resp.StatusCode, body: string(b), err: err}
	}()
	time.Sleep(500 * time.Millisecond)
	forceReload(t, cfg.Caddyfile())
	select {
	case a := <-done:
		pins := pinsOf(t)
		t.Logf("handshake answered across the reload: status %d, body %.60q, error %v; pins learned %d",
			a.status, a.body, a.err, pins.Pinned-pinsBefore.Pinned)
		if a.err != nil || a.status != http.StatusOK || !strings.Contains(a.body, sid) {
			t.Errorf("a handshake answered after a reload got status %d, body %.60q, error %v; want the open packet", a.status, a.body, a.err)
		}
		if pins.Pinned-pinsBefore.Pinned != 1 || pins.ByUpstream[ln.Addr().String()] != 1 {
			t.Errorf("the handshake answered after the reload was not learned: %+v", pins)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the handshake never ended")
	}
}

// TestReliabilityRemovedUpstreamFailsFast keeps sessions of one node busy
// (each POSTs no-op packets back to back) while a reload removes that
// node's upstream. Every request of those sessions must be answered by
// their node until the reload, and 503 by Caddy after it (their pins are
// tombstones): never by another node, which could only say "Session ID
// unknown".
//
// Caddy starts serving the new config before it cleans up the old one,
// and only that clean-up releases the removed upstream, which turns its
// pins into tombstones. The gap is short, unless the old config waits for
// its `shutdown_delay` (Caddy applies it when a reload closes a listener;
// here the new config also drops a second site): then it lasts that long.
func TestReliabilityRemovedUpstreamFailsFast(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 3, map[string]any{"pingInterval": 10000, "pingTimeout": 5000})
	removed := nodes[0]
	tester := caddytester.NewTester(t)
	aux := fmt.Sprintf("\nhttp://127.0.0.1:%d {\n\trespond \"aux\"\n}\n", httpPort+2)
	cfg := proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio", GlobalEx: "\tshutdown_delay 2s\n"}
	loadConfig(t, tester, cfg.Caddyfile()+aux)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := fmt.Sprintf("http://%s/socket.io/", siteAddr)
	var (
		mine  []*relEIO
		addrs []string
	)
	for i := 1; i <= 60 && len(mine) < 10; i++ {
		c := newRelEIO(base)
		addr := fmt.Sprintf("127.18.0.%d", i)
		if err := c.handshake(ctx, addr); err != nil {
			t.Fatal(err)
		}
		if c.Node == removed.Name {
			mine, addrs = append(mine, c), append(addrs, addr)
		}
	}
	if len(mine) == 0 {
		t.Fatalf("no session on %s", removed.Name)
	}
	before := statsOf(t, nodes)

	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		stop    = make(chan struct{})
		answers = map[string]int{} // "<status> <node>" -> count
	)
	for i, c := range mine {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := relHTTPClient(addrs[i])
			for n := 0; n < 20000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+"?EIO=4&transport=polling&sid="+c.SID, strings.NewReader("6"))
				req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
				resp, err := client.Do(req)
				key := "no answer" // e.g. reset by the listener handover
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					key = fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("X-Sio-Node"))
				}
				mu.Lock()
				answers[key]++
				mu.Unlock()
				if err == nil && resp.StatusCode != http.StatusOK {
					return // the session is over, as a client would conclude
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	cfg.Nodes = nodes[1:]
	reloadStart := time.Now()
	forceReload(t, cfg.Caddyfile()) // without the removed upstream nor the second site
	reloadTook := time.Since(reloadStart)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	after := statsOf(t, nodes)

	var unknown int
	for _, n := range nodes[1:] {
		unknown += after.PerNode[n.Name].UnknownSID() - before.PerNode[n.Name].UnknownSID()
	}
	t.Logf("%d sessions on %s; the reload took %s; answers to their requests: %v; \"Session ID unknown\" from other nodes: %d",
		len(mine), removed.Name, reloadTook, answers, unknown)
	if answers["200 "+removed.Name] == 0 {
		t.Errorf("no request reached %s before the reload: %v", removed.Name, answers)
	}
	for key, n := range answers {
		if key != "200 "+removed.Name && key != "503 " && key != "no answer" {
			t.Errorf("%d requests of the removed node's sessions were answered %q; want 503 from Caddy", n, key)
		}
	}
	if unknown != 0 {
		t.Errorf("other nodes answered %d requests of the removed node's sessions with \"Session ID unknown\"", unknown)
	}
}

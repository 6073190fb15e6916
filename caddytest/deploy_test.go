package caddytest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"

	"github.com/caddy-socketio/caddy-socketio/internal/store/redis/redistest"
)

// TestRollingDeployLosesNothing restarts the three socket.io@4 nodes of a
// cluster one by one under 300 clients (half of them polling only), each
// receiving a numbered stream, with connection state recovery on
// @socket.io/redis-streams-adapter (a real Redis) and `fallback
// least_conn` (issue 12, item 3). With drain (drain, stop, start,
// undrain), no handshake reaches a draining node, every client reconnects
// at most once per restart of its own node, every reconnect is recovered,
// and no number is missing or duplicated on any client. The same deploy
// without drain is measured and logged.
func TestRollingDeployLosesNothing(t *testing.T) {
	requireNode(t)
	rds := redistest.Start(t, "")
	spec := serverSpec{
		Env:     map[string]string{"SIO_STREAM_MS": "1000", "SIO_REDIS_URL": "redis://" + rds.Addr},
		Options: map[string]any{"connectionStateRecovery": map[string]any{"maxDisconnectionDuration": 30000, "skipMiddlewares": true}},
	}
	nodes := startClusterOf(t, 3, spec)
	tester := caddytester.NewTester(t)
	// the recommended passive health checks: they alone keep a stopped
	// node out of the pool for fail_duration, so the handshake count below
	// shows no handshake on a draining node, not that drain is what kept
	// them off (TestDrainThroughAdminAPI shows that). Without them, most
	// reconnects here were not recovered (drain or not), on a loaded
	// machine: the adapter's session write races the client's reconnect.
	loadConfig(t, tester, proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio {\n\t\t\tfallback least_conn\n\t\t}",
		Extra: "\t\tfail_duration 10s\n\t\tmax_fails 1\n\t\tlb_try_duration 1s\n\t\tlb_try_interval 250ms"}.Caddyfile())
	const clients = 300

	for _, drain := range []bool{true, false} {
		label := map[bool]string{true: "with drain", false: "without drain"}[drain]
		run := startDeployClients(t, "--count", fmt.Sprint(clients), "--rounds", "0", "--until-stdin-ends",
			"--polling-share", "0.5", "--settle-ms", "2000", "--watchdog-ms", "300000")
		for i, n := range nodes {
			if drain {
				adminDrain(t, "drain", n.Dial())
			}
			n.stop()
			spec.Port = n.Port
			nodes[i] = startServer(t, n.Name, spec)
			// its clients reconnect now, while it is back but (with
			// drain) still draining: none may start a session there
			time.Sleep(3 * time.Second)
			got := nodes[i].stats(t).Handshakes
			t.Logf("%s: %s restarted; %d handshakes on it in its first 3 s", label, n.Name, got)
			if drain && got != 0 {
				t.Errorf("%s: %s got %d handshakes while draining", label, n.Name, got)
			}
			if drain {
				adminDrain(t, "undrain", n.Dial())
			}
		}
		res := run.finish()
		moves, worst := clientMoves(res)
		t.Logf("%s: %d clients, %d connected at the end, %d reconnects (%d recovered, %d not), %d numbers received, %d missing, %d duplicated; at most %d reconnects per restart of a client's node (%d clients over one)",
			label, res.Clients, res.ConnectedAtEnd, res.Reconnects, res.Recovered, res.NotRecovered, res.Received, res.Missing, res.Duplicates, worst, moves)
		lost := map[bool]int{}
		for _, c := range res.PerClient {
			lost[c.Polling] += c.NotRecovered
		}
		t.Logf("%s: not recovered: %d polling-only, %d websocket", label, lost[true], lost[false])
		if !drain {
			continue
		}
		if res.ConnectedAtEnd != clients || res.NotRecovered != 0 || res.Missing != 0 || res.Duplicates != 0 || res.Reconnects == 0 {
			t.Errorf("%s: %d of %d connected at the end, %d reconnects not recovered, %d numbers missing, %d duplicated; want all connected, every reconnect recovered, none missing or duplicated",
				label, res.ConnectedAtEnd, clients, res.NotRecovered, res.Missing, res.Duplicates)
		}
		if worst > 1 {
			t.Errorf("%s: %d clients reconnected more than once for one restart of their node", label, moves)
		}
	}
}

// clientMoves counts the clients that came back to a node they had to
// leave, or left one node twice (each node restarts once), and the most
// times a client left one node.
func clientMoves(res recoveryResult) (over, worst int) {
	for _, c := range res.PerClient {
		left := map[string]int{}
		for i := 0; i+1 < len(c.Nodes); i++ {
			left[c.Nodes[i]]++
		}
		most := 0
		for _, k := range left {
			most = max(most, k)
		}
		if most > 1 {
			over++
		}
		worst = max(worst, most)
	}
	return over, worst
}

// deployClients is a run of testdata/recovery-clients.js with
// --until-stdin-ends: ready once every client is connected, finished when
// its stdin is closed.
type deployClients struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  interface{ Close() error }
	lines  *bufio.Scanner
	result recoveryResult
}

func startDeployClients(t *testing.T, flags ...string) *deployClients {
	t.Helper()
	args := append([]string{filepath.Join(repoRoot(t), "caddytest", "testdata", "recovery-clients.js"), "--url", "http://" + siteAddr}, flags...)
	cmd := exec.Command("node", args...)
	cmd.Stderr = &prefixWriter{t: t, prefix: "deploy-clients: "}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting clients: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	d := &deployClients{t: t, cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout)}
	d.lines.Buffer(make([]byte, 0, 1<<20), 16<<20)
	if ev := d.next(); ev != "ready" {
		t.Fatalf("clients: %q before ready", ev)
	}
	return d
}

// next reads the clients' next event line, keeping a result.
func (d *deployClients) next() string {
	d.t.Helper()
	if !d.lines.Scan() {
		d.t.Fatalf("clients ended: %v", d.lines.Err())
	}
	var ev struct {
		Event string `json:"event"`
	}
	line := d.lines.Bytes()
	if err := json.Unmarshal(line, &ev); err != nil {
		d.t.Fatalf("clients printed %q", line)
	}
	if ev.Event == "result" {
		if err := json.Unmarshal(line, &d.result); err != nil {
			d.t.Fatalf("clients' result %q: %v", line, err)
		}
	}
	return ev.Event
}

// finish closes the clients' stdin and returns their result.
func (d *deployClients) finish() recoveryResult {
	d.t.Helper()
	_ = d.stdin.Close()
	if ev := d.next(); ev != "result" {
		d.t.Fatalf("clients: %q instead of the result", ev)
	}
	return d.result
}

package caddytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

// TestDrainThroughAdminAPI drains a node through the admin API under
// `fallback least_conn`: the admin API lists every upstream from the
// start, no new session reaches the drained one, the session it holds
// goes on there, the admin API lists it as draining with its session, a
// reload keeps it draining, and undrained it takes new sessions again.
func TestDrainThroughAdminAPI(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 3, nil)
	tester := caddytester.NewTester(t)
	policy := "socketio {\n\t\t\tfallback least_conn\n\t\t}"
	loadConfig(t, tester, proxyConfig{Nodes: nodes, Handler: true, Policy: policy}.Caddyfile())
	ping := func(sid string) []byte {
		return request("POST", "/socket.io/?EIO=4&transport=polling&sid="+sid, []string{"Content-Type: text/plain;charset=UTF-8"}, "6")
	}

	// every upstream is listed, those without sessions too
	listed := map[string]bool{}
	for _, u := range adminUpstreams(t) {
		listed[u.Address] = true
	}
	for _, n := range nodes {
		if !listed[n.Dial()] {
			t.Errorf("/socketio/upstreams %+v does not list %s, which holds no session yet", adminUpstreams(t), n.Dial())
		}
	}

	sid, held := openSession(t, nodes, "127.80.0.1")
	t.Cleanup(func() { adminDrain(t, "undrain", held.Dial()) })
	if got := adminDrain(t, "drain", held.Dial()); !got.Draining || got.Sessions < 1 {
		t.Fatalf("drain answered %+v, want draining with its session", got)
	}
	// a reload does not undrain it
	loadConfig(t, tester, proxyConfig{Nodes: nodes, Handler: true, Policy: policy, Extra: "\t\tlb_try_interval 251ms"}.Caddyfile())
	placed := map[string]int{}
	for k := 1; k <= 30; k++ {
		_, n := openSession(t, nodes, fmt.Sprintf("127.80.1.%d", k))
		placed[n.Name]++
	}
	if placed[held.Name] != 0 {
		t.Errorf("new sessions per node %v: %d on the draining %s", placed, placed[held.Name], held.Name)
	}
	if res := rawExchange(t, "127.80.0.1", ping(sid)); res.Status != 200 || res.Header.Get("X-Sio-Node") != held.Name {
		t.Errorf("the draining node's session: %v, want 200 from %s", res, held.Name)
	}
	drained := false
	for _, u := range adminUpstreams(t) {
		if u.Address == held.Dial() {
			drained = u.Draining && u.Sessions >= 1
		}
	}
	if !drained {
		t.Errorf("/socketio/upstreams %+v does not list %s as draining with its session", adminUpstreams(t), held.Dial())
	}

	if got := adminDrain(t, "undrain", held.Dial()); got.Draining {
		t.Fatalf("undrain answered %+v", got)
	}
	for k := 1; k <= 30; k++ {
		if _, n := openSession(t, nodes, fmt.Sprintf("127.80.2.%d", k)); n == held {
			return
		}
	}
	t.Errorf("undrained, %s got none of 30 new sessions", held.Name)
}

// TestCommandDrains runs `caddy socketio` (the plugin's CLI command, in a
// Caddy binary built with it) against the test Caddy's admin API: it lists
// every upstream with its sessions, drains and undrains one, and fails
// with the admin API's reason on a bad address.
func TestCommandDrains(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 2, nil)
	tester := caddytester.NewTester(t)
	loadConfig(t, tester, proxyConfig{Nodes: nodes, Handler: true, Policy: "socketio"}.Caddyfile())
	_, held := openSession(t, nodes, "127.81.0.1")
	t.Cleanup(func() { adminDrain(t, "undrain", held.Dial()) })

	tests := []struct {
		name     string
		args     []string
		fails    bool
		want     []string // lines of the output, fields split on spaces
		draining bool     // held's drain state afterwards
	}{
		{name: "ok/upstreams", args: []string{"upstreams"},
			want: upstreamLines(nodes, held, false)},
		{name: "ok/drain", args: []string{"drain", held.Dial()},
			want: []string{"UPSTREAM SESSIONS DRAINING", held.Dial() + " 1 true"}, draining: true},
		{name: "ok/upstreams while draining", args: []string{"upstreams"},
			want: upstreamLines(nodes, held, true), draining: true},
		{name: "ok/undrain", args: []string{"undrain", held.Dial()},
			want: []string{"UPSTREAM SESSIONS DRAINING", held.Dial() + " 1 false"}},
		{name: "fail/bad address", args: []string{"drain", "a b"}, fails: true,
			want: []string{"invalid upstream address"}},
		{name: "fail/no address", args: []string{"drain"}, fails: true,
			want: []string{"accepts 1 arg(s), received 0"}},
		{name: "fail/admin API down", args: []string{"upstreams", "--address", "localhost:1"}, fails: true,
			want: []string{"connection refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"socketio"}, tt.args...)
			if !slices.Contains(args, "--address") {
				args = append(args, "--address", fmt.Sprintf("localhost:%d", adminPort))
			}
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(caddyBinary(t), args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if failed := err != nil; failed != tt.fails {
				t.Fatalf("caddy %v: error %v (want failure: %v)\nstdout: %s\nstderr: %s", args, err, tt.fails, &stdout, &stderr)
			}
			if tt.fails {
				for _, w := range tt.want {
					if !strings.Contains(stderr.String(), w) {
						t.Errorf("caddy %v: stderr %q does not say %q", args, &stderr, w)
					}
				}
			} else {
				// the store is the process's: pins of earlier tests to
				// upstreams of no configuration may still be listed
				var got []string
				for i, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
					fields := strings.Fields(line)
					if i == 0 || len(fields) > 0 && slices.ContainsFunc(nodes, func(n *sioNode) bool { return n.Dial() == fields[0] }) {
						got = append(got, strings.Join(fields, " "))
					}
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("caddy %v printed %q, want %q", args, got, tt.want)
				}
			}
			for _, u := range adminUpstreams(t) {
				if u.Address == held.Dial() && u.Draining != tt.draining {
					t.Errorf("after caddy %v, %s draining: %v, want %v", args, held.Dial(), u.Draining, tt.draining)
				}
			}
		})
	}
}

// upstreamLines is what `caddy socketio upstreams` prints for nodes, with
// one session on held, sorted by address.
func upstreamLines(nodes []*sioNode, held *sioNode, draining bool) []string {
	lines := []string{"UPSTREAM SESSIONS DRAINING"}
	var rows []string
	for _, n := range nodes {
		sessions, drains := 0, false
		if n == held {
			sessions, drains = 1, draining
		}
		rows = append(rows, fmt.Sprintf("%s %d %t", n.Dial(), sessions, drains))
	}
	slices.Sort(rows)
	return append(lines, rows...)
}

type upstreamEntry struct {
	Address  string `json:"address"`
	Sessions int    `json:"sessions"`
	Draining bool   `json:"draining"`
}

// adminDrain posts to /socketio/upstreams/<action> (drain or undrain).
func adminDrain(t *testing.T, action, dial string) upstreamEntry {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"address": dial})
	resp, err := http.Post(fmt.Sprintf("http://localhost:%d/socketio/upstreams/%s", adminPort, action), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s: %v", action, err)
	}
	defer resp.Body.Close()
	var u upstreamEntry
	if err := json.NewDecoder(resp.Body).Decode(&u); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s: status %d, %v", action, resp.StatusCode, err)
	}
	return u
}

func adminUpstreams(t *testing.T) []upstreamEntry {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://localhost:%d/socketio/upstreams", adminPort))
	if err != nil {
		t.Fatalf("upstreams: %v", err)
	}
	defer resp.Body.Close()
	var v struct {
		Upstreams []upstreamEntry `json:"upstreams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("upstreams: %v", err)
	}
	return v.Upstreams
}

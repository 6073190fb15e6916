package caddytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
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

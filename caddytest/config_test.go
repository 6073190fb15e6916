package caddytest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

// proxyConfig is a Caddyfile for the test Caddy: one site on siteAddr whose
// route runs the socketio handler (unless handler is false) and a
// reverse_proxy to the nodes with the given lb_policy block and extra
// reverse_proxy lines.
type proxyConfig struct {
	Nodes    []*sioNode
	Handler  bool
	Policy   string // e.g. "socketio", "socketio {\n fallback least_conn\n}", "round_robin"
	Extra    string // more reverse_proxy subdirectives
	GlobalEx string // more global options
	// Site, if set, replaces the generated site body; "{upstreams}" in it
	// becomes the nodes' dial addresses.
	Site string
}

func (pc proxyConfig) Caddyfile() string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin localhost:%d\n\thttp_port %d\n\thttps_port %d\n\tauto_https off\n\tgrace_period 5s\n%s}\n",
		adminPort, httpPort, httpPort+363, pc.GlobalEx)
	fmt.Fprintf(&b, "http://%s {\n", siteAddr)
	if pc.Site != "" {
		dials := make([]string, len(pc.Nodes))
		for i, n := range pc.Nodes {
			dials[i] = n.Dial()
		}
		b.WriteString(strings.ReplaceAll(pc.Site, "{upstreams}", strings.Join(dials, " ")))
		b.WriteString("\n}\n")
		return b.String()
	}
	if pc.Handler {
		b.WriteString("\tsocketio\n")
	}
	b.WriteString("\treverse_proxy")
	for _, n := range pc.Nodes {
		b.WriteString(" " + n.Dial())
	}
	b.WriteString(" {\n")
	if pc.Policy != "" {
		fmt.Fprintf(&b, "\t\tlb_policy %s\n", pc.Policy)
	}
	if pc.Extra != "" {
		b.WriteString(pc.Extra + "\n")
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// loadConfig (re)loads the test Caddy with cfg.
func loadConfig(t testing.TB, tester *caddytester.Tester, caddyfile string) {
	t.Helper()
	tester.InitServer(caddyfile, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
}

// forceReload loads caddyfile through the admin API even if it adapts
// to the running config. caddytest's InitServer (like `caddy reload`
// without --force) posts to /load, which Caddy ignores when the config is
// unchanged ("config is unchanged"): a comment added to the Caddyfile is
// not a reload. `Cache-Control: must-revalidate` forces it. Unlike
// loadConfig it fails the test only if the load fails, so that a test
// whose reload made the race detector report goes on to its assertions.
func forceReload(t testing.TB, caddyfile string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("http://localhost:%d/load", adminPort), strings.NewReader(caddyfile))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	req.Header.Set("Cache-Control", "must-revalidate")
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("forced reload: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("forced reload: %s: %s", resp.Status, body)
	}
}

// pinReport is the test Caddy's /socketio/sessions answer.
type pinReport struct {
	Loaded     bool           `json:"loaded"`
	Pins       int            `json:"pins"`
	Tombstones int            `json:"tombstones"`
	ByUpstream map[string]int `json:"by_upstream"`
	Pinned     uint64         `json:"pinned"`
	Collisions uint64         `json:"collisions"`
	Evicted    uint64         `json:"evicted"`
	Expired    uint64         `json:"expired"`
	Dropped    uint64         `json:"dropped"`
	Refused    uint64         `json:"refused"`
}

// pinsOf reads the test Caddy's pin store through the admin API.
func pinsOf(t testing.TB) pinReport {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://localhost:%d/socketio/sessions", adminPort))
	if err != nil {
		t.Fatalf("admin API: %v", err)
	}
	defer resp.Body.Close()
	var r pinReport
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("admin API: %v", err)
	}
	return r
}

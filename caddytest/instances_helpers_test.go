package caddytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Several Caddy instances: the test binary hosts one Caddy (caddytest's),
// so the others are processes of a Caddy built from this working tree
// (testdata/caddy), and a front spreads the clients' requests over all of
// them.

var caddyBin struct {
	once sync.Once
	path string
	err  error
}

// caddyBinary builds testdata/caddy once per test binary and returns its
// path.
func caddyBinary(t testing.TB) string {
	t.Helper()
	caddyBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "caddy-socketio-bin")
		if err != nil {
			caddyBin.err = err
			return
		}
		caddyBin.path = filepath.Join(dir, "caddy")
		cmd := exec.Command("go", "build", "-o", caddyBin.path, "./caddytest/testdata/caddy")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			caddyBin.err = fmt.Errorf("building testdata/caddy: %v\n%s", err, out)
		}
	})
	if caddyBin.err != nil {
		t.Fatal(caddyBin.err)
	}
	return caddyBin.path
}

// caddyProcess is one Caddy instance in a process of its own.
type caddyProcess struct {
	Name      string
	AdminPort int
	HTTPPort  int

	t      testing.TB
	dir    string
	config string
	cmd    *exec.Cmd
	done   chan struct{}
	log    *bytes.Buffer
	logMu  *sync.Mutex
}

// startCaddyProcess runs `caddy run` with the Caddyfile that config
// returns for the process's admin and HTTP ports, and waits until its
// admin API answers. It is stopped (gracefully) when the test ends; its
// log is shown if the test failed.
func startCaddyProcess(t testing.TB, name string, config func(adminPort, httpPort int) string) *caddyProcess {
	t.Helper()
	p := &caddyProcess{Name: name, AdminPort: freeTCPPort(t), HTTPPort: freeTCPPort(t), t: t, dir: t.TempDir(),
		log: new(bytes.Buffer), logMu: new(sync.Mutex)}
	p.config = config(p.AdminPort, p.HTTPPort)
	if err := os.WriteFile(filepath.Join(p.dir, "Caddyfile"), []byte(p.config), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			p.logMu.Lock()
			t.Logf("%s log:\n%s", p.Name, p.log.String())
			p.logMu.Unlock()
		}
	})
	p.Start()
	return p
}

// Start starts the process (again).
func (p *caddyProcess) Start() {
	p.t.Helper()
	cmd := exec.Command(caddyBinary(p.t), "run", "--config", filepath.Join(p.dir, "Caddyfile"), "--adapter", "caddyfile")
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(p.dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(p.dir, "config"))
	w := &sharedLog{mu: p.logMu, w: p.log}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("starting %s: %v", p.Name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(p.done)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://localhost:%d/config/", p.AdminPort))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited at start:\n%s", p.Name, p.Log())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not start within 30s:\n%s", p.Name, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the process gracefully (SIGTERM, as at a deploy), killing it
// if it takes longer than 15s, and waits for it.
func (p *caddyProcess) Stop() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

// Load makes caddyfile the process's configuration: loaded now through
// its admin API, and the one it starts with from now on.
func (p *caddyProcess) Load(caddyfile string) {
	p.t.Helper()
	p.config = caddyfile
	if err := os.WriteFile(filepath.Join(p.dir, "Caddyfile"), []byte(caddyfile), 0o600); err != nil {
		p.t.Fatal(err)
	}
	loadCaddyfileInto(p.t, p.AdminPort, caddyfile)
}

// Log returns what the process logged so far.
func (p *caddyProcess) Log() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// Addr is the address of the process's site.
func (p *caddyProcess) Addr() string { return fmt.Sprintf("127.0.0.1:%d", p.HTTPPort) }

// Sessions reads the process's /socketio/sessions.
func (p *caddyProcess) Sessions(t testing.TB) sessionsReport {
	t.Helper()
	return sessionsAt(t, p.AdminPort)
}

// sharedLog is a process's stdout and stderr, in one buffer.
type sharedLog struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w *sharedLog) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}

// sessionsReport is /socketio/sessions with the shared store's part.
type sessionsReport struct {
	pinReport
	Store  string `json:"store"`
	Shared *struct {
		Reachable     bool   `json:"reachable"`
		RemoteLookups uint64 `json:"remote_lookups"`
		RemoteHits    uint64 `json:"remote_hits"`
		RemotePins    uint64 `json:"remote_pins"`
		Refreshed     uint64 `json:"refreshed"`
		Ignored       uint64 `json:"ignored"`
		Outages       uint64 `json:"outages"`
		Timeouts      uint64 `json:"timeouts"`
		Announced     uint64 `json:"announced"`
	} `json:"shared"`
}

func sessionsAt(t testing.TB, adminPort int) sessionsReport {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://localhost:%d/socketio/sessions", adminPort))
	if err != nil {
		t.Fatalf("admin API: %v", err)
	}
	defer resp.Body.Close()
	var r sessionsReport
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("admin API: %v", err)
	}
	return r
}

// roundRobinFront is the load balancer in front of the Caddy instances:
// it sends every request (every poll, POST and upgrade) to the next
// instance in turn, the harshest spread there is, and says who the client
// is in X-Forwarded-For (the instances trust 127.0.0.1).
type roundRobinFront struct {
	URL      string
	next     atomic.Uint64
	backends []*url.URL
	served   []atomic.Int64
	drained  []atomic.Bool
	srv      *http.Server
}

// Drain stops (or, with false, resumes) sending requests to backend i, as
// a load balancer does with an instance being restarted.
func (f *roundRobinFront) Drain(i int, drained bool) { f.drained[i].Store(drained) }

func startFront(t testing.TB, backends ...string) *roundRobinFront {
	t.Helper()
	f := &roundRobinFront{served: make([]atomic.Int64, len(backends)), drained: make([]atomic.Bool, len(backends))}
	for _, b := range backends {
		f.backends = append(f.backends, &url.URL{Scheme: "http", Host: b})
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			i := int(f.next.Add(1)-1) % len(f.backends)
			for k := 0; k < len(f.backends) && f.drained[i].Load(); k++ {
				i = (i + 1) % len(f.backends)
			}
			f.served[i].Add(1)
			pr.SetURL(f.backends[i])
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport:     &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second},
		FlushInterval: -1,
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.URL = "http://" + l.Addr().String()
	f.srv = &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = f.srv.Serve(l) }()
	t.Cleanup(func() { _ = f.srv.Close() })
	return f
}

// Served returns how many requests each backend got.
func (f *roundRobinFront) Served() []int64 {
	out := make([]int64, len(f.served))
	for i := range f.served {
		out[i] = f.served[i].Load()
	}
	return out
}

// freeTCPPort returns a TCP port free on 127.0.0.1 right now.
func freeTCPPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// instanceCaddyfile is the Caddyfile of one instance: the socketio
// handler and policy (fallback least_conn) in front of nodes, trusting the
// front's X-Forwarded-For, with global (e.g. the socketio option) added.
// Idle connections to the nodes are closed before the nodes close them.
func instanceCaddyfile(adminPort, httpPort int, nodes []*sioNode, global string) string {
	dials := make([]string, len(nodes))
	for i, n := range nodes {
		dials[i] = n.Dial()
	}
	return fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	auto_https off
	grace_period 5s
	servers {
		trusted_proxies static 127.0.0.1/32
	}
%s
}
http://127.0.0.1:%d {
	socketio
	reverse_proxy %s {
		lb_policy socketio {
			fallback least_conn
		}
		# below Node's keepAliveTimeout (5s): a POST on a connection
		# the node is closing fails with 502, and POSTs are not retried
		transport http {
			keepalive 3s
		}
	}
}
`, adminPort, httpPort, httpPort+363, global, httpPort, strings.Join(dials, " "))
}

// redisOption is the socketio global option for a Redis store. Its
// timeout is 500ms, not the default 50ms: a handshake whose pin write
// times out is routed by client-IP hash on the other instance until the
// write is retried, and a test Caddy built with -race on two busy cores
// does miss 50ms now and then (internal/store/redis tests the default).
func redisOption(addr string) string {
	return fmt.Sprintf("\tsocketio {\n\t\tstore redis {\n\t\t\taddress %s\n\t\t\ttimeout 500ms\n\t\t}\n\t}\n", addr)
}

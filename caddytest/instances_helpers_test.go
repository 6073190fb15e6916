package caddytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-socketio/caddy-socketio/internal/store/redis/redistest"
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
	p := &caddyProcess{Name: name, AdminPort: redistest.FreePort(t), HTTPPort: redistest.FreePort(t), t: t, dir: t.TempDir(),
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

// caddyFront is the load balancer in front of the Caddy instances: a
// stock Caddy (a process of the test's binary, whose configuration uses
// only standard modules) whose reverse_proxy sends every request (every
// poll, POST and upgrade) to the next instance in turn (`lb_policy
// round_robin`), the harshest spread there is. Caddy's reverse_proxy
// sets X-Forwarded-For to the client's address itself (the client is not
// a trusted proxy of the front), and the instances trust 127.0.0.1, the
// front's address.
//
// It takes an instance out of the rotation as a cloud balancer does, by
// an active health check: each instance answers /__health with 503 while
// the file drained-<its HTTP port> exists in the health directory (see
// instanceCaddyfile).
type caddyFront struct {
	*caddyProcess
	URL       string
	healthDir string
	backends  []string
}

// frontHealthInterval is how often the front checks each instance.
const frontHealthInterval = 200 * time.Millisecond

// startFront starts the front before backends (host:port of the
// instances' sites), whose health answers depend on the files in
// healthDir.
func startFront(t testing.TB, healthDir string, backends ...string) *caddyFront {
	t.Helper()
	f := &caddyFront{healthDir: healthDir, backends: backends}
	f.caddyProcess = startCaddyProcess(t, "front", func(adminPort, httpPort int) string {
		return frontCaddyfile(adminPort, httpPort, backends)
	})
	f.URL = "http://" + f.Addr()
	return f
}

// frontCaddyfile is the front's configuration: only standard modules.
// Dial and transport errors (an instance stopped before its health check
// failed, or reloading) are retried on the next instance for up to
// lb_try_duration; idle
// connections to the instances are kept, so that the front seldom opens
// a new one.
func frontCaddyfile(adminPort, httpPort int, backends []string) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	auto_https off
	grace_period 5s
}
http://127.0.0.1:%d {
	reverse_proxy %s {
		lb_policy round_robin
		lb_try_duration 2s
		# a reload of an instance (a pool change through its admin API)
		# closes its idle connections, and a request the front is just
		# sending on one fails midway ("broken pipe"): retry POSTs on the
		# next instance too (GETs are retried by default), their bodies
		# buffered so that they can be sent again. A POST whose answer
		# was lost after the instance passed it on is sent twice, as
		# with any balancer that retries it.
		request_buffers 1MB
		lb_retry_match {
			method GET POST
		}
		health_uri /__health
		health_interval %s
		health_timeout 2s
		flush_interval -1
		transport http {
			keepalive 30s
			keepalive_idle_conns_per_host 512
		}
	}
}
`, adminPort, httpPort, httpPort+363, httpPort, strings.Join(backends, " "), frontHealthInterval)
}

// Drain takes backend i out of the front's rotation (or, with false,
// puts it back), as a load balancer does with an instance being
// restarted, and waits until the front's health check has noticed.
func (f *caddyFront) Drain(i int, drained bool) {
	f.t.Helper()
	_, port, err := net.SplitHostPort(f.backends[i])
	if err != nil {
		f.t.Fatal(err)
	}
	flag := filepath.Join(f.healthDir, "drained-"+port)
	if drained {
		err = os.WriteFile(flag, nil, 0o600)
	} else {
		err = os.Remove(flag)
	}
	if err != nil {
		f.t.Fatal(err)
	}
	time.Sleep(3 * frontHealthInterval)
}

// instanceCaddyfile is the Caddyfile of one instance: the socketio
// handler and policy (fallback least_conn) in front of nodes, trusting the
// front's X-Forwarded-For, with global (e.g. the socketio option) added,
// and /__health for the front (503 while healthDir holds
// drained-<httpPort>).
// Idle connections to the nodes are closed before the nodes close them.
func instanceCaddyfile(adminPort, httpPort int, nodes []*sioNode, global, healthDir string) string {
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
	# the front's health check: 503 while the test drains this instance
	handle /__health {
		@drained file {
			root %s
			try_files /drained-%d
		}
		respond @drained 503
		respond 200
	}
	handle {
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
}
`, adminPort, httpPort, httpPort+363, global, httpPort, healthDir, httpPort, strings.Join(dials, " "))
}

// redisOption is the socketio global option for a Redis store. Its
// timeout is 500ms, not the default 50ms: a handshake whose pin write
// times out is routed by client-IP hash on the other instance until the
// write is retried, and a test Caddy built with -race on two busy cores
// does miss 50ms now and then (internal/store/redis tests the default).
func redisOption(addr string) string {
	return fmt.Sprintf("\tsocketio {\n\t\tstore redis {\n\t\t\taddress %s\n\t\t\ttimeout 500ms\n\t\t}\n\t}\n", addr)
}

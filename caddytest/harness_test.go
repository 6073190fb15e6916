// Package caddytest runs the caddy-socketio modules in a real Caddy in front
// of real Socket.IO servers (the official Node packages, spawned from
// testdata/) and drives them with the official socket.io-client.
//
// Caddy runs in-process (caddytest, admin on localhost:2999, sites on
// 127.0.0.1:9080), once per test binary, so every integration test lives
// in this one package and none runs in parallel. To run two copies of the
// suite on one machine, give each its own ports with SOCKETIO_TEST_ADMIN_PORT
// and SOCKETIO_TEST_HTTP_PORT. The tests need Node.js and the npm packages
// of the repository root (`npm ci`); `make test` does both.
package caddytest

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/caddy-socketio/caddy-socketio"
)

// Ports of the test Caddy: the admin API and the HTTP sites (HTTPS on
// httpPort+363, as 9443 is to 9080).
var (
	adminPort = envPort("SOCKETIO_TEST_ADMIN_PORT", 2999)
	httpPort  = envPort("SOCKETIO_TEST_HTTP_PORT", 9080)
	siteAddr  = fmt.Sprintf("127.0.0.1:%d", httpPort)
)

func envPort(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		if p, err := strconv.Atoi(v); err == nil && p > 0 && p < 65536 {
			return p
		}
		panic(name + " must be a TCP port number")
	}
	return def
}

func TestMain(m *testing.M) {
	caddytester.Default.AdminPort = adminPort
	code := m.Run()
	if goServer.bin != "" {
		_ = os.RemoveAll(filepath.Dir(goServer.bin))
	}
	os.Exit(code)
}

// repoRoot returns the repository root (where package.json lives).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Dir(filepath.Dir(file))
}

// requireNode fails the test unless node and the npm packages are there:
// a missing dependency is a broken setup, not a reason to skip.
func requireNode(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs Node.js and a real Caddy; not run with -short")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not on PATH: install Node.js 20+ (see README)")
	}
	for _, pkg := range []string{"socket.io", "socket.io-client", "sio2", "sio2-client", "undici"} {
		if _, err := os.Stat(filepath.Join(repoRoot(t), "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("npm package %s is missing: run `npm ci` in the repository root (make test does)", pkg)
		}
	}
}

// prefixWriter sends a child's stderr to the test log, line by line.
type prefixWriter struct {
	t      testing.TB
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		w.t.Log(w.prefix + string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

var _ io.Writer = (*prefixWriter)(nil)

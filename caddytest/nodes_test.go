package caddytest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// sioNode is one Socket.IO server process.
type sioNode struct {
	Name string
	Host string // the address it listens on
	Port int
	cmd  *exec.Cmd
	done chan struct{}
}

// Dial is the node's address as an upstream.
func (n *sioNode) Dial() string { return net.JoinHostPort(n.Host, strconv.Itoa(n.Port)) }

// serverSpec says which Socket.IO server implementation a node runs and
// how. Every implementation follows the contract of testdata/README.md:
// PORT, NODE_NAME and SIO_OPTIONS in, a "listening" line and /__stats out.
type serverSpec struct {
	// Impl is "node" (testdata/sio-node.js, the default), "python"
	// (testdata/sio-python.py) or "go" (testdata/gosio).
	Impl string
	// Env adds environment variables, e.g. SIO_VERSION=2.
	Env map[string]string
	// Options are the server options, passed as SIO_OPTIONS.
	Options map[string]any
	// Host and Port are where the node listens; default 127.0.0.1 and a
	// free port (every implementation reads HOST and PORT).
	Host string
	Port int
}

// serverCommand returns the command that runs spec's implementation.
func serverCommand(t testing.TB, spec serverSpec) *exec.Cmd {
	t.Helper()
	testdata := filepath.Join(repoRoot(t), "caddytest", "testdata")
	switch spec.Impl {
	case "", "node":
		return exec.Command("node", filepath.Join(testdata, "sio-node.js"))
	case "python":
		// Debian's python3-socketio lives in the system interpreter's
		// dist-packages, which another python3 on PATH may not see
		return exec.Command(systemPython, filepath.Join(testdata, "sio-python.py"))
	case "go":
		return exec.Command(goServerBinary(t))
	default:
		t.Fatalf("unknown server implementation %q", spec.Impl)
		return nil
	}
}

// systemPython is the interpreter Debian's python3-socketio is installed
// for (.ci/run installs python3-socketio, python3-engineio and
// python3-aiohttp).
const systemPython = "/usr/bin/python3"

// requirePython fails the test unless the python-socketio server can run.
func requirePython(t testing.TB) {
	t.Helper()
	out, err := exec.Command(systemPython, "-c", "import socketio, engineio, aiohttp").CombinedOutput()
	if err != nil {
		t.Fatalf("python-socketio is not installed for %s (apt-get install python3-socketio python3-engineio python3-aiohttp; .ci/run does): %v\n%s", systemPython, err, out)
	}
}

var goServer struct {
	once sync.Once
	bin  string
	err  error
}

// goServerBinary builds testdata/gosio (a zishang520/socket.io server in a
// module of its own) once per test binary and returns its path.
func goServerBinary(t testing.TB) string {
	t.Helper()
	goServer.once.Do(func() {
		dir, err := os.MkdirTemp("", "gosio")
		if err != nil {
			goServer.err = err
			return
		}
		goServer.bin = filepath.Join(dir, "gosio")
		cmd := exec.Command("go", "build", "-o", goServer.bin, ".")
		cmd.Dir = filepath.Join(repoRoot(t), "caddytest", "testdata", "gosio")
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
		if out, err := cmd.CombinedOutput(); err != nil {
			goServer.err = fmt.Errorf("building testdata/gosio: %v\n%s", err, out)
		}
	})
	if goServer.err != nil {
		t.Fatal(goServer.err)
	}
	return goServer.bin
}

// startServer starts one node as spec says and waits until it listens.
// The node is stopped when the test ends.
func startServer(t testing.TB, name string, spec serverSpec) *sioNode {
	t.Helper()
	if spec.Options == nil {
		spec.Options = map[string]any{}
	}
	optJSON, err := json.Marshal(spec.Options)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Host == "" {
		spec.Host = "127.0.0.1"
	}
	cmd := serverCommand(t, spec)
	cmd.Env = append(os.Environ(), "HOST="+spec.Host, "PORT="+strconv.Itoa(spec.Port), "NODE_NAME="+name, "SIO_OPTIONS="+string(optJSON))
	for k, v := range spec.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stderr = &prefixWriter{t: t, prefix: name + ": "}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	n := &sioNode{Name: name, Host: spec.Host, cmd: cmd, done: make(chan struct{})}
	t.Cleanup(n.stop)

	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		_ = cmd.Wait()
		close(n.done)
	}()
	select {
	case line := <-lines:
		var ev struct {
			Event string `json:"event"`
			Port  int    `json:"port"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Event != "listening" || ev.Port == 0 {
			t.Fatalf("%s: unexpected first line %q", name, line)
		}
		n.Port = ev.Port
	case <-n.done:
		t.Fatalf("%s exited before listening", name)
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not start listening within 15s", name)
	}
	return n
}

// startCluster starts count socket.io@4 nodes named node1, node2, ….
func startCluster(t testing.TB, count int, opts map[string]any) []*sioNode {
	t.Helper()
	return startClusterOf(t, count, serverSpec{Options: opts})
}

// startClusterOf starts count nodes as spec says, named node1, node2, ….
func startClusterOf(t testing.TB, count int, spec serverSpec) []*sioNode {
	t.Helper()
	nodes := make([]*sioNode, count)
	for i := range nodes {
		nodes[i] = startServer(t, fmt.Sprintf("node%d", i+1), spec)
	}
	return nodes
}

// stop terminates the node (SIGTERM, then SIGKILL) and waits for it.
func (n *sioNode) stop() {
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

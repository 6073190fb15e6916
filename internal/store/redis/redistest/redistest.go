// Package redistest runs a real redis-server for tests: on a free
// loopback port, in a temporary directory, without persistence, stopped
// (by its pid) when the test ends.
package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Server is one redis-server process.
type Server struct {
	Addr     string
	Password string

	t    testing.TB
	port int
	dir  string
	cmd  *exec.Cmd
}

// Binary is the redis-server the tests run (Debian's redis-server
// package; scripts/apt-install-if-needed.sh installs it).
const Binary = "redis-server"

// Start starts a redis-server with the given password ("" for none) and
// waits until it accepts connections.
func Start(t testing.TB, password string) *Server {
	t.Helper()
	if _, err := exec.LookPath(Binary); err != nil {
		t.Fatalf("%s is not on PATH: apt-get install redis-server (scripts/apt-install-if-needed.sh does)", Binary)
	}
	s := &Server{t: t, port: FreePort(t), dir: t.TempDir(), Password: password}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Stop kills the server, if it runs, and waits for it to exit.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same port (empty: there is no
// persistence).
func (s *Server) Restart() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatal("redis-server already runs")
	}
	args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log")}
	if s.Password != "" {
		args = append(args, "--requirepass", s.Password)
	}
	cmd := exec.Command(Binary, args...)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s.ping() == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	s.t.Fatalf("redis-server did not answer on %s:\n%s", s.Addr, log)
}

// Do sends one command in the inline protocol and returns the first
// line of the answer: enough for tests to read or plant a value.
func (s *Server) Do(args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReader(conn)
	if s.Password != "" {
		if _, err := fmt.Fprint(conn, resp("AUTH", s.Password)); err != nil {
			return "", err
		}
		if _, err := r.ReadString('\n'); err != nil {
			return "", err
		}
	}
	if _, err := fmt.Fprint(conn, resp(args...)); err != nil {
		return "", err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "$") {
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	if strings.HasPrefix(line, "-") {
		return "", fmt.Errorf("redis: %s", line[1:])
	}
	return strings.TrimLeft(line, "+:"), nil
}

func resp(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

func (s *Server) ping() error {
	got, err := s.Do("PING")
	if err == nil && got != "PONG" {
		err = fmt.Errorf("PING answered %q", got)
	}
	return err
}

// FreePort returns a TCP port free on 127.0.0.1 right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

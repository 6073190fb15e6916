package caddytest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

// TestOwnerBackWithinTryDuration takes a session's owner away for a
// moment (its address refuses connections) under the strictest passive
// health checks, max_fails 1 (issue 10, item 2). The request that finds
// it gone counts a failure, so the owner is unavailable for fail_duration;
// reverse_proxy keeps selecting for lb_try_duration, and once the owner
// is back the request reaches it: the session goes on, on its own node.
// An owner that is only unavailable must not turn its pins into
// tombstones. (A node that is killed is TestReliabilityNodeFailure.)
func TestOwnerBackWithinTryDuration(t *testing.T) {
	requireNode(t)
	nodes := startCluster(t, 2, nil)
	fw := startForwarder(t, nodes[0].Dial())
	front := &sioNode{Name: nodes[0].Name, Host: "127.0.0.1", Port: fw.port}
	pool := []*sioNode{front, nodes[1]}
	tester := caddytester.NewTester(t)
	loadConfig(t, tester, proxyConfig{Nodes: pool, Handler: true, Policy: "socketio",
		Extra: "\t\tlb_try_duration 5s\n\t\tlb_try_interval 100ms\n\t\tfail_duration 1s\n\t\tmax_fails 1"}.Caddyfile())

	ip := ""
	for k := 1; k < 200 && ip == ""; k++ {
		if a := fmt.Sprintf("127.77.230.%d", k); hashNode(pool, a) == front {
			ip = a
		}
	}
	sid, owner := openSession(t, pool, ip)
	if owner != front {
		t.Fatalf("session on %s, want %s", owner.Name, front.Name)
	}
	ping := request("POST", "/socket.io/?EIO=4&transport=polling&sid="+sid, []string{"Content-Type: text/plain;charset=UTF-8"}, "6")
	if res := rawExchange(t, ip, ping); res.Status != 200 {
		t.Fatalf("before the outage: %v", res)
	}

	fw.pause()
	const outage = 300 * time.Millisecond
	resumed := time.AfterFunc(outage, func() { fw.resume(t) })
	defer resumed.Stop()
	seen := seenBy(t, nodes)
	start := time.Now()
	res := rawExchange(t, ip, ping)
	took := time.Since(start)
	t.Logf("request during a %s outage of its owner: %v after %s", outage, res, took)
	if res.Err != nil || res.Status != 200 || res.Header.Get("X-Sio-Node") != nodes[0].Name {
		t.Fatalf("got %v, want 200 from %s once it is back (lb_try_duration 5s)", res, nodes[0].Name)
	}
	if took < outage {
		t.Fatalf("answered after %s, before the owner came back: the outage did not happen", took)
	}
	if got := seenBy(t, nodes).delta(seen); got[nodes[1].Name] != 0 {
		t.Fatalf("the other node received %v", got)
	}
	// and the session's next request goes straight to its owner
	if res := rawExchange(t, ip, ping); res.Status != 200 || res.Header.Get("X-Sio-Node") != nodes[0].Name {
		t.Fatalf("after the outage: %v", res)
	}
}

// forwarder relays TCP connections to a target; paused, it refuses new
// connections and cuts the ones it relays, as a node that went away.
type forwarder struct {
	target string
	port   int

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startForwarder(t *testing.T, target string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{target: target, port: ln.Addr().(*net.TCPAddr).Port, conns: map[net.Conn]struct{}{}}
	f.serve(ln)
	t.Cleanup(func() {
		f.pause()
		f.wg.Wait()
	})
	return f
}

func (f *forwarder) serve(ln net.Listener) {
	f.mu.Lock()
	f.ln = ln
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.relay(c)
			}()
		}
	}()
}

func (f *forwarder) relay(c net.Conn) {
	up, err := net.DialTimeout("tcp", f.target, 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	f.mu.Lock()
	if f.ln == nil {
		f.mu.Unlock()
		_ = c.Close()
		_ = up.Close()
		return
	}
	f.conns[c], f.conns[up] = struct{}{}, struct{}{}
	f.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = up.Close()
	<-done
	f.mu.Lock()
	delete(f.conns, c)
	delete(f.conns, up)
	f.mu.Unlock()
}

// pause closes the listener (connections are refused) and every relayed
// connection.
func (f *forwarder) pause() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != nil {
		_ = f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		_ = c.Close()
	}
}

// cut closes every relayed connection, as a network failure would, and
// keeps accepting new ones.
func (f *forwarder) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		_ = c.Close()
	}
}

// resume listens on the same port again.
func (f *forwarder) resume(t *testing.T) {
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", f.port)); !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("forwarder: listening again: %v", err)
		return
	}
	f.serve(ln)
}

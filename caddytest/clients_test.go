package caddytest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// messageCount is an error message and how many clients saw it.
type messageCount struct {
	Message string `json:"message"`
	Count   int    `json:"count"`
}

// clientResult is the summary sio-clients.js prints at the end.
type clientResult struct {
	Event                 string         `json:"event"`
	Total                 int            `json:"total"`
	Connected             int            `json:"connected"`
	Failed                int            `json:"failed"`
	Upgraded              int            `json:"upgraded"`
	PerNode               map[string]int `json:"perNode"`
	TransportsAtEnd       map[string]int `json:"transportsAtEnd"`
	AliveAtEnd            int            `json:"aliveAtEnd"`
	EchoOK                int            `json:"echoOk"`
	EchoFailed            int            `json:"echoFailed"`
	ConnectErrors         []messageCount `json:"connectErrors"`
	UpgradeErrors         []messageCount `json:"upgradeErrors"`
	DisconnectsDuringHold struct {
		Count   int            `json:"count"`
		Reasons map[string]int `json:"reasons"`
		Details map[string]int `json:"details"`
		// At lists when each disconnect happened (the first 1000), in
		// Unix milliseconds.
		At []int64 `json:"at"`
	} `json:"disconnectsDuringHold"`
	EchoNodeMismatch  int            `json:"echoNodeMismatch"`
	Reconnects        int            `json:"reconnects"`
	ReconnectAttempts int            `json:"reconnectAttempts"`
	PerNodeAtEnd      map[string]int `json:"perNodeAtEnd"`
	EchoErrors        map[string]int `json:"echoErrors"`
	EchoSkipped       int            `json:"echoSkipped"`
	ConnectPhaseMs    int            `json:"connectPhaseMs"`
	DurationMs        int            `json:"durationMs"`
	Clients           []clientRecord `json:"clients"`
}

// clientRecord is one client's compact record in the result.
type clientRecord struct {
	Node         string   `json:"node"`
	LastNode     string   `json:"lastNode"` // only when it differs from Node
	LocalAddress string   `json:"localAddress"`
	Reconnects   int      `json:"reconnects"`
	Alive        *bool    `json:"alive"` // false only for a connected client that was not alive at the end
	Error        string   `json:"error"`
	Transport    string   `json:"transport"`
	Upgraded     bool     `json:"upgraded"`
	Disconnects  []string `json:"disconnects"`
}

// FinalNode is the node that served the client last.
func (c clientRecord) FinalNode() string {
	if c.LastNode != "" {
		return c.LastNode
	}
	return c.Node
}

// readyCounts is the clients' "ready" line: the end of the connect phase.
type readyCounts struct {
	Connected int `json:"connected"`
	Failed    int `json:"failed"`
}

// clientRun is a running sio-clients.js.
type clientRun struct {
	t      testing.TB
	ready  chan readyCounts
	result chan clientResult
	errs   chan error
}

// startClients starts sio-clients.js against the test Caddy with the given
// flags. Ready returns once every client connected or failed; Result waits
// for the end of the run.
func startClients(t testing.TB, flags ...string) *clientRun {
	t.Helper()
	args := append([]string{filepath.Join(repoRoot(t), "caddytest", "testdata", "sio-clients.js"), "--url", "http://" + siteAddr}, flags...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.Stderr = &prefixWriter{t: t, prefix: "clients: "}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting clients: %v", err)
	}
	run := &clientRun{t: t, ready: make(chan readyCounts, 1), result: make(chan clientResult, 1), errs: make(chan error, 1)}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		defer cancel()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
		var got bool
		for sc.Scan() {
			line := sc.Bytes()
			var ev struct {
				Event string `json:"event"`
			}
			if json.Unmarshal(line, &ev) != nil {
				continue
			}
			switch ev.Event {
			case "ready":
				var r readyCounts
				_ = json.Unmarshal(line, &r)
				select {
				case run.ready <- r:
				default:
				}
			case "result":
				var res clientResult
				if err := json.Unmarshal(line, &res); err != nil {
					run.fail(fmt.Errorf("decoding result: %v", err))
					continue
				}
				got = true
				run.result <- res
			case "watchdog":
				run.fail(fmt.Errorf("sio-clients watchdog fired: %s", line))
			}
		}
		err := cmd.Wait()
		if !got {
			run.fail(fmt.Errorf("clients ended without a result: %v", err))
		}
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	return run
}

// fail reports the run's first error; later ones are dropped.
func (c *clientRun) fail(err error) {
	select {
	case c.errs <- err:
	default:
	}
}

// Ready waits until the connect phase is over.
func (c *clientRun) Ready() readyCounts {
	c.t.Helper()
	return c.ReadyWithin(4 * time.Minute)
}

// ReadyWithin is Ready with a deadline.
func (c *clientRun) ReadyWithin(timeout time.Duration) readyCounts {
	c.t.Helper()
	return awaitClients(c, c.ready, timeout, "clients not ready")
}

// Result waits for the run to end and returns its summary.
func (c *clientRun) Result() clientResult {
	c.t.Helper()
	return c.ResultWithin(5 * time.Minute)
}

// ResultWithin is Result with a deadline.
func (c *clientRun) ResultWithin(timeout time.Duration) clientResult {
	c.t.Helper()
	return awaitClients(c, c.result, timeout, "clients did not finish")
}

// awaitClients returns what ch delivers; an error of the run, or timeout
// passing ("<late> within <timeout>"), fails the test.
func awaitClients[T any](c *clientRun, ch <-chan T, timeout time.Duration, late string) T {
	c.t.Helper()
	select {
	case v := <-ch:
		return v
	case err := <-c.errs:
		c.t.Fatal(err)
	case <-time.After(timeout):
		c.t.Fatalf("%s within %s", late, timeout)
	}
	var zero T
	return zero
}

// runClients runs sio-clients.js to the end.
func runClients(t testing.TB, flags ...string) clientResult {
	t.Helper()
	return startClients(t, flags...).Result()
}

//lint:file-ignore SA1019 x/net/http2.Transport is deprecated, but net/http's Transport cannot send extended CONNECT (see newTransport)

// Command h2load holds Engine.IO v4 (Socket.IO 4) sessions open through a
// proxy over HTTP/2, many sessions to a TLS connection: WebSocket sessions
// (a polling handshake, then the upgrade over an RFC 8441 extended CONNECT
// stream, the way browsers speak WebSocket over HTTP/2) and polling-only
// sessions (long-poll GETs and POSTs as HTTP/2 streams).
//
// bench/scale.sh runs it (SCALE_H2=1) where the open-file limit cannot hold
// two descriptors per session: over HTTP/2, Caddy still holds one upstream
// connection per session, but only a few client connections.
//
//	go run ./bench/h2load -url https://127.0.0.1:8291/socket.io/ -ca root.crt \
//		-transport websocket -count 5000 -hold 60s -echo-every 10s
//
// Its output is that of bench/e2e-client.js --mode hold, as JSON lines on
// stdout: {"event":"ready",...} once every session is open or has failed,
// then {"event":"result",...} when the hold ends (SIGUSR2, or -hold). The
// sessions speak to bench/bench-node.js: Socket.IO's "echo" event, answered
// with the payload as the ack. Exit status: 0 when the run completed (read
// the JSON), 2 for bad flags, 3 when the -max watchdog fired.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"

	"github.com/caddy-socketio/caddy-socketio/internal/eioclient"
)

// flags
var (
	baseURL    = flag.String("url", "", "the Engine.IO endpoint, e.g. https://127.0.0.1:8291/socket.io/ (required)")
	caFile     = flag.String("ca", "", "PEM file of the CA that signed the proxy's certificate (required)")
	transport  = flag.String("transport", "websocket", "websocket (polling handshake, then the upgrade) or polling (polling only)")
	count      = flag.Int("count", 100, "sessions")
	concurrent = flag.Int("concurrency", 50, "sessions being opened at once")
	perConn    = flag.Int("per-source", 100, "sessions per client transport; each transport dials from its own source address")
	addrNet    = flag.Int("addr-net", 130, "second octet of the source addresses: transport k dials from 127.NET.(k/250).(k%250+1)")
	hold       = flag.Duration("hold", time.Minute, "the longest hold (SIGUSR2 ends it earlier)")
	echoEvery  = flag.Duration("echo-every", 0, "one echo per session this often during the hold (0 = none)")
	timeout    = flag.Duration("timeout", 15*time.Second, "one session's open (handshake, connect, upgrade), and an echo's ack")
	payloadLen = flag.Int("payload-bytes", 64, "echo payload, a string of this many bytes")
	maxRun     = flag.Duration("max", 0, "watchdog: exit 3 after this long (default: the opens' worst case + hold + 60s)")
)

func main() {
	flag.Parse()
	if *baseURL == "" || *caFile == "" || *count < 1 || *concurrent < 1 || *perConn < 1 ||
		(*transport != "websocket" && *transport != "polling") || *addrNet < 0 || *addrNet > 255 ||
		(*count+*perConn-1) / *perConn > 250*256 {
		fmt.Fprintln(os.Stderr, "h2load: bad flags (see -help)")
		os.Exit(2)
	}
	roots := x509.NewCertPool()
	pem, err := os.ReadFile(*caFile)
	if err != nil || !roots.AppendCertsFromPEM(pem) {
		fmt.Fprintf(os.Stderr, "h2load: reading the CA %s: %v\n", *caFile, err)
		os.Exit(2)
	}
	watchdog := *maxRun
	if watchdog == 0 {
		waves := (*count + *concurrent - 1) / *concurrent
		watchdog = time.Duration(waves)*(*timeout) + *hold + time.Minute
	}
	r := &run{roots: roots, payload: strings.Repeat("x", *payloadLen), errors: map[string]int{}, disconnects: map[string]int{}}
	time.AfterFunc(watchdog, func() {
		r.emit(map[string]any{"event": "watchdog", "afterMs": watchdog.Milliseconds(), "errors": r.errorsCopy()})
		os.Exit(3)
	})
	release := make(chan os.Signal, 1)
	signal.Notify(release, syscall.SIGUSR2)
	r.main(release)
}

// run is one invocation: its sessions, counters and output.
type run struct {
	roots   *x509.CertPool
	payload string

	mu          sync.Mutex
	errors      map[string]int // guarded by mu
	disconnects map[string]int // during the hold, by reason; guarded by mu
	holding     bool           // guarded by mu

	echoOK, echoFailed atomic.Int64
	out                sync.Mutex
}

func (r *run) main(release <-chan os.Signal) {
	transports := make([]*http2.Transport, (*count+*perConn-1) / *perConn)
	for k := range transports {
		transports[k] = newTransport(r.roots, net.IPv4(127, byte(*addrNet), byte(k/250), byte(k%250+1)))
	}
	sessions := make([]*session, *count)
	readyMs := make([]float64, 0, *count)
	var failed int
	var mu sync.Mutex
	sem := make(chan struct{}, *concurrent)
	var wg sync.WaitGroup
	tOpen := time.Now()
	for i := range sessions {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s := newSession(r, transports[i / *perConn])
			t0 := time.Now()
			err := s.open()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				r.fail(err.Error())
				s.close()
				return
			}
			readyMs = append(readyMs, float64(time.Since(t0).Microseconds())/1000)
			sessions[i] = s
		}()
	}
	wg.Wait()
	open := slices.DeleteFunc(sessions, func(s *session) bool { return s == nil })
	r.mu.Lock()
	r.holding = true
	r.mu.Unlock()
	r.emit(map[string]any{
		"event": "ready", "mode": "hold", "client": "bench/h2load", "protocol": "HTTP/2", "transport": *transport,
		"count": *count, "concurrency": *concurrent, "clientTransports": len(transports),
		"ready": len(open), "failed": failed, "openMs": time.Since(tOpen).Milliseconds(),
		"readyMs": summary(readyMs), "errors": r.errorsCopy(),
	})

	stop := make(chan struct{})
	if *echoEvery > 0 {
		for _, s := range open {
			go s.echoLoop(stop)
		}
	}
	tHold := time.Now()
	endedBy := "hold"
	select {
	case <-time.After(*hold):
	case <-release:
		endedBy = "SIGUSR2"
	}
	close(stop)
	connected, alive := 0, 0
	byTransport := map[string]int{}
	for _, s := range open {
		if t := s.transportNow(); t != "" {
			connected++
			byTransport[t]++
			if t == *transport {
				alive++
			}
		}
	}
	r.mu.Lock()
	r.holding = false
	disconnects := maps.Clone(r.disconnects)
	r.mu.Unlock()
	r.emit(map[string]any{
		"event": "result", "mode": "hold", "client": "bench/h2load", "protocol": "HTTP/2", "transport": *transport,
		"endedBy": endedBy, "heldMs": time.Since(tHold).Milliseconds(),
		"ready": len(open), "failed": failed, "connectedAtEnd": connected, "aliveAtEnd": alive,
		"byTransportAtEnd": byTransport, "disconnects": disconnects,
		"echoOk": r.echoOK.Load(), "echoFailed": r.echoFailed.Load(), "errors": r.errorsCopy(),
	})
	for _, s := range open {
		s.close()
	}
	for _, tr := range transports {
		tr.CloseIdleConnections()
	}
}

// fail counts an error by its message.
func (r *run) fail(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors[msg]++
}

// lost records a session that ended during the hold.
func (r *run) lost(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.holding {
		r.disconnects[reason]++
	}
}

func (r *run) errorsCopy() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.errors)
}

func (r *run) emit(v any) {
	b, _ := json.Marshal(v)
	r.out.Lock()
	defer r.out.Unlock()
	_, _ = os.Stdout.Write(append(b, '\n'))
}

// summary has the fields of bench/e2e-client.js's latency summaries.
func summary(ms []float64) map[string]any {
	if len(ms) == 0 {
		return map[string]any{"n": 0}
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	pct := func(p float64) float64 {
		k := int(math.Ceil(p/100*float64(len(s)))) - 1
		return round3(s[min(max(k, 0), len(s)-1)])
	}
	var sum float64
	for _, v := range s {
		sum += v
	}
	return map[string]any{"n": len(s), "mean": round3(sum / float64(len(s))), "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": round3(s[len(s)-1])}
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// newTransport speaks HTTP/2 only, from the source address local. It is
// x/net's Transport because net/http's refuses the ":protocol" header of
// an extended CONNECT. Past the server's stream limit it dials another
// connection.
func newTransport(roots *x509.CertPool, local net.IP) *http2.Transport {
	d := &tls.Dialer{NetDialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: local}, Timeout: 10 * time.Second}}
	return &http2.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			dd := *d
			dd.Config = cfg
			return dd.DialContext(ctx, network, addr)
		},
		ReadIdleTimeout: 30 * time.Second,
	}
}

// session is one Engine.IO v4 session with a Socket.IO connection in the
// main namespace.
type session struct {
	r *run
	c *eioclient.Client

	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	current string              // the transport in use, "" once closed; guarded by mu
	acks    map[int]chan string // echo acks awaited, by id; guarded by mu
	nextID  int                 // guarded by mu

	ws    *eioclient.WS // websocket sessions, after the upgrade
	sendq chan string   // polling sessions: packets for the POST loop
}

func newSession(r *run, rt *http2.Transport) *session {
	ctx, cancel := context.WithCancel(context.Background())
	c := &eioclient.Client{Base: *baseURL, Transport: rt}
	return &session{r: r, c: c, ctx: ctx, cancel: cancel, acks: map[int]chan string{}}
}

// do sends one polling request and returns the body of its 200 answer.
func (s *session) do(ctx context.Context, method, body string) (string, error) {
	data, err := s.c.Do(ctx, method, method, body)
	return data, brief(err)
}

// brief is the short form of a request's error that the run counts errors
// by, e.g. "GET: status 400".
func brief(err error) error {
	var e *eioclient.Error
	switch {
	case !errors.As(err, &e):
		return err
	case e.Status == 0:
		return fmt.Errorf("%s: transport error", e.Method)
	case e.IsStatus():
		return fmt.Errorf("%s: status %d", e.Method, e.Status)
	default:
		return fmt.Errorf("%s: reading the body", e.Method)
	}
}

// open makes the handshake, connects the Socket.IO namespace and, for a
// websocket session, upgrades; then the session runs in the background.
func (s *session) open() error {
	ctx, cancel := context.WithTimeout(s.ctx, *timeout)
	defer cancel()
	if _, err := s.c.Handshake(ctx); err != nil {
		var e *eioclient.Error
		if errors.As(err, &e) {
			return fmt.Errorf("handshake: %w", brief(err))
		}
		return errors.New("handshake: no open packet")
	}
	if body, err := s.do(ctx, http.MethodPost, "40"); err != nil || body != "ok" {
		return fmt.Errorf("socket.io connect: POST: %v %q", err, body)
	}
	// the namespace's CONNECT answer, maybe with an event after it
	for connected := false; !connected; {
		body, err := s.do(ctx, http.MethodGet, "")
		if err != nil {
			return fmt.Errorf("socket.io connect: %w", err)
		}
		for _, p := range strings.Split(body, eioclient.Separator) {
			switch {
			case strings.HasPrefix(p, "40"):
				connected = true
			case strings.HasPrefix(p, "44"):
				return fmt.Errorf("socket.io connect refused")
			}
		}
	}
	if *transport == "polling" {
		s.mu.Lock()
		s.current = "polling"
		s.mu.Unlock()
		s.sendq = make(chan string, 64)
		go s.pollLoop()
		go s.postLoop()
		return nil
	}
	ws, err := s.openWebSocket(ctx)
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	if err := ws.WriteText("2probe"); err != nil {
		return fmt.Errorf("upgrade: probe: %w", err)
	}
	if msg, err := ws.ReadMessage(); err != nil || msg != "3probe" {
		return fmt.Errorf("upgrade: probe answer %q: %v", msg, err)
	}
	if err := ws.WriteText("5"); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	s.ws = ws
	s.mu.Lock()
	s.current = "websocket"
	s.mu.Unlock()
	go s.wsLoop()
	return nil
}

// openWebSocket opens the session's WebSocket as an extended CONNECT
// stream (RFC 8441) that lasts as long as the session; ctx bounds only the
// wait for its answer.
func (s *session) openWebSocket(ctx context.Context) (*eioclient.WS, error) {
	type answer struct {
		ws  *eioclient.WS
		err error
	}
	done := make(chan answer, 1)
	go func() {
		ws, err := s.c.OpenStream(s.ctx, eioclient.ExtendedConnect(2, "websocket"))
		done <- answer{ws, err}
	}()
	select {
	case a := <-done:
		return a.ws, brief(a.err)
	case <-ctx.Done():
		go func() {
			if a := <-done; a.ws != nil {
				a.ws.Close()
			}
		}()
		return nil, errors.New("CONNECT: timeout")
	}
}

// end closes the session once, counting why if it was live.
func (s *session) end(reason string) {
	s.mu.Lock()
	was := s.current
	s.current = ""
	acks := s.acks
	s.acks = map[int]chan string{}
	s.mu.Unlock()
	if was == "" {
		return
	}
	s.r.lost(reason)
	for _, ch := range acks {
		close(ch)
	}
	s.cancel()
	if s.ws != nil {
		s.ws.Close()
	}
}

func (s *session) close() {
	s.mu.Lock()
	s.current = ""
	s.mu.Unlock()
	s.cancel()
	if s.ws != nil {
		s.ws.Close()
	}
}

func (s *session) transportNow() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// handle reacts to one Engine.IO packet; reply sends one back on the
// session's transport.
func (s *session) handle(p string, reply func(string)) {
	switch {
	case p == "2": // ping
		reply("3")
	case p == "1": // close
		s.end("transport close")
	case strings.HasPrefix(p, "41"):
		s.end("io server disconnect")
	case strings.HasPrefix(p, "43"): // ack: 43<id>[payload]
		rest := p[2:]
		i := strings.IndexByte(rest, '[')
		id, err := strconv.Atoi(rest[:max(i, 0)])
		if i <= 0 || err != nil {
			return
		}
		s.mu.Lock()
		ch := s.acks[id]
		delete(s.acks, id)
		s.mu.Unlock()
		if ch != nil {
			ch <- rest[i:]
		}
	}
}

func (s *session) pollLoop() {
	for s.ctx.Err() == nil {
		body, err := s.do(s.ctx, http.MethodGet, "")
		if err != nil {
			if s.ctx.Err() == nil {
				s.end("transport error: poll: " + err.Error())
			}
			return
		}
		for _, p := range strings.Split(body, eioclient.Separator) {
			s.handle(p, func(out string) { s.send(out) })
		}
	}
}

// postLoop sends the queued packets, one POST at a time (engine.io closes
// a session on a second concurrent POST), several packets to a POST.
func (s *session) postLoop() {
	for {
		var batch []string
		select {
		case <-s.ctx.Done():
			return
		case p := <-s.sendq:
			batch = append(batch, p)
		}
		for more := true; more; {
			select {
			case p := <-s.sendq:
				batch = append(batch, p)
			default:
				more = false
			}
		}
		if body, err := s.do(s.ctx, http.MethodPost, strings.Join(batch, eioclient.Separator)); err != nil || body != "ok" {
			if s.ctx.Err() == nil {
				s.end(fmt.Sprintf("transport error: post: %v", err))
			}
			return
		}
	}
}

func (s *session) send(p string) {
	select {
	case s.sendq <- p:
	case <-s.ctx.Done():
	}
}

func (s *session) wsLoop() {
	for {
		msg, err := s.ws.ReadMessage()
		if err != nil {
			if s.ctx.Err() == nil {
				s.end("transport close: websocket: " + err.Error())
			}
			return
		}
		s.handle(msg, func(out string) {
			if err := s.ws.WriteText(out); err != nil && s.ctx.Err() == nil {
				s.end("transport error: websocket write")
			}
		})
	}
}

// echoLoop emits "echo" with an ack every -echo-every, from a random
// offset, until stop.
func (s *session) echoLoop(stop <-chan struct{}) {
	select {
	case <-time.After(time.Duration(mrand.Int64N(int64(*echoEvery)))):
	case <-stop:
		return
	}
	tick := time.NewTicker(*echoEvery)
	defer tick.Stop()
	for {
		s.echo(stop)
		select {
		case <-tick.C:
		case <-stop:
			return
		}
	}
}

func (s *session) echo(stop <-chan struct{}) {
	s.mu.Lock()
	current := s.current
	s.nextID++
	id := s.nextID
	ch := make(chan string, 1)
	if current != "" {
		s.acks[id] = ch
	}
	s.mu.Unlock()
	if current == "" {
		return
	}
	packet := fmt.Sprintf(`42%d["echo",%q]`, id, s.r.payload)
	if current == "polling" {
		s.send(packet)
	} else if err := s.ws.WriteText(packet); err != nil {
		s.end("transport error: websocket write")
	}
	want := fmt.Sprintf("[%q]", s.r.payload)
	select {
	case got, ok := <-ch:
		switch {
		case !ok:
			s.r.echoFailed.Add(1)
			s.r.fail("echo: socket has been disconnected")
		case got != want:
			s.r.echoFailed.Add(1)
			s.r.fail("bad echo payload")
		default:
			s.r.echoOK.Add(1)
		}
	case <-time.After(*timeout):
		s.r.echoFailed.Add(1)
		s.r.fail("echo: operation has timed out")
	case <-stop:
	}
	s.mu.Lock()
	delete(s.acks, id)
	s.mu.Unlock()
}

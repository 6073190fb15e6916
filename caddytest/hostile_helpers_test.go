package caddytest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-socketio/caddy-socketio/internal/eioclient"
	"github.com/caddy-socketio/caddy-socketio/selection"
)

// Logger names of the lines the hostile tests look for in Caddy's log.
const (
	logHandler = "http.handlers.socketio"
	logPolicy  = "http.reverse_proxy.selection_policies.socketio"
	logProxy   = "http.handlers.reverse_proxy"
	logError   = "http.log.error"
)

// caddyLog is the test Caddy's default log, written as JSON to a file at
// debug level (global `log` option) and read back by offset, so that each
// case sees only the lines its own request caused.
type caddyLog struct {
	path string
}

func newCaddyLog(t *testing.T) *caddyLog {
	t.Helper()
	return &caddyLog{path: filepath.Join(t.TempDir(), "caddy.log")}
}

// GlobalEx is the global option that sends every Caddy log line there.
func (l *caddyLog) GlobalEx() string {
	return fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tformat json\n\t\tlevel DEBUG\n\t}\n", l.path)
}

// Offset is the log's current end.
func (l *caddyLog) Offset(t testing.TB) int64 {
	t.Helper()
	fi, err := os.Stat(l.path)
	if err != nil {
		if os.IsNotExist(err) {
			return 0
		}
		t.Fatalf("caddy log: %v", err)
	}
	return fi.Size()
}

// logLine is one decoded log entry.
type logLine struct {
	Level  string         `json:"level"`
	Logger string         `json:"logger"`
	Msg    string         `json:"msg"`
	Fields map[string]any `json:"-"`
	Raw    string         `json:"-"`
}

// field returns a top-level field as a string ("" when absent).
func (l logLine) field(name string) string {
	v, ok := l.Fields[name]
	if !ok || v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// requestURI returns the uri of the request object a line carries (error
// log and reverse_proxy lines), or the handler's own "uri" field.
func (l logLine) requestURI() string {
	if req, ok := l.Fields["request"].(map[string]any); ok {
		if uri, ok := req["uri"].(string); ok {
			return uri
		}
	}
	return l.field("uri")
}

// Since returns the complete lines written after offset.
func (l *caddyLog) Since(t testing.TB, offset int64) []logLine {
	t.Helper()
	f, err := os.Open(l.path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		t.Fatalf("caddy log: %v", err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Fatalf("caddy log: %v", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("caddy log: %v", err)
	}
	var lines []logLine
	for _, raw := range bytes.Split(data, []byte("\n")) {
		if len(raw) == 0 {
			continue
		}
		var line logLine
		if json.Unmarshal(raw, &line) != nil {
			continue // a line still being written
		}
		_ = json.Unmarshal(raw, &line.Fields)
		line.Raw = string(raw)
		lines = append(lines, line)
	}
	return lines
}

// logWant describes a line a case must (or must not) produce.
type logWant struct {
	Logger string            // prefix of the logger name
	Msg    string            // the message (exact, unless Prefix)
	Prefix bool              // Msg is a prefix of the message
	Level  string            // if set, the exact level
	Fields map[string]string // top-level fields that must have these values
	URI    string            // if set, a substring of the request's uri
}

func (w logWant) String() string {
	s := fmt.Sprintf("%s %q", w.Logger, w.Msg)
	if w.Level != "" {
		s += " at " + w.Level
	}
	if len(w.Fields) > 0 {
		s += fmt.Sprintf(" %v", w.Fields)
	}
	return s
}

func (w logWant) matches(l logLine) bool {
	if !strings.HasPrefix(l.Logger, w.Logger) || (l.Msg != w.Msg && !(w.Prefix && strings.HasPrefix(l.Msg, w.Msg))) {
		return false
	}
	if w.Level != "" && l.Level != w.Level {
		return false
	}
	for k, v := range w.Fields {
		if l.field(k) != v {
			return false
		}
	}
	return w.URI == "" || strings.Contains(l.requestURI(), w.URI)
}

// Await waits (bounded) until every wanted line appeared after offset;
// lines are written as the request is handled, some after the response
// went out.
func (l *caddyLog) Await(t testing.TB, offset int64, wants ...logWant) []logLine {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		lines := l.Since(t, offset)
		var missing []logWant
		for _, w := range wants {
			found := false
			for _, line := range lines {
				if w.matches(line) {
					found = true
					break
				}
			}
			if !found {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return lines
		}
		if time.Now().After(deadline) {
			var got []string
			for _, line := range lines {
				got = append(got, fmt.Sprintf("%s %s %q", line.Level, line.Logger, line.Msg))
			}
			t.Errorf("Caddy did not log %v; lines since the request:\n\t%s", missing, strings.Join(got, "\n\t"))
			return lines
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Count returns how many lines after offset match w.
func (l *caddyLog) Count(t testing.TB, offset int64, w logWant) int {
	t.Helper()
	n := 0
	for _, line := range l.Since(t, offset) {
		if w.matches(line) {
			n++
		}
	}
	return n
}

// rawResponse is what came back on a raw connection.
type rawResponse struct {
	Err     error // no response could be read
	Status  int
	Header  http.Header
	Body    []byte // the first bodyKeep bytes
	BodyLen int64
	BodySHA string
	BodyErr error // the body ended early
}

const bodyKeep = 64 << 10

func (r rawResponse) String() string {
	if r.Err != nil {
		return "no response: " + r.Err.Error()
	}
	body := r.Body
	if len(body) > 120 {
		body = body[:120]
	}
	s := fmt.Sprintf("%d (X-Sio-Node %q, %d body bytes) %q", r.Status, r.Header.Get("X-Sio-Node"), r.BodyLen, body)
	if r.BodyErr != nil {
		s += " body error: " + r.BodyErr.Error()
	}
	return s
}

// dialFrom opens a TCP connection to the test site from a loopback source
// address (any 127.x.y.z is a distinct client).
func dialFrom(t testing.TB, local string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	conn, err := d.Dial("tcp", siteAddr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", siteAddr, local, err)
	}
	return conn
}

// rawExchange writes req as is on a new connection from local and reads
// one response. The write runs beside the read, so that a server that
// answers before reading everything (431) is heard.
func rawExchange(t testing.TB, local string, req []byte) rawResponse {
	t.Helper()
	resps := rawPipeline(t, local, req, 1)
	return resps[0]
}

// rawPipeline writes req (one or more pipelined requests) and reads n
// responses from the same connection.
func rawPipeline(t testing.TB, local string, req []byte, n int) []rawResponse {
	t.Helper()
	conn := dialFrom(t, local)
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = conn.Write(req)
	}()
	br := bufio.NewReader(conn)
	out := make([]rawResponse, n)
	for i := range out {
		out[i] = readRawResponse(br)
		if out[i].Err != nil {
			for j := i + 1; j < n; j++ {
				out[j].Err = fmt.Errorf("no response after a failed one")
			}
			break
		}
	}
	conn.Close()
	wg.Wait()
	return out
}

func readRawResponse(br *bufio.Reader) rawResponse {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return rawResponse{Err: err}
	}
	defer resp.Body.Close()
	r := rawResponse{Status: resp.StatusCode, Header: resp.Header}
	h := sha256.New()
	var prefix bytes.Buffer
	r.BodyLen, r.BodyErr = io.Copy(io.MultiWriter(h, &capWriter{buf: &prefix, max: bodyKeep}), resp.Body)
	r.Body = prefix.Bytes()
	r.BodySHA = hex.EncodeToString(h.Sum(nil))
	return r
}

// capWriter keeps the first max bytes written to it.
type capWriter struct {
	buf *bytes.Buffer
	max int
}

func (w *capWriter) Write(p []byte) (int, error) {
	if room := w.max - w.buf.Len(); room > 0 {
		w.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// request builds a raw HTTP/1.1 request for the test site: the request
// line, Host, the given header lines, and body (with its Content-Length
// unless a header line already frames it).
func request(method, target string, headers []string, body string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, siteAddr)
	framed := false
	for _, h := range headers {
		lower := strings.ToLower(h)
		if strings.HasPrefix(lower, "content-length:") || strings.HasPrefix(lower, "transfer-encoding:") {
			framed = true
		}
		b.WriteString(h + "\r\n")
	}
	if body != "" && !framed {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return []byte(b.String())
}

// seen is how many requests each node received, on the socket.io path or
// any other (its /__stats: requests.total + otherRequests).
type seen map[string]int

func seenBy(t testing.TB, nodes []*sioNode) seen {
	t.Helper()
	s := seen{}
	for _, n := range nodes {
		resp, err := http.Get(fmt.Sprintf("http://%s/__stats", n.Dial()))
		if err != nil {
			t.Fatalf("%s stats: %v", n.Name, err)
		}
		var st struct {
			Requests struct {
				Total int `json:"total"`
			} `json:"requests"`
			OtherRequests int `json:"otherRequests"`
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s stats: %v", n.Name, err)
		}
		s[n.Name] = st.Requests.Total + st.OtherRequests
	}
	return s
}

// delta returns after-before per node, omitting zeros.
func (after seen) delta(before seen) map[string]int {
	d := map[string]int{}
	for k, v := range after {
		if n := v - before[k]; n != 0 {
			d[k] = n
		}
	}
	return d
}

// hashNode is the node Caddy's client_ip_hash (and the socketio policy for
// an unpinned sid) picks for a client address when every node is up.
func hashNode(nodes []*sioNode, ip string) *sioNode {
	p := selection.Pool[*sioNode]{
		Upstreams: nodes,
		Dial:      (*sioNode).Dial,
		Available: func(*sioNode) bool { return true },
	}
	return nodes[selection.Hash(p, ip)]
}

// handshakeSID reads the sid of a v4 open packet body.
func handshakeSID(body []byte) (string, error) {
	packet, _, _ := strings.Cut(string(body), eioclient.Separator)
	open, err := eioclient.ParseOpen(packet)
	if err != nil {
		return "", err
	}
	return open.SID, nil
}

// heapWatch samples the test process's heap (which is Caddy's: it runs
// in-process) while a case runs.
type heapWatch struct {
	start     runtime.MemStats
	peakInuse uint64
	stop      chan struct{}
	done      chan struct{}
}

func watchHeap() *heapWatch {
	runtime.GC()
	h := &heapWatch{stop: make(chan struct{}), done: make(chan struct{})}
	runtime.ReadMemStats(&h.start)
	h.peakInuse = h.start.HeapInuse
	go func() {
		defer close(h.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				h.peakInuse = max(h.peakInuse, m.HeapInuse)
			}
		}
	}()
	return h
}

// Stop returns the bytes allocated since the start and how far HeapInuse
// rose above its starting value at its peak.
func (h *heapWatch) Stop() (allocated, peakGrowth uint64) {
	close(h.stop)
	<-h.done
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	h.peakInuse = max(h.peakInuse, m.HeapInuse)
	allocated = m.TotalAlloc - h.start.TotalAlloc
	if h.peakInuse > h.start.HeapInuse {
		peakGrowth = h.peakInuse - h.start.HeapInuse
	}
	return allocated, peakGrowth
}

// Command gosio is one Socket.IO v4 server node built on
// github.com/zishang520/socket.io (Go), with the same contract as
// ../sio-node.js. Used by the Go integration tests.
//
// It is its own Go module ("gosio") so that the main module never depends on
// it; build it with `go build -o <dir>/gosio .` inside this directory.
//
// Configuration (environment variables):
//
//	PORT        (required) TCP port; 0 picks a free port (reported in the
//	            "listening" line).
//	HOST        (default 127.0.0.1) address to bind.
//	NODE_NAME   (required) name reported to clients and in /__stats.
//	SIO_OPTIONS (optional) JSON object, socket.io (Node) option names:
//	            pingInterval, pingTimeout, upgradeTimeout (ms), transports,
//	            path, addTrailingSlash, cookie (bool or {name,path,httpOnly,
//	            sameSite}), allowUpgrades, allowEIO3, maxHttpBufferSize,
//	            httpCompression (bool or {threshold}), perMessageDeflate
//	            (bool or {threshold}), cors ({origin, credentials}),
//	            connectTimeout. Unknown keys are ignored (listed on stderr).
//	SIO_SID_MODE (optional) how engine.io session ids are minted: "random"
//	            (default, the library's own), "sequential" ("1", "2", ... per
//	            process: every node mints the same ids) or "fixed:<prefix>"
//	            ("<prefix>1", "<prefix>2", ...), as sio-node.js.
//	EXIT_ON_STDIN_CLOSE (optional) "1": exit when stdin reaches EOF.
//
// Prints exactly one line on stdout once listening:
//
//	{"event":"listening","node":"<NODE_NAME>","port":<port>}
//
// Exits 0 on SIGTERM / SIGINT.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zishang520/socket.io/servers/engine/v3"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"
)

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gosio: "+format+"\n", args...)
	os.Exit(2)
}

// ---------------------------------------------------------------------------
// Counters (same field names as sio-node.js)
// ---------------------------------------------------------------------------

const recentErrorsMax = 50

type triCount struct {
	Total      int `json:"total"`
	WithSid    int `json:"withSid"`
	WithoutSid int `json:"withoutSid"`
}

type recentError struct {
	Code          int     `json:"code"`
	Message       string  `json:"message"`
	Method        *string `json:"method"`
	URL           *string `json:"url"`
	RemoteAddress *string `json:"remoteAddress"`
	Upgrade       bool    `json:"upgrade"`
}

type stats struct {
	Since              string         `json:"since"`
	Handshakes         int            `json:"handshakes"`
	IOConnections      int            `json:"ioConnections"`
	IODisconnections   int            `json:"ioDisconnections"`
	DisconnectReasons  map[string]int `json:"disconnectReasons"`
	EngineCloses       int            `json:"engineCloses"`
	EngineCloseReasons map[string]int `json:"engineCloseReasons"`
	Upgrades           int            `json:"upgrades"`
	UpgradesByTransp   map[string]int `json:"upgradesByTransport"`
	Echoes             int            `json:"echoes"`
	ConnectionErrors   struct {
		Total     int            `json:"total"`
		ByCode    map[string]int `json:"byCode"`
		ByMessage map[string]int `json:"byMessage"`
		Recent    []recentError  `json:"recent"`
	} `json:"connectionErrors"`
	Requests struct {
		Total              int            `json:"total"`
		WithSid            int            `json:"withSid"`
		WithoutSid         int            `json:"withoutSid"`
		WithCookieHeader   int            `json:"withCookieHeader"`
		WithAcceptEncoding int            `json:"withAcceptEncoding"`
		AcceptEncodings    map[string]int `json:"acceptEncodings"`
		ByMethod           map[string]int `json:"byMethod"`
		WithSidByMethod    map[string]int `json:"withSidByMethod"`
		WithoutSidByMethod map[string]int `json:"withoutSidByMethod"`
		Polling            triCount       `json:"polling"`
		Websocket          triCount       `json:"websocket"`
	} `json:"requests"`
	CompressedResponses      int            `json:"compressedResponses"`
	CompressedByEncoding     map[string]int `json:"compressedResponsesByEncoding"`
	CompressedHandshakes     int            `json:"compressedHandshakes"`
	HandshakeCookies         int            `json:"handshakeCookies"`
	SetCookieResponses       int            `json:"setCookieResponses"`
	OtherRequests            int            `json:"otherRequests"`
	RemoteAddresses          map[string]int `json:"remoteAddresses"`
	PollingRemoteAddresses   map[string]int `json:"pollingRemoteAddresses"`
	WebsocketRemoteAddresses map[string]int `json:"websocketRemoteAddresses"`
	HandshakeAddresses       map[string]int `json:"handshakeAddresses"`
}

func newStats() *stats {
	s := &stats{
		Since:                    time.Now().UTC().Format("2006-01-02T15:04:05.000Z"),
		DisconnectReasons:        map[string]int{},
		EngineCloseReasons:       map[string]int{},
		UpgradesByTransp:         map[string]int{},
		RemoteAddresses:          map[string]int{},
		PollingRemoteAddresses:   map[string]int{},
		WebsocketRemoteAddresses: map[string]int{},
		HandshakeAddresses:       map[string]int{},
		CompressedByEncoding:     map[string]int{},
	}
	s.Requests.AcceptEncodings = map[string]int{}
	s.ConnectionErrors.ByCode = map[string]int{}
	s.ConnectionErrors.ByMessage = map[string]int{}
	s.ConnectionErrors.Recent = []recentError{}
	s.Requests.ByMethod = map[string]int{}
	s.Requests.WithSidByMethod = map[string]int{}
	s.Requests.WithoutSidByMethod = map[string]int{}
	return s
}

var (
	mu sync.Mutex
	st = newStats()
)

// update runs f with the counters locked.
func update(f func(s *stats)) {
	mu.Lock()
	defer mu.Unlock()
	f(st)
}

func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	if addr == "" {
		return "unknown"
	}
	return addr
}

func countSioRequest(r *http.Request) {
	hasSid := r.URL.Query().Get("sid") != ""
	method := r.Method
	upgrade := isUpgrade(r)
	addr := hostOf(r.RemoteAddr)
	update(func(s *stats) {
		q := &s.Requests
		q.Total++
		if r.Header.Get("Cookie") != "" {
			q.WithCookieHeader++
		}
		if ae, ok := r.Header["Accept-Encoding"]; ok {
			q.WithAcceptEncoding++
			q.AcceptEncodings[strings.Join(ae, ", ")]++
		}
		q.ByMethod[method]++
		t := &q.Polling
		if upgrade {
			t = &q.Websocket
		}
		t.Total++
		if hasSid {
			q.WithSid++
			q.WithSidByMethod[method]++
			t.WithSid++
		} else {
			q.WithoutSid++
			q.WithoutSidByMethod[method]++
			t.WithoutSid++
		}
		s.RemoteAddresses[addr]++
		if upgrade {
			s.WebsocketRemoteAddresses[addr]++
		} else {
			s.PollingRemoteAddresses[addr]++
		}
	})
}

// ---------------------------------------------------------------------------
// Options: socket.io (Node) names -> zishang520 ServerOptions
// ---------------------------------------------------------------------------

type cookieOpt struct {
	enabled  bool
	name     string
	path     string
	httpOnly bool
	sameSite http.SameSite
}

func ms(raw json.RawMessage, key string) time.Duration {
	var v float64
	if err := json.Unmarshal(raw, &v); err != nil || v < 0 {
		fatalf("SIO_OPTIONS.%s must be a number of milliseconds", key)
	}
	return time.Duration(v * float64(time.Millisecond))
}

func boolOrObject(raw json.RawMessage) (enabled bool, obj map[string]any) {
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return b, nil
	}
	if json.Unmarshal(raw, &obj) == nil && obj != nil {
		return true, obj
	}
	return false, nil
}

func buildOptions(raw map[string]json.RawMessage) (*socket.ServerOptions, string, cookieOpt) {
	opts := socket.DefaultServerOptions()
	opts.SetServeClient(false)
	path := "/socket.io"
	addTrailingSlash := true
	ck := cookieOpt{}
	var unknown []string
	wantUpgrades := true
	for key, v := range raw {
		switch key {
		case "pingInterval":
			opts.SetPingInterval(ms(v, key))
		case "pingTimeout":
			opts.SetPingTimeout(ms(v, key))
		case "upgradeTimeout":
			opts.SetUpgradeTimeout(ms(v, key))
		case "connectTimeout":
			opts.SetConnectTimeout(ms(v, key))
		case "path":
			if err := json.Unmarshal(v, &path); err != nil || path == "" {
				fatalf("SIO_OPTIONS.path must be a non-empty string")
			}
		case "addTrailingSlash":
			if err := json.Unmarshal(v, &addTrailingSlash); err != nil {
				fatalf("SIO_OPTIONS.addTrailingSlash must be a bool")
			}
		case "transports":
			var names []string
			if err := json.Unmarshal(v, &names); err != nil {
				fatalf("SIO_OPTIONS.transports must be an array of strings")
			}
			set := types.NewSet[engine.TransportCtor]()
			hasWS := false
			for _, n := range names {
				switch n {
				case "polling":
					set.Add(engine.Polling)
				case "websocket":
					set.Add(engine.WebSocket)
					hasWS = true
				default:
					fmt.Fprintf(os.Stderr, "gosio: ignoring transport %q\n", n)
				}
			}
			if set.Len() == 0 {
				fatalf("SIO_OPTIONS.transports: no usable transport")
			}
			opts.SetTransports(set)
			if !hasWS {
				wantUpgrades = false
			}
		case "allowUpgrades":
			var b bool
			if err := json.Unmarshal(v, &b); err != nil {
				fatalf("SIO_OPTIONS.allowUpgrades must be a bool")
			}
			if !b {
				wantUpgrades = false
			}
		case "allowEIO3":
			var b bool
			if err := json.Unmarshal(v, &b); err != nil {
				fatalf("SIO_OPTIONS.allowEIO3 must be a bool")
			}
			opts.SetAllowEIO3(b)
		case "maxHttpBufferSize":
			var n int64
			if err := json.Unmarshal(v, &n); err != nil {
				fatalf("SIO_OPTIONS.maxHttpBufferSize must be an integer")
			}
			opts.SetMaxHttpBufferSize(n)
		case "httpCompression":
			on, obj := boolOrObject(v)
			if !on {
				opts.SetHttpCompression(nil)
			} else {
				hc := &types.HttpCompression{Threshold: 1024}
				if t, ok := obj["threshold"].(float64); ok {
					hc.Threshold = int(t)
				}
				opts.SetHttpCompression(hc)
			}
		case "perMessageDeflate":
			on, obj := boolOrObject(v)
			if !on {
				opts.SetPerMessageDeflate(nil)
			} else {
				pd := &types.PerMessageDeflate{Threshold: 1024}
				if t, ok := obj["threshold"].(float64); ok {
					pd.Threshold = int(t)
				}
				opts.SetPerMessageDeflate(pd)
			}
		case "cookie":
			on, obj := boolOrObject(v)
			if !on {
				var name string
				if json.Unmarshal(v, &name) == nil && name != "" {
					on, obj = true, map[string]any{"name": name}
				}
			}
			if on {
				// Node's engine.io defaults: io=<sid>; Path=/; HttpOnly; SameSite=Lax
				ck = cookieOpt{enabled: true, name: "io", path: "/", httpOnly: true, sameSite: http.SameSiteLaxMode}
				if s, ok := obj["name"].(string); ok && s != "" {
					ck.name = s
				}
				if s, ok := obj["path"].(string); ok && s != "" {
					ck.path = s
				}
				if b, ok := obj["httpOnly"].(bool); ok {
					ck.httpOnly = b
				}
				if s, ok := obj["sameSite"].(string); ok {
					switch strings.ToLower(s) {
					case "strict":
						ck.sameSite = http.SameSiteStrictMode
					case "none":
						ck.sameSite = http.SameSiteNoneMode
					}
				}
			}
		case "cors":
			var c struct {
				Origin      any  `json:"origin"`
				Credentials bool `json:"credentials"`
			}
			if err := json.Unmarshal(v, &c); err != nil {
				fatalf("SIO_OPTIONS.cors must be an object")
			}
			if list, ok := c.Origin.([]any); ok {
				s := make([]string, 0, len(list))
				for _, o := range list {
					if str, ok := o.(string); ok {
						s = append(s, str)
					}
				}
				c.Origin = s
			}
			opts.SetCors(&types.Cors{Origin: c.Origin, Credentials: c.Credentials})
		default:
			unknown = append(unknown, key)
		}
	}
	if !wantUpgrades {
		opts.SetAllowUpgrades(false)
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		fmt.Fprintf(os.Stderr, "gosio: ignoring unsupported SIO_OPTIONS keys: %s\n", strings.Join(unknown, ", "))
	}
	base := strings.TrimRight(path, "/")
	if !strings.HasPrefix(base, "/") {
		base = "/" + base
	}
	opts.SetPath(base)
	opts.SetAddTrailingSlash(addTrailingSlash)
	sioPath := base
	if addTrailingSlash {
		sioPath += "/"
	}
	return opts, sioPath, ck
}

// ---------------------------------------------------------------------------
// Engine.IO server with the io cookie carrying the sid
// ---------------------------------------------------------------------------

// nodeEngine overrides GenerateId (through the library's prototype mechanism)
// to send `Set-Cookie: io=<sid>` with the handshake response. The library's
// own cookie option writes the configured cookie verbatim, without the sid.
type nodeEngine struct {
	engine.Server
	cookie    cookieOpt
	sidPrefix *string // SIO_SID_MODE; nil = the library's random ids
	sidCount  atomic.Uint64
}

// GenerateId mints the engine.io session id of every new session (polling and
// websocket-only handshakes). Socket.IO socket ids come from elsewhere.
func (e *nodeEngine) GenerateId(ctx *types.HttpContext) string {
	var id string
	if e.sidPrefix != nil {
		id = *e.sidPrefix + strconv.FormatUint(e.sidCount.Add(1), 10)
	} else {
		id = e.Server.GenerateId(ctx)
	}
	if e.cookie.enabled {
		c := &http.Cookie{
			Name:     e.cookie.name,
			Value:    id,
			Path:     e.cookie.path,
			HttpOnly: e.cookie.httpOnly,
			SameSite: e.cookie.sameSite,
		}
		ctx.ResponseHeaders().Set("Set-Cookie", c.String())
	}
	return id
}

// ---------------------------------------------------------------------------
// Response inspection (compression, cookie counters)
// ---------------------------------------------------------------------------

// inspectWriter looks at the response head of a plain socket.io-path response.
// It keeps http.Hijacker (the websocket upgrader needs it) and http.Flusher.
type inspectWriter struct {
	http.ResponseWriter
	handshake  bool // request without sid
	cookieName string
	seen       bool
}

func (w *inspectWriter) head(status int) {
	if w.seen {
		return
	}
	w.seen = true
	h := w.Header()
	hs := w.handshake && status == http.StatusOK
	enc := h.Get("Content-Encoding")
	cookie := false
	if w.cookieName != "" {
		for _, v := range h.Values("Set-Cookie") {
			if strings.HasPrefix(strings.TrimSpace(v), w.cookieName+"=") {
				cookie = true
			}
		}
	}
	if enc == "" && !cookie {
		return
	}
	update(func(s *stats) {
		if enc != "" {
			s.CompressedResponses++
			s.CompressedByEncoding[enc]++
			if hs {
				s.CompressedHandshakes++
			}
		}
		if cookie {
			s.SetCookieResponses++
			if hs {
				s.HandshakeCookies++
			}
		}
	})
}

func (w *inspectWriter) WriteHeader(status int) {
	w.head(status)
	w.ResponseWriter.WriteHeader(status)
}

func (w *inspectWriter) Write(b []byte) (int, error) {
	w.head(http.StatusOK)
	return w.ResponseWriter.Write(b)
}

func (w *inspectWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *inspectWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.seen = true // a websocket handshake: gorilla writes the 101 itself
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("gosio: response writer cannot hijack")
	}
	return hj.Hijack()
}

func (w *inspectWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

func libVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/zishang520/socket.io/servers/socket/v3" {
				return d.Version
			}
		}
	}
	return "?"
}

func main() {
	nodeName := os.Getenv("NODE_NAME")
	if nodeName == "" {
		fatalf("NODE_NAME is required")
	}
	host := os.Getenv("HOST")
	if host == "" {
		host = "127.0.0.1"
	}
	portRaw := os.Getenv("PORT")
	port, err := strconv.Atoi(portRaw)
	if err != nil || port < 0 || strings.TrimSpace(portRaw) != portRaw {
		fatalf("PORT is required (integer, 0 = pick a free port)")
	}
	rawOpts := map[string]json.RawMessage{}
	if s := os.Getenv("SIO_OPTIONS"); s != "" {
		if err := json.Unmarshal([]byte(s), &rawOpts); err != nil || rawOpts == nil {
			fatalf("SIO_OPTIONS must be a JSON object: %v", err)
		}
	}
	opts, sioPath, ck := buildOptions(rawOpts)
	sidMode := os.Getenv("SIO_SID_MODE")
	if sidMode == "" {
		sidMode = "random"
	}
	var sidPrefix *string
	switch {
	case sidMode == "random":
	case sidMode == "sequential":
		sidPrefix = new(string)
	case strings.HasPrefix(sidMode, "fixed:"):
		p := strings.TrimPrefix(sidMode, "fixed:")
		for _, c := range p {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				fatalf("SIO_SID_MODE fixed:<prefix>: prefix must match [A-Za-z0-9_-]*")
			}
		}
		sidPrefix = &p
	default:
		fatalf("SIO_SID_MODE must be random, sequential or fixed:<prefix>, got %s", sidMode)
	}
	var cookieName any // JSON null when no engine cookie is set
	if ck.enabled {
		cookieName = ck.name
	}

	// Socket.IO server bound to our own Engine.IO instance (instead of
	// ServeHandler, which would create a plain one).
	sio := socket.NewServer(nil, opts)
	eng := &nodeEngine{Server: engine.MakeServer(), cookie: ck, sidPrefix: sidPrefix}
	eng.Prototype(eng)
	eng.Construct(opts)
	sio.Bind(eng)

	_ = eng.On("connection", func(args ...any) {
		conn, ok := args[0].(engine.Socket)
		if !ok {
			return
		}
		update(func(s *stats) { s.Handshakes++ })
		_ = conn.On("upgrade", func(a ...any) {
			name := "unknown"
			if len(a) > 0 {
				if t, ok := a[0].(interface{ Name() string }); ok {
					name = t.Name()
				}
			}
			update(func(s *stats) {
				s.Upgrades++
				s.UpgradesByTransp[name]++
			})
		})
		_ = conn.Once("close", func(a ...any) {
			reason := "unknown"
			if len(a) > 0 {
				reason = fmt.Sprint(a[0])
			}
			update(func(s *stats) {
				s.EngineCloses++
				s.EngineCloseReasons[reason]++
			})
		})
	})

	_ = eng.On("connection_error", func(args ...any) {
		em, ok := args[0].(*types.ErrorMessage)
		if !ok || em == nil || em.CodeMessage == nil {
			return
		}
		code, message := em.CodeMessage.Code, em.CodeMessage.Message
		// zishang520 v3.0.6 labels "Unsupported protocol version" with code 4
		// (engine.io: 5); count it as 5 like sio-node.js.
		if message == "Unsupported protocol version" {
			code = 5
		}
		re := recentError{Code: code, Message: message}
		if em.Req != nil {
			if r := em.Req.Request(); r != nil {
				m, u, a := r.Method, r.URL.RequestURI(), hostOf(r.RemoteAddr)
				re.Method, re.URL, re.RemoteAddress = &m, &u, &a
				re.Upgrade = isUpgrade(r)
			}
		}
		update(func(s *stats) {
			ce := &s.ConnectionErrors
			ce.Total++
			ce.ByCode[strconv.Itoa(code)]++
			ce.ByMessage[message]++
			ce.Recent = append(ce.Recent, re)
			if len(ce.Recent) > recentErrorsMax {
				ce.Recent = ce.Recent[len(ce.Recent)-recentErrorsMax:]
			}
		})
	})

	_ = sio.On("connection", func(clients ...any) {
		client, ok := clients[0].(*socket.Socket)
		if !ok {
			return
		}
		addr := "unknown"
		if h := client.Handshake(); h != nil && h.Address != "" {
			addr = hostOf(h.Address)
		}
		update(func(s *stats) {
			s.IOConnections++
			s.HandshakeAddresses[addr]++
		})
		_ = client.On("echo", func(args ...any) {
			update(func(s *stats) { s.Echoes++ })
			var payload any
			if len(args) > 0 {
				if _, isAck := args[0].(socket.Ack); !isAck {
					payload = args[0]
				}
			}
			if len(args) > 0 {
				if ack, ok := args[len(args)-1].(socket.Ack); ok {
					ack([]any{map[string]any{"node": nodeName, "payload": payload}}, nil)
				}
			}
		})
		_ = client.On("disconnect", func(args ...any) {
			reason := "unknown"
			if len(args) > 0 {
				reason = fmt.Sprint(args[0])
			}
			update(func(s *stats) {
				s.IODisconnections++
				s.DisconnectReasons[reason]++
			})
		})
		_ = client.Emit("hello", map[string]any{"node": nodeName})
	})

	var boundPort int
	implementation := "zishang520/socket.io " + libVersion() + " (" + strings.TrimPrefix(runtimeVersion(), "go") + ")"
	sendJSON := func(w http.ResponseWriter, status int, v any) {
		b, _ := json.Marshal(v)
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(b)))
		h.Set("Cache-Control", "no-store")
		h.Set("X-Sio-Node", nodeName)
		w.WriteHeader(status)
		_, _ = w.Write(b)
	}
	snapshot := func() map[string]any {
		mu.Lock()
		b, _ := json.Marshal(st)
		mu.Unlock()
		out := map[string]any{}
		_ = json.Unmarshal(b, &out)
		out["node"] = nodeName
		out["port"] = boundPort
		out["pid"] = os.Getpid()
		out["path"] = sioPath
		out["implementation"] = implementation
		out["sidMode"] = sidMode
		out["cookieName"] = cookieName
		out["openSessions"] = eng.ClientsCount()
		out["openSockets"] = sio.Sockets().Sockets().Len()
		for _, k := range []string{"remoteAddress", "pollingRemoteAddress", "websocketRemoteAddress", "handshakeAddress"} {
			if m, ok := out[k+"es"].(map[string]any); ok {
				out[k+"Count"] = len(m)
			}
		}
		return out
	}

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if strings.HasPrefix(p, sioPath) || (!strings.HasSuffix(sioPath, "/") && p == sioPath) {
			countSioRequest(r)
			// Part of the polling responses, engine.io's error answers and the
			// websocket handshake (the engine copies w.Header() into the
			// headers it hands to the websocket upgrader).
			w.Header().Set("X-Sio-Node", nodeName)
			iw := &inspectWriter{ResponseWriter: w, handshake: r.URL.Query().Get("sid") == ""}
			if ck.enabled {
				iw.cookieName = ck.name
			}
			eng.ServeHTTP(iw, r)
			return
		}
		switch {
		case p == "/__stats" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			sendJSON(w, 200, snapshot())
		case p == "/__reset" && r.Method == http.MethodPost:
			_, _ = io.Copy(io.Discard, r.Body)
			mu.Lock()
			st = newStats()
			mu.Unlock()
			sendJSON(w, 200, map[string]any{"node": nodeName, "reset": true})
		case p == "/__health":
			sendJSON(w, 200, map[string]any{"node": nodeName})
		default:
			update(func(s *stats) { s.OtherRequests++ })
			sendJSON(w, 404, map[string]any{"node": nodeName, "error": "not found", "path": p})
		}
	})

	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		fatalf("listen %s:%d: %v", host, port, err)
	}
	boundPort = ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			fatalf("serve: %v", err)
		}
	}()
	line, _ := json.Marshal(map[string]any{"event": "listening", "node": nodeName, "port": boundPort})
	_, _ = os.Stdout.Write(append(line, '\n'))

	stop := make(chan struct{}, 1)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		stop <- struct{}{}
	}()
	if os.Getenv("EXIT_ON_STDIN_CLOSE") == "1" {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			select {
			case stop <- struct{}{}:
			default:
			}
		}()
	}
	<-stop

	// Never hang on shutdown (long-polls, websocket sessions): 1 s at most.
	time.AfterFunc(time.Second, func() { os.Exit(0) })
	done := make(chan struct{})
	go func() {
		sio.Close(nil)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(500 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_ = srv.Shutdown(ctx)
	os.Exit(0)
}

func runtimeVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.GoVersion
	}
	return "?"
}

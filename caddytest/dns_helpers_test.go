package caddytest

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer answers A queries for one name with a set of IPv4 addresses
// that the test changes as it goes, over UDP on loopback: what a
// cluster's service discovery (Docker's embedded DNS, a Kubernetes
// headless Service) is to Caddy's `dynamic a` upstreams. AAAA queries
// for the name get an empty answer, every other name NXDOMAIN.
type dnsServer struct {
	conn net.PacketConn
	name dnsmessage.Name

	mu    sync.Mutex
	addrs []netip.Addr
	asked int // A queries answered, guarded by mu

	done chan struct{}
}

// startDNS serves name (fully qualified, with the final dot) with addrs
// until the test ends.
func startDNS(t testing.TB, name string, addrs []netip.Addr) *dnsServer {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{conn: conn, name: dnsmessage.MustNewName(name), addrs: addrs, done: make(chan struct{})}
	go s.serve()
	t.Cleanup(func() {
		_ = conn.Close()
		<-s.done
	})
	return s
}

// Addr is the server's host:port, for Caddy's `resolvers`.
func (s *dnsServer) Addr() string { return s.conn.LocalAddr().String() }

// Set replaces the addresses the name resolves to.
func (s *dnsServer) Set(addrs []netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addrs = addrs
}

// Asked returns how many A queries for the name were answered.
func (s *dnsServer) Asked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked
}

func (s *dnsServer) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		if reply, ok := s.answer(buf[:n]); ok {
			_, _ = s.conn.WriteTo(reply, from)
		}
	}
}

// answer builds the reply to one query; ok is false for a packet that is
// not a query with one question.
func (s *dnsServer) answer(query []byte) (reply []byte, ok bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	known := strings.EqualFold(q.Name.String(), s.name.String())
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(q) != nil || b.StartAnswers() != nil {
		return nil, false
	}
	if known && q.Type == dnsmessage.TypeA && q.Class == dnsmessage.ClassINET {
		s.mu.Lock()
		addrs := s.addrs
		s.asked++
		s.mu.Unlock()
		for _, a := range addrs {
			rr := dnsmessage.AResource{A: a.As4()}
			if b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}, rr) != nil {
				return nil, false
			}
		}
	}
	reply, err = b.Finish()
	return reply, err == nil
}

package caddytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

// httpsAddr is where the HTTPS sites of these tests listen, TCP (h1, h2)
// and UDP (h3).
var httpsAddr = fmt.Sprintf("127.0.0.1:%d", httpPort+363)

// testCert is a CA and a leaf certificate for 127.0.0.1 and localhost,
// made for one test: no network, no trust store, no Caddy PKI.
type testCert struct {
	CertFile, KeyFile string         // PEM: leaf then CA; leaf key
	Roots             *x509.CertPool // the CA
	SPKIHash          string         // base64 SHA-256 of the leaf's public key (Chromium's --ignore-certificate-errors-spki-list)
}

// newTestCert writes the files into a fresh directory. Their names must
// not end in .crt or .key: caddytest rewrites such paths in a config.
func newTestCert(t testing.TB) testCert {
	t.Helper()
	// newKey makes a P-256 key; issue signs tmpl as parent with caKey
	newKey := func() *ecdsa.PrivateKey {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return key
	}
	caKey := newKey()
	issue := func(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey) ([]byte, *x509.Certificate) {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, caKey)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return der, cert
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "caddy-socketio test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, ca := issue(caTmpl, caTmpl, &caKey.PublicKey)
	leafKey := newKey()
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	leafDER, leaf := issue(leafTmpl, ca, &leafKey.PublicKey)
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tc := testCert{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"), Roots: x509.NewCertPool()}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...)
	if err := os.WriteFile(tc.CertFile, chain, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tc.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	tc.Roots.AddCert(ca)
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	tc.SPKIHash = base64.StdEncoding.EncodeToString(spki[:])
	return tc
}

// httpsSite is a Caddyfile with one HTTPS site on httpsAddr serving h1, h2
// and h3: the socketio handler (if Handler) and a reverse_proxy to the
// nodes on the Engine.IO path, and, if Static is set, files from that
// directory and a /report route to ReportDial everywhere else.
type httpsSite struct {
	Cert       testCert
	Nodes      []*sioNode
	Handler    bool
	HandlerOpt string // lines of the socketio block, if any
	Policy     string
	Static     string // directory served by file_server
	ReportDial string // where POST /report goes
	AccessLog  string // file for the site's JSON access log
}

func (s httpsSite) Caddyfile() string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin localhost:%d\n\thttp_port %d\n\thttps_port %d\n\tauto_https off\n\tgrace_period 1s\n",
		adminPort, httpPort, httpPort+363)
	b.WriteString("\tservers {\n\t\tprotocols h1 h2 h3\n\t}\n}\n")
	fmt.Fprintf(&b, "https://%s {\n\ttls %s %s\n", httpsAddr, s.Cert.CertFile, s.Cert.KeyFile)
	if s.AccessLog != "" {
		fmt.Fprintf(&b, "\tlog {\n\t\toutput file %s\n\t\tformat json\n\t}\n", s.AccessLog)
	}
	b.WriteString("\thandle /socket.io/* {\n")
	switch {
	case s.Handler && s.HandlerOpt != "":
		fmt.Fprintf(&b, "\t\tsocketio {\n\t\t\t%s\n\t\t}\n", s.HandlerOpt)
	case s.Handler:
		b.WriteString("\t\tsocketio\n")
	}
	b.WriteString("\t\treverse_proxy")
	for _, n := range s.Nodes {
		b.WriteString(" " + n.Dial())
	}
	fmt.Fprintf(&b, " {\n\t\t\tlb_policy %s\n\t\t}\n\t}\n", s.Policy)
	if s.ReportDial != "" {
		fmt.Fprintf(&b, "\thandle /report {\n\t\treverse_proxy %s\n\t}\n", s.ReportDial)
	}
	if s.Static != "" {
		fmt.Fprintf(&b, "\thandle {\n\t\troot * %s\n\t\tfile_server\n\t}\n", s.Static)
	}
	b.WriteString("}\n")
	return b.String()
}

// leastConnPolicy places new sessions by least_conn, so that only
// learning keeps a session's requests on its owner: without a pin they are
// routed by client-IP hash, which agrees with least_conn only by chance.
const leastConnPolicy = "socketio {\n\t\t\t\tfallback least_conn\n\t\t\t}"

// httpsCluster starts three nodes and loads an HTTPS site in front of
// them with the handler and `fallback least_conn`.
func httpsCluster(t *testing.T) ([]*sioNode, testCert, *caddytester.Tester) {
	t.Helper()
	requireNode(t)
	nodes := startCluster(t, 3, fastPing)
	cert := newTestCert(t)
	tester := caddytester.NewTester(t)
	loadConfig(t, tester, httpsSite{Cert: cert, Nodes: nodes, Handler: true, Policy: leastConnPolicy}.Caddyfile())
	return nodes, cert, tester
}

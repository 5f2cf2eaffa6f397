package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCert writes a self-signed certificate for 127.0.0.1 with the given
// serial, and its key, as PEM files, and returns the certificate.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "agentd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Written beside and renamed into place, as renewal tools do: a reader never
	// sees half a file.
	for path, block := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "EC PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(path+".new", pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// TestTLS: with --tls-cert and --tls-key agentd serves HTTPS, and a certificate
// replaced on disk is served from the next handshake on; a pair that does not
// load keeps the previous one. A missing or broken pair is refused at start.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := writeCert(t, certFile, keyFile, 1)
	s := startServer(t, "", map[string]string{"AGENTD_TLS_CERT": certFile, "AGENTD_TLS_KEY": keyFile})
	if !strings.HasPrefix(s.URL, "https://") {
		t.Fatalf("server URL %s, want https", s.URL)
	}
	// The serial the server presents on a fresh connection; verification is
	// skipped because each certificate is its own CA.
	served := func() int64 {
		t.Helper()
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(s.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/healthz over TLS: %d", resp.StatusCode)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
	}
	if got := served(); got != first.SerialNumber.Int64() {
		t.Fatalf("served serial %d, want %d", got, first.SerialNumber.Int64())
	}
	// A client that trusts the first certificate verifies the server.
	pool := x509.NewCertPool()
	pool.AddCert(first)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	resp, err := (&http.Client{Transport: tr}).Get(s.URL + "/healthz")
	if err != nil {
		t.Fatalf("a client trusting the certificate: %v", err)
	}
	resp.Body.Close()
	tr.CloseIdleConnections()

	writeCert(t, certFile, keyFile, 2) // renewed
	if got := served(); got != 2 {
		t.Errorf("after renewal served serial %d, want 2", got)
	}
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil { // a broken renewal
		t.Fatal(err)
	}
	if got := served(); got != 2 {
		t.Errorf("with a broken key served serial %d, want the previous 2", got)
	}

	// At start, a pair that does not load is an error naming the files.
	err = run(t.Context(), []string{"serve", "--addr", "127.0.0.1:0", "--db", "sqlite:" + filepath.Join(t.TempDir(), "a.db"),
		"--tls-cert", certFile, "--tls-key", keyFile}, func(string) string { return "" }, strings.NewReader(""), discard{}, discard{})
	if err == nil || !strings.Contains(err.Error(), keyFile) {
		t.Errorf("start with a broken key: %v, want an error naming %s", err, keyFile)
	}
	err = run(t.Context(), []string{"serve", "--addr", "127.0.0.1:0", "--db", "sqlite:" + filepath.Join(t.TempDir(), "b.db"),
		"--tls-cert", certFile}, func(string) string { return "" }, strings.NewReader(""), discard{}, discard{})
	if err == nil || !strings.Contains(err.Error(), "cert_file and key_file go together") {
		t.Errorf("a certificate without a key: %v", err)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

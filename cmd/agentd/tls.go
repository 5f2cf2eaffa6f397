package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// certReloader serves the certificate and key in two PEM files and reads them
// again when either changes, so that a renewed certificate (certbot, cert-manager)
// is served from the next handshake on without a restart. A pair that does not
// load — a half-written renewal — is logged once and the previous certificate
// kept.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	current *tls.Certificate
	loaded  [2]fileStamp // of the pair current came from
	failed  [2]fileStamp // of the last pair that did not load, logged once
}

// fileStamp tells a file's versions apart: renewal tools rename a new file into
// place (another inode), or rewrite it (another time or size).
type fileStamp struct {
	info os.FileInfo
}

func (a fileStamp) same(b fileStamp) bool {
	return a.info != nil && b.info != nil && os.SameFile(a.info, b.info) &&
		a.info.ModTime().Equal(b.info.ModTime()) && a.info.Size() == b.info.Size()
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	return fileStamp{fi}, err
}

func samePair(a, b [2]fileStamp) bool { return a[0].same(b[0]) && a[1].same(b[1]) }

// newCertReloader loads the pair, or says why it cannot.
func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	stamps, err := r.stamps()
	if err == nil {
		err = r.load(stamps)
	}
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return r, nil
}

func (r *certReloader) stamps() ([2]fileStamp, error) {
	c, err := stampOf(r.certFile)
	if err != nil {
		return [2]fileStamp{}, err
	}
	k, err := stampOf(r.keyFile)
	return [2]fileStamp{c, k}, err
}

func (r *certReloader) load(stamps [2]fileStamp) error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("load %s and %s: %w", r.certFile, r.keyFile, err)
	}
	r.current, r.loaded = &cert, stamps
	return nil
}

// GetCertificate is tls.Config.GetCertificate. Two stats per handshake are
// what noticing a change costs, next to a handshake's milliseconds.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamps, err := r.stamps()
	if err != nil || samePair(stamps, r.loaded) || samePair(stamps, r.failed) {
		return r.current, nil
	}
	if err := r.load(stamps); err != nil {
		r.failed = stamps
		r.log.Error("tls: the changed certificate does not load; serving the previous one", "err", err)
		return r.current, nil
	}
	r.log.Info("tls: certificate reloaded", "cert", r.certFile)
	return r.current, nil
}

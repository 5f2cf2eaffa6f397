package config

import "time"

// Server bounds the HTTP server's connections (net/http's settings).
type Server struct {
	// ReadHeaderTimeout bounds reading a request's headers; ReadTimeout its
	// headers and body.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	ReadTimeout       Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing a response, from the end of the request's
	// headers; 0 (the default) is none, since a stream may rightly last as long
	// as limits.run_timeout.
	WriteTimeout Duration `yaml:"write_timeout"`
	// IdleTimeout is how long a keep-alive connection may wait for its next
	// request.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds a request's headers (431 past it).
	MaxHeaderBytes int `yaml:"max_header_bytes"`
}

// DefaultServer is the HTTP server's defaults.
func DefaultServer() Server {
	return Server{
		ReadHeaderTimeout: Duration(10 * time.Second),
		ReadTimeout:       Duration(60 * time.Second),
		IdleTimeout:       Duration(120 * time.Second),
		MaxHeaderBytes:    64 << 10,
	}
}

// TLS serves HTTPS with a certificate and key in PEM files, read again when
// either file changes.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// validateServer adds what is wrong with the server and TLS settings.
func (c *Config) validateServer(bad func(string, ...any)) {
	s := c.Server
	if s.ReadHeaderTimeout <= 0 {
		bad("server.read_header_timeout must be positive (a client that never finishes its headers would hold a connection forever)")
	}
	if s.ReadTimeout < 0 || s.WriteTimeout < 0 || s.IdleTimeout < 0 {
		bad("server timeouts must not be negative")
	}
	if s.MaxHeaderBytes < 4<<10 || s.MaxHeaderBytes > 16<<20 {
		bad("server.max_header_bytes %d must be between 4096 and 16777216", s.MaxHeaderBytes)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls: cert_file and key_file go together (--tls-cert and --tls-key)")
	}
}

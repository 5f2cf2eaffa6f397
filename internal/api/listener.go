package api

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"strconv"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/reqlog"
)

// Some requests never reach a handler: net/http's connection loop refuses them
// itself and writes a plain-text answer straight to the connection, in one Write
// of the form
//
//	"HTTP/1.1 " + status line + plainErrorHeaders + body
//
// (server.go, conn.serve: headers beyond MaxHeaderBytes → 431, a transfer
// encoding it does not support → 501, an unsupported protocol version → 505, an
// invalid request line, header name or value, or Host header → 400). Listener's
// connections recognise exactly those writes and answer the same status in the
// API's error shape instead. Nothing else is touched: the write must be a 4xx or
// 5xx status line followed at once by exactly those two headers and the blank
// line, and end with net/http's body (the status line again, or 501's fixed
// text). A response written through a ResponseWriter never has that form: its
// handler's headers come sorted (Connection before Content-Type) and then Date,
// which agentd's handlers never suppress.
//
// At that point no request exists, so the answer cannot depend on the path:
// under /v1 too it is agentd's {"detail", "code"}, not OpenAI's envelope.

// plainErrorHeaders is net/http's errorHeaders constant.
const plainErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// Listener wraps ln so that the answers net/http writes itself, before any
// handler runs, are JSON in the API's error shape. It is for plain-TCP
// listeners (serve has no TLS): beneath TLS it would see only ciphertext and
// change nothing, and above it net/http would no longer see a *tls.Conn (no
// handshake timeout, no HTTP/2 by ALPN).
func Listener(ln net.Listener) net.Listener { return &jsonErrorListener{ln} }

type jsonErrorListener struct{ net.Listener }

func (l *jsonErrorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &jsonErrorConn{c}, nil
}

// jsonErrorConn rewrites net/http's own plain-text error answers.
type jsonErrorConn struct{ net.Conn }

func (c *jsonErrorConn) Write(p []byte) (int, error) {
	b, ok := rewriteTransportError(p)
	if !ok {
		return c.Conn.Write(p)
	}
	if _, err := c.Conn.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CloseWrite half-closes the connection, as net/http does after a 431 so that
// the client reads the answer before the connection is reset.
func (c *jsonErrorConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// transportErrors are the statuses net/http answers on its own, with the error
// agentd gives each. A status not listed here is passed through.
var transportErrors = map[int]*agentd.Error{
	// net/http gives a reason for some 400s (an invalid header name, Host header)
	// and none for the rest (the request line, a control character in a header).
	400: {Code: agentd.EBadRequest, Message: "malformed request: the request line or a header is not valid HTTP/1.1"},
	431: {Code: agentd.EHeaderTooLarge, Message: "request header fields too large: the request line and headers exceed the server's limit"},
	501: {Code: agentd.ENotImplemented, Message: "unsupported transfer encoding"},
	505: {Code: agentd.EVersionNotSupported, Message: "unsupported protocol version: use HTTP/1.1 (or HTTP/1.0)"},
}

// rewriteTransportError returns the JSON answer replacing p when p is one of
// net/http's own plain-text error answers.
func rewriteTransportError(p []byte) ([]byte, bool) {
	const proto = "HTTP/1.1 "
	// Cheap rejection first: this runs on every write of every connection.
	if len(p) < len(proto)+4 || (p[len(proto)] != '4' && p[len(proto)] != '5') || !bytes.HasPrefix(p, []byte(proto)) {
		return nil, false
	}
	rest := p[len(proto):]
	eol := bytes.IndexByte(rest, '\r')
	if eol < 4 || rest[3] != ' ' || !bytes.HasPrefix(rest[eol:], []byte(plainErrorHeaders)) {
		return nil, false
	}
	line, body := rest[:eol], rest[eol+len(plainErrorHeaders):]
	status, err := strconv.Atoi(string(line[:3]))
	if err != nil {
		return nil, false
	}
	te, known := transportErrors[status]
	// net/http's body repeats the status line, but for 501's fixed text.
	if !known || !(bytes.Equal(body, line) || status == 501 && string(body) == "Unsupported transfer encoding") {
		return nil, false
	}
	msg := te.Message
	// "400 Bad Request: invalid header name": the reason net/http gives.
	if _, reason, ok := bytes.Cut(line, []byte(": ")); ok && status == 400 {
		msg = "malformed request: " + string(reason)
	}
	if Status(te.Code) != status {
		return nil, false // the status table and this one disagree; keep net/http's answer
	}
	id := reqlog.NewID() // no request exists to carry one: a new id, answered as every response's is
	js, err := json.Marshal(map[string]any{"detail": msg, "code": te.Code, "request_id": id})
	if err != nil {
		return nil, false
	}
	js = append(js, '\n')
	out := make([]byte, 0, len(line)+len(js)+128)
	out = append(out, proto...)
	out = append(out, line[:3]...)
	out = append(out, ' ')
	out = append(out, http.StatusText(status)...)
	out = append(out, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(js)), 10)
	out = append(out, "\r\nX-Request-ID: "...)
	out = append(out, id...)
	out = append(out, "\r\nConnection: close\r\n\r\n"...)
	return append(out, js...), true
}

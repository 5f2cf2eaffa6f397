package api

import (
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/agentd/agentd"
)

// Paths are matched as the client sent them, percent-encoding included, so that
// "%2F" inside a segment stays part of that segment ({agent_id} = "a/b"), as in
// net/http's ServeMux. Two things differ from ServeMux: trailing slashes are
// accepted (trimmed), and a path that is not canonical — an empty segment ("//"),
// a "." or ".." segment, also percent-encoded — is a 404, where ServeMux would
// redirect to the cleaned path (a redirect that naive clients follow with a GET,
// or not at all).

// trimTrailingSlashes removes the trailing slashes of u's path ("/" stays "/").
// It works on the escaped path, so that an escaped slash ("%2F") at the end of a
// segment is not taken for a trailing one, and keeps Path and RawPath in step.
func trimTrailingSlashes(u *url.URL) {
	esc := u.EscapedPath()
	if len(esc) <= 1 || esc[len(esc)-1] != '/' {
		return
	}
	esc = strings.TrimRight(esc, "/")
	if esc == "" {
		esc = "/"
	}
	p, err := url.PathUnescape(esc)
	if err != nil {
		return // cannot happen: esc is a prefix of a valid escaped path
	}
	u.Path, u.RawPath = p, ""
	if u.EscapedPath() != esc {
		u.RawPath = esc
	}
}

// canonicalPath reports whether esc, an escaped path without trailing slashes,
// has no empty, "." or ".." segment.
func canonicalPath(esc string) bool {
	if esc == "/" {
		return true
	}
	if !strings.HasPrefix(esc, "/") {
		return false
	}
	for seg := range strings.SplitSeq(esc[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		if strings.IndexByte(seg, '%') >= 0 {
			if u, err := url.PathUnescape(seg); err == nil && (u == "." || u == "..") {
				return false
			}
		}
	}
	return true
}

// cleanPath is the canonical form of an escaped path, as ServeMux computes it.
func cleanPath(esc string) string {
	if !strings.HasPrefix(esc, "/") {
		esc = "/" + esc
	}
	return path.Clean(esc)
}

// refuseUncleanPath answers 404 not_found, in OpenAI's envelope under /v1, when
// r's path is not canonical, and reports whether it did. CONNECT requests, whose
// target is not a path, are left to the route table.
func (s *Server) refuseUncleanPath(w http.ResponseWriter, r *http.Request) bool {
	esc := r.URL.EscapedPath()
	if r.Method == http.MethodConnect || canonicalPath(esc) {
		return false
	}
	clean := cleanPath(esc)
	msg := "path " + strconv.Quote(esc) + ` is not canonical (it has an empty, "." or ".." segment)`
	if clean != esc {
		msg += "; use " + strconv.Quote(clean)
	}
	err := &agentd.Error{Code: agentd.ENotFound, Message: msg}
	if clean == "/v1" || strings.HasPrefix(clean, "/v1/") {
		s.writeOpenAIError(w, r, err)
	} else {
		s.writeError(w, r, err)
	}
	return true
}

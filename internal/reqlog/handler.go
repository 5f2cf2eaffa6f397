package reqlog

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
	"unicode"
)

// HandlerOptions say what Handler lets through.
type HandlerOptions struct {
	// Contents lets message contents through (log.contents, a debugging
	// setting): attributes named as contents (message, messages, response,
	// reply, content, prompt) are otherwise replaced by a note.
	Contents bool
}

// NewHandler wraps next so that every record logged with a request's context
// carries the request's id, route, organization id and key id (request_id,
// route, org_id, key_id; the ones known), and so that no secret reaches next:
// attributes named like a credential (authorization, api_key, secret, token,
// password) are dropped to a note, and text that looks like a key (agentd's
// agd_…, sk-…, Bearer …) is masked in every string and error.
func NewHandler(next slog.Handler, o HandlerOptions) slog.Handler {
	return &handler{next: next, contents: o.Contents}
}

type handler struct {
	next     slog.Handler
	contents bool
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, maskSecrets(rec.Message), rec.PC)
	info := From(ctx)
	var as [4]slog.Attr
	n := 0
	if info != nil {
		for _, kv := range [...][2]string{{"request_id", info.ID}, {"route", info.Route}, {"org_id", info.OrgID}, {"key_id", info.KeyID}} {
			if kv[1] != "" {
				as[n] = slog.String(kv[0], kv[1])
				n++
			}
		}
		out.AddAttrs(as[:n]...)
	}
	rec.Attrs(func(a slog.Attr) bool {
		for _, c := range as[:n] {
			if a.Key == c.Key {
				return true // the context's, already there
			}
		}
		out.AddAttrs(h.clean(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	cleaned := make([]slog.Attr, len(as))
	for i, a := range as {
		cleaned[i] = h.clean(a)
	}
	return &handler{next: h.next.WithAttrs(cleaned), contents: h.contents}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{next: h.next.WithGroup(name), contents: h.contents}
}

// credentialKeys name attributes whose value is a credential whatever it says.
var credentialKeys = map[string]bool{
	"authorization": true, "api_key": true, "apikey": true, "secret": true, "token": true, "password": true, "bootstrap_key": true,
}

// contentKeys name attributes that hold what callers and models say.
var contentKeys = map[string]bool{
	"message": true, "messages": true, "response": true, "reply": true, "content": true, "prompt": true,
}

// clean is a with its secrets masked, and its contents unless allowed.
func (h *handler) clean(a slog.Attr) slog.Attr {
	k := strings.ToLower(a.Key)
	if credentialKeys[k] {
		return slog.String(a.Key, "[redacted]")
	}
	if !h.contents && contentKeys[k] {
		return slog.String(a.Key, "[not logged: log.contents is off]")
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if s := v.String(); mayHoldSecret(s) {
			return slog.String(a.Key, maskSecrets(s))
		}
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, maskSecrets(err.Error()))
		}
	case slog.KindGroup:
		g := v.Group()
		cleaned := make([]slog.Attr, len(g))
		for i, ga := range g {
			cleaned[i] = h.clean(ga)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(cleaned...)}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// secretText matches what looks like a credential in free text: agentd's keys
// (agd_…), OpenAI-style and Anthropic keys (sk-…, sk-ant-…, and the pk-/rk-
// of other vendors), Google API keys (AIza…) and a bearer token.
var secretText = regexp.MustCompile(`\b(agd_|sk-|pk-|rk-)[A-Za-z0-9_\-]{4,}|\bAIza[0-9A-Za-z_\-]{16,}|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]+`)

// mayHoldSecret is a cheap test that lets most text skip the expression.
func mayHoldSecret(s string) bool {
	return strings.Contains(s, "agd_") || strings.Contains(s, "sk-") || strings.Contains(s, "pk-") ||
		strings.Contains(s, "rk-") || strings.Contains(s, "AIza") || strings.Contains(s, "earer")
}

// maskSecrets replaces what looks like a credential in s, keeping what kind it
// was: "sk-…", "agd_…", "Bearer …".
func maskSecrets(s string) string {
	if !mayHoldSecret(s) {
		return s
	}
	return secretText.ReplaceAllStringFunc(s, func(m string) string {
		switch {
		case strings.HasPrefix(m, "agd_"):
			return "agd_…"
		case strings.HasPrefix(m, "AIza"):
			return "AIza…"
		case len(m) > 3 && m[2] == '-':
			return m[:3] + "…"
		}
		return m[:strings.IndexFunc(m, unicode.IsSpace)] + " …"
	})
}

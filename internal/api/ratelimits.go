package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/agentd/agentd"
)

// RequestLimiter counts requests against the requests per minute of their key
// and organization (ratelimit.Limiter).
type RequestLimiter interface {
	// Request counts one request of p, or fails with ERateLimited naming the
	// limit, with the seconds until one would fit in Fields["retry_after"].
	Request(ctx context.Context, p *agentd.Principal) error
}

// metered counts a request that does work against its rate limits before h
// runs: runs, chat and text completions, embeddings and estimates (routes.go).
// Listings, reads and administration are not counted, so that a dashboard
// polling them never spends what an application's runs need. The count comes
// after authentication and the scope check: a request refused for either is
// not counted.
func (s *Server) metered(h authed) authed {
	return func(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
		if s.Limits != nil {
			if err := s.Limits.Request(r.Context(), p); err != nil {
				return err
			}
		}
		return h(w, r, p)
	}
}

// rateLimitsInfo is a key's own rate limits as the keys API shows them: null
// where the configured default applies, 0 for unlimited.
type rateLimitsInfo struct {
	RPM        *int64 `json:"rpm"`
	TPM        *int64 `json:"tpm"`
	Concurrent *int64 `json:"concurrent"`
}

func toRateLimitsInfo(l agentd.RateLimits) rateLimitsInfo {
	return rateLimitsInfo{RPM: l.RPM, TPM: l.TPM, Concurrent: l.Concurrent}
}

// keyRateLimits decodes PATCH /api/v3/keys/{id}'s rate_limits over cur, the
// key's own: absent, cur as it is; null, every limit back to its default; an
// object, each member it has (rpm, tpm, concurrent) a whole number (0:
// unlimited) or null (the default), the others as they are. auth checks the
// range.
func keyRateLimits(raw json.RawMessage, cur agentd.RateLimits) (agentd.RateLimits, error) {
	if raw == nil {
		return cur, nil
	}
	if string(raw) == "null" {
		return agentd.RateLimits{}, nil
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return cur, agentd.Invalid("rate_limits must be an object with rpm, tpm or concurrent, or null", "dict_type", "body", "rate_limits")
	}
	l := cur
	for name, v := range members {
		var f **int64
		switch name {
		case "rpm":
			f = &l.RPM
		case "tpm":
			f = &l.TPM
		case "concurrent":
			f = &l.Concurrent
		default:
			return cur, agentd.Invalid(fmt.Sprintf("unknown rate limit %q: rate_limits has rpm, tpm and concurrent", name), "extra_forbidden", "body", "rate_limits", name)
		}
		if string(v) == "null" {
			*f = nil
			continue
		}
		var n int64
		if err := json.Unmarshal(v, &n); err != nil {
			return cur, agentd.Invalid(fmt.Sprintf("rate_limits.%s must be a whole number (0: unlimited) or null (the default)", name), "int_type", "body", "rate_limits", name)
		}
		*f = &n
	}
	return l, nil
}

package bench

import (
	"fmt"
	"net/http"
)

// A scenario is one row of the matrix: a kind of request at one concurrency.
type scenario struct {
	id    string // what --only matches, with " c=N" and the title
	title string
	c     int
	quick bool // part of the --quick matrix
	// direct is the id of the row at the same concurrency that this row adds its
	// latency to (its p50 is subtracted from this one's).
	direct string
	// gateway is whose /proc numbers the row reports: "agentd", "proxy" or "".
	gateway string
	ttfb    bool   // latency columns are time to first content
	growth  bool   // the session-growth procedure instead of a load test
	na      string // not measurable: the reason
	target  func(e *env) (Target, error)
}

// Catalog model ids and agent names the runner creates in agentd.
const (
	benchModel     = "bench"      // on the zero-latency upstream
	benchSlowModel = "bench-slow" // on the upstream with Options.SlowLatency
	benchAgent     = "bench"      // an agent on benchModel
	benchMessage   = "Say hello to the benchmark in one short sentence."
)

// chatBody is an OpenAI chat completion request for model.
func ChatBody(model string, stream bool) []byte {
	s := ""
	if stream {
		s = `,"stream":true,"stream_options":{"include_usage":true}`
	}
	return fmt.Appendf(nil, `{"model":%q,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":%q}],"max_tokens":64,"temperature":0.7%s}`, model, benchMessage, s)
}

// runBody is a run request of agentd's run endpoint.
func runBody(stream bool) []byte {
	if stream {
		return fmt.Appendf(nil, `{"message":%q,"stream":true}`, benchMessage)
	}
	return fmt.Appendf(nil, `{"message":%q}`, benchMessage)
}

// matrix is every scenario in the order they run.
func matrix() []scenario {
	var rows []scenario
	add := func(s scenario) { rows = append(rows, s) }

	direct := func(slow, stream bool) func(e *env) (Target, error) {
		return func(e *env) (Target, error) {
			u := e.fast
			if slow {
				u = e.slow
			}
			return Target{URL: u.URL + "/v1/chat/completions", Header: jsonHeader(""), Body: ChatBody(benchModel, stream), Stream: stream}, nil
		}
	}
	proxy := func(slow, stream bool) func(e *env) (Target, error) {
		return func(e *env) (Target, error) {
			p, err := e.proxyFor(proxyKey{slow: slow})
			if err != nil {
				return Target{}, err
			}
			return Target{URL: p.URL + "/v1/chat/completions", Header: jsonHeader(""), Body: ChatBody(benchModel, stream), Stream: stream}, nil
		}
	}
	inproc := func(e *env) (Target, error) {
		p, err := e.proxyFor(proxyKey{inProcess: true})
		if err != nil {
			return Target{}, err
		}
		return Target{URL: p.URL + "/v1/chat/completions", Header: jsonHeader(""), Body: ChatBody(benchModel, false)}, nil
	}
	chat := func(model string, stream bool) func(e *env) (Target, error) {
		return func(e *env) (Target, error) {
			a, err := e.agentd()
			if err != nil {
				return Target{}, err
			}
			return Target{URL: a.URL + "/v1/chat/completions", Header: jsonHeader(e.key), Body: ChatBody(model, stream), Stream: stream}, nil
		}
	}
	run := func(sessions, stream bool) func(e *env) (Target, error) {
		return func(e *env) (Target, error) {
			a, err := e.agentd()
			if err != nil {
				return Target{}, err
			}
			t := Target{URL: a.URL + "/api/v3/agents/run-agents/" + benchAgent + "/run", Header: jsonHeader(e.key), Body: runBody(stream), Stream: stream}
			if sessions {
				cell := e.nextCell()
				t.WorkerHeader = func(w int, h http.Header) { h.Set("X-Session-ID", fmt.Sprintf("load-%d-%d", cell, w)) }
			}
			return t, nil
		}
	}

	for _, c := range []int{1, 64, 256} {
		add(scenario{id: "direct", title: "upstream direct", c: c, quick: c == 64, target: direct(false, false)})
	}
	for _, c := range []int{1, 64, 256} {
		add(scenario{id: "proxy", title: "bare JSON proxy", c: c, quick: c == 64, direct: "direct", gateway: "proxy", target: proxy(false, false)})
	}
	for _, c := range []int{1, 64} {
		add(scenario{id: "proxy-inproc", title: "bare JSON proxy in the load generator's process", c: c, direct: "direct", target: inproc})
	}
	for _, c := range []int{1, 64, 256} {
		add(scenario{id: "chat", title: "agentd /v1/chat/completions, model " + benchModel, c: c, quick: c == 64, direct: "direct", gateway: "agentd", target: chat(benchModel, false)})
	}
	add(scenario{id: "chat-agent", title: "agentd /v1/chat/completions, model agent/" + benchAgent, c: 64, direct: "direct", gateway: "agentd", target: chat("agent/"+benchAgent, false)})
	add(scenario{id: "direct-slow", title: "upstream direct, slow upstream", c: 256, target: direct(true, false)})
	add(scenario{id: "proxy-slow", title: "bare JSON proxy, slow upstream", c: 256, direct: "direct-slow", gateway: "proxy", target: proxy(true, false)})
	add(scenario{id: "chat-slow", title: "agentd /v1/chat/completions, slow upstream", c: 256, direct: "direct-slow", gateway: "agentd", target: chat(benchSlowModel, false)})
	add(scenario{id: "run", title: "agentd run endpoint, stateless", c: 64, quick: true, direct: "direct", gateway: "agentd", target: run(false, false)})
	add(scenario{id: "run-session", title: "agentd run endpoint, a session per worker", c: 64, quick: true, direct: "direct", gateway: "agentd", target: run(true, false)})
	add(scenario{id: "session-growth", title: "agentd run endpoint, one session growing", c: 1, quick: true, gateway: "agentd", growth: true, target: run(false, false)})
	add(scenario{id: "ttfb-direct", title: "TTFB: upstream direct, stream", c: 1, quick: true, ttfb: true, target: direct(false, true)})
	add(scenario{id: "ttfb-proxy", title: "TTFB: bare JSON proxy, stream", c: 1, ttfb: true, direct: "ttfb-direct", gateway: "proxy", target: proxy(false, true)})
	add(scenario{id: "ttfb-run", title: "TTFB: agentd run endpoint, stream", c: 1, quick: true, ttfb: true, direct: "ttfb-direct", gateway: "agentd", target: run(false, true)})
	add(scenario{id: "ttfb-chat", title: "TTFB: agentd /v1/chat/completions, stream", c: 1, quick: true, ttfb: true, direct: "ttfb-direct", gateway: "agentd", target: chat(benchModel, true)})
	add(scenario{id: "postgres", title: "agentd on PostgreSQL", c: 64, quick: true, na: "n/a: needs a PostgreSQL server; measured by BenchmarkReplicas (docs/benchmarks.md)"})
	return rows
}

// name is what --only matches: "id c=N title".
func (s *scenario) name() string { return fmt.Sprintf("%s c=%d %s", s.id, s.c, s.title) }

func jsonHeader(key string) http.Header {
	h := http.Header{"Content-Type": {"application/json"}}
	if key != "" {
		h.Set("Authorization", "Bearer "+key)
	}
	return h
}

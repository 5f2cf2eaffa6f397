package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/config"
)

// env returns a getenv over m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// writeFile writes a config file in t's temporary directory and returns its path.
func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agentd.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	c, err := config.Load(config.Overrides{}, env(nil))
	if err != nil {
		t.Fatalf("Load with nothing set: %v", err)
	}
	if c.Addr != "127.0.0.1:8080" || c.DB != "sqlite:agentd.db" || c.File != "" || c.BootstrapKey != "" {
		t.Errorf("defaults: addr %q db %q file %q bootstrap %q", c.Addr, c.DB, c.File, c.BootstrapKey)
	}
	if c.SQLite.Synchronous != "FULL" {
		t.Errorf("synchronous %q, want FULL", c.SQLite.Synchronous)
	}
	if c.Limits.SessionWait != config.Duration(30*time.Second) || c.Limits.RunTimeout != config.Duration(2*time.Minute) ||
		c.Limits.MaxBodyBytes != 1<<20 || c.Limits.MaxMessageChars != 32768 {
		t.Errorf("limits %+v", c.Limits)
	}
	if len(c.Models) != 2 || c.Models[1].ID != config.OfflineEmbedModelID || c.Models[1].Type != config.TypeEmbedding {
		t.Fatalf("models %+v, want the offline model and the offline embedding model", c.Models)
	}
	m := c.Models[0]
	if m.ID != config.OfflineModelID || m.Provider != config.OfflineProvider || m.UpstreamModel != "offline" ||
		m.ContextWindow != config.OfflineContextWindow || m.MaxOutputTokens != config.OfflineMaxOutput || m.Price != (config.Price{}) {
		t.Errorf("offline model %+v", m)
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "addr: 0.0.0.0:9000\ndb: sqlite:/var/lib/file.db\npublic_url: https://file.example\n")
	tests := []struct {
		name     string
		o        config.Overrides
		env      map[string]string
		wantAddr string
		wantDB   string
		wantURL  string
		wantFile string
	}{
		{"defaults", config.Overrides{}, nil, "127.0.0.1:8080", "sqlite:agentd.db", "", ""},
		{"file from flag", config.Overrides{ConfigFile: file}, nil, "0.0.0.0:9000", "sqlite:/var/lib/file.db", "https://file.example", file},
		{"file from AGENTD_CONFIG", config.Overrides{}, map[string]string{"AGENTD_CONFIG": file}, "0.0.0.0:9000", "sqlite:/var/lib/file.db", "https://file.example", file},
		{"flag file beats AGENTD_CONFIG", config.Overrides{ConfigFile: file}, map[string]string{"AGENTD_CONFIG": "/nonexistent.yaml"}, "0.0.0.0:9000", "sqlite:/var/lib/file.db", "https://file.example", file},
		{"env beats file", config.Overrides{ConfigFile: file},
			map[string]string{"AGENTD_ADDR": ":7000", "AGENTD_DB": "sqlite:env.db", "AGENTD_PUBLIC_URL": "https://env.example"},
			":7000", "sqlite:env.db", "https://env.example", file},
		{"env beats defaults", config.Overrides{}, map[string]string{"AGENTD_ADDR": ":7000", "AGENTD_DB": "sqlite:env.db"}, ":7000", "sqlite:env.db", "", ""},
		{"overrides beat env", config.Overrides{ConfigFile: file, Addr: ":6000", DB: "sqlite:flag.db"},
			map[string]string{"AGENTD_ADDR": ":7000", "AGENTD_DB": "sqlite:env.db"}, ":6000", "sqlite:flag.db", "https://file.example", file},
		{"one override, the rest from env", config.Overrides{Addr: ":6000"},
			map[string]string{"AGENTD_ADDR": ":7000", "AGENTD_DB": "sqlite:env.db"}, ":6000", "sqlite:env.db", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Load(tt.o, env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if c.Addr != tt.wantAddr || c.DB != tt.wantDB || c.PublicURL != tt.wantURL || c.File != tt.wantFile {
				t.Errorf("addr %q db %q public_url %q file %q; want %q %q %q %q",
					c.Addr, c.DB, c.PublicURL, c.File, tt.wantAddr, tt.wantDB, tt.wantURL, tt.wantFile)
			}
		})
	}
}

func TestEnvOnlySettings(t *testing.T) {
	c, err := config.Load(config.Overrides{}, env(map[string]string{
		"AGENTD_BOOTSTRAP_KEY":     "agd_boot_0123456789",
		"AGENTD_MAX_BODY_BYTES":    "4096",
		"AGENTD_MAX_MESSAGE_CHARS": "100",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.BootstrapKey != "agd_boot_0123456789" || c.Limits.MaxBodyBytes != 4096 || c.Limits.MaxMessageChars != 100 {
		t.Errorf("bootstrap %q limits %+v", c.BootstrapKey, c.Limits)
	}
	// A bootstrap key is checked with the rest of the configuration, before
	// anything is opened or minted.
	for _, bad := range []string{"agd_short", " agd_padded_0123456789", strings.Repeat("k", 513)} {
		if _, err := config.Load(config.Overrides{}, env(map[string]string{"AGENTD_BOOTSTRAP_KEY": bad})); err == nil || !strings.Contains(err.Error(), "AGENTD_BOOTSTRAP_KEY") {
			t.Errorf("AGENTD_BOOTSTRAP_KEY %q: %v", bad, err)
		}
	}
}

func TestModels(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []config.Model
	}{
		{"offline premium gets offline defaults", `
models:
  - {id: offline-premium, provider: offline, price: {input: 2.5, output: 10}}
`, []config.Model{
			{ID: "offline-premium", Provider: "offline", UpstreamModel: "offline-premium", ContextWindow: 32768, MaxOutputTokens: 4096, Price: config.Price{Input: 2.5, Output: 10}},
			{ID: "offline", Provider: "offline", UpstreamModel: "offline", Name: "agentd offline model", ContextWindow: 32768, MaxOutputTokens: 4096},
		}},
		{"offline overridden in the file", `
models:
  - id: offline
    context_window: 8192
    max_output_tokens: 512
    price: {input: 1, output: 2}
`, []config.Model{
			{ID: "offline", Provider: "offline", UpstreamModel: "offline", ContextWindow: 8192, MaxOutputTokens: 512, Price: config.Price{Input: 1, Output: 2}},
		}},
		{"upstream model kept", `
models:
  - {id: small, provider: offline, upstream_model: offline, name: Small}
`, []config.Model{
			{ID: "small", Provider: "offline", UpstreamModel: "offline", Name: "Small", ContextWindow: 32768, MaxOutputTokens: 4096},
			{ID: "offline", Provider: "offline", UpstreamModel: "offline", Name: "agentd offline model", ContextWindow: 32768, MaxOutputTokens: 4096},
		}},
		{"empty file", "", []config.Model{
			{ID: "offline", Provider: "offline", UpstreamModel: "offline", Name: "agentd offline model", ContextWindow: 32768, MaxOutputTokens: 4096},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Load(config.Overrides{ConfigFile: writeFile(t, tt.yaml)}, env(nil))
			if err != nil {
				t.Fatal(err)
			}
			// The built-in embedding model comes last, unless the file names it.
			if n := len(c.Models); n > 0 && c.Models[n-1].ID == config.OfflineEmbedModelID {
				c.Models = c.Models[:n-1]
			}
			if len(c.Models) != len(tt.want) {
				t.Fatalf("models %+v, want %+v", c.Models, tt.want)
			}
			for i := range tt.want {
				g, w := c.Models[i], tt.want[i]
				if g.ID != w.ID || g.Provider != w.Provider || g.UpstreamModel != w.UpstreamModel || g.Name != w.Name ||
					g.ContextWindow != w.ContextWindow || g.MaxOutputTokens != w.MaxOutputTokens || g.Price != w.Price || len(g.Fallbacks) != 0 {
					t.Errorf("models[%d] = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestDurations(t *testing.T) {
	c, err := config.Load(config.Overrides{ConfigFile: writeFile(t, "limits:\n  session_wait: 1500ms\n  run_timeout: 2m\n")}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.SessionWait != config.Duration(1500*time.Millisecond) || c.Limits.RunTimeout != config.Duration(2*time.Minute) {
		t.Errorf("limits %+v", c.Limits)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string // "" with env set: no file
		env  map[string]string
		o    config.Overrides
		// every string must appear in the error; "FILE" stands for the file's path
		want []string
	}{
		{"unknown provider", "models:\n  - {id: big, provider: nowhere}\n", nil, config.Overrides{},
			[]string{"FILE", `"big": unknown provider "nowhere"`}},
		{"duplicate id", "models:\n  - {id: m1, provider: offline}\n  - {id: m1, provider: offline}\n", nil, config.Overrides{},
			[]string{"FILE", `"m1": duplicate id`}},
		{"duplicate of the offline model", "models:\n  - {id: offline}\n  - {id: offline}\n", nil, config.Overrides{},
			[]string{"FILE", `models[1] "offline"`, "duplicate id"}},
		{"empty model id", "models:\n  - {provider: offline}\n", nil, config.Overrides{},
			[]string{"FILE", "]: id is empty"}},
		{"postgres without a host", "db: postgres:///agentd\n", nil, config.Overrides{},
			[]string{"FILE", "not a PostgreSQL URL", "postgres://user@host"}},
		{"postgres password not echoed", "db: \"postgres://u:secret@%zz/agentd\"\n", nil, config.Overrides{},
			[]string{"FILE", "not a PostgreSQL URL"}},
		{"postgres pool too small", "db: postgres://localhost/agentd\npostgres:\n  max_conns: 0\n", nil, config.Overrides{},
			[]string{"postgres.max_conns 0"}},
		{"postgres negative statement timeout", "db: postgres://localhost/agentd\npostgres:\n  statement_timeout: -1s\n", nil, config.Overrides{},
			[]string{"FILE", "postgres.statement_timeout must not be negative"}},
		{"db without scheme", "db: agentd.db\n", nil, config.Overrides{},
			[]string{"FILE", `db "agentd.db"`, "sqlite:PATH"}},
		{"sqlite without a file", "db: 'sqlite:'\n", nil, config.Overrides{},
			[]string{"FILE", "names no file"}},
		{"misspelt key", "adress: 0.0.0.0:1\n", nil, config.Overrides{},
			[]string{"FILE", "adress", "not found"}},
		{"misspelt nested key", "limits:\n  session_wiat: 5s\n", nil, config.Overrides{},
			[]string{"FILE", "session_wiat"}},
		{"misspelt model key", "models:\n  - {id: m, provider: offline, contex_window: 10}\n", nil, config.Overrides{},
			[]string{"FILE", "contex_window"}},
		{"bad duration", "limits:\n  session_wait: 5 parsecs\n", nil, config.Overrides{},
			[]string{"FILE", "line 2", `"5 parsecs" is not a duration`}},
		{"duration without unit", "limits:\n  run_timeout: 30\n", nil, config.Overrides{},
			[]string{"FILE", `"30" is not a duration`}},
		{"negative session wait", "limits:\n  session_wait: -1s\n", nil, config.Overrides{},
			[]string{"FILE", "limits.session_wait must not be negative"}},
		{"zero run timeout", "limits:\n  run_timeout: 0s\n", nil, config.Overrides{},
			[]string{"FILE", "limits.run_timeout must be positive"}},
		{"tiny body limit", "limits:\n  max_body_bytes: 10\n", nil, config.Overrides{},
			[]string{"FILE", "limits.max_body_bytes 10 is below 1024"}},
		{"bad synchronous", "sqlite:\n  synchronous: SOMETIMES\n", nil, config.Overrides{},
			[]string{"FILE", `sqlite.synchronous "SOMETIMES"`}},
		{"max output not below context", "models:\n  - {id: m, provider: offline, context_window: 100, max_output_tokens: 100}\n", nil, config.Overrides{},
			[]string{"FILE", `"m": max_output_tokens must be positive and below context_window`}},
		{"negative price", "models:\n  - {id: m, provider: offline, price: {input: -1}}\n", nil, config.Overrides{},
			[]string{"FILE", `"m": prices (input, output, cached_input, cache_write) must be between`}},
		{"fallback to itself", "models:\n  - {id: m, provider: offline, fallbacks: [m]}\n", nil, config.Overrides{},
			[]string{"FILE", `models[0] "m": falls back to itself`}},
		{"unknown fallback", "models:\n  - {id: m, provider: offline, fallbacks: [nope]}\n", nil, config.Overrides{},
			[]string{"FILE", `models[0] "m": fallback "nope" is not a model id`}},
		{"fallback cycle", "models:\n  - {id: a, provider: offline, fallbacks: [b]}\n  - {id: b, provider: offline, fallbacks: [c]}\n  - {id: c, provider: offline, fallbacks: [a]}\n", nil, config.Overrides{},
			[]string{"FILE", "fallback cycle a → b → c → a"}},
		{"unknown provider kind", "providers:\n  - {name: p, kind: gemini}\n", nil, config.Overrides{},
			[]string{"FILE", `providers[0] "p": unknown kind "gemini"`}},
		{"empty provider kind", "providers:\n  - {name: p}\n", nil, config.Overrides{},
			[]string{"FILE", `providers[0] "p": kind is empty`}},
		{"missing api key env var", "providers:\n  - {name: openai, kind: openai, api_key_env: OPENAI_API_KEY}\n", nil, config.Overrides{},
			[]string{"FILE", `providers[0] "openai": environment variable OPENAI_API_KEY (api_key_env) is not set`}},
		{"bad base url", "providers:\n  - {name: local, kind: openai, base_url: 'localhost:11434'}\n", nil, config.Overrides{},
			[]string{"FILE", `providers[0] "local": base_url "localhost:11434" is not an http(s) URL`}},
		{"bad max_tokens_field", "providers:\n  - {name: o, kind: openai, max_tokens_field: tokens}\n", nil, config.Overrides{},
			[]string{"FILE", `max_tokens_field "tokens"`}},
		{"too many retries", "providers:\n  - {name: o, kind: openai, max_retries: 50}\n", nil, config.Overrides{},
			[]string{"FILE", "max_retries must be between 0 and 10"}},
		{"bad tokenizer", "models:\n  - {id: m, provider: offline, tokenizer: llama3}\n", nil, config.Overrides{},
			[]string{"FILE", `tokenizer "llama3"`}},
		{"bad backoff", "retry:\n  initial_backoff: 2s\n  max_backoff: 1s\n", nil, config.Overrides{},
			[]string{"FILE", "retry: initial_backoff"}},
		{"provider named offline", "providers:\n  - {name: offline, kind: offline}\n", nil, config.Overrides{},
			[]string{"FILE", `providers[0] "offline"`, "duplicate name"}},
		{"every problem reported", "db: nope\nmodels:\n  - {id: a, provider: x}\n  - {id: a, provider: offline}\n", nil, config.Overrides{},
			[]string{"FILE", `db "nope"`, `"a": unknown provider "x"`, `"a": duplicate id`}},
		{"not yaml", "addr: [unclosed\n", nil, config.Overrides{},
			[]string{"FILE"}},
		{"bad AGENTD_MAX_BODY_BYTES", "", map[string]string{"AGENTD_MAX_BODY_BYTES": "1MB"}, config.Overrides{},
			[]string{"AGENTD_MAX_BODY_BYTES", `"1MB"`}},
		{"bad AGENTD_MAX_MESSAGE_CHARS", "", map[string]string{"AGENTD_MAX_MESSAGE_CHARS": "lots"}, config.Overrides{},
			[]string{"AGENTD_MAX_MESSAGE_CHARS", `"lots"`}},
		{"missing file", "", nil, config.Overrides{ConfigFile: "/nonexistent/agentd.yaml"},
			[]string{"/nonexistent/agentd.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			file := o.ConfigFile
			if tt.yaml != "" {
				file = writeFile(t, tt.yaml)
				o.ConfigFile = file
			}
			c, err := config.Load(o, env(tt.env))
			if err == nil {
				t.Fatalf("Load succeeded: %+v", c)
			}
			for _, w := range tt.want {
				if w == "FILE" {
					w = file
				}
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestErrorIndexIsTheFilesIndex: an error names the entry by its position in the
// file, so that "models[0]" is the first model the file lists.
func TestErrorIndexIsTheFilesIndex(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"first entry", "models:\n  - {id: big, provider: nowhere}\n", `models[0] "big": unknown provider "nowhere"`},
		{"second entry", "models:\n  - {id: m1, provider: offline}\n  - {id: m1, provider: offline}\n", `models[1] "m1": duplicate id`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Load(config.Overrides{ConfigFile: writeFile(t, tt.yaml)}, env(nil))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestProviders: a real catalog loads with its defaults filled in, its key read
// from the environment and tokenizers inferred from the model names.
func TestProviders(t *testing.T) {
	yaml := `
providers:
  - name: openai
    kind: openai
    api_key_env: OPENAI_API_KEY
  - name: claude
    kind: Anthropic
    api_key_env: ANTHROPIC_API_KEY
    max_retries: 0
  - name: ollama
    kind: openai
    base_url: http://localhost:11434/v1
    timeout: 5m
models:
  - id: gpt-4o-mini
    provider: openai
    context_window: 128000
    max_output_tokens: 16384
    price: {input: 0.15, output: 0.60}
    fallbacks: [claude-haiku]
  - id: gpt-4
    provider: openai
    context_window: 8192
    max_output_tokens: 4096
  - id: claude-haiku
    provider: claude
    upstream_model: claude-3-5-haiku-latest
    context_window: 200000
    max_output_tokens: 8192
    fallbacks: [llama]
  - id: llama
    provider: ollama
    upstream_model: llama3.2
    context_window: 8192
    max_output_tokens: 2048
  - id: gpt-oss
    provider: ollama
    upstream_model: openai/gpt-oss-20b
    context_window: 8192
    max_output_tokens: 2048
`
	c, err := config.Load(config.Overrides{ConfigFile: writeFile(t, yaml)},
		env(map[string]string{"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant"}))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Providers
	if p[0].BaseURL != config.OpenAIBaseURL || p[0].APIKey != "sk-test" || *p[0].MaxRetries != config.DefaultMaxRetries ||
		time.Duration(p[0].Timeout) != config.DefaultProviderTimeout || p[0].MaxTokensField != "max_tokens" {
		t.Errorf("openai provider = %+v", p[0])
	}
	if p[1].Kind != config.KindAnthropic || p[1].BaseURL != config.AnthropicBaseURL || p[1].APIKey != "sk-ant" ||
		*p[1].MaxRetries != 0 || p[1].AnthropicVersion != "2023-06-01" {
		t.Errorf("anthropic provider = %+v", p[1])
	}
	if p[2].APIKey != "" || time.Duration(p[2].Timeout) != 5*time.Minute {
		t.Errorf("ollama provider = %+v", p[2])
	}
	want := map[string]string{"gpt-4o-mini": "o200k", "gpt-4": "cl100k", "claude-haiku": "estimate", "llama": "estimate", "gpt-oss": "o200k", "offline": "o200k", "offline-hash-embed": "o200k"}
	for _, m := range c.Models {
		if m.Tokenizer != want[m.ID] {
			t.Errorf("model %s: tokenizer %q, want %q", m.ID, m.Tokenizer, want[m.ID])
		}
	}
	if c.Models[0].UpstreamModel != "gpt-4o-mini" {
		t.Errorf("upstream model defaults to the id; got %q", c.Models[0].UpstreamModel)
	}
}

// TestExamples: every configuration the README points to loads, with the key
// variables it names set.
func TestExamples(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	more, _ := filepath.Glob("../../examples/providers/*.yaml")
	files = append(files, more...)
	if len(files) < 6 {
		t.Fatalf("found %d example configurations", len(files))
	}
	keys := map[string]string{"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-ant-x", "VLLM_API_KEY": "x"}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := config.Load(config.Overrides{ConfigFile: f}, env(keys)); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestPostgresDB: a PostgreSQL URL is accepted from the environment with the
// PostgreSQL defaults, and a malformed one is refused without echoing its password.
func TestPostgresDB(t *testing.T) {
	env := map[string]string{"AGENTD_DB": "postgres://agentd:pw@db.internal:5432/agentd?sslmode=disable"}
	c, err := config.Load(config.Overrides{}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.DB != env["AGENTD_DB"] || c.Postgres.MaxConns != 8 || c.Postgres.StatementTimeout != config.Duration(10*time.Second) || c.Postgres.ApplicationName != "" {
		t.Errorf("db %q, postgres %+v", c.DB, c.Postgres)
	}
	env["AGENTD_DB"] = "postgres://agentd:s3cret@%zz/agentd"
	_, err = config.Load(config.Overrides{}, func(k string) string { return env[k] })
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error %v: want a refusal that does not show the password", err)
	}
}

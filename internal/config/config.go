// Package config is agentd's one configuration struct: defaults, then the YAML file,
// then AGENTD_* environment variables, then flags, validated once at start. Nothing
// else in agentd reads the environment or files for settings.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is everything agentd serve needs to start.
type Config struct {
	Addr string `yaml:"addr"`
	// AdminAddr, when set, serves /debug/pprof on a second listener, for
	// profiling; keep it on a private address.
	AdminAddr string `yaml:"admin_addr"`
	// DB is "sqlite:PATH" (one process) or a PostgreSQL URL, postgres://… (any
	// number of replicas sharing it).
	DB string `yaml:"db"`
	// PublicURL is the base URL clients reach agentd at, used in agents' endpoint
	// field. Defaults to http://<addr>.
	PublicURL string `yaml:"public_url"`
	// BootstrapKey, when set, is ensured to exist as an operator key of the default
	// organization. Only from the environment (AGENTD_BOOTSTRAP_KEY), never the file.
	BootstrapKey string `yaml:"-"`

	Limits   Limits   `yaml:"limits"`
	Server   Server   `yaml:"server"`
	TLS      TLS      `yaml:"tls"`
	SQLite   SQLite   `yaml:"sqlite"`
	Postgres Postgres `yaml:"postgres"`
	// Redis, a redis:// URL, shares the rate limits among replicas
	// (ratelimits.go); "" limits each replica alone.
	Redis string `yaml:"redis"`

	Providers []Provider `yaml:"providers"`
	Models    []Model    `yaml:"models"`
	Retry     Retry      `yaml:"retry"`

	Agents      Agents      `yaml:"agents"`
	Ledger      Ledger      `yaml:"ledger"`
	Sessions    Sessions    `yaml:"sessions"`
	Idempotency Idempotency `yaml:"idempotency"`
	// SweepInterval is how often the sweepers run: expired holds, idempotency
	// records, idle sessions, ledger rows past retention.
	SweepInterval Duration `yaml:"sweep_interval"`

	Log     Log     `yaml:"log"`
	Metrics Metrics `yaml:"metrics"`

	// File is the config file that was loaded, for error messages.
	File string `yaml:"-"`
}

// Log configures agentd's log (standard error).
type Log struct {
	// Format is text (slog's key=value lines, the default) or json.
	Format string `yaml:"format"`
	// Level is debug, info (the default), warn or error.
	Level string `yaml:"level"`
	// Access logs one line per request at level info: method, route, status,
	// bytes, duration, request id, organization and key id.
	Access bool `yaml:"access"`
	// Contents, a debugging setting, lets message contents into the log: each
	// run's messages and reply at level debug. Off, no line carries them.
	Contents bool `yaml:"contents"`
}

// Log formats and levels.
const (
	LogText = "text"
	LogJSON = "json"
)

// Metrics configures the Prometheus metrics.
type Metrics struct {
	// Enabled collects metrics (the default). They are served at /metrics on
	// the admin listener (admin_addr), and on the API listener when Token is
	// set. Off, nothing is measured.
	Enabled bool `yaml:"enabled"`
	// PerOrg labels tokens and credits by organization as well as by model.
	// Organizations are created through the API, so their series have no bound
	// the configuration sets: turn it on only for a few organizations.
	PerOrg bool `yaml:"per_org"`
	// Token, when set, serves /metrics on the API listener to requests bearing
	// it (Authorization: Bearer <token>). Only from the environment
	// (AGENTD_METRICS_TOKEN), never the file.
	Token string `yaml:"-"`
}

// Agents bounds what each organization may store.
type Agents struct {
	// MaxPerOrg is how many agents one organization may have.
	MaxPerOrg int `yaml:"max_per_org"`
	// MaxBytes bounds one agent's description, instructions and demonstrations.
	MaxBytes int `yaml:"max_bytes"`
}

// Ledger configures the usage record.
type Ledger struct {
	// Retention is how long raw ledger rows are kept; 0 keeps them forever. Daily
	// rollups are kept forever, so summaries and balances stay whole.
	Retention Duration `yaml:"retention"`
}

// Sessions configures conversation memory.
type Sessions struct {
	// IdleTTL deletes a session's history once it has been idle this long.
	IdleTTL Duration `yaml:"idle_ttl"`
}

// Idempotency configures Idempotency-Key records.
type Idempotency struct {
	// TTL is how long a finished run's response is kept for replay.
	TTL Duration `yaml:"ttl"`
}

// Limits bound what one request may ask for.
type Limits struct {
	MaxBodyBytes    int64    `yaml:"max_body_bytes"`    // larger bodies get 413
	MaxMessageChars int      `yaml:"max_message_chars"` // longer run messages get 422
	SessionWait     Duration `yaml:"session_wait"`      // how long a turn waits for a busy session
	RunTimeout      Duration `yaml:"run_timeout"`       // deadline of one provider call
	// StreamKeepAlive is how often an idle event stream gets a comment line.
	StreamKeepAlive Duration `yaml:"stream_keepalive"`
	// ShutdownTimeout is how long a stopping server lets in-flight requests and
	// streams finish before it cuts them (their holds are still settled).
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// Rate are the default rate limits of keys and organizations (ratelimits.go).
	Rate RateLimits `yaml:"rate"`
}

// SQLite tunes the embedded database.
type SQLite struct {
	// Synchronous is SQLite's synchronous pragma: FULL makes every commit durable
	// against power loss (the default); NORMAL only against process crashes.
	Synchronous string `yaml:"synchronous"`
	// MaxMB caps the database file, in MiB (0: no cap). Past it, writes fail
	// with 503 and nothing half-written, as on a full disk.
	MaxMB int64 `yaml:"max_mb"`
}

// Postgres tunes the PostgreSQL store (db: postgres://…). Connection settings
// (host, user, password, sslmode, connect_timeout) belong in the URL.
type Postgres struct {
	// MaxConns caps each replica's read pool; its writer has one connection more,
	// and its notification listener another.
	MaxConns int `yaml:"max_conns"`
	// StatementTimeout bounds every statement, so that a stuck database answers
	// 503 rather than hanging requests (0: the server's own setting).
	StatementTimeout Duration `yaml:"statement_timeout"`
	// ApplicationName names this replica's connections in pg_stat_activity
	// (default: the URL's application_name, else agentd).
	ApplicationName string `yaml:"application_name"`
}

// Provider kinds.
const (
	KindOpenAI    = "openai"    // any OpenAI-compatible chat-completions server
	KindAnthropic = "anthropic" // Anthropic's Messages API
	KindOffline   = "offline"   // the built-in offline model
)

// Default base URLs of the hosted APIs.
const (
	OpenAIBaseURL    = "https://api.openai.com/v1"
	AnthropicBaseURL = "https://api.anthropic.com"
)

// Provider is an upstream serving models. The built-in provider "offline" needs no
// entry.
type Provider struct {
	Name    string `yaml:"name"`
	Kind    string `yaml:"kind"`
	BaseURL string `yaml:"base_url"`
	// APIKeyEnv names the environment variable holding the API key; it must be set
	// when agentd starts. Empty: no key is sent (local servers such as Ollama).
	APIKeyEnv string `yaml:"api_key_env"`
	// APIKey is read from APIKeyEnv at load; never from the file, never logged.
	APIKey string `yaml:"-"`
	// Headers are sent with every request (OpenRouter's HTTP-Referer, anthropic-beta).
	Headers map[string]string `yaml:"headers"`
	// Timeout bounds one attempt; the run's own deadline (limits.run_timeout) bounds
	// all attempts and fallbacks together.
	Timeout Duration `yaml:"timeout"`
	// MaxRetries is how many times a retryable failure is retried on this provider
	// before falling back. Zero is a valid setting, so "unset" is -1 after load.
	MaxRetries *int `yaml:"max_retries"`
	// MaxTokensField is the OpenAI request field carrying the reply limit:
	// max_tokens (default) or max_completion_tokens (OpenAI's reasoning models).
	MaxTokensField string `yaml:"max_tokens_field"`
	// AnthropicVersion is the anthropic-version header (default 2023-06-01).
	AnthropicVersion string `yaml:"anthropic_version"`
	// DropParams (kind anthropic) drops the client parameters the provider cannot
	// take instead of refusing the request with a 400 naming them.
	DropParams bool `yaml:"drop_params"`
}

// Retry shapes the backoff between attempts: exponential from InitialBackoff,
// capped at MaxBackoff, with full jitter. A provider's Retry-After wins when longer.
type Retry struct {
	InitialBackoff Duration `yaml:"initial_backoff"`
	MaxBackoff     Duration `yaml:"max_backoff"`
}

// Provider defaults.
const (
	DefaultProviderTimeout = 60 * time.Second
	DefaultMaxRetries      = 2
)

// Model is a catalog entry.
type Model struct {
	ID              string   `yaml:"id"`
	Provider        string   `yaml:"provider"`
	UpstreamModel   string   `yaml:"upstream_model"`
	Name            string   `yaml:"name"`
	ContextWindow   int      `yaml:"context_window"`
	MaxOutputTokens int      `yaml:"max_output_tokens"`
	Price           Price    `yaml:"price"`
	Fallbacks       []string `yaml:"fallbacks"`
	// Tokenizer counts this model's tokens for holds and trimming: o200k or cl100k
	// (exact for OpenAI families) or estimate (bytes/3, an upper bound for English
	// text). Default: inferred from the provider kind and upstream model name.
	Tokenizer string `yaml:"tokenizer"`
	// Type is chat (the default) or embedding: a model for /v1/embeddings, whose
	// context_window bounds each input and which has no output.
	Type string `yaml:"type"`
}

// Model types.
const (
	TypeChat      = "chat"
	TypeEmbedding = "embedding"
)

// Tokenizers.
const (
	TokenizerO200k    = "o200k"
	TokenizerCl100k   = "cl100k"
	TokenizerEstimate = "estimate"
)

// Price is in credits per million tokens. CachedInput (input read from the
// provider's prompt cache) and CacheWrite (input written to it) are the input
// price when not set.
type Price struct {
	Input       float64  `yaml:"input"`
	Output      float64  `yaml:"output"`
	CachedInput *float64 `yaml:"cached_input"`
	CacheWrite  *float64 `yaml:"cache_write"`
}

// Cached is the price of cached input tokens; CacheWriting of cache writes.
func (p Price) Cached() float64 { return derefOr(p.CachedInput, p.Input) }

// CacheWriting is the price of input tokens written to the cache.
func (p Price) CacheWriting() float64 { return derefOr(p.CacheWrite, p.Input) }

func derefOr(v *float64, def float64) float64 {
	if v == nil {
		return def
	}
	return *v
}

// Duration is a time.Duration written as "30s" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 30s or 2m", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// Offline model defaults: the built-in model's catalog entry when the file does not
// override it.
const (
	OfflineModelID       = "offline"
	OfflineProvider      = "offline"
	OfflineContextWindow = 32768
	OfflineMaxOutput     = 4096
	// OfflineEmbedModelID is the built-in embedding model: hashed words, not a
	// learned model, as its id says.
	OfflineEmbedModelID = "offline-hash-embed"
	OfflineEmbedWindow  = 8192
)

// Default returns the configuration used when nothing is set.
func Default() *Config {
	return &Config{
		Addr: "127.0.0.1:8080",
		DB:   "sqlite:agentd.db",
		Limits: Limits{
			MaxBodyBytes:    1 << 20,
			MaxMessageChars: 32768,
			SessionWait:     Duration(30 * time.Second),
			RunTimeout:      Duration(120 * time.Second),
			StreamKeepAlive: Duration(15 * time.Second),
			ShutdownTimeout: Duration(30 * time.Second),
		},
		Server:   DefaultServer(),
		SQLite:   SQLite{Synchronous: "FULL"},
		Postgres: Postgres{MaxConns: 8, StatementTimeout: Duration(10 * time.Second)},
		Agents:   Agents{MaxPerOrg: 1000, MaxBytes: 1 << 20},
		Retry:    Retry{InitialBackoff: Duration(200 * time.Millisecond), MaxBackoff: Duration(10 * time.Second)},

		Sessions:      Sessions{IdleTTL: Duration(30 * 24 * time.Hour)},
		Idempotency:   Idempotency{TTL: Duration(24 * time.Hour)},
		SweepInterval: Duration(time.Minute),
		Log:           Log{Format: LogText, Level: "info"},
		Metrics:       Metrics{Enabled: true},
	}
}

// redactURL hides a password in a database URL for error messages.
func redactURL(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		if i := strings.Index(dsn, "@"); i >= 0 && strings.Contains(dsn, "://") {
			return dsn[:strings.Index(dsn, "://")+3] + "…" + dsn[i:]
		}
		return dsn
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// Overrides are values given on the command line; empty means not given.
type Overrides struct {
	Addr, AdminAddr, DB, ConfigFile string
	TLSCert, TLSKey                 string
	Redis                           string
}

// Load builds the configuration: defaults, the file (flag, else AGENTD_CONFIG), the
// environment, then flags. It validates the result.
func Load(o Overrides, getenv func(string) string) (*Config, error) {
	c := Default()
	file := firstNonEmpty(o.ConfigFile, getenv("AGENTD_CONFIG"))
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)                                            // a misspelt key is an error, not a silent default
		if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // io.EOF: empty file
			return nil, fileError(file, data, err)
		}
		c.File = file
	}
	c.Addr = firstNonEmpty(o.Addr, getenv("AGENTD_ADDR"), c.Addr)
	c.AdminAddr = firstNonEmpty(o.AdminAddr, getenv("AGENTD_ADMIN_ADDR"), c.AdminAddr)
	c.DB = firstNonEmpty(o.DB, getenv("AGENTD_DB"), c.DB)
	c.Redis = firstNonEmpty(o.Redis, getenv("AGENTD_REDIS"), c.Redis)
	c.TLS.CertFile = firstNonEmpty(o.TLSCert, getenv("AGENTD_TLS_CERT"), c.TLS.CertFile)
	c.TLS.KeyFile = firstNonEmpty(o.TLSKey, getenv("AGENTD_TLS_KEY"), c.TLS.KeyFile)
	c.PublicURL = firstNonEmpty(getenv("AGENTD_PUBLIC_URL"), c.PublicURL)
	c.BootstrapKey = getenv("AGENTD_BOOTSTRAP_KEY")
	c.Metrics.Token = getenv("AGENTD_METRICS_TOKEN")
	c.Log.Format = strings.ToLower(firstNonEmpty(getenv("AGENTD_LOG_FORMAT"), c.Log.Format))
	c.Log.Level = strings.ToLower(firstNonEmpty(getenv("AGENTD_LOG_LEVEL"), c.Log.Level))
	if v := getenv("AGENTD_LOG_ACCESS"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("config: AGENTD_LOG_ACCESS=%q is not true or false", v)
		}
		c.Log.Access = b
	}
	c.Postgres.ApplicationName = firstNonEmpty(getenv("AGENTD_POSTGRES_APPLICATION_NAME"), c.Postgres.ApplicationName)
	if v := getenv("AGENTD_MAX_BODY_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("config: AGENTD_MAX_BODY_BYTES=%q is not an integer", v)
		}
		c.Limits.MaxBodyBytes = n
	}
	if v := getenv("AGENTD_MAX_MESSAGE_CHARS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("config: AGENTD_MAX_MESSAGE_CHARS=%q is not an integer", v)
		}
		c.Limits.MaxMessageChars = n
	}
	c.addOffline()
	c.fillProviders(getenv)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// addOffline makes sure the built-in offline model is in the catalog, and fills
// defaults of models on the offline provider.
func (c *Config) addOffline() {
	found, foundEmbed := false, false
	for i := range c.Models {
		m := &c.Models[i]
		if m.Type == "" {
			m.Type = TypeChat
		}
		foundEmbed = foundEmbed || m.ID == OfflineEmbedModelID
		if m.ID == OfflineModelID {
			found = true
			if m.Provider == "" {
				m.Provider = OfflineProvider
			}
		}
		if m.Provider == OfflineProvider {
			if m.ContextWindow == 0 {
				m.ContextWindow = OfflineContextWindow
			}
			if m.MaxOutputTokens == 0 && m.Type == TypeChat {
				m.MaxOutputTokens = OfflineMaxOutput
			}
		}
		if m.UpstreamModel == "" {
			m.UpstreamModel = m.ID
		}
	}
	if !found {
		// Appended, not prepended, so that errors about models[i] use the file's own index.
		c.Models = append(c.Models, Model{
			ID: OfflineModelID, Provider: OfflineProvider, UpstreamModel: OfflineModelID,
			Name: "agentd offline model", ContextWindow: OfflineContextWindow, MaxOutputTokens: OfflineMaxOutput, Type: TypeChat,
		})
	}
	if !foundEmbed {
		c.Models = append(c.Models, Model{
			ID: OfflineEmbedModelID, Provider: OfflineProvider, UpstreamModel: OfflineEmbedModelID,
			Name: "agentd offline hashed embedding (not a learned model)", ContextWindow: OfflineEmbedWindow, Type: TypeEmbedding,
		})
	}
}

// fillProviders applies provider defaults, reads API keys from the environment and
// infers tokenizers.
func (c *Config) fillProviders(getenv func(string) string) {
	kinds := map[string]string{OfflineProvider: KindOffline}
	for i := range c.Providers {
		p := &c.Providers[i]
		p.Kind = strings.ToLower(strings.TrimSpace(p.Kind))
		kinds[p.Name] = p.Kind
		if p.BaseURL == "" {
			switch p.Kind {
			case KindOpenAI:
				p.BaseURL = OpenAIBaseURL
			case KindAnthropic:
				p.BaseURL = AnthropicBaseURL
			}
		}
		if p.APIKeyEnv != "" {
			p.APIKey = getenv(p.APIKeyEnv)
		}
		if p.Timeout == 0 {
			p.Timeout = Duration(DefaultProviderTimeout)
		}
		if p.MaxRetries == nil {
			n := DefaultMaxRetries
			p.MaxRetries = &n
		}
		if p.MaxTokensField == "" {
			p.MaxTokensField = "max_tokens"
		}
		if p.AnthropicVersion == "" {
			p.AnthropicVersion = "2023-06-01"
		}
	}
	for i := range c.Models {
		m := &c.Models[i]
		if m.Tokenizer == "" {
			m.Tokenizer = inferTokenizer(kinds[m.Provider], m.UpstreamModel)
		}
	}
}

// inferTokenizer picks the exact tokenizer of OpenAI's model families by name
// (served by OpenAI or anyone else under the same name), and the estimate for
// every other family: Llama, Qwen, Mistral and Claude tokenizers are not embedded.
func inferTokenizer(kind, upstream string) string {
	if kind == KindOffline {
		return TokenizerO200k
	}
	name := strings.ToLower(upstream)
	if i := strings.LastIndexByte(name, '/'); i >= 0 { // openai/gpt-4o on OpenRouter
		name = name[i+1:]
	}
	for _, p := range []string{"gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-oss", "o1", "o3", "o4"} {
		if strings.HasPrefix(name, p) {
			return TokenizerO200k
		}
	}
	for _, p := range []string{"gpt-4", "gpt-3.5", "gpt-35"} {
		if strings.HasPrefix(name, p) {
			return TokenizerCl100k
		}
	}
	return TokenizerEstimate
}

// Validate reports every problem it finds, each naming the file and the entry.
func (c *Config) Validate() error {
	var errs []error
	where := "config"
	if c.File != "" {
		where = "config " + c.File
	}
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{where}, args...)...))
	}
	if c.Addr == "" {
		bad("addr is empty")
	}
	switch {
	case strings.HasPrefix(c.DB, "sqlite:"):
		if strings.TrimPrefix(c.DB, "sqlite:") == "" {
			bad("db %q names no file (use sqlite:agentd.db)", c.DB)
		}
	case strings.HasPrefix(c.DB, "postgres://"), strings.HasPrefix(c.DB, "postgresql://"):
		if u, err := url.Parse(c.DB); err != nil || u.Host == "" {
			bad("db: %q is not a PostgreSQL URL like postgres://user@host:5432/agentd?sslmode=disable", redactURL(c.DB))
		}
	default:
		bad("db %q: want sqlite:PATH or postgres://user@host:5432/database", redactURL(c.DB))
	}
	if c.Postgres.MaxConns < 1 || c.Postgres.MaxConns > 1000 {
		bad("postgres.max_conns %d must be between 1 and 1000", c.Postgres.MaxConns)
	}
	if c.Postgres.StatementTimeout < 0 {
		bad("postgres.statement_timeout must not be negative")
	}
	if len(c.Postgres.ApplicationName) > 63 {
		bad("postgres.application_name is longer than PostgreSQL's 63 bytes")
	}
	if c.Limits.MaxBodyBytes < 1024 {
		bad("limits.max_body_bytes %d is below 1024", c.Limits.MaxBodyBytes)
	}
	if c.Limits.MaxMessageChars < 1 {
		bad("limits.max_message_chars %d must be positive", c.Limits.MaxMessageChars)
	}
	if c.Limits.SessionWait < 0 {
		bad("limits.session_wait must not be negative")
	}
	if c.Limits.RunTimeout <= 0 {
		bad("limits.run_timeout must be positive")
	}
	if c.Limits.StreamKeepAlive <= 0 {
		bad("limits.stream_keepalive must be positive")
	}
	if c.Limits.ShutdownTimeout < 0 {
		bad("limits.shutdown_timeout must not be negative")
	}
	c.validateServer(bad)
	c.validateRateLimits(bad)
	if c.SQLite.MaxMB < 0 {
		bad("sqlite.max_mb must not be negative")
	}
	switch strings.ToUpper(c.SQLite.Synchronous) {
	case "FULL", "NORMAL", "EXTRA":
	default:
		bad("sqlite.synchronous %q: want FULL, NORMAL or EXTRA", c.SQLite.Synchronous)
	}
	if c.Agents.MaxPerOrg < 1 {
		bad("agents.max_per_org %d must be positive", c.Agents.MaxPerOrg)
	}
	if c.Agents.MaxBytes < 1024 {
		bad("agents.max_bytes %d is below 1024", c.Agents.MaxBytes)
	}
	if c.BootstrapKey != "" && (len(c.BootstrapKey) < 16 || len(c.BootstrapKey) > 512 || strings.TrimSpace(c.BootstrapKey) != c.BootstrapKey) {
		bad("AGENTD_BOOTSTRAP_KEY must be 16 to 512 characters without surrounding spaces")
	}
	switch c.Log.Format {
	case LogText, LogJSON:
	default:
		bad("log.format %q: want text or json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level %q: want debug, info, warn or error", c.Log.Level)
	}
	if c.Metrics.Token != "" && (len(c.Metrics.Token) < 16 || len(c.Metrics.Token) > 512 || strings.ContainsAny(c.Metrics.Token, " \t\r\n")) {
		bad("AGENTD_METRICS_TOKEN must be 16 to 512 characters without spaces")
	}
	if c.Metrics.Token != "" && !c.Metrics.Enabled {
		bad("AGENTD_METRICS_TOKEN is set but metrics.enabled is false: there are no metrics to serve")
	}
	if c.Ledger.Retention < 0 {
		bad("ledger.retention must not be negative (0 keeps rows forever)")
	}
	if c.Sessions.IdleTTL <= 0 {
		bad("sessions.idle_ttl must be positive")
	}
	if c.Idempotency.TTL <= 0 {
		bad("idempotency.ttl must be positive")
	}
	if c.SweepInterval <= 0 {
		bad("sweep_interval must be positive")
	}
	if c.Retry.InitialBackoff <= 0 || c.Retry.MaxBackoff < c.Retry.InitialBackoff {
		bad("retry: initial_backoff must be positive and max_backoff at least initial_backoff")
	}
	providers := map[string]bool{}
	anthropic := map[string]bool{} // providers of kind anthropic, which has no embeddings
	for i, p := range c.Providers {
		switch {
		case p.Name == "":
			bad("providers[%d]: name is empty", i)
		case providers[p.Name] || p.Name == OfflineProvider:
			bad("providers[%d] %q: duplicate name (%q is built in)", i, p.Name, OfflineProvider)
		}
		providers[p.Name] = true
		anthropic[p.Name] = p.Kind == KindAnthropic
		switch p.Kind {
		case KindOpenAI, KindAnthropic:
			if u, err := url.Parse(p.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad("providers[%d] %q: base_url %q is not an http(s) URL", i, p.Name, p.BaseURL)
			}
		case KindOffline:
		case "":
			bad("providers[%d] %q: kind is empty; want openai, anthropic or offline", i, p.Name)
		default:
			bad("providers[%d] %q: unknown kind %q; want openai, anthropic or offline", i, p.Name, p.Kind)
		}
		if p.APIKeyEnv != "" && p.APIKey == "" {
			bad("providers[%d] %q: environment variable %s (api_key_env) is not set", i, p.Name, p.APIKeyEnv)
		}
		if p.Timeout <= 0 {
			bad("providers[%d] %q: timeout must be positive", i, p.Name)
		}
		if p.MaxRetries != nil && (*p.MaxRetries < 0 || *p.MaxRetries > 10) {
			bad("providers[%d] %q: max_retries must be between 0 and 10", i, p.Name)
		}
		if p.DropParams && p.Kind != KindAnthropic {
			bad("providers[%d] %q: drop_params is for kind anthropic (kind %s passes every parameter on)", i, p.Name, p.Kind)
		}
		if p.MaxTokensField != "max_tokens" && p.MaxTokensField != "max_completion_tokens" {
			bad("providers[%d] %q: max_tokens_field %q: want max_tokens or max_completion_tokens", i, p.Name, p.MaxTokensField)
		}
	}
	ids := map[string]bool{}
	for i, m := range c.Models {
		switch {
		case m.ID == "":
			bad("models[%d]: id is empty", i)
		case ids[m.ID]:
			bad("models[%d] %q: duplicate id", i, m.ID)
		}
		ids[m.ID] = true
		if m.Provider != OfflineProvider && !providers[m.Provider] {
			bad("models[%d] %q: unknown provider %q", i, m.ID, m.Provider)
		}
		if m.ContextWindow <= 0 {
			bad("models[%d] %q: context_window must be positive", i, m.ID)
		}
		switch m.Type {
		case TypeChat:
			if m.MaxOutputTokens <= 0 || m.MaxOutputTokens >= m.ContextWindow {
				bad("models[%d] %q: max_output_tokens must be positive and below context_window", i, m.ID)
			}
		case TypeEmbedding:
			if m.MaxOutputTokens != 0 || len(m.Fallbacks) > 0 {
				bad("models[%d] %q: an embedding model has no max_output_tokens and no fallbacks", i, m.ID)
			}
			if anthropic[m.Provider] {
				bad("models[%d] %q: provider %q is of kind anthropic, which serves no embeddings", i, m.ID, m.Provider)
			}
		default:
			bad("models[%d] %q: type %q: want chat or embedding", i, m.ID, m.Type)
		}
		// The cap keeps tokens × price far inside int64 micro-credits.
		for _, v := range []float64{m.Price.Input, m.Price.Output, m.Price.Cached(), m.Price.CacheWriting()} {
			if !(v >= 0 && v <= 10000) { // NaN too
				bad("models[%d] %q: prices (input, output, cached_input, cache_write) must be between 0 and 10000 credits per million tokens", i, m.ID)
				break
			}
		}
		switch m.Tokenizer {
		case TokenizerO200k, TokenizerCl100k, TokenizerEstimate:
		default:
			bad("models[%d] %q: tokenizer %q: want o200k, cl100k or estimate", i, m.ID, m.Tokenizer)
		}
	}
	for i, m := range c.Models {
		for _, f := range m.Fallbacks {
			switch {
			case f == m.ID:
				bad("models[%d] %q: falls back to itself", i, m.ID)
			case !ids[f]:
				bad("models[%d] %q: fallback %q is not a model id", i, m.ID, f)
			}
		}
	}
	if cycle := c.fallbackCycle(); cycle != nil {
		bad("models: fallback cycle %s", strings.Join(cycle, " → "))
	}
	return errors.Join(errs...)
}

// fallbackCycle returns a cycle of fallbacks (first id repeated at the end), or nil.
// Self-references are reported separately.
func (c *Config) fallbackCycle() []string {
	next := map[string][]string{}
	for _, m := range c.Models {
		for _, f := range m.Fallbacks {
			if f != m.ID {
				next[m.ID] = append(next[m.ID], f)
			}
		}
	}
	const (
		unseen = iota
		onPath
		done
	)
	state := map[string]int{}
	var path []string
	var visit func(id string) []string
	visit = func(id string) []string {
		state[id] = onPath
		path = append(path, id)
		for _, f := range next[id] {
			switch state[f] {
			case onPath:
				i := slices.Index(path, f)
				return append(slices.Clone(path[i:]), f)
			case unseen:
				if cyc := visit(f); cyc != nil {
					return cyc
				}
			}
		}
		path = path[:len(path)-1]
		state[id] = done
		return nil
	}
	for _, m := range c.Models {
		if state[m.ID] == unseen {
			if cyc := visit(m.ID); cyc != nil {
				return cyc
			}
		}
	}
	return nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

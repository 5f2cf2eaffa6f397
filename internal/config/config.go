// Package config is agentd's one configuration struct: defaults, then the YAML file,
// then AGENTD_* environment variables, then flags, validated once at start. Nothing
// else in agentd reads the environment or files for settings.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is everything agentd serve needs to start.
type Config struct {
	Addr string `yaml:"addr"`
	// DB is "sqlite:PATH" (postgres:// is reserved for a later release).
	DB string `yaml:"db"`
	// PublicURL is the base URL clients reach agentd at, used in agents' endpoint
	// field. Defaults to http://<addr>.
	PublicURL string `yaml:"public_url"`
	// BootstrapKey, when set, is ensured to exist as an operator key of the default
	// organization. Only from the environment (AGENTD_BOOTSTRAP_KEY), never the file.
	BootstrapKey string `yaml:"-"`

	Limits Limits `yaml:"limits"`
	SQLite SQLite `yaml:"sqlite"`

	Providers []Provider `yaml:"providers"`
	Models    []Model    `yaml:"models"`

	// File is the config file that was loaded, for error messages.
	File string `yaml:"-"`
}

// Limits bound what one request may ask for.
type Limits struct {
	MaxBodyBytes    int64    `yaml:"max_body_bytes"`    // larger bodies get 413
	MaxMessageChars int      `yaml:"max_message_chars"` // longer run messages get 422
	SessionWait     Duration `yaml:"session_wait"`      // how long a turn waits for a busy session
	RunTimeout      Duration `yaml:"run_timeout"`       // deadline of one provider call
}

// SQLite tunes the embedded database.
type SQLite struct {
	// Synchronous is SQLite's synchronous pragma: FULL makes every commit durable
	// against power loss (the default); NORMAL only against process crashes.
	Synchronous string `yaml:"synchronous"`
}

// Provider is an upstream serving models. Kind "offline" is built in and needs no entry.
type Provider struct {
	Name      string `yaml:"name"`
	Kind      string `yaml:"kind"`
	BaseURL   string `yaml:"base_url"`
	APIKeyEnv string `yaml:"api_key_env"`
}

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
}

// Price is in credits per million tokens.
type Price struct {
	Input  float64 `yaml:"input"`
	Output float64 `yaml:"output"`
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
		},
		SQLite: SQLite{Synchronous: "FULL"},
	}
}

// Overrides are values given on the command line; empty means not given.
type Overrides struct {
	Addr, DB, ConfigFile string
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
			return nil, fmt.Errorf("config %s: %w", file, err)
		}
		c.File = file
	}
	c.Addr = firstNonEmpty(o.Addr, getenv("AGENTD_ADDR"), c.Addr)
	c.DB = firstNonEmpty(o.DB, getenv("AGENTD_DB"), c.DB)
	c.PublicURL = firstNonEmpty(getenv("AGENTD_PUBLIC_URL"), c.PublicURL)
	c.BootstrapKey = getenv("AGENTD_BOOTSTRAP_KEY")
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
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// addOffline makes sure the built-in offline model is in the catalog, and fills
// defaults of models on the offline provider.
func (c *Config) addOffline() {
	found := false
	for i := range c.Models {
		m := &c.Models[i]
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
			if m.MaxOutputTokens == 0 {
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
			Name: "agentd offline model", ContextWindow: OfflineContextWindow, MaxOutputTokens: OfflineMaxOutput,
		})
	}
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
		bad("db: PostgreSQL is not supported yet; use sqlite:PATH")
	default:
		bad("db %q: want sqlite:PATH", c.DB)
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
	switch strings.ToUpper(c.SQLite.Synchronous) {
	case "FULL", "NORMAL", "EXTRA":
	default:
		bad("sqlite.synchronous %q: want FULL, NORMAL or EXTRA", c.SQLite.Synchronous)
	}
	providers := map[string]bool{}
	for i, p := range c.Providers {
		switch {
		case p.Name == "":
			bad("providers[%d]: name is empty", i)
		case providers[p.Name] || p.Name == OfflineProvider:
			bad("providers[%d] %q: duplicate name", i, p.Name)
		}
		providers[p.Name] = true
		// Real providers (kind openai, anthropic) arrive with the providers release;
		// until then only the built-in kind exists.
		bad("providers[%d] %q: kind %q is not supported yet; only the built-in offline provider is", i, p.Name, p.Kind)
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
		if m.MaxOutputTokens <= 0 || m.MaxOutputTokens >= m.ContextWindow {
			bad("models[%d] %q: max_output_tokens must be positive and below context_window", i, m.ID)
		}
		// The cap keeps tokens × price far inside int64 micro-credits.
		if m.Price.Input < 0 || m.Price.Output < 0 || m.Price.Input > 10000 || m.Price.Output > 10000 {
			bad("models[%d] %q: prices must be between 0 and 10000 credits per million tokens", i, m.ID)
		}
		if len(m.Fallbacks) > 0 {
			bad("models[%d] %q: fallbacks need real providers, which are not supported yet", i, m.ID)
		}
	}
	return errors.Join(errs...)
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

package config_test

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/config"
)

// TestLogAndMetrics: the log and metrics settings' defaults, file, environment
// and the values refused.
func TestLogAndMetrics(t *testing.T) {
	c, err := config.Load(config.Overrides{}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Log != (config.Log{Format: "text", Level: "info"}) || c.Metrics != (config.Metrics{Enabled: true}) {
		t.Errorf("defaults: log %+v, metrics %+v", c.Log, c.Metrics)
	}

	file := writeFile(t, "log: {format: json, level: warn, access: true, contents: true}\nmetrics: {enabled: true, per_org: true}\n")
	c, err = config.Load(config.Overrides{ConfigFile: file}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Log != (config.Log{Format: "json", Level: "warn", Access: true, Contents: true}) || !c.Metrics.PerOrg {
		t.Errorf("file: log %+v, metrics %+v", c.Log, c.Metrics)
	}

	c, err = config.Load(config.Overrides{ConfigFile: file}, env(map[string]string{
		"AGENTD_LOG_FORMAT": "TEXT", "AGENTD_LOG_LEVEL": "Debug", "AGENTD_LOG_ACCESS": "false", "AGENTD_METRICS_TOKEN": "0123456789abcdef",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Format != "text" || c.Log.Level != "debug" || c.Log.Access || c.Metrics.Token != "0123456789abcdef" {
		t.Errorf("environment: log %+v, metrics token %q", c.Log, c.Metrics.Token)
	}

	for _, tc := range []struct {
		name, file string
		env        map[string]string
		want       string
	}{
		{"format", "log: {format: xml}", nil, `log.format "xml"`},
		{"level", "", map[string]string{"AGENTD_LOG_LEVEL": "loud"}, `log.level "loud"`},
		{"access", "", map[string]string{"AGENTD_LOG_ACCESS": "sometimes"}, "AGENTD_LOG_ACCESS"},
		{"short token", "", map[string]string{"AGENTD_METRICS_TOKEN": "short"}, "AGENTD_METRICS_TOKEN must be 16"},
		{"token with a space", "", map[string]string{"AGENTD_METRICS_TOKEN": "0123456789 abcdef"}, "AGENTD_METRICS_TOKEN must be 16"},
		{"token without metrics", "metrics: {enabled: false}", map[string]string{"AGENTD_METRICS_TOKEN": "0123456789abcdef"}, "metrics.enabled is false"},
		{"token in the file", "metrics: {token: x}", nil, "token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := config.Overrides{}
			if tc.file != "" {
				o.ConfigFile = writeFile(t, tc.file)
			}
			_, err := config.Load(o, env(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one with %q", err, tc.want)
			}
		})
	}
}

package config_test

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/config"
)

func TestRateLimits(t *testing.T) {
	c, err := config.Load(config.Overrides{}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.Rate != (config.RateLimits{}) || c.Redis != "" {
		t.Errorf("defaults: %+v, redis %q; want unlimited, no Redis", c.Limits.Rate, c.Redis)
	}
	file := writeFile(t, "limits:\n  rate:\n    key: {rpm: 60, tpm: 100000}\n    org: {concurrent: 8}\nredis: redis://cache:6379/2\n")
	c, err = config.Load(config.Overrides{ConfigFile: file}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := config.RateLimits{Key: config.RateLimit{RPM: 60, TPM: 100000}, Org: config.RateLimit{Concurrent: 8}}
	if c.Limits.Rate != want || c.Redis != "redis://cache:6379/2" {
		t.Errorf("from the file: %+v, redis %q", c.Limits.Rate, c.Redis)
	}
	c, err = config.Load(config.Overrides{ConfigFile: file}, env(map[string]string{"AGENTD_REDIS": "redis://env:6379"}))
	if err != nil || c.Redis != "redis://env:6379" {
		t.Errorf("AGENTD_REDIS beats the file: %q, %v", c.Redis, err)
	}
	c, err = config.Load(config.Overrides{ConfigFile: file, Redis: "rediss://flag:6380"}, env(map[string]string{"AGENTD_REDIS": "redis://env:6379"}))
	if err != nil || c.Redis != "rediss://flag:6380" {
		t.Errorf("--redis beats AGENTD_REDIS: %q, %v", c.Redis, err)
	}

	for _, tt := range []struct{ name, yaml, want string }{
		{"negative limit", "limits:\n  rate:\n    key: {rpm: -1}\n", "limits.rate.key.rpm -1"},
		{"limit too large", "limits:\n  rate:\n    org: {tpm: 1000000000001}\n", "limits.rate.org.tpm"},
		{"misspelt limit", "limits:\n  rate:\n    key: {rmp: 5}\n", "rmp"},
		{"not a Redis URL", "redis: http://cache:6379\n", "want redis://"},
		{"Redis without a host", "redis: redis://:6379\n", "names no host"},
		{"Redis password not echoed", "redis: redis://:hunter2@%zz\n", "redis"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Load(config.Overrides{ConfigFile: writeFile(t, tt.yaml)}, env(nil))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one saying %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

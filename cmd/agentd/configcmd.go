package main

import (
	"context"
	"fmt"

	"github.com/agentd/agentd/internal/config"
	"github.com/agentd/agentd/internal/store"
)

// configCheck loads and validates a configuration file exactly as serve does
// (config.Load, with the environment), and does nothing else: no listener, no
// database, no key.
func configCheck(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("config check")
	if err := parseFlags(ctx, fs, args, c.stdout); err != nil {
		return err
	}
	if err := wantArgs(fs, "FILE"); err != nil {
		return err
	}
	cfg, err := config.Load(config.Overrides{ConfigFile: fs.Arg(0)}, c.getenv)
	if err != nil {
		return err // every line names the file, the entry and the problem
	}
	_, err = fmt.Fprintf(c.stdout, "config %s is valid: %s (offline built in), %s, addr %s, db %s\n",
		cfg.File, plural(len(cfg.Providers)+1, "provider"), plural(len(cfg.Models), "model"), cfg.Addr, store.Redact(cfg.DB))
	return err
}

// plural is "1 model" or "3 models".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

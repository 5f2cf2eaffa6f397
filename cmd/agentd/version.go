package main

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"
)

// versionCmd prints agentd's version: the -ldflags "-X main.version=…" stamp
// when there is one, else the module's version from the build information, with
// the VCS revision the binary was built from.
func versionCmd(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("version")
	if err := parseFlags(ctx, fs, args, c.stdout); err != nil {
		return err
	}
	if err := wantArgs(fs); err != nil {
		return err
	}
	bi, _ := debug.ReadBuildInfo()
	_, err := fmt.Fprintln(c.stdout, versionString(version, bi))
	return err
}

// versionString is "agentd VERSION (revision REV, TIME, modified) GO" from the
// stamp (which wins when set) and the build information (nil when the binary has
// none); the parts that are not known are left out.
func versionString(stamp string, bi *debug.BuildInfo) string {
	v := stamp
	if v == "" && bi != nil {
		v = bi.Main.Version
	}
	if v == "" {
		v = "(devel)"
	}
	out := "agentd " + v
	if bi == nil {
		return out
	}
	var vcs []string
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if r := settings["vcs.revision"]; r != "" {
		vcs = append(vcs, "revision "+r)
	}
	if t := settings["vcs.time"]; t != "" {
		vcs = append(vcs, t)
	}
	if settings["vcs.modified"] == "true" {
		vcs = append(vcs, "modified")
	}
	if len(vcs) > 0 {
		out += " (" + strings.Join(vcs, ", ") + ")"
	}
	if bi.GoVersion != "" {
		out += " " + bi.GoVersion
	}
	return out
}

// shortVersion is the version alone (the stamp, else the module's), for
// telemetry's service.version.
func shortVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

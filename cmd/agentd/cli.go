package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/agentd/agentd/client"
)

// command is one of agentd's commands, or a group of them (subs).
type command struct {
	name    string // the words typed after agentd: "keys create"
	args    string // what follows the name in its usage line
	summary string
	run     func(ctx context.Context, c *cli, args []string) error
	subs    []*command
}

// cli is what a command gets of the process: the environment and the standard
// streams.
type cli struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// commands is agentd's command tree, in the order the usage lists it.
func commands() []*command {
	group := func(name, summary string, subs ...*command) *command {
		for _, s := range subs {
			s.name = name + " " + s.name
		}
		return &command{name: name, summary: summary, subs: subs}
	}
	return []*command{
		{name: "serve", args: "[--addr ADDR] [--db DSN] [--config FILE]", summary: "run the server",
			run: func(ctx context.Context, c *cli, args []string) error {
				return serve(ctx, args, c.getenv, c.stdout, c.stderr, nil)
			}},
		{name: "migrate", args: "--db DSN", summary: "apply the database's pending migrations and exit",
			run: func(ctx context.Context, c *cli, args []string) error {
				return migrate(ctx, args, c.getenv, c.stdout, c.stderr)
			}},
		{name: "demo", summary: "start on a temporary database, create an agent, run it, exit",
			run: func(ctx context.Context, c *cli, args []string) error {
				return demo(ctx, args, c.getenv, c.stdout, c.stderr)
			}},
		{name: "check", args: "--db DSN", summary: "verify that balances, ledger, session turns and budgets agree",
			run: func(ctx context.Context, c *cli, args []string) error {
				return check(ctx, args, c.getenv, c.stdout, c.stderr)
			}},
		{name: "usage", args: "[--group-by day|agent|model|key] [--from DAY] [--to DAY] [--csv]",
			summary: "the organization's usage summary (or every usage record as CSV) from a running server",
			run: func(ctx context.Context, c *cli, args []string) error {
				return usageCmd(ctx, args, c.getenv, c.stdout, c.stderr)
			}},
		group("keys", "manage API keys",
			&command{name: "create", args: "--name NAME [--scopes SCOPE,…] [--org ORG] [--owner OWNER] [--budget CREDITS] [--budget-period none|daily|monthly]",
				summary: "mint a key; its secret is printed this once", run: keysCreate},
			&command{name: "list", args: "[--org ORG]", summary: "list the organization's keys", run: keysList},
			&command{name: "revoke", args: "KEY_ID", summary: "revoke a key: it is refused from the next request on", run: keysRevoke},
			&command{name: "update", args: "KEY_ID --budget CREDITS|none [--budget-period none|daily|monthly]",
				summary: "set a key's budget, or remove it (--budget none)", run: keysUpdate},
		),
		group("orgs", "manage organizations (operator keys)",
			&command{name: "create", args: "NAME", summary: "create an organization", run: orgsCreate},
			&command{name: "list", args: "", summary: "list every organization with its balance, held and available credits", run: orgsList},
		),
		group("credits", "grant credits and read their history (operator keys)",
			&command{name: "grant", args: "ORG AMOUNT", summary: "add AMOUNT credits to ORG (negative: a correction)", run: creditsGrant},
			&command{name: "history", args: "ORG", summary: "ORG's credit grants, the newest first", run: creditsHistory},
		),
		group("agents", "manage agents",
			&command{name: "list", args: "[--all]", summary: "list the organization's agents", run: agentsList},
			&command{name: "get", args: "AGENT", summary: "show an agent (by name or id)", run: agentsGet},
			&command{name: "create", args: "[--file agent.json|yaml] [--name NAME] [--model MODEL] [fields…]",
				summary: "create an agent from a file and/or flags (flags win)", run: agentsCreate},
			&command{name: "update", args: "AGENT [--file agent.json|yaml] [fields…]",
				summary: "change the fields given in a file and/or flags", run: agentsUpdate},
			&command{name: "delete", args: "AGENT", summary: "delete an agent and its session history", run: agentsDelete},
		),
		{name: "apply", args: "-f FILE|DIR [--dry-run [--exit-code]] [--prune] [--note TEXT] [--require-evals]",
			summary: "make the organization's agents what agent files say: print the plan, then create, update (changed fields only) and, with --prune, delete", run: applyCmd},
		{name: "export", args: "[-o DIR]", summary: "write every agent of the organization as agent files (apply's format)", run: exportCmd},
		{name: "run", args: `AGENT "message" [--session ID] [--no-stream]`,
			summary: "run an agent: the reply streams to stdout, its usage to stderr", run: runAgentCmd},
		{name: "eval", args: "AGENT [--version N] [-f cases.yaml] [--no-demonstrations]",
			summary: "run an agent version's demonstrations and cases as runs and check the replies; exit 1 when any fails", run: evalCmd},
		group("config", "configuration files",
			&command{name: "check", args: "FILE", summary: "load and validate FILE as serve would, without opening a database", run: configCheck},
		),
		{name: "version", summary: "print agentd's version and VCS revision", run: versionCmd},
		{name: "completion", args: "bash|zsh", summary: "print a shell completion script", run: completionCmd},
	}
}

// findCommand returns the command named by path ("keys", "create"), or nil.
func findCommand(path ...string) *command {
	cmds := commands()
	var found *command
	for _, word := range path {
		found = nil
		for _, c := range cmds {
			if c.name == word || strings.HasSuffix(c.name, " "+word) {
				found = c
				break
			}
		}
		if found == nil {
			return nil
		}
		cmds = found.subs
	}
	return found
}

// dispatch runs c with args: a group runs the subcommand args name.
func (cmd *command) dispatch(ctx context.Context, c *cli, args []string) error {
	if cmd.subs == nil {
		return cmd.run(ctx, c, args)
	}
	if len(args) == 0 {
		cmd.printUsage(c.stderr)
		return fmt.Errorf("%s: which one? %s", cmd.name, cmd.subNames("or"))
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if _, ok := ctx.Value(flagCapture{}).(*flagCapture); !ok {
			cmd.printUsage(c.stdout)
		}
		return errHelp
	}
	for _, s := range cmd.subs {
		if s.name == cmd.name+" "+args[0] {
			return s.dispatch(ctx, c, args[1:])
		}
	}
	return fmt.Errorf("%s: unknown command %q; want %s (see agentd %s --help)", cmd.name, args[0], cmd.subNames("or"), cmd.name)
}

// subNames lists a group's subcommands: "create, list or revoke".
func (cmd *command) subNames(and string) string {
	var names []string
	for _, s := range cmd.subs {
		names = append(names, strings.TrimPrefix(s.name, cmd.name+" "))
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " " + and + " " + names[len(names)-1]
}

// printUsage writes the usage of a group, or of a command without its flags.
func (cmd *command) printUsage(w io.Writer) {
	if cmd.subs == nil {
		fmt.Fprintf(w, "Usage: agentd %s\n\n%s.\n", strings.TrimSpace(cmd.name+" "+cmd.args), capitalize(cmd.summary))
		return
	}
	fmt.Fprintf(w, "Usage: agentd %s COMMAND [flags]\n\n%s.\n\nCommands:\n", cmd.name, capitalize(cmd.summary))
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, s := range cmd.subs {
		fmt.Fprintf(tw, "  %s\t%s\n", strings.TrimPrefix(s.name, cmd.name+" "), s.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nRun \"agentd %s COMMAND --help\" for a command's flags.\n", cmd.name)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// errHelp is returned once a command's usage was printed for -h or --help; run
// turns it into success.
var errHelp = errors.New("help requested")

// flagCapture, in a context, makes parseFlags hand over the flag set instead of
// printing usage: how completion learns every command's flags.
type flagCapture struct{ fs *flag.FlagSet }

// parseFlags parses args into fs, whose name is the command's ("keys create"):
// flags may come before, between or after the positional arguments (a
// negative number is one: credits grant ORG -5), "--" ends the flags, and fs.Args()
// are the positional arguments after it. For -h or --help it prints the command's
// usage to stdout and returns errHelp. Errors name the command.
func parseFlags(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var flags, positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' || isNumber(a) {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if f := fs.Lookup(name); f != nil && !hasValue && !isBoolFlag(f) && i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	err := fs.Parse(append(append(flags, "--"), positional...))
	if errors.Is(err, flag.ErrHelp) {
		if fc, ok := ctx.Value(flagCapture{}).(*flagCapture); ok {
			fc.fs = fs
			return errHelp
		}
		printFlagsUsage(stdout, fs)
		return errHelp
	}
	if err != nil {
		// The flag package names flags with one dash; agentd's usage has two.
		msg := flagName.ReplaceAllString(err.Error(), "$1--$2")
		return fmt.Errorf("%s: %s (see agentd %s --help)", fs.Name(), msg, fs.Name())
	}
	return nil
}

// flagName finds a flag's name in the flag package's errors: "… flag -name".
var flagName = regexp.MustCompile(`(^|[ :])-([A-Za-z][\w-]*)`)

func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// printFlagsUsage writes a command's usage line, summary and flags, each flag as
// it is typed: --name VALUE.
func printFlagsUsage(w io.Writer, fs *flag.FlagSet) {
	if cmd := findCommand(strings.Fields(fs.Name())...); cmd != nil {
		cmd.printUsage(w)
	} else {
		fmt.Fprintf(w, "Usage: agentd %s\n", fs.Name())
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprint(w, "\nFlags:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fs.VisitAll(func(f *flag.Flag) {
		value, usage := valueName(f)
		spec := "--" + f.Name
		if !isBoolFlag(f) {
			spec += " " + value
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && !strings.Contains(usage, "default") {
			usage += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\n", spec, usage)
	})
	tw.Flush()
}

// valueName is the name of a flag's value in its usage (`NAME` in the text),
// else its name in capitals, and the usage without the quotes.
func valueName(f *flag.Flag) (value, usage string) {
	value, usage = flag.UnquoteUsage(f)
	if !strings.Contains(f.Usage, "`") {
		value = strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
	}
	return value, usage
}

// newFlags returns the flag set of the command named name.
func newFlags(name string) *flag.FlagSet { return flag.NewFlagSet(name, flag.ContinueOnError) }

// wantArgs checks that fs has exactly the positional arguments names.
func wantArgs(fs *flag.FlagSet, names ...string) error {
	switch {
	case fs.NArg() < len(names):
		return fmt.Errorf("%s: missing %s (usage: agentd %s %s)", fs.Name(), strings.Join(names[fs.NArg():], " and "), fs.Name(), strings.Join(names, " "))
	case fs.NArg() > len(names):
		return fmt.Errorf("%s: unexpected argument %q (usage: agentd %s %s)", fs.Name(), fs.Arg(len(names)), fs.Name(), strings.Join(names, " "))
	}
	return nil
}

// defaultURL is where the client commands look for agentd without --url or
// AGENTD_URL: serve's default address.
const defaultURL = "http://localhost:8080"

// clientFlags are the flags of every command that talks to a running server.
type clientFlags struct {
	cmd   string // the command's name, for errors
	scope string // the scope its key needs, for errors
	url   string
	key   string
	json  bool
	// bodies are the API's responses, kept for --json.
	bodies [][]byte
}

// addClientFlags adds --url and --key (and --json, when a command prints what the
// API answers) to fs. scope is the scope the command's key needs.
func addClientFlags(fs *flag.FlagSet, scope string, withJSON bool) *clientFlags {
	f := &clientFlags{cmd: fs.Name(), scope: scope}
	fs.StringVar(&f.url, "url", "", "agentd's `URL` (env AGENTD_URL; default "+defaultURL+")")
	fs.StringVar(&f.key, "key", "", "API `KEY` with the "+scope+" scope (env AGENTD_KEY)")
	if withJSON {
		fs.BoolVar(&f.json, "json", false, "print the API's JSON answer instead")
	}
	return f
}

// connect parses args into fs (whose client flags are f), checks that the
// positional arguments named by want were given, and returns the client of the
// server the flags (or the environment) name.
func connect(ctx context.Context, c *cli, fs *flag.FlagSet, f *clientFlags, args []string, want ...string) (*client.Client, error) {
	if err := parseFlags(ctx, fs, args, c.stdout); err != nil {
		return nil, err
	}
	if err := wantArgs(fs, want...); err != nil {
		return nil, err
	}
	return f.client(c.getenv)
}

// client returns the client of the server the flags (or the environment) name.
func (f *clientFlags) client(getenv func(string) string) (*client.Client, error) {
	if f.url == "" {
		f.url = getenv("AGENTD_URL")
	}
	if f.url == "" {
		f.url = defaultURL
	}
	if u, err := url.Parse(f.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s: %q is not a URL like %s (set --url or AGENTD_URL)", f.cmd, f.url, defaultURL)
	}
	if f.key == "" {
		f.key = getenv("AGENTD_KEY")
	}
	if f.key == "" {
		return nil, fmt.Errorf("%s: no API key: set --key or AGENTD_KEY to a key with the %s scope", f.cmd, f.scope)
	}
	c := client.New(f.url, f.key)
	c.Received = func(body []byte) { f.bodies = append(f.bodies, body) }
	return c, nil
}

// explain turns an error of a call to the server into one that says what to fix,
// prefixed with the command's name; nil stays nil.
func (f *clientFlags) explain(err error) error {
	if err == nil {
		return nil
	}
	var ce *client.Error
	var ue *url.Error
	switch {
	case errors.As(err, &ce):
		return fmt.Errorf("%s: %s", f.cmd, f.apiError(ce))
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: interrupted", f.cmd)
	case errors.As(err, &ue):
		return fmt.Errorf("%s: cannot reach agentd at %s: is it running? (set --url or AGENTD_URL; %s)", f.cmd, f.url, transportCause(ue))
	}
	return fmt.Errorf("%s: %w", f.cmd, err)
}

// apiError is an error response in words: the API's own message, and for a
// refused key what to change.
func (f *clientFlags) apiError(e *client.Error) string {
	detail := e.Detail
	if list, ok := e.Body["detail"].([]any); ok { // 422: FastAPI's list of problems
		var parts []string
		for _, item := range list {
			m, _ := item.(map[string]any)
			var loc []string
			if l, ok := m["loc"].([]any); ok {
				for i, p := range l {
					if s := fmt.Sprint(p); i > 0 || (s != "body" && s != "query" && s != "path" && s != "header") {
						loc = append(loc, s)
					}
				}
			}
			parts = append(parts, strings.TrimPrefix(strings.Join(loc, ".")+": ", ": ")+fmt.Sprint(m["msg"]))
		}
		detail = strings.Join(parts, "; ")
	}
	switch {
	case e.Status == 401:
		return fmt.Sprintf("the server refused the key: %s (set --key or AGENTD_KEY to a valid key with the %s scope)", detail, f.scope)
	case e.Status == 403:
		return fmt.Sprintf("%s (this needs a key with the %s scope: set --key or AGENTD_KEY)", detail, f.scope)
	case e.Status == 0: // an error event of a stream that had begun
		return fmt.Sprintf("the run failed after it began: %s (%s)", detail, e.Code)
	case e.Code == "":
		return fmt.Sprintf("the server at %s answered %d: %s", f.url, e.Status, truncate(detail, 200))
	case e.Status >= 500:
		return fmt.Sprintf("%s (%d %s)", detail, e.Status, e.Code)
	}
	return detail
}

// transportCause is the innermost useful part of a failed request: "connect:
// connection refused", "lookup nowhere: no such host".
func transportCause(ue *url.Error) string {
	var se *os.SyscallError
	if errors.As(ue, &se) {
		return se.Error()
	}
	var de *net.DNSError
	if errors.As(ue, &de) {
		return de.Error()
	}
	return ue.Err.Error()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// printJSON writes, for --json, what the API answered: the member of the last
// response (the whole response when member is ""), indented.
func (f *clientFlags) printJSON(w io.Writer, member string) error {
	if len(f.bodies) == 0 {
		return fmt.Errorf("%s: the server answered nothing to print", f.cmd)
	}
	raw := json.RawMessage(f.bodies[len(f.bodies)-1])
	if member != "" {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("%s: the server's answer is not a JSON object: %w", f.cmd, err)
		}
		raw = m[member]
	}
	return writeIndented(w, raw)
}

// printJSONList writes, for --json, the items of every page the API answered
// (each response's member, a list) as one list.
func (f *clientFlags) printJSONList(w io.Writer, member string) error {
	items := []json.RawMessage{}
	for _, b := range f.bodies {
		var page map[string]json.RawMessage
		if err := json.Unmarshal(b, &page); err != nil {
			return fmt.Errorf("%s: the server's answer is not a JSON object: %w", f.cmd, err)
		}
		var list []json.RawMessage
		if err := json.Unmarshal(page[member], &list); err != nil {
			return fmt.Errorf("%s: the server's answer has no list %q: %w", f.cmd, member, err)
		}
		items = append(items, list...)
	}
	b, err := json.Marshal(items)
	if err != nil {
		return err
	}
	return writeIndented(w, b)
}

func writeIndented(w io.Writer, raw []byte) error {
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

// table writes rows under a header, in aligned columns.
func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// creditsText writes an amount of credits as the API gave it: 5, 4.999637, -0.5.
func creditsText(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// orDash is s, or "-" for nothing.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

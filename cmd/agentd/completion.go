package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// completionCmd prints a completion script for bash or zsh, made from the command
// tree and each command's own flag set.
func completionCmd(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("completion")
	if err := parseFlags(ctx, fs, args, c.stdout); err != nil {
		return err
	}
	if err := wantArgs(fs, "SHELL"); err != nil {
		return err
	}
	specs, err := completionSpecs(ctx)
	if err != nil {
		return err
	}
	switch fs.Arg(0) {
	case "bash":
		return bashCompletion(c.stdout, specs)
	case "zsh":
		return zshCompletion(c.stdout, specs)
	}
	return fmt.Errorf("completion: unknown shell %q; want bash or zsh", fs.Arg(0))
}

// complSpec is what completion offers after the words of a command path.
type complSpec struct {
	path  string // "" for agentd itself, "keys", "keys create"
	subs  [][2]string
	flags []complFlag
	// args is what the positional arguments complete to: "files", or words.
	args []string
}

// complFlag is one flag: name, description, and what its value completes to
// (values: nil when it takes none; files; or its choices).
type complFlag struct {
	name, usage string
	takesValue  bool
	files       bool
	choices     []string
}

// completionSpecs walks the command tree; every command's flags come from its own
// flag set (parseFlags hands it over instead of printing usage).
func completionSpecs(ctx context.Context) ([]complSpec, error) {
	top := complSpec{flags: []complFlag{{name: "help", usage: "print the usage"}, {name: "version", usage: "print the version"}}}
	top.subs = append(top.subs, [2]string{"help", "print the usage"})
	specs := []complSpec{}
	var walk func(cmds []*command, parent *complSpec) error
	walk = func(cmds []*command, parent *complSpec) error {
		for _, cmd := range cmds {
			word := cmd.name[strings.LastIndexByte(cmd.name, ' ')+1:]
			parent.subs = append(parent.subs, [2]string{word, cmd.summary})
			spec := complSpec{path: cmd.name}
			if cmd.subs != nil {
				if err := walk(cmd.subs, &spec); err != nil {
					return err
				}
				spec.flags = []complFlag{{name: "help", usage: "print the usage"}}
				specs = append(specs, spec)
				continue
			}
			fc := &flagCapture{}
			cctx := context.WithValue(ctx, flagCapture{}, fc)
			discard := &cli{getenv: func(string) string { return "" }, stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
			if err := cmd.run(cctx, discard, []string{"--help"}); err != errHelp || fc.fs == nil {
				return fmt.Errorf("completion: %s does not describe its flags (%v)", cmd.name, err)
			}
			fc.fs.VisitAll(func(f *flag.Flag) { spec.flags = append(spec.flags, completionFlag(f)) })
			spec.flags = append(spec.flags, complFlag{name: "help", usage: "print the usage"})
			switch cmd.name {
			case "config check":
				spec.args = []string{"files"}
			case "completion":
				spec.args = []string{"bash", "zsh"}
			}
			specs = append(specs, spec)
		}
		return nil
	}
	if err := walk(commands(), &top); err != nil {
		return nil, err
	}
	return append([]complSpec{top}, specs...), nil
}

func completionFlag(f *flag.Flag) complFlag {
	value, usage := valueName(f)
	cf := complFlag{name: f.Name, usage: usage, takesValue: !isBoolFlag(f)}
	switch {
	case !cf.takesValue:
	case strings.Contains(value, "FILE") || f.Name == "config" || f.Name == "file":
		cf.files = true
	case strings.Contains(value, "|"):
		cf.choices = strings.Split(value, "|")
	}
	return cf
}

// words lists what spec completes to after its path: subcommands and flags.
func (s complSpec) words() string {
	var w []string
	for _, sub := range s.subs {
		w = append(w, sub[0])
	}
	for _, f := range s.flags {
		w = append(w, "--"+f.name)
	}
	return strings.Join(w, " ")
}

func bashCompletion(w io.Writer, specs []complSpec) error {
	var b strings.Builder
	b.WriteString(`# bash completion for agentd, made by "agentd completion bash". Load it with
#   source <(agentd completion bash)
# or save it as /etc/bash_completion.d/agentd.
_agentd() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" path="" w i
    (( COMP_CWORD > 0 )) && prev="${COMP_WORDS[COMP_CWORD-1]}"
    for (( i = 1; i < COMP_CWORD; i++ )); do
        w="${COMP_WORDS[i]}"
        case "$w" in -*) continue ;; esac
        case "${path:+$path }$w" in
`)
	var paths []string
	for _, s := range specs {
		if s.path != "" {
			paths = append(paths, shellQuote(s.path))
		}
	}
	fmt.Fprintf(&b, "            %s) path=\"${path:+$path }$w\" ;;\n", strings.Join(paths, "|"))
	b.WriteString("        esac\n    done\n    case \"$path $prev\" in\n")
	files, values, choices := flagValues(specs)
	if len(files) > 0 {
		fmt.Fprintf(&b, "        %s) COMPREPLY=( $(compgen -f -- \"$cur\") ); return ;;\n", strings.Join(files, "|"))
	}
	for _, c := range choices {
		fmt.Fprintf(&b, "        %s) COMPREPLY=( $(compgen -W %s -- \"$cur\") ); return ;;\n", c[0], shellQuote(c[1]))
	}
	if len(values) > 0 {
		fmt.Fprintf(&b, "        %s) COMPREPLY=(); return ;;\n", strings.Join(values, "|"))
	}
	b.WriteString("    esac\n    case \"$path\" in\n")
	for _, s := range specs {
		words := s.words()
		if len(s.args) == 1 && s.args[0] == "files" {
			fmt.Fprintf(&b, "        %s) if [[ $cur != -* ]]; then COMPREPLY=( $(compgen -f -- \"$cur\") ); return; fi\n            COMPREPLY=( $(compgen -W %s -- \"$cur\") ) ;;\n",
				shellQuote(s.path), shellQuote(words))
			continue
		}
		if len(s.args) > 0 {
			words = strings.Join(s.args, " ") + " " + words
		}
		fmt.Fprintf(&b, "        %s) COMPREPLY=( $(compgen -W %s -- \"$cur\") ) ;;\n", shellQuote(s.path), shellQuote(words))
	}
	b.WriteString("    esac\n}\ncomplete -F _agentd agentd\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// flagValues lists, as case patterns of "PATH --FLAG", the flags whose value is a
// file, those whose value is anything, and (pattern, words) of those with choices.
func flagValues(specs []complSpec) (files, values []string, choices [][2]string) {
	for _, s := range specs {
		for _, f := range s.flags {
			pat := shellQuote(s.path + " --" + f.name)
			switch {
			case f.files:
				files = append(files, pat)
			case len(f.choices) > 0:
				choices = append(choices, [2]string{pat, strings.Join(f.choices, " ")})
			case f.takesValue:
				values = append(values, pat)
			}
		}
	}
	sort.Strings(files)
	sort.Strings(values)
	return files, values, choices
}

func zshCompletion(w io.Writer, specs []complSpec) error {
	var b strings.Builder
	b.WriteString(`#compdef agentd
# zsh completion for agentd, made by "agentd completion zsh". Load it with
#   source <(agentd completion zsh)
# or save it as _agentd in a directory of $fpath.
_agentd() {
    local p="" w i prev="${words[CURRENT-1]}"
    local -a cmds opts
    for (( i = 2; i < CURRENT; i++ )); do
        w="${words[i]}"
        [[ $w == -* ]] && continue
        case "${p:+$p }$w" in
`)
	var paths []string
	for _, s := range specs {
		if s.path != "" {
			paths = append(paths, shellQuote(s.path))
		}
	}
	fmt.Fprintf(&b, "            %s) p=\"${p:+$p }$w\" ;;\n", strings.Join(paths, "|"))
	b.WriteString("        esac\n    done\n    case \"$p $prev\" in\n")
	files, values, choices := flagValues(specs)
	if len(files) > 0 {
		fmt.Fprintf(&b, "        %s) _files; return ;;\n", strings.Join(files, "|"))
	}
	for _, c := range choices {
		fmt.Fprintf(&b, "        %s) compadd -- %s; return ;;\n", c[0], c[1])
	}
	if len(values) > 0 {
		fmt.Fprintf(&b, "        %s) return ;;\n", strings.Join(values, "|"))
	}
	b.WriteString("    esac\n    case \"$p\" in\n")
	for _, s := range specs {
		var cmds, opts []string
		for _, sub := range s.subs {
			cmds = append(cmds, shellQuote(zshDescribe(sub[0], sub[1])))
		}
		for _, a := range s.args {
			if a != "files" {
				cmds = append(cmds, shellQuote(zshDescribe(a, a)))
			}
		}
		for _, f := range s.flags {
			opts = append(opts, shellQuote(zshDescribe("--"+f.name, f.usage)))
		}
		fmt.Fprintf(&b, "        %s)\n            cmds=(%s)\n            opts=(%s)", shellQuote(s.path), strings.Join(cmds, " "), strings.Join(opts, " "))
		if len(s.args) == 1 && s.args[0] == "files" {
			b.WriteString("\n            [[ $PREFIX != -* ]] && { _files; return }")
		}
		b.WriteString(" ;;\n")
	}
	b.WriteString(`    esac
    if [[ $PREFIX == -* ]] || (( ${#cmds} == 0 )); then
        _describe -t options 'option' opts
    else
        _describe -t commands 'command' cmds
    fi
}
if [[ "$funcstack[1]" == "_agentd" ]]; then
    _agentd "$@"
else
    compdef _agentd agentd
fi
`)
	_, err := io.WriteString(w, b.String())
	return err
}

// zshDescribe is an entry of _describe: the word (colons escaped) and its
// description.
func zshDescribe(word, desc string) string {
	return strings.ReplaceAll(word, ":", `\:`) + ":" + strings.ReplaceAll(desc, "\n", " ")
}

// shellQuote quotes s for bash and zsh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/agentd/agentd/client"
)

// keysCreate mints a key and prints its secret, which is shown only this once.
func keysCreate(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("keys create")
	name := fs.String("name", "", "the key's `NAME`")
	scopes := fs.String("scopes", "", "comma-separated `SCOPES`: operator, admin, agents:write, agents:read, run, usage (default run; at most the caller's)")
	org := fs.String("org", "", "the `ORG` (id or name) the key belongs to; operator keys only (default: the caller's)")
	owner := fs.String("owner", "", "the `OWNER` whose sessions the key shares (default: the key itself)")
	budget := fs.String("budget", "", "what the key may spend, in `CREDITS` per --budget-period (default: no budget)")
	period := fs.String("budget-period", "", "the budget's period, `none|daily|monthly`: the key's whole life, a UTC day or a UTC month")
	f := addClientFlags(fs, "admin", true)
	if err := parseFlags(ctx, fs, args, c.stdout); err != nil {
		return err
	}
	if err := wantArgs(fs); err != nil {
		return err
	}
	spec := client.KeySpec{Name: *name, OrgID: *org, Owner: *owner, BudgetPeriod: *period}
	if *scopes != "" {
		for _, s := range strings.Split(*scopes, ",") {
			spec.Scopes = append(spec.Scopes, strings.TrimSpace(s))
		}
	}
	if *budget != "" {
		b, err := strconv.ParseFloat(*budget, 64)
		if err != nil {
			return fmt.Errorf("keys create: --budget %q is not a number of credits", *budget)
		}
		spec.Budget = &b
	}
	cl, err := f.client(c.getenv)
	if err != nil {
		return err
	}
	k, err := cl.CreateKey(ctx, spec)
	if err != nil {
		return f.explain(err)
	}
	if f.json {
		return f.printJSON(c.stdout, "data")
	}
	if err := keyTable(c, []*client.Key{k}); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "\nThe key's secret, shown only this once (agentd keeps only its hash):\n\n    %s\n\n", k.Secret)
	return err
}

// keysList lists the keys of the caller's organization, or of another for an
// operator.
func keysList(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("keys list")
	org := fs.String("org", "", "list the keys of `ORG` (id or name); operator keys only")
	f := addClientFlags(fs, "admin", true)
	cl, err := connect(ctx, c, fs, f, args)
	if err != nil {
		return err
	}
	keys, err := cl.OrgKeys(ctx, *org)
	if err != nil {
		return f.explain(err)
	}
	if f.json {
		return f.printJSONList(c.stdout, "data")
	}
	return keyTable(c, keys)
}

// keysRevoke revokes a key.
func keysRevoke(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("keys revoke")
	f := addClientFlags(fs, "admin", true)
	cl, err := connect(ctx, c, fs, f, args, "KEY_ID")
	if err != nil {
		return err
	}
	if err := cl.RevokeKey(ctx, fs.Arg(0)); err != nil {
		return f.explain(err)
	}
	if f.json {
		return f.printJSON(c.stdout, "data")
	}
	_, err = fmt.Fprintf(c.stdout, "revoked key %s: it is refused from now on\n", fs.Arg(0))
	return err
}

// keysUpdate sets or removes a key's budget.
func keysUpdate(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("keys update")
	budget := fs.String("budget", "", "what the key may spend, in `CREDITS` per period; none removes the budget")
	period := fs.String("budget-period", "", "the budget's period, `none|daily|monthly`: the key's whole life, a UTC day or a UTC month")
	f := addClientFlags(fs, "admin", true)
	if err := parseFlags(ctx, fs, args, c.stdout); err != nil {
		return err
	}
	if err := wantArgs(fs, "KEY_ID"); err != nil {
		return err
	}
	u := client.KeyUpdate{BudgetPeriod: *period}
	switch *budget {
	case "":
		if *period == "" {
			return fmt.Errorf("keys update: nothing to change: give --budget CREDITS (or none) and/or --budget-period PERIOD")
		}
	case "none", "null":
		u.RemoveBudget = true
	default:
		b, err := strconv.ParseFloat(*budget, 64)
		if err != nil {
			return fmt.Errorf("keys update: --budget %q is not a number of credits (or none, to remove the budget)", *budget)
		}
		u.Budget = &b
	}
	cl, err := f.client(c.getenv)
	if err != nil {
		return err
	}
	k, err := cl.UpdateKey(ctx, fs.Arg(0), u)
	if err != nil {
		return f.explain(err)
	}
	if f.json {
		return f.printJSON(c.stdout, "data")
	}
	return keyTable(c, []*client.Key{k})
}

func keyTable(c *cli, keys []*client.Key) error {
	rows := make([][]string, len(keys))
	for i, k := range keys {
		budget := "-"
		if k.Budget != nil {
			budget = creditsText(*k.Budget) + " " + k.BudgetPeriod
		}
		revoked := "-"
		if k.RevokedAt != nil {
			revoked = *k.RevokedAt
		}
		rows[i] = []string{k.ID, orDash(k.Name), k.Owner, orDash(k.OrgID), strings.Join(k.Scopes, ","), budget, k.CreatedAt, revoked}
	}
	return table(c.stdout, "ID\tNAME\tOWNER\tORG\tSCOPES\tBUDGET\tCREATED\tREVOKED", rows)
}

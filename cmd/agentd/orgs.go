package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"

	"github.com/agentd/agentd/client"
)

// pageSize is how many items the listing commands ask for per request: the
// largest page the organization listings serve.
const pageSize = 200

// orgsCreate creates an organization.
func orgsCreate(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("orgs create")
	f := addClientFlags(fs, "operator", true)
	cl, err := connect(ctx, c, fs, f, args, "NAME")
	if err != nil {
		return err
	}
	o, err := cl.CreateOrg(ctx, fs.Arg(0))
	if err != nil {
		return f.explain(err)
	}
	if f.json {
		return f.printJSON(c.stdout, "data")
	}
	_, err = fmt.Fprintf(c.stdout, "created organization %s (%s) with a balance of %s credits\n", o.Name, o.ID, creditsText(o.Balance))
	return err
}

// orgsList lists every organization, every page of them.
func orgsList(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("orgs list")
	limit := limitFlag(fs)
	f := addClientFlags(fs, "operator", true)
	cl, err := connect(ctx, c, fs, f, args)
	if err != nil {
		return err
	}
	var orgs []*client.Org
	for cursor := ""; ; {
		page, next, err := cl.Orgs(ctx, cursor, pageFor(*limit, len(orgs)))
		if err != nil {
			return f.explain(err)
		}
		orgs = append(orgs, page...)
		if next == "" || (*limit > 0 && len(orgs) >= *limit) {
			break
		}
		cursor = next
	}
	if f.json {
		return f.printJSONList(c.stdout, "data")
	}
	rows := make([][]string, len(orgs))
	for i, o := range orgs {
		rows[i] = []string{o.Name, o.ID, creditsText(o.Balance), creditsText(o.Held), creditsText(o.Available), o.CreatedAt}
	}
	return table(c.stdout, "NAME\tID\tBALANCE\tHELD\tAVAILABLE\tCREATED", rows)
}

// creditsGrant adds credits to an organization, or takes them back (a negative
// amount).
func creditsGrant(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("credits grant")
	f := addClientFlags(fs, "operator", true)
	if err := parseFlags(ctx, fs, args, c.stdout); err != nil {
		return err
	}
	if err := wantArgs(fs, "ORG", "AMOUNT"); err != nil {
		return err
	}
	amount, err := strconv.ParseFloat(fs.Arg(1), 64)
	if err != nil {
		return fmt.Errorf("credits grant: AMOUNT %q is not a number of credits (like 5, 0.25 or -1 for a correction)", fs.Arg(1))
	}
	cl, err := f.client(c.getenv)
	if err != nil {
		return err
	}
	b, err := cl.GrantCredits(ctx, fs.Arg(0), amount)
	if err != nil {
		return f.explain(err)
	}
	if f.json {
		return f.printJSON(c.stdout, "data")
	}
	verb := "granted"
	if amount < 0 {
		verb = "took back"
	}
	_, err = fmt.Fprintf(c.stdout, "%s %s credits: %s (%s) now has a balance of %s, %s held, %s available\n",
		verb, creditsText(max(amount, -amount)), orDash(b.OrgName), b.OrgID, creditsText(b.Balance), creditsText(b.Held), creditsText(b.Available))
	return err
}

// creditsHistory lists an organization's credit grants, the newest first.
func creditsHistory(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("credits history")
	limit := limitFlag(fs)
	f := addClientFlags(fs, "operator", true)
	cl, err := connect(ctx, c, fs, f, args, "ORG")
	if err != nil {
		return err
	}
	var grants []*client.CreditGrant
	for cursor := ""; ; {
		page, next, err := cl.CreditHistory(ctx, fs.Arg(0), cursor, pageFor(*limit, len(grants)))
		if err != nil {
			return f.explain(err)
		}
		grants = append(grants, page...)
		if next == "" || (*limit > 0 && len(grants) >= *limit) {
			break
		}
		cursor = next
	}
	if f.json {
		return f.printJSONList(c.stdout, "data")
	}
	rows := make([][]string, len(grants))
	for i, g := range grants {
		by := g.KeyID
		if g.KeyName != nil && *g.KeyName != "" {
			by = fmt.Sprintf("%s (%s)", *g.KeyName, g.KeyID)
		}
		rows[i] = []string{g.CreatedAt, creditsText(g.Amount), by, g.ID}
	}
	return table(c.stdout, "WHEN\tAMOUNT\tBY KEY\tID", rows)
}

// limitFlag adds --limit, the most items a listing prints.
func limitFlag(fs *flag.FlagSet) *int {
	return fs.Int("limit", 0, "print at most `N` items (default: every one)")
}

// pageFor is the page size to ask for when have items are in hand and at most
// limit are wanted (0: every one).
func pageFor(limit, have int) int {
	if limit > 0 && limit-have < pageSize {
		return limit - have
	}
	return pageSize
}

package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/agentd/agentd"
)

// OrgsPage returns up to limit organizations (50 when limit ≤ 0) in name order
// after cursor ("" for the first page), and the cursor of the next page (""
// after the last). A malformed cursor is EInvalid. It reads one range of the
// index of orgs.name.
func (db *DB) OrgsPage(ctx context.Context, cursor string, limit int) (orgs []*agentd.Org, next string, err error) {
	defer wrap(&err, "store.OrgsPage")
	if limit <= 0 {
		limit = defaultPage
	}
	q := `SELECT id, name, balance, created_at FROM orgs`
	var args []any
	if cursor != "" {
		after, err := decodeOrgCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		q += ` WHERE name > ?`
		args = append(args, after)
	}
	rows, err := db.query(ctx, q+` ORDER BY name LIMIT ?`, append(args, limit+1)...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	orgs = []*agentd.Org{}
	for rows.Next() {
		var o agentd.Org
		var created int64
		if err := rows.Scan(&o.ID, &o.Name, &o.Balance, &created); err != nil {
			return nil, "", err
		}
		o.CreatedAt = fromMicros(created)
		orgs = append(orgs, &o)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(orgs) > limit {
		orgs = orgs[:limit]
		next = encodeCursor(orgs[limit-1].Name)
	}
	return orgs, next, nil
}

// decodeOrgCursor reads a cursor of OrgsPage: the last page's last name.
func decodeOrgCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) == 0 {
		return "", badCursor()
	}
	return string(b), nil
}

// CreditGrants returns up to limit of orgID's credit grants and corrections (50
// when limit ≤ 0), the newest first (ties by id, descending), after cursor (""
// for the first page), and the cursor of the next page ("" after the last). Each
// carries the name of the key that made it, when that key still exists. An
// organization without grants has an empty first page; a malformed cursor is
// EInvalid.
func (db *DB) CreditGrants(ctx context.Context, orgID, cursor string, limit int) (grants []agentd.CreditGrant, next string, err error) {
	defer wrap(&err, "store.CreditGrants(%q)", orgID)
	if limit <= 0 {
		limit = defaultPage
	}
	q := `SELECT g.id, g.amount, g.key_id, k.name, g.created_at
		FROM credit_grants g LEFT JOIN api_keys k ON k.id = g.key_id
		WHERE g.org_id = ?`
	args := []any{orgID}
	if cursor != "" {
		created, id, err := decodeGrantCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		q += ` AND (g.created_at < ? OR (g.created_at = ? AND g.id < ?))`
		args = append(args, created, created, id)
	}
	rows, err := db.query(ctx, q+` ORDER BY g.created_at DESC, g.id DESC LIMIT ?`, append(args, limit+1)...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	grants = []agentd.CreditGrant{}
	for rows.Next() {
		g := agentd.CreditGrant{OrgID: orgID}
		var keyName sql.NullString
		var created int64
		if err := rows.Scan(&g.ID, &g.Amount, &g.KeyID, &keyName, &created); err != nil {
			return nil, "", err
		}
		g.KeyName, g.CreatedAt = keyName.String, fromMicros(created)
		grants = append(grants, g)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(grants) > limit {
		grants = grants[:limit]
		last := grants[limit-1]
		next = encodeCursor(strconv.FormatInt(micros(last.CreatedAt), 10) + "|" + last.ID)
	}
	return grants, next, nil
}

// decodeGrantCursor reads a cursor of CreditGrants: the last page's last
// (created_at, id).
func decodeGrantCursor(c string) (created int64, id string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", badCursor()
	}
	num, id, ok := strings.Cut(string(b), "|")
	created, err = strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || !strings.HasPrefix(id, "grant-") {
		return 0, "", badCursor()
	}
	return created, id, nil
}

package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/agentd/agentd"
)

const defaultPage = 50

// Sessions returns a page of the sessions of (org, agent, owner), the most recently
// active first (ties by session id, descending), and the cursor of the next page
// ("" after the last one). A malformed cursor is EInvalid.
//
// A session exists while it has turns: the page is aggregated from session_turns,
// reading every turn of (org, agent, owner) through session_turns_key. That is one
// index range plus a row lookup per turn, and a sort of the owner's sessions, per
// page; a summary table kept by RecordRun would make it proportional to the page.
// Sessions that get a new turn while a client pages may move to the front and be
// missed or seen twice, as with any keyset over a changing key.
func (db *DB) Sessions(ctx context.Context, orgID, agentID, owner, cursor string, limit int) (list []agentd.SessionInfo, next string, err error) {
	defer wrap(&err, "store.Sessions")
	if limit <= 0 {
		limit = defaultPage
	}
	q := `SELECT session_id, count(*), sum(input_tokens), sum(output_tokens), min(created_at), max(created_at)
		FROM session_turns WHERE org_id = ? AND agent_id = ? AND owner = ?
		GROUP BY session_id`
	args := []any{orgID, agentID, owner}
	if cursor != "" {
		last, sid, err := decodeSessionCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		q += ` HAVING max(created_at) < ? OR (max(created_at) = ? AND session_id < ?)`
		args = append(args, last, last, sid)
	}
	q += ` ORDER BY max(created_at) DESC, session_id DESC LIMIT ?`
	args = append(args, limit+1)
	rows, err := db.query(ctx, q, args...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var lastActive int64
	for rows.Next() {
		var s agentd.SessionInfo
		var created int64
		if err := rows.Scan(&s.ID, &s.Turns, &s.InputTokens, &s.OutputTokens, &created, &lastActive); err != nil {
			return nil, "", err
		}
		s.CreatedAt, s.LastActive = fromMicros(created), fromMicros(lastActive)
		list = append(list, s)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(list) > limit {
		list = list[:limit]
		last := list[limit-1]
		next = encodeCursor(strconv.FormatInt(micros(last.LastActive), 10) + "|" + last.ID)
	}
	return list, next, nil
}

// SessionTurns returns a page of a session's turns, oldest first, and the cursor of
// the next page ("" after the last one). A session with no turns is ENotFound; a
// malformed cursor is EInvalid. It reads one range of session_turns_key.
func (db *DB) SessionTurns(ctx context.Context, k agentd.SessionKey, cursor string, limit int) (turns []agentd.SessionTurn, next string, err error) {
	defer wrap(&err, "store.SessionTurns")
	if limit <= 0 {
		limit = defaultPage
	}
	var after int64
	if cursor != "" {
		if after, err = decodeTurnCursor(cursor); err != nil {
			return nil, "", err
		}
	}
	rows, err := db.query(ctx, `SELECT id, run_id, user_message, assistant_message, input_tokens, output_tokens, created_at, tools
		FROM session_turns WHERE org_id = ? AND agent_id = ? AND owner = ? AND session_id = ? AND id > ?
		ORDER BY id LIMIT ?`, k.OrgID, k.AgentID, k.Owner, k.SessionID, after, limit+1)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var lastID int64
	for rows.Next() {
		var t agentd.SessionTurn
		var id, created int64
		var tools sql.NullString
		if err := rows.Scan(&id, &t.RunID, &t.User, &t.Assistant, &t.InputTokens, &t.OutputTokens, &created, &tools); err != nil {
			return nil, "", err
		}
		if err := readTools(tools, &t.TurnTools); err != nil {
			return nil, "", err
		}
		t.CreatedAt = fromMicros(created)
		if len(turns) < limit {
			turns, lastID = append(turns, t), id
		} else {
			next = encodeCursor(strconv.FormatInt(lastID, 10))
		}
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(turns) == 0 {
		// Past the end of a session that exists is an empty page; no session is 404.
		var one int
		err := db.queryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM session_turns
			WHERE org_id = ? AND agent_id = ? AND owner = ? AND session_id = ? LIMIT 1) AS s`,
			k.OrgID, k.AgentID, k.Owner, k.SessionID).Scan(&one)
		if err != nil {
			return nil, "", err
		}
		if cursor == "" || one == 0 {
			return nil, "", agentd.Errorf(agentd.ENotFound, "session %q not found", k.SessionID)
		}
	}
	return turns, next, nil
}

// DeleteSession deletes every turn of a session and returns how many there were.
// The caller (package session) holds the session's lease, so that no turn of it is
// in flight.
func (t *Tx) DeleteSession(ctx context.Context, k agentd.SessionKey) (turns int, err error) {
	defer wrap(&err, "store.DeleteSession")
	res, err := t.exec(ctx, `DELETE FROM session_turns WHERE org_id = ? AND agent_id = ? AND owner = ? AND session_id = ?`,
		k.OrgID, k.AgentID, k.Owner, k.SessionID)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// DeleteIdleSession deletes a session's turns if its newest turn is still older
// than idleBefore (unix micros), and reports whether it did.
func (t *Tx) DeleteIdleSession(ctx context.Context, k agentd.SessionKey, idleBefore int64) (deleted bool, err error) {
	defer wrap(&err, "store.DeleteIdleSession")
	res, err := t.exec(ctx, `DELETE FROM session_turns WHERE org_id = ? AND agent_id = ? AND owner = ? AND session_id = ?
		AND (SELECT max(created_at) FROM session_turns WHERE org_id = ? AND agent_id = ? AND owner = ? AND session_id = ?) < ?`,
		k.OrgID, k.AgentID, k.Owner, k.SessionID, k.OrgID, k.AgentID, k.Owner, k.SessionID, idleBefore)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// IdleSessions returns up to limit sessions whose newest turn is older than
// idleBefore (unix micros), those with the oldest turns first.
//
// It walks turns older than idleBefore through session_turns_created and checks
// each session's newest turn once: a walk costs the old turns it visits, those of
// the idle sessions it finds and the old turns of sessions still active.
func (db *DB) IdleSessions(ctx context.Context, idleBefore int64, limit int) (_ []agentd.SessionKey, err error) {
	defer wrap(&err, "store.IdleSessions")
	if limit <= 0 {
		return nil, nil
	}
	rows, err := db.query(ctx, `SELECT org_id, agent_id, owner, session_id FROM session_turns
		WHERE created_at < ? ORDER BY created_at`, idleBefore)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	seen := map[agentd.SessionKey]bool{}
	var idle []agentd.SessionKey
	for len(idle) < limit && rows.Next() {
		var k agentd.SessionKey
		if err := rows.Scan(&k.OrgID, &k.AgentID, &k.Owner, &k.SessionID); err != nil {
			return nil, err
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		var newest int64
		if err := db.queryRow(ctx, `SELECT max(created_at) FROM session_turns WHERE org_id = ? AND agent_id = ? AND owner = ? AND session_id = ?`,
			k.OrgID, k.AgentID, k.Owner, k.SessionID).Scan(&newest); err != nil {
			return nil, err
		}
		if newest < idleBefore {
			idle = append(idle, k)
		}
	}
	return idle, rows.Err()
}

func encodeCursor(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// badCursor is the error for a cursor this store did not make. Its location is the
// query parameter that carries cursors in the API.
func badCursor() error {
	return agentd.Invalid("cursor is malformed: pass next_cursor from a previous page unchanged", "value_error", "query", "cursor")
}

// decodeSessionCursor reads a cursor of Sessions: the last page's last
// (last_active, session_id).
func decodeSessionCursor(c string) (last int64, sid string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", badCursor()
	}
	num, sid, ok := strings.Cut(string(b), "|")
	last, err = strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || sid == "" {
		return 0, "", badCursor()
	}
	return last, sid, nil
}

// decodeTurnCursor reads a cursor of SessionTurns: the last page's last turn id.
func decodeTurnCursor(c string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, badCursor()
	}
	id, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || id < 0 {
		return 0, badCursor()
	}
	return id, nil
}

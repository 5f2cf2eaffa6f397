package api

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/billing"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/store"
)

// TestUsageRoutes: the literal usage routes win over the patterns with wildcards
// that also match their paths.
func TestUsageRoutes(t *testing.T) {
	mux := http.NewServeMux()
	(&Server{}).routes(mux)
	tests := []struct{ method, path, want string }{
		{"GET", "/api/v3/agents/usage", "GET /api/v3/agents/usage"},
		{"GET", "/api/v3/agents/agent-123", "GET /api/v3/agents/{agent_id}"},
		{"GET", "/api/v3/agents/usage_bot", "GET /api/v3/agents/{agent_id}"},
		{"GET", "/api/v3/usage/records", "GET /api/v3/usage/records"},
		{"GET", "/api/v3/usage/summary", "GET /api/v3/usage/summary"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			_, pattern := mux.Handler(httptest.NewRequest(tt.method, tt.path, nil))
			if pattern != tt.want {
				t.Errorf("%s %s matched %q, want %q", tt.method, tt.path, pattern, tt.want)
			}
		})
	}
}

func TestTimeRange(t *testing.T) {
	day := func(s string) time.Time { d, _ := time.Parse(time.DateOnly, s); return d }
	tests := []struct {
		name             string
		query            string
		wantFrom, wantTo time.Time
		wantFromDay      string
		wantToDay        string
		wantLoc          string // of the 422, "" for none
	}{
		{name: "open", query: ""},
		{name: "days: to includes its day", query: "from=2025-01-02&to=2025-01-03",
			wantFrom: day("2025-01-02"), wantTo: day("2025-01-04"), wantFromDay: "2025-01-02", wantToDay: "2025-01-03"},
		{name: "one day", query: "from=2025-01-02&to=2025-01-02",
			wantFrom: day("2025-01-02"), wantTo: day("2025-01-03"), wantFromDay: "2025-01-02", wantToDay: "2025-01-02"},
		{name: "RFC 3339 with offset and fraction", query: "from=2025-01-02T03:04:05.123456%2B02:00",
			wantFrom: time.Date(2025, 1, 2, 1, 4, 5, 123456000, time.UTC), wantFromDay: "2025-01-02"},
		{name: "RFC 3339 to at midnight excludes that day", query: "to=2025-01-05T00:00:00Z",
			wantTo: day("2025-01-05"), wantToDay: "2025-01-04"},
		{name: "RFC 3339 to mid-day includes that day", query: "to=2025-01-05T00:00:01Z",
			wantTo: time.Date(2025, 1, 5, 0, 0, 1, 0, time.UTC), wantToDay: "2025-01-05"},
		{name: "unix seconds", query: "from=1735689600&to=1735776000",
			wantFrom: day("2025-01-01"), wantTo: day("2025-01-02"), wantFromDay: "2025-01-01", wantToDay: "2025-01-01"},
		{name: "bad from", query: "from=yesterday", wantLoc: "from"},
		{name: "bad day", query: "to=2025-02-30", wantLoc: "to"},
		{name: "negative seconds", query: "from=-5", wantLoc: "from"},
		{name: "seconds overflow", query: "from=99999999999999999999", wantLoc: "from"},
		{name: "to before from", query: "from=2025-01-03&to=2025-01-02", wantLoc: "to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/x?"+tt.query, nil)
			from, to, err := timeRange(r)
			fromDay, toDay, derr := dayRange(r)
			if tt.wantLoc != "" {
				for _, err := range []error{err, derr} {
					var e *agentd.Error
					if !errors.As(err, &e) || e.Code != agentd.EInvalid || len(e.Violations) != 1 ||
						fmt.Sprint(e.Violations[0].Loc) != "[query "+tt.wantLoc+"]" {
						t.Errorf("error %v, want a 422 at query.%s", err, tt.wantLoc)
					}
				}
				return
			}
			if err != nil || derr != nil {
				t.Fatal(err, derr)
			}
			if !from.Equal(tt.wantFrom) || !to.Equal(tt.wantTo) {
				t.Errorf("range %v – %v, want %v – %v", from, to, tt.wantFrom, tt.wantTo)
			}
			if fromDay != tt.wantFromDay || toDay != tt.wantToDay {
				t.Errorf("days %q – %q, want %q – %q", fromDay, toDay, tt.wantFromDay, tt.wantToDay)
			}
		})
	}
}

func TestCredits6(t *testing.T) {
	for m, want := range map[agentd.Micros]string{
		0: "0.000000", 1: "0.000001", 1_500_000: "1.500000", 123_456_789: "123.456789", -2_000_001: "-2.000001",
	} {
		if got := credits6(m); got != want {
			t.Errorf("credits6(%d) = %q, want %q", m, got, want)
		}
	}
}

// TestUsageQueryValidation: bad query parameters are 422s naming the parameter,
// found before anything is read.
func TestUsageQueryValidation(t *testing.T) {
	s := &Server{}
	p := &agentd.Principal{OrgID: "org-x", Scopes: []agentd.Scope{agentd.ScopeUsage}}
	tests := []struct {
		name    string
		handler authed
		query   string
		wantLoc string
	}{
		{"records: limit not a number", s.usageRecords, "limit=ten", "limit"},
		{"records: limit 0", s.usageRecords, "limit=0", "limit"},
		{"records: limit too large", s.usageRecords, "limit=1001", "limit"},
		{"records: format", s.usageRecords, "format=xml", "format"},
		{"records: from", s.usageRecords, "from=last+week", "from"},
		{"records: inverted range", s.usageRecords, "from=2025-02-01&to=2025-01-01", "to"},
		{"summary: group_by missing", s.usageSummary, "", "group_by"},
		{"summary: group_by unknown", s.usageSummary, "group_by=week", "group_by"},
		{"summary: to", s.usageSummary, "group_by=day&to=2025-13-01", "to"},
		{"agents/usage: from", s.agentsUsage, "from=2025/01/01", "from"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.handler(httptest.NewRecorder(), httptest.NewRequest("GET", "/x?"+tt.query, nil), p)
			var e *agentd.Error
			if !errors.As(err, &e) || Status(e.Code) != http.StatusUnprocessableEntity || len(e.Violations) != 1 ||
				fmt.Sprint(e.Violations[0].Loc) != "[query "+tt.wantLoc+"]" {
				t.Errorf("error %v, want a 422 at query.%s", err, tt.wantLoc)
			}
		})
	}
}

// csvServer is a Server on a real database holding n ledger rows of one
// organization, one microsecond apart.
func csvServer(t *testing.T, n int) (*Server, *agentd.Principal) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "agentd.db"), store.Options{Synchronous: "OFF"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	org := &agentd.Org{ID: agentd.NewID("org"), Name: "acme", CreatedAt: time.Unix(1, 0)}
	err = db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.CreateOrg(ctx, org); err != nil {
			return err
		}
		for i := range n {
			_, err := tx.RecordRun(ctx, &store.Run{LedgerRow: agentd.LedgerRow{RunID: fmt.Sprintf("run-%05d", i), CreatedAt: time.UnixMicro(1_700_000_000_000_000 + int64(i)),
				OrgID: org.ID, KeyID: "key-1", Owner: "o", AgentID: "agent-1", AgentName: "bot", AgentVersion: 1,
				ModelRequested: "offline", Model: "offline", InputTokens: i, OutputTokens: 1, UsageSource: agentd.UsageProvider,
				Outcome: agentd.OutcomeOK}})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return &Server{Ledger: billing.NewLedger(db, clock.Real), Log: slog.New(slog.DiscardHandler)}, &agentd.Principal{OrgID: org.ID, Scopes: []agentd.Scope{agentd.ScopeUsage}}
}

// TestUsageCSVPages: the export spans several store pages, each row once, in order.
func TestUsageCSVPages(t *testing.T) {
	const n = 2*agentd.MaxLedgerPage + 3
	s, p := csvServer(t, n)
	w := httptest.NewRecorder()
	if err := s.usageRecords(w, httptest.NewRequest("GET", "/x?format=csv&limit=5", nil), p); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(w.Body).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != n+1 || !slices.Equal(rows[0], csvColumns) {
		t.Fatalf("%d lines (header %v), want %d", len(rows), rows[0], n+1)
	}
	for i, row := range rows[1:] {
		if row[0] != fmt.Sprintf("run-%05d", i) || row[11] != strconv.Itoa(i) {
			t.Fatalf("line %d is %v", i+1, row)
		}
	}
	if !w.Flushed || w.Header().Get("Content-Type") != "text/csv; charset=utf-8" {
		t.Errorf("flushed %v, content type %q", w.Flushed, w.Header().Get("Content-Type"))
	}
}

// goneWriter is a client that goes away after the first flush.
type goneWriter struct {
	*httptest.ResponseRecorder
	cancel  context.CancelFunc
	flushes int
}

func (g *goneWriter) Flush() {
	g.flushes++
	g.ResponseRecorder.Flush()
	g.cancel()
}

// TestUsageCSVStopsWhenClientGoes: once the client is gone no further page is read
// or written, and the handler reports no error (there is nobody to tell).
func TestUsageCSVStopsWhenClientGoes(t *testing.T) {
	s, p := csvServer(t, agentd.MaxLedgerPage+10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &goneWriter{ResponseRecorder: httptest.NewRecorder(), cancel: cancel}
	r := httptest.NewRequest("GET", "/x?format=csv", nil).WithContext(ctx)
	if err := s.usageRecords(w, r, p); err != nil {
		t.Fatalf("usageRecords = %v", err)
	}
	if lines := strings.Count(w.Body.String(), "\n"); w.flushes != 1 || lines != agentd.MaxLedgerPage+1 {
		t.Errorf("%d flushes, %d lines: want one page and the header", w.flushes, lines)
	}
}

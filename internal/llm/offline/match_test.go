package offline

import (
	"strings"
	"testing"
)

func TestStem(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"order", "order"}, {"orders", "order"}, {"ordered", "order"}, {"ordering", "order"},
		{"ship", "ship"}, {"ships", "ship"}, {"shipped", "ship"}, {"shipping", "ship"},
		{"change", "chang"}, {"changes", "chang"}, {"changed", "chang"}, {"changing", "chang"},
		{"policy", "policy"}, {"policies", "policy"},
		{"box", "box"}, {"boxes", "box"},
		{"reset", "reset"}, {"resetting", "reset"}, {"resets", "reset"},
		{"password", "password"}, {"passwords", "password"},
		{"address", "address"}, {"addresses", "address"}, {"status", "status"},
		{"cancel", "cancel"}, {"cancelled", "cancel"}, {"canceled", "cancel"}, {"cancelling", "cancel"},
		{"ping", "ping"}, {"red", "red"}, {"need", "need"}, {"is", "is"},
		{"123", "123"}, {"h2o", "h2o"}, {"café", "café"},
	} {
		if got := stem(c.in); got != c.want {
			t.Errorf("stem(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestRewording: each kind of rewording the matcher undoes, and what it cannot.
func TestRewording(t *testing.T) {
	demos := join(
		demo("How do I reset my password?", "Open Settings, then Security, then Reset password."),
		demo("Where is my order?", "Track it under Orders."),
		demo("What is your refund policy?", "Refunds within 30 days."),
		demo("Can I change the shipping address?", "Yes, until the order ships."),
	)
	for _, c := range []struct {
		name, msg string
		want      string // "" when nothing should match
	}{
		{"case", "HOW DO I RESET MY PASSWORD", "Open Settings"},
		{"punctuation", "where... is my order!!", "Track it"},
		{"plural", "what are your refund policies", "Refunds within"},
		{"-ing", "resetting my password", "Open Settings"},
		{"-ed and plural", "I changed shipping addresses?", "Yes, until"},
		{"stop words", "the refund policy, please", "Refunds within"},
		{"only stop words differ", "password reset", "Open Settings"},
		{"synonym: not understood", "how do I get my money back", ""},
		{"paraphrase: not understood", "I forgot my login", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := answer(demos, c.msg)
			if c.want == "" {
				if !strings.HasPrefix(got, "No demonstration") {
					t.Fatalf("answer(%q) = %q, want no match", c.msg, got)
				}
				return
			}
			if !strings.HasPrefix(got, c.want) {
				t.Fatalf("answer(%q) = %q, want %q…", c.msg, got, c.want)
			}
		})
	}
}

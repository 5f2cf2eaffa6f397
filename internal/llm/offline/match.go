package offline

// Matching survives simple rewording: before two texts are compared, each word
// is lowercased (newText), common function words are dropped (stopWords) and
// every remaining word is cut to a crude stem (stem), so that "How do I reset my
// password?" and "resetting passwords" are the same words. It is deterministic
// and purely lexical: it does not know synonyms ("refund" is not "money back"),
// paraphrase ("I forgot my login" is not "reset my password"), irregular forms
// ("bought" is not "buy") or other languages, and a stem may join two unrelated
// words that share a spelling ("news" and "new").

// stopWords are dropped from a text before comparison, unless the text has only
// them (then "hi" still matches "Hi!"). Negations stay: "not" changes a meaning.
var stopWords = wordSet(
	"a", "an", "the", "i", "me", "my", "mine", "we", "us", "our", "you", "your", "it", "its", "he", "she", "they", "them", "their",
	"is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "have", "has", "had",
	"to", "of", "in", "on", "at", "for", "with", "by", "from", "about", "as", "into", "and", "or", "so", "if", "then",
	"can", "could", "would", "should", "will", "shall", "may", "might", "must",
	"this", "that", "these", "those", "there", "here", "what", "how", "which", "who", "whom",
	"please", "just", "any", "some", "hi", "hello", "hey", "thanks", "thank",
)

func wordSet(words ...string) map[string]bool {
	m := make(map[string]bool, len(words))
	for _, w := range words {
		m[w] = true
	}
	return m
}

// contentWords returns words without stop words and each word stemmed; words
// made only of stop words are stemmed as they are.
func contentWords(words []string) []string {
	out := make([]string, 0, len(words))
	for _, w := range words {
		if !stopWords[w] {
			out = append(out, stem(w))
		}
	}
	if len(out) == 0 {
		for _, w := range words {
			out = append(out, stem(w))
		}
	}
	return out
}

// stem cuts a lowercased word to a crude stem, the same for its plural and its
// -ing and -ed forms: "policies" → "policy"; "boxes" → "box"; "orders",
// "ordered", "ordering" → "order"; "shipped", "ships" → "ship"; "changes",
// "changed", "changing", "change" → "chang". A cut that would leave fewer than
// three letters is not made. Words with digits are kept as they are.
func stem(w string) string {
	for i := 0; i < len(w); i++ {
		if w[i] < 'a' || w[i] > 'z' {
			return w // digits, or letters outside ASCII: kept whole
		}
	}
	cut := func(suffix string) bool {
		if len(w) >= len(suffix)+3 && w[len(w)-len(suffix):] == suffix {
			w = w[:len(w)-len(suffix)]
			return true
		}
		return false
	}
	switch {
	case hasSuffix(w, "ies") && len(w) > 4:
		w = w[:len(w)-3] + "y"
	case hasSuffix(w, "sses"):
		w = w[:len(w)-2]
	case hasSuffix(w, "ss"), hasSuffix(w, "us"), hasSuffix(w, "is"):
	case hasSuffix(w, "xes"), hasSuffix(w, "ches"), hasSuffix(w, "shes"), hasSuffix(w, "zes"):
		cut("es")
	case hasSuffix(w, "s"):
		cut("s")
	case hasSuffix(w, "eed"):
	case hasSuffix(w, "ing"):
		cut("ing")
	case hasSuffix(w, "ed"):
		cut("ed")
	}
	// The same word stems the same whatever the suffix: doubled final consonants
	// undoubled ("shipp" → "ship", "call" → "cal") and a final e dropped ("make",
	// "mak(ing)" → "mak").
	if n := len(w); n >= 3 && w[n-1] == w[n-2] && w[n-1] != 's' && w[n-1] != 'e' && !isVowel(w[n-1]) {
		w = w[:n-1]
	}
	if n := len(w); n > 3 && w[n-1] == 'e' {
		w = w[:n-1]
	}
	return w
}

func hasSuffix(w, s string) bool { return len(w) >= len(s) && w[len(w)-len(s):] == s }

func isVowel(c byte) bool { return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u' }

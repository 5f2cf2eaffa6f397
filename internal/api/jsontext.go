package api

import (
	"bytes"
	"strconv"
	"unicode/utf8"

	"github.com/agentd/agentd"
)

// encoding/json replaces invalid UTF-8 and unpaired UTF-16 surrogate escapes
// ("\ud800") in strings with U+FFFD, silently: a message would be stored and
// sent to the model with characters the client never wrote. checkJSONText
// refuses such bodies before they are decoded.

// checkJSONText returns a 422 when data is not valid UTF-8 (overlong forms and
// encoded surrogates included) or a string in it has a \u escape of an unpaired
// surrogate; nil otherwise. Malformed JSON is left to the decoder.
func checkJSONText(data []byte) error {
	at, problem := jsonTextProblem(data)
	if at < 0 {
		return nil
	}
	return agentd.Invalid("JSON decode error: "+problem+" at byte "+strconv.Itoa(at), "json_invalid", "body", at)
}

// jsonTextProblem returns the offset of the first invalid UTF-8 sequence or
// unpaired surrogate escape in data and what is wrong there, or -1.
func jsonTextProblem(data []byte) (int, string) {
	if !utf8.Valid(data) {
		for i := 0; i < len(data); {
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size <= 1 {
				return i, "invalid UTF-8"
			}
			i += size
		}
	}
	if !bytes.Contains(data, []byte(`\u`)) {
		return -1, "" // no \u escape anywhere: the common case, one fast pass
	}
	in := false // inside a string
	for i := 0; i < len(data); i++ {
		c := data[i]
		if !in {
			in = c == '"'
			continue
		}
		switch c {
		case '"':
			in = false
		case '\\':
			if i+1 < len(data) && data[i+1] != 'u' {
				i++ // \" \\ \/ \n …: the next byte is escaped, whatever it is
				continue
			}
			u, ok := hex4(data, i+2)
			if !ok {
				continue // \u without four hex digits: a syntax error, the decoder's
			}
			switch {
			case u >= 0xD800 && u < 0xDC00: // high: a low one must follow at once
				if i+7 < len(data) && data[i+6] == '\\' && data[i+7] == 'u' {
					if l, ok := hex4(data, i+8); ok && l >= 0xDC00 && l < 0xE000 {
						i += 11
						continue
					}
				}
				return i, "unpaired UTF-16 surrogate " + string(data[i:i+6])
			case u >= 0xDC00 && u < 0xE000: // low, without a high before it
				return i, "unpaired UTF-16 surrogate " + string(data[i:i+6])
			}
			i += 5
		}
	}
	return -1, ""
}

// hex4 is the value of the four hex digits at data[i:], if they are.
func hex4(data []byte, i int) (rune, bool) {
	if i < 0 || i+4 > len(data) {
		return 0, false
	}
	var v rune
	for _, c := range data[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | rune(c)
	}
	return v, true
}

package api

import (
	"bytes"
	"encoding/json"
	"testing"
)

// sameAsDecoding checks topFields against encoding/json on data: the same
// members (the last of a repeated name), with the same values.
func sameAsDecoding(t *testing.T, data []byte) {
	t.Helper()
	var want map[string]json.RawMessage
	werr := json.Unmarshal(data, &want)
	got := map[string][]byte{}
	err := topFields(data, func(name, v []byte) { got[string(name)] = bytes.Clone(v) })
	if werr != nil {
		if err == nil && json.Valid(data) {
			t.Fatalf("%q: topFields took what decoding refuses (%v): %q", data, werr, got)
		}
		return
	}
	if want == nil {
		return // null decodes to no map; a chat request that is null has no model and stops before
	}
	if err != nil {
		t.Fatalf("%q: %v", data, err)
	}
	if len(got) != len(want) {
		t.Fatalf("%q: %d members, want %d", data, len(got), len(want))
	}
	for name, w := range want {
		var a, b bytes.Buffer
		json.Compact(&a, w)
		json.Compact(&b, got[name])
		if a.String() != b.String() {
			t.Errorf("%q: %s = %s, want %s", data, name, got[name], w)
		}
	}
}

var fieldsSeeds = []string{
	`{}`, ` { } `, `{"a":1}`, `{"a" : "x,}]" , "b":[1,{"c":"]}"}],"d":{"e":[[]]},"f":null,"g":true,"h":-1.5e3}`,
	`{"s\u0065ed":7,"a\"b":"q\\"}`, `{"a":1,"a":2}`, "{\n\t\"a\":\r\n[ ]\n}", `{"msg":"\\\"}"}`,
}

func TestTopFields(t *testing.T) {
	for _, s := range fieldsSeeds {
		sameAsDecoding(t, []byte(s))
	}
	for _, bad := range []string{``, `[]`, `"x"`, `{"a"}`, `{"a":1,}`, `{"a":1`} {
		if err := topFields([]byte(bad), func(_, _ []byte) {}); err == nil && !json.Valid([]byte(bad)) {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzTopFields(f *testing.F) {
	for _, s := range fieldsSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) || checkJSONText(data) != nil {
			return // topFields is only given bodies that were checked and decoded
		}
		sameAsDecoding(t, data)
	})
}

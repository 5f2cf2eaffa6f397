package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/agentd/agentd"
)

// decode reads a JSON object body into v, enforcing the body size limit (413) and
// reporting malformed JSON and wrong types as 422 in FastAPI's shape. Unknown fields
// are tolerated: real NuGen clients send extra keys.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	return decodeJSON(data, v)
}

// readBody reads the request body, enforcing the body size limit (413).
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, agentd.Errorf(agentd.EPayloadTooLarge, "request body is larger than %d bytes", s.MaxBodyBytes)
		}
		return nil, agentd.Errorf(agentd.EBadRequest, "reading request body: %v", err)
	}
	return data, nil
}

// decodeJSON unmarshals data into v with 422 errors for every way it can fail.
func decodeJSON(data []byte, v any) error {
	if len(strings.TrimSpace(string(data))) == 0 {
		return agentd.Invalid("Field required", "missing", "body")
	}
	if err := checkJSONText(data); err != nil { // what json.Unmarshal would replace with U+FFFD
		return err
	}
	err := json.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return agentd.Invalid("JSON decode error: "+syn.Error(), "json_invalid", "body", int(syn.Offset))
	case errors.As(err, &typ):
		loc := []any{"body"}
		if typ.Field != "" {
			for _, part := range strings.Split(typ.Field, ".") {
				loc = append(loc, part)
			}
		}
		if typ.Field == "" && typ.Value != "object" {
			return agentd.Invalid("Input should be a valid dictionary or object", "model_attributes_type", loc...)
		}
		return agentd.Invalid("Input should be a valid "+typeName(typ.Type.Kind().String()), typeName(typ.Type.Kind().String())+"_type", loc...)
	default:
		return agentd.Invalid("JSON decode error: "+err.Error(), "json_invalid", "body")
	}
}

func typeName(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "bool"
	case "float64", "float32":
		return "number"
	case "int", "int64", "int32":
		return "integer"
	case "slice":
		return "list"
	case "struct", "map", "ptr":
		return "dictionary"
	}
	return kind
}

// sessionIDPattern is what X-Session-ID may contain.
var sessionIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// sessionID validates the X-Session-ID header; "" when absent.
func sessionID(r *http.Request) (string, error) {
	vals := r.Header.Values("X-Session-ID")
	if len(vals) == 0 {
		return "", nil
	}
	v := vals[0]
	if len(vals) > 1 || !sessionIDPattern.MatchString(v) {
		return "", agentd.Invalid("X-Session-ID must be 1 to 128 characters of A-Z a-z 0-9 . _ : -", "string_pattern_mismatch", "header", "X-Session-ID")
	}
	return v, nil
}

// queryBool parses an optional boolean query parameter the way FastAPI does.
func queryBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	switch strings.ToLower(v) {
	case "true", "1", "yes", "on":
		return true, nil
	case "false", "0", "no", "off":
		return false, nil
	}
	return false, agentd.Invalid("Input should be a valid boolean, unable to interpret input", "bool_parsing", "query", name)
}

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

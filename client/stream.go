package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// RunStream runs the agent named name with message as a stream (sessionID may be
// ""): onText is called with each piece of the reply as it arrives, and the
// result, the same as Run's, comes when the run is done. An error onText returns
// stops the stream and is returned. A failure after the stream began is an *Error
// with Status 0 and the code and message of the stream's error event.
func (c *Client) RunStream(ctx context.Context, name, message, sessionID string, onText func(string) error) (*RunResult, error) {
	body, err := json.Marshal(map[string]any{"message": message, "stream": true})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+"/api/v3/agents/run-agents/"+url.PathEscape(name)+"/run", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if sessionID != "" {
		req.Header.Set("X-Session-ID", sessionID)
	}
	if c.Key != "" {
		req.Header.Set("Authorization", "Bearer "+c.Key)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		return nil, responseError(resp.StatusCode, data)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		// A server that answers the run whole: its reply is the one piece.
		var out RunResult
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return nil, fmt.Errorf("the run answered %q that is not a run result: %w", resp.Header.Get("Content-Type"), err)
		}
		if out.Response != "" {
			if err := onText(out.Response); err != nil {
				return nil, err
			}
		}
		return &out, nil
	}
	return readRunStream(bufio.NewReader(resp.Body), onText)
}

// errStreamCut is the error of a stream that ended before its done event.
var errStreamCut = errors.New("the stream ended before the run finished")

// readRunStream reads the server-sent events of a streamed run: "delta" pieces,
// then "done" with the result (or "error"), then "data: [DONE]".
func readRunStream(r *bufio.Reader, onText func(string) error) (*RunResult, error) {
	var event string
	var data []byte
	var result *RunResult
	for {
		line, err := r.ReadString('\n')
		if err != nil && (err != io.EOF || line == "") {
			if err == io.EOF {
				if result != nil {
					return result, nil // a server that ends without [DONE]
				}
				return nil, errStreamCut
			}
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			// An event is complete.
		case strings.HasPrefix(line, ":"): // a comment: keep-alive
			continue
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				event = value
			case "data":
				if data != nil {
					data = append(data, '\n')
				}
				data = append(data, value...)
			}
			continue
		}
		if data == nil {
			event = ""
			continue
		}
		switch {
		case event == "delta":
			var d struct {
				Text string `json:"text"`
			}
			if err := json.Unmarshal(data, &d); err != nil {
				return nil, fmt.Errorf("a delta event that is not JSON: %w", err)
			}
			if err := onText(d.Text); err != nil {
				return nil, err
			}
		case event == "done":
			result = new(RunResult)
			if err := json.Unmarshal(data, result); err != nil {
				return nil, fmt.Errorf("a done event that is not a run result: %w", err)
			}
		case event == "error":
			e := responseError(0, data)
			if e.Code == "" {
				e.Code = "stream_error"
			}
			return nil, e
		case string(data) == "[DONE]":
			if result == nil {
				return nil, errStreamCut
			}
			return result, nil
		}
		event, data = "", nil
	}
}

package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Check holds one JSON log line to the package's convention and returns
// every way it breaks it. Tests run it over the lines real components
// wrote.
func Check(line []byte) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	fields, err := topLevel(line)
	if err != nil {
		return []error{err}
	}
	seen := map[string]int{}
	for _, f := range fields {
		seen[f.key]++
	}
	for k, n := range seen {
		if n > 1 {
			bad("key %q appears %d times", k, n)
		}
	}
	get := func(key string) (json.RawMessage, bool) {
		for _, f := range fields {
			if f.key == key {
				return f.val, true
			}
		}
		return nil, false
	}
	switch raw, ok := get("time"); {
	case !ok:
		bad("no time field")
	default:
		var ts string
		if json.Unmarshal(raw, &ts) != nil {
			bad("time %s is not a string", raw)
			break
		}
		t, err := time.Parse(TimeFormat, ts)
		if err != nil || t.Format(TimeFormat) != ts || !strings.HasSuffix(ts, "Z") {
			bad("time %q is not RFC 3339 in UTC with milliseconds (%s)", ts, TimeFormat)
		}
	}
	if _, ok := get("component"); !ok {
		bad("no component field")
	}
	for _, f := range fields {
		var num json.Number
		dec := json.NewDecoder(bytes.NewReader(f.val))
		dec.UseNumber()
		isNum := dec.Decode(&num) == nil
		switch {
		case strings.HasSuffix(f.key, "_ms") && !isNum:
			bad("%s is %s, not a number of milliseconds", f.key, f.val)
		case f.key == "status":
			if _, err := num.Int64(); !isNum || err != nil {
				bad("status is %s, not an HTTP status code", f.val)
			}
		case unitless[f.key]:
			bad("%s is a duration without a unit: name it %s_ms", f.key, f.key)
		}
	}
	return errs
}

// unitless are duration field names the convention replaced.
var unitless = map[string]bool{"duration": true, "receive": true, "retry_in": true, "backoff": true, "elapsed": true}

type field struct {
	key string
	val json.RawMessage
}

// topLevel splits a JSON object into its members in order, keeping
// repeated keys (encoding/json would keep only the last).
func topLevel(line []byte) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object: %q", truncate(line))
	}
	var out []field
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("malformed line %q: %w", truncate(line), err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("malformed line %q: %w", truncate(line), err)
		}
		out = append(out, field{key: k.(string), val: v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("malformed line %q: %w", truncate(line), err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("data after the object in %q", truncate(line))
	}
	return out, nil
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

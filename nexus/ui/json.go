package ui

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/rackplane/rackplane/internal/humanize"
)

// A task's status is arbitrary JSON; the status pages render it readably
// rather than as a blob: the top-level scalars as a summary, every other
// top-level field as its own section, arrays of objects as tables, times
// as "4s ago" and *_seconds / *_ms numbers as durations. The raw JSON stays
// one click away.

// jsonView is a rendered JSON value.
type jsonView struct {
	// Kind is scalar, object, table, list or empty.
	Kind string
	// Text and Class render a scalar; Title is its exact value when Text
	// is an approximation (a relative time, a duration).
	Text, Class, Title string
	Fields             []jsonField
	Columns            []string
	Rows               [][]jsonView
	Items              []jsonView
}

type jsonField struct {
	Key   string
	Value jsonView
}

// statusSection is one titled part of a rendered status.
type statusSection struct {
	Title string
	Value jsonView
}

// ordered JSON, kept in the order the task wrote its fields.
type (
	jsonObject []jsonMember
	jsonMember struct {
		key string
		val any
	}
)

func parseOrdered(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := decodeOrdered(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

func decodeOrdered(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		obj := jsonObject{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := decodeOrdered(dec)
			if err != nil {
				return nil, err
			}
			obj = append(obj, jsonMember{k.(string), v})
		}
		_, err := dec.Token()
		return obj, err
	case json.Delim('['):
		arr := []any{}
		for dec.More() {
			v, err := decodeOrdered(dec)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		_, err := dec.Token()
		return arr, err
	}
	return tok, nil
}

// renderStatus splits a status into sections. It never fails: JSON it
// cannot parse is shown as text.
func renderStatus(raw json.RawMessage, now time.Time) []statusSection {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	v, err := parseOrdered(raw)
	if err != nil {
		return []statusSection{{Title: "Status", Value: jsonView{Kind: "scalar", Text: string(raw), Class: "str"}}}
	}
	obj, ok := v.(jsonObject)
	if !ok {
		return []statusSection{{Title: "Status", Value: renderJSON("", v, now)}}
	}
	summary := jsonView{Kind: "object"}
	var rest []statusSection
	for _, m := range obj {
		rv := renderJSON(m.key, m.val, now)
		if rv.Kind == "scalar" {
			summary.Fields = append(summary.Fields, jsonField{Key: prettyKey(m.key), Value: rv})
		} else {
			rest = append(rest, statusSection{Title: prettyKey(m.key), Value: rv})
		}
	}
	if len(summary.Fields) > 0 {
		rest = append([]statusSection{{Title: "Summary", Value: summary}}, rest...)
	}
	return rest
}

func renderJSON(key string, v any, now time.Time) jsonView {
	switch x := v.(type) {
	case jsonObject:
		if len(x) == 0 {
			return jsonView{Kind: "empty", Text: "none"}
		}
		out := jsonView{Kind: "object"}
		for _, m := range x {
			out.Fields = append(out.Fields, jsonField{Key: prettyKey(m.key), Value: renderJSON(m.key, m.val, now)})
		}
		return out
	case []any:
		if len(x) == 0 {
			return jsonView{Kind: "empty", Text: "none"}
		}
		if cols, ok := tableColumns(x); ok {
			out := jsonView{Kind: "table"}
			for _, c := range cols {
				out.Columns = append(out.Columns, prettyKey(c))
			}
			for _, e := range x {
				obj := e.(jsonObject)
				row := make([]jsonView, len(cols))
				for i, c := range cols {
					row[i] = jsonView{Kind: "empty", Text: "—"}
					for _, m := range obj {
						if m.key == c {
							row[i] = renderJSON(m.key, m.val, now)
						}
					}
				}
				out.Rows = append(out.Rows, row)
			}
			return out
		}
		out := jsonView{Kind: "list"}
		for _, e := range x {
			out.Items = append(out.Items, renderJSON(key, e, now))
		}
		return out
	}
	return renderScalar(key, v, now)
}

// tableColumns returns the union of keys, in first-seen order, when every
// element is an object.
func tableColumns(arr []any) ([]string, bool) {
	var cols []string
	seen := map[string]bool{}
	for _, e := range arr {
		obj, ok := e.(jsonObject)
		if !ok {
			return nil, false
		}
		for _, m := range obj {
			if !seen[m.key] {
				seen[m.key] = true
				cols = append(cols, m.key)
			}
		}
	}
	return cols, true
}

func renderScalar(key string, v any, now time.Time) jsonView {
	switch x := v.(type) {
	case nil:
		return jsonView{Kind: "scalar", Text: "—", Class: "null"}
	case bool:
		if x {
			return jsonView{Kind: "scalar", Text: "yes", Class: "bool yes"}
		}
		return jsonView{Kind: "scalar", Text: "no", Class: "bool no"}
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return jsonView{Kind: "scalar", Text: x.String(), Class: "num"}
		}
		switch {
		case strings.HasSuffix(key, "_seconds"):
			return jsonView{Kind: "scalar", Text: formatMS(f * 1000), Class: "num", Title: x.String() + " s"}
		case strings.HasSuffix(key, "_ms"):
			return jsonView{Kind: "scalar", Text: formatMS(f), Class: "num", Title: x.String() + " ms"}
		}
		return jsonView{Kind: "scalar", Text: formatNumber(x, f), Class: "num"}
	case string:
		if t, err := time.Parse(time.RFC3339Nano, x); err == nil && len(x) >= 20 {
			return jsonView{Kind: "scalar", Text: humanize.Ago(now, t), Class: "time", Title: t.UTC().Format(time.RFC3339Nano)}
		}
		return jsonView{Kind: "scalar", Text: x, Class: "str"}
	}
	return jsonView{Kind: "scalar", Text: "?", Class: "null"}
}

// formatNumber keeps integers exact and rounds long fractions.
func formatNumber(n json.Number, f float64) string {
	if !strings.ContainsAny(n.String(), ".eE") {
		return n.String()
	}
	return strconv.FormatFloat(f, 'g', 6, 64)
}

// prettyKey turns "marked_unreachable" into "Marked unreachable", and
// drops the unit of "threshold_seconds", whose value is shown as a
// duration.
func prettyKey(k string) string {
	for _, unit := range []string{"_seconds", "_ms"} {
		if strings.HasSuffix(k, unit) && len(k) > len(unit) {
			k = strings.TrimSuffix(k, unit)
		}
	}
	k = strings.ReplaceAll(k, "_", " ")
	if k == "" {
		return k
	}
	return strings.ToUpper(k[:1]) + k[1:]
}

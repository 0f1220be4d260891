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
// as "4s ago", *_seconds / *_ms numbers as durations (and the members of
// an object so named, like phase_ms: {collect, plan}), byte counts as
// "1.5 MiB", and sled ids as the sled's serial. A task may add units its
// field names do not say (statusFormat). The raw JSON stays one click
// away.

// Units a number may be rendered in.
const (
	unitMS      = "ms"
	unitSeconds = "seconds"
	unitBytes   = "bytes"
)

// statusFormat is how one task's status is rendered beyond the naming
// conventions.
type statusFormat struct {
	// Units names the unit of fields whose names do not say it, by key.
	Units map[string]string
	// Sleds maps sled ids to serials, for ids in the status.
	Sleds map[string]string
}

// unitOf is the unit of key's value: the task's word, else its name's
// suffix, else its parent's.
func (f statusFormat) unitOf(key, parent string) string {
	if u, ok := f.Units[key]; ok {
		return u
	}
	switch {
	case strings.HasSuffix(key, "_ms"):
		return unitMS
	case strings.HasSuffix(key, "_seconds"):
		return unitSeconds
	case key == "bytes" || key == "size" || strings.HasPrefix(key, "bytes_") || strings.HasSuffix(key, "_bytes"):
		return unitBytes
	}
	return parent
}

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
func renderStatus(raw json.RawMessage, now time.Time, f statusFormat) []statusSection {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	v, err := parseOrdered(raw)
	if err != nil {
		return []statusSection{{Title: "Status", Value: jsonView{Kind: "scalar", Text: string(raw), Class: "str"}}}
	}
	rd := jsonRenderer{now: now, f: f}
	obj, ok := v.(jsonObject)
	if !ok {
		return []statusSection{{Title: "Status", Value: rd.render("", v, "")}}
	}
	summary := jsonView{Kind: "object"}
	var rest []statusSection
	for _, m := range obj {
		rv := rd.render(m.key, m.val, "")
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

// jsonRenderer renders one status.
type jsonRenderer struct {
	now time.Time
	f   statusFormat
}

// render renders v, the value of key, whose parent's unit is parent.
func (rd jsonRenderer) render(key string, v any, parent string) jsonView {
	unit := rd.f.unitOf(key, parent)
	switch x := v.(type) {
	case jsonObject:
		if len(x) == 0 {
			return jsonView{Kind: "empty", Text: "none"}
		}
		out := jsonView{Kind: "object"}
		for _, m := range x {
			out.Fields = append(out.Fields, jsonField{Key: prettyKey(m.key), Value: rd.render(m.key, m.val, unit)})
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
							row[i] = rd.render(m.key, m.val, unit)
						}
					}
				}
				out.Rows = append(out.Rows, row)
			}
			return out
		}
		out := jsonView{Kind: "list"}
		for _, e := range x {
			out.Items = append(out.Items, rd.render(key, e, parent))
		}
		return out
	}
	return rd.scalar(v, unit)
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

func (rd jsonRenderer) scalar(v any, unit string) jsonView {
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
		switch unit {
		case unitSeconds:
			return jsonView{Kind: "scalar", Text: formatMS(f * 1000), Class: "num", Title: x.String() + " s"}
		case unitMS:
			return jsonView{Kind: "scalar", Text: formatMS(f), Class: "num", Title: x.String() + " ms"}
		case unitBytes:
			return jsonView{Kind: "scalar", Text: humanize.Bytes(int64(f)), Class: "num", Title: x.String() + " bytes"}
		}
		return jsonView{Kind: "scalar", Text: formatNumber(x, f), Class: "num"}
	case string:
		if t, err := time.Parse(time.RFC3339Nano, x); err == nil && len(x) >= 20 {
			return jsonView{Kind: "scalar", Text: humanize.Ago(rd.now, t), Class: "time", Title: t.UTC().Format(time.RFC3339Nano)}
		}
		if serial, ok := rd.f.Sleds[x]; ok {
			return jsonView{Kind: "scalar", Text: serial, Class: "str sled", Title: "sled " + x}
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

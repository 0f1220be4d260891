package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/humanize"
)

// A task's status is whatever JSON object the task reports. It is shown
// field by field in the task's own order, each value humanized by what
// its name says it holds (…_ms and …_seconds are spans, …bytes… and
// length are sizes, times read "5s ago", sled ids become serials, hashes
// are shortened), so every task, including ones added later, reads
// without a renderer of its own. --json shows it raw.

// statusValue is a JSON value with its object keys in document order.
type statusValue struct {
	kind  byte // 'o' object, 'a' array, 's' string, 'n' number, 'b' bool, '0' null
	keys  []string
	vals  []statusValue
	str   string
	num   json.Number
	truth bool
}

func parseStatus(raw []byte) (statusValue, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return decodeValue(dec)
}

func decodeValue(dec *json.Decoder) (statusValue, error) {
	tok, err := dec.Token()
	if err != nil {
		return statusValue{}, err
	}
	switch t := tok.(type) {
	case json.Delim:
		v := statusValue{kind: 'a'}
		if t == '{' {
			v.kind = 'o'
		}
		for dec.More() {
			if v.kind == 'o' {
				k, err := dec.Token()
				if err != nil {
					return v, err
				}
				v.keys = append(v.keys, fmt.Sprint(k))
			}
			item, err := decodeValue(dec)
			if err != nil {
				return v, err
			}
			v.vals = append(v.vals, item)
		}
		_, err := dec.Token() // the closing delimiter
		return v, err
	case string:
		return statusValue{kind: 's', str: t}, nil
	case json.Number:
		return statusValue{kind: 'n', num: t}, nil
	case bool:
		return statusValue{kind: 'b', truth: t}, nil
	}
	return statusValue{kind: '0'}, nil
}

func (v statusValue) scalar() bool { return v.kind != 'o' && v.kind != 'a' }

// statusRenderer renders status values for one task.
type statusRenderer struct {
	now time.Time
	// sleds maps sled ids to serials.
	sleds map[uuid.UUID]string
}

// maxStatusRows bounds the rows shown of a list in a status; --json
// shows them all.
const maxStatusRows = 10

var hexHash = regexp.MustCompile(`^[0-9a-f]{40,}$`)

// label is a field's name as a person reads it: units the value will
// carry are dropped from the name.
func label(key string) string {
	for _, unit := range []string{"_ms", "_seconds", "_bytes"} {
		if k, ok := strings.CutSuffix(key, unit); ok && k != "" {
			key = k
			break
		}
	}
	return strings.ReplaceAll(key, "_", " ")
}

// cell renders a scalar found under key (parent is the enclosing
// object's key, whose unit its fields share).
func (r statusRenderer) cell(parent, key string, v statusValue) string {
	switch v.kind {
	case '0':
		return "-"
	case 'b':
		if v.truth {
			return "yes"
		}
		return "no"
	case 'n':
		f, err := v.num.Float64()
		if err != nil {
			return v.num.String()
		}
		switch {
		case strings.HasSuffix(key, "_ms") || strings.HasSuffix(parent, "_ms"):
			return fmtMS(f)
		case strings.HasSuffix(key, "_seconds"):
			return humanize.Duration(time.Duration(f * float64(time.Second)))
		case strings.Contains(key, "bytes") || key == "length" || key == "size":
			return humanize.Bytes(int64(f))
		}
		return v.num.String()
	}
	s := v.str
	if id, err := uuid.Parse(s); err == nil {
		if serial, ok := r.sleds[id]; ok {
			return serial
		}
		return s
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return humanize.Ago(r.now, t)
	}
	if hexHash.MatchString(s) {
		return s[:12]
	}
	if s == "" {
		return "-"
	}
	return r.serials(s)
}

// serials replaces the sled ids in s with the sleds' serials.
func (r statusRenderer) serials(s string) string {
	if len(r.sleds) == 0 {
		return s
	}
	return uuidInText.ReplaceAllStringFunc(s, func(m string) string {
		if id, err := uuid.Parse(m); err == nil {
			if serial, ok := r.sleds[id]; ok {
				return serial
			}
		}
		return m
	})
}

// inline renders an object of scalars on one line. A counters object
// (numbers only) shows the ones that are not zero.
func (r statusRenderer) inline(key string, v statusValue) string {
	numbers, zeros := true, 0
	for _, f := range v.vals {
		if f.kind != 'n' {
			numbers = false
		} else if f.num.String() == "0" {
			zeros++
		}
	}
	var parts []string
	for i, f := range v.vals {
		if numbers && len(v.vals) > 4 && f.num.String() == "0" {
			continue
		}
		parts = append(parts, label(v.keys[i])+" "+r.cell(key, v.keys[i], f))
	}
	switch {
	case len(parts) == 0:
		return "all 0"
	case numbers && len(v.vals) > 4 && zeros > 0:
		return strings.Join(parts, ", ") + " (the rest 0)"
	}
	return strings.Join(parts, ", ")
}

// render writes a status object: its simple fields as aligned facts,
// then each list of objects as a table.
func (r statusRenderer) render(w io.Writer, indent string, v statusValue) error {
	if v.kind != 'o' {
		_, err := fmt.Fprintln(w, indent+r.cell("", "", v))
		return err
	}
	var rows [][2]string
	type sub struct {
		key string
		val statusValue
	}
	var tables, objects []sub
	for i, key := range v.keys {
		f := v.vals[i]
		switch {
		case f.scalar():
			rows = append(rows, [2]string{indent + label(key), r.cell("", key, f)})
		case f.kind == 'o' && allScalar(f.vals):
			rows = append(rows, [2]string{indent + label(key), r.inline(key, f)})
		case f.kind == 'o':
			objects = append(objects, sub{key, f})
		case len(f.vals) == 0:
			rows = append(rows, [2]string{indent + label(key), "none"})
		case allScalar(f.vals):
			cells := make([]string, len(f.vals))
			for j, item := range f.vals {
				cells[j] = r.cell(key, key, item)
			}
			rows = append(rows, [2]string{indent + label(key), strings.Join(cells, ", ")})
		default:
			tables = append(tables, sub{key, f})
		}
	}
	if err := facts(w, rows); err != nil {
		return err
	}
	for _, o := range objects {
		fmt.Fprintf(w, "%s%s:\n", indent, label(o.key))
		if err := r.render(w, indent+"  ", o.val); err != nil {
			return err
		}
	}
	for _, t := range tables {
		if err := r.table(w, indent, t.key, t.val); err != nil {
			return err
		}
	}
	return nil
}

func allScalar(vals []statusValue) bool {
	for _, v := range vals {
		if !v.scalar() {
			return false
		}
	}
	return true
}

// table writes a list of objects under its name, one column per field.
func (r statusRenderer) table(w io.Writer, indent, key string, list statusValue) error {
	var cols []string
	seen := map[string]bool{}
	for _, item := range list.vals {
		for _, k := range item.keys {
			if !seen[k] {
				seen[k] = true
				cols = append(cols, k)
			}
		}
	}
	header := make([]string, len(cols))
	for i, c := range cols {
		header[i] = strings.ToUpper(label(c))
	}
	header[0] = indent + header[0]
	shown := list.vals
	if len(shown) > maxStatusRows {
		shown = shown[:maxStatusRows]
	}
	rows := make([][]string, 0, len(shown))
	for _, item := range shown {
		row := make([]string, len(cols))
		for i, c := range cols {
			row[i] = "-"
			for j, k := range item.keys {
				if k != c {
					continue
				}
				f := item.vals[j]
				if f.scalar() {
					row[i] = r.cell(key, c, f)
				} else if f.kind == 'o' && allScalar(f.vals) {
					row[i] = r.inline(c, f)
				} else {
					row[i] = strconv.Itoa(len(f.vals)) + " item(s)"
				}
			}
		}
		if indent != "" {
			row[0] = indent + row[0]
		}
		rows = append(rows, row)
	}
	fmt.Fprintf(w, "\n%s%s (%d):\n", indent, label(key), len(list.vals))
	if err := table(w, header, rows); err != nil {
		return err
	}
	if n := len(list.vals) - len(shown); n > 0 {
		fmt.Fprintf(w, "%s… and %d more (--json shows every one)\n", indent, n)
	}
	return nil
}

// uuidInJSON finds a UUID string in a raw status: a sled's id, perhaps,
// worth asking for the sleds to show its serial.
var (
	uuidInText = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	uuidInJSON = regexp.MustCompile(`"` + uuidInText.String() + `"`)
)

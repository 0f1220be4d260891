package logging_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/logging"
)

func TestLinesFollowTheConvention(t *testing.T) {
	var buf bytes.Buffer
	at := time.Date(2026, 3, 4, 5, 6, 7, 890_123_456, time.FixedZone("CET", 3600))
	log, err := logging.New(&buf, "nexus", logging.Options{Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	sub := log.With().Str("subsystem", "bgtasks").Logger()
	sub.Info().Int("status", 404).
		Float64("duration_ms", logging.Millis(1500*time.Microsecond)).Msg("request")
	line := strings.TrimSpace(buf.String())
	if errs := logging.Check([]byte(line)); len(errs) > 0 {
		t.Fatalf("%s: %v", line, errs)
	}
	for _, want := range []string{`"time":"2026-03-04T04:06:07.890Z"`, `"component":"nexus"`, `"duration_ms":1.5`,
		`"subsystem":"bgtasks"`, `"message":"request"`} {
		if !strings.Contains(line, want) {
			t.Errorf("%s lacks %s", line, want)
		}
	}
}

func TestCheckNamesEveryBreach(t *testing.T) {
	for _, c := range []struct{ line, want string }{
		{`{"time":"2026-03-04T04:06:07.890Z","component":"a","component":"b"}`, `key "component" appears 2 times`},
		{`{"time":"2026-03-04T04:06:07Z","component":"a"}`, "not RFC 3339 in UTC with milliseconds"},
		{`{"time":"2026-03-04T05:06:07.890+01:00","component":"a"}`, "not RFC 3339 in UTC with milliseconds"},
		{`{"component":"a"}`, "no time field"},
		{`{"time":"2026-03-04T04:06:07.890Z"}`, "no component field"},
		{`{"time":"2026-03-04T04:06:07.890Z","component":"a","status":"inserted"}`, "not an HTTP status code"},
		{`{"time":"2026-03-04T04:06:07.890Z","component":"a","receive_ms":"3s"}`, "not a number of milliseconds"},
		{`{"time":"2026-03-04T04:06:07.890Z","component":"a","retry_in":250}`, "name it retry_in_ms"},
		{`{"time":"2026-03-04T04:06:07.890Z","component":"a","message":"x","message":"y"}`, `key "message" appears 2 times`},
		{`not json`, "not a JSON object"},
	} {
		errs := logging.Check([]byte(c.line))
		found := false
		for _, e := range errs {
			found = found || strings.Contains(e.Error(), c.want)
		}
		if !found {
			t.Errorf("%s: errors %v, want one saying %q", c.line, errs, c.want)
		}
	}
}

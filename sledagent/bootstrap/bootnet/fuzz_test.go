package bootnet

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzReadFrame feeds arbitrary bytes to the frame reader and to the
// decoders of what frames carry (requests, answers). Nothing may panic,
// no frame may exceed the limit, and every frame read must encode back to
// the bytes it came from.
func FuzzReadFrame(f *testing.F) {
	// The checked-in corpus is in testdata/fuzz/FuzzReadFrame; these add
	// a few well-formed streams.
	for _, k := range []Kind{KindPing, KindMsg, KindRequest, KindResponse} {
		fr, _ := EncodeFrame(k, []byte(`{"id":1,"op":"status"}`))
		f.Add(fr)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			start := len(data) - r.Len()
			kind, body, err := ReadFrame(r)
			if err != nil {
				return
			}
			if len(body)+1 > MaxFrameSize {
				t.Fatalf("frame of %d bytes accepted", len(body)+1)
			}
			end := len(data) - r.Len()
			again, err := EncodeFrame(kind, body)
			if err != nil || !bytes.Equal(again, data[start:end]) {
				t.Fatalf("frame at %d does not re-encode to its bytes: %v", start, err)
			}
			switch kind {
			case KindRequest:
				if req, err := decodeRequest(body); err == nil && (req.ID == 0 || req.Op == "") {
					t.Fatalf("request without id or op accepted: %+v", req)
				}
			case KindResponse:
				var resp response
				_ = json.Unmarshal(body, &resp)
			}
		}
	})
}

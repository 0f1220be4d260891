package bootnet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	var stream bytes.Buffer
	bodies := [][]byte{nil, []byte("x"), bytes.Repeat([]byte{7}, MaxFrameSize-1)}
	kinds := []Kind{KindPing, KindMsg, KindResponse}
	for i, b := range bodies {
		f, err := EncodeFrame(kinds[i], b)
		if err != nil {
			t.Fatal(err)
		}
		if got := binary.BigEndian.Uint32(f); int(got) != 1+len(b) {
			t.Fatalf("length prefix %d for a %d-byte body", got, len(b))
		}
		stream.Write(f)
	}
	for i, want := range bodies {
		k, b, err := ReadFrame(&stream)
		if err != nil || k != kinds[i] || !bytes.Equal(b, want) {
			t.Fatalf("frame %d: kind %v, %d bytes, %v", i, k, len(b), err)
		}
	}
	if _, _, err := ReadFrame(&stream); err != io.EOF {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
}

func TestFrameLimits(t *testing.T) {
	if _, err := EncodeFrame(KindMsg, make([]byte, MaxFrameSize)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("encoding 1 MiB + 1 byte of payload: %v", err)
	}
	if _, err := EncodeFrame(Kind(9), nil); !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("unknown kind: %v", err)
	}
	// A peer announcing more than 1 MiB is refused before anything more is
	// read: the reader below would fail the test if it were asked for the
	// body.
	var h [4]byte
	binary.BigEndian.PutUint32(h[:], MaxFrameSize+1)
	r := io.MultiReader(bytes.NewReader(h[:]), failReader{t})
	if _, _, err := ReadFrame(r); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized frame: %v", err)
	}
	for name, tc := range map[string]struct {
		in   []byte
		want error
	}{
		"empty":        {[]byte{0, 0, 0, 0}, ErrEmptyFrame},
		"unknown kind": {[]byte{0, 0, 0, 1, 99}, ErrUnknownKind},
		"kind zero":    {[]byte{0, 0, 0, 2, 0, 1}, ErrUnknownKind},
		"truncated":    {[]byte{0, 0, 0, 5, 2, 1}, io.ErrUnexpectedEOF},
		"short header": {[]byte{0, 0}, io.ErrUnexpectedEOF},
	} {
		if _, _, err := ReadFrame(bytes.NewReader(tc.in)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

type failReader struct{ t *testing.T }

func (f failReader) Read([]byte) (int, error) {
	f.t.Error("ReadFrame read the body of a frame it should have refused")
	return 0, io.EOF
}

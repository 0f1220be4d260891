package bootnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Kind is the type of a frame, its first payload byte.
type Kind byte

// Frame kinds.
const (
	// KindPing keeps a connection alive; it has no body.
	KindPing Kind = 1
	// KindMsg carries one encoded trust-quorum peer message.
	KindMsg Kind = 2
	// KindRequest carries a request (proxy, rack setup) with an id.
	KindRequest Kind = 3
	// KindResponse answers the request with the same id.
	KindResponse Kind = 4
)

func (k Kind) String() string {
	switch k {
	case KindPing:
		return "ping"
	case KindMsg:
		return "msg"
	case KindRequest:
		return "request"
	case KindResponse:
		return "response"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

func (k Kind) known() bool { return k >= KindPing && k <= KindResponse }

// MaxFrameSize bounds a frame's payload (kind byte and body). A peer that
// announces a bigger one is cut off before anything is read or allocated.
const MaxFrameSize = 1 << 20

// headerSize is the big-endian uint32 length in front of every payload.
const headerSize = 4

// Frame errors.
var (
	ErrFrameTooLarge = errors.New("bootnet: frame larger than 1 MiB")
	ErrEmptyFrame    = errors.New("bootnet: frame without a kind")
	ErrUnknownKind   = errors.New("bootnet: unknown frame kind")
)

// EncodeFrame returns the frame for kind and body: a four-byte big-endian
// payload length, the kind byte, then the body. The result is a new buffer
// (the caller zeroes it once written; it may carry share bytes).
func EncodeFrame(kind Kind, body []byte) ([]byte, error) {
	if !kind.known() {
		return nil, fmt.Errorf("%w: %d", ErrUnknownKind, byte(kind))
	}
	n := 1 + len(body)
	if n > MaxFrameSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	f := make([]byte, headerSize+n)
	binary.BigEndian.PutUint32(f, uint32(n))
	f[headerSize] = byte(kind)
	copy(f[headerSize+1:], body)
	return f, nil
}

// ReadFrame reads one frame from r and returns its kind and body. The body
// is a new buffer owned by the caller. A length over MaxFrameSize is refused
// before the body is read, so a hostile peer cannot make us allocate more.
// Unknown kinds are refused too: a peer speaking another protocol version
// is cut off rather than half understood.
func ReadFrame(r io.Reader) (Kind, []byte, error) {
	var h [headerSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	switch {
	case n == 0:
		return 0, nil, ErrEmptyFrame
	case n > MaxFrameSize:
		return 0, nil, fmt.Errorf("%w: peer announced %d bytes", ErrFrameTooLarge, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		clear(buf)
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	kind := Kind(buf[0])
	if !kind.known() {
		clear(buf)
		return 0, nil, fmt.Errorf("%w: %d", ErrUnknownKind, buf[0])
	}
	return kind, buf[1:], nil
}

// Package fault is rackplane's one coded error: what went wrong (a Kind),
// a stable machine-readable code, and a message that tells a person what
// to fix. Domain packages (the Nexus application layer, the datastore, the
// archive reader, the sled's artifact store) return it, or sentinels that
// an edge turns into it; they never know about HTTP. Each server edge maps
// a Kind to a status in exactly one place (internal/httpx), and clients
// receive the code and message as an api.Error.
package fault

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies a fault the way a caller must react to it.
type Kind int

// The kinds. The zero value is Internal: an error nobody classified is a
// bug or an outage, never the caller's fault.
const (
	// Internal: something broke here; the caller cannot fix it.
	Internal Kind = iota
	// Invalid: the request is malformed or breaks a rule.
	Invalid
	// NotFound: what the request names does not exist.
	NotFound
	// Conflict: the request contradicts the current state.
	Conflict
	// TooLarge: the request body is larger than accepted.
	TooLarge
	// Unavailable: a dependency (the database, a peer) cannot be reached
	// now; the same request may succeed later.
	Unavailable
	// Busy: too many requests of this kind are in progress; retry later.
	Busy
	// Unauthenticated: the caller did not say who it is.
	Unauthenticated
	// Forbidden: the caller may not do this.
	Forbidden
	// RangeNotSatisfiable: a byte range outside what exists.
	RangeNotSatisfiable
	// MethodNotAllowed: the resource exists but not with this method.
	MethodNotAllowed
	// Canceled: the caller went away before the answer was ready.
	Canceled
	// Timeout: a party this one asked on the caller's behalf did not
	// answer in time; the same request may succeed later.
	Timeout
	// InsufficientStorage: there is no room left for what the request
	// would store.
	InsufficientStorage
	// Stalled: the caller stopped sending its request before it was
	// complete.
	Stalled
)

var kindNames = map[Kind]string{
	Internal: "internal", Invalid: "invalid", NotFound: "not_found", Conflict: "conflict",
	TooLarge: "too_large", Unavailable: "unavailable", Busy: "busy", Unauthenticated: "unauthenticated",
	Forbidden: "forbidden", RangeNotSatisfiable: "range_not_satisfiable", MethodNotAllowed: "method_not_allowed",
	Canceled: "canceled", Timeout: "timeout", InsufficientStorage: "insufficient_storage",
	Stalled: "stalled",
}

func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error is a coded error.
type Error struct {
	Kind Kind
	// Code is the stable snake_case code clients see (the api package
	// lists them).
	Code string
	// Message tells a person what was wrong and, where possible, what to
	// do. It is sent to the caller, so it never holds secrets or
	// internals (paths, SQL, addresses of other parties).
	Message string
	// Err is the cause: logged, never sent.
	Err error
	// Extra holds additional machine-readable fields for the error body
	// (a sled's held generation, say); nil for most errors.
	Extra map[string]any
	// RetryAfter, when positive, is how long the caller should wait
	// before trying again (a Busy fault: the Retry-After header).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// New is an Error of kind with a formatted message.
func New(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap is New with a cause.
func Wrap(cause error, kind Kind, code, format string, args ...any) *Error {
	e := New(kind, code, format, args...)
	e.Err = cause
	return e
}

// With returns a copy of e with an extra body field.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extra = make(map[string]any, len(e.Extra)+1)
	for k, v := range e.Extra {
		c.Extra[k] = v
	}
	c.Extra[key] = value
	return &c
}

// After returns a copy of e that tells the caller to retry after d.
func (e *Error) After(d time.Duration) *Error {
	c := *e
	c.RetryAfter = d
	return &c
}

// Constructors for the common kinds.

// Invalidf is an Invalid fault.
func Invalidf(code, format string, args ...any) *Error { return New(Invalid, code, format, args...) }

// NotFoundf is a NotFound fault.
func NotFoundf(code, format string, args ...any) *Error { return New(NotFound, code, format, args...) }

// Conflictf is a Conflict fault.
func Conflictf(code, format string, args ...any) *Error { return New(Conflict, code, format, args...) }

// As returns err's *Error, if it has one.
func As(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}

// KindOf is err's kind: Internal when err is not a fault.
func KindOf(err error) Kind {
	if e, ok := As(err); ok {
		return e.Kind
	}
	return Internal
}

// CodeOf is err's code, or "" when err is not a fault.
func CodeOf(err error) string {
	if e, ok := As(err); ok {
		return e.Code
	}
	return ""
}

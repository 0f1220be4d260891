// Package httpx is the HTTP plumbing shared by Nexus and the sled agent:
// request ids, access logs, panic recovery, JSON bodies and JSON errors, and
// serving a listener with graceful shutdown.
//
// Handlers return errors instead of writing them; a *fault.Error becomes
// its kind's status (statusOf is the one table) and its code and message,
// anything else a 500 whose detail goes only to the log. This package
// defines no error type of its own: faults are the one coded error.
package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/hlog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/reqid"
)

// HandlerFunc is a handler that reports failure by returning an error.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handlers adapts HandlerFuncs to http.Handlers, translating their errors.
type Handlers struct {
	// MapError, when set, turns domain errors (datastore sentinels, ...)
	// into *fault.Error before they are written. It returns its argument
	// when it has nothing better.
	MapError func(error) error
	// WarnRefusals logs a refused request (a 4xx) at warn rather than
	// info: for operations where a refusal means an operator's work was
	// thrown away (an upload of gigabytes), not a typo.
	WarnRefusals bool
}

// H adapts fn.
func (h Handlers) H(fn HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			if h.MapError != nil {
				err = h.MapError(err)
			}
			writeError(w, r, err, h.WarnRefusals)
		}
	}
}

// statusOf is the one mapping from a fault's kind to an HTTP status.
var statusOf = map[fault.Kind]int{
	fault.Internal:            http.StatusInternalServerError,
	fault.Invalid:             http.StatusBadRequest,
	fault.NotFound:            http.StatusNotFound,
	fault.Conflict:            http.StatusConflict,
	fault.TooLarge:            http.StatusRequestEntityTooLarge,
	fault.Unavailable:         http.StatusServiceUnavailable,
	fault.Busy:                http.StatusTooManyRequests,
	fault.Unauthenticated:     http.StatusUnauthorized,
	fault.Forbidden:           http.StatusForbidden,
	fault.RangeNotSatisfiable: http.StatusRequestedRangeNotSatisfiable,
	fault.MethodNotAllowed:    http.StatusMethodNotAllowed,
	fault.Canceled:            499,
	fault.Timeout:             http.StatusGatewayTimeout,
	fault.InsufficientStorage: http.StatusInsufficientStorage,
	fault.Stalled:             http.StatusRequestTimeout,
}

// StatusOf is the HTTP status a fault of kind k answers with.
func StatusOf(k fault.Kind) int {
	if s, ok := statusOf[k]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// internalMessage is all a caller learns of an internal error.
const internalMessage = "internal error; the server log has the details under this request id"

// WriteError writes err as a JSON error body and logs it: 5xx at error
// level with the cause, 4xx at info level. A *fault.Error answers with its
// kind's status, its code, its message and its extra fields; an internal
// fault or anything unclassified is a 500 whose detail goes only to the
// log.
func WriteError(w http.ResponseWriter, r *http.Request, err error) { writeError(w, r, err, false) }

func writeError(w http.ResponseWriter, r *http.Request, err error, warnRefusals bool) {
	f, ok := fault.As(err)
	if !ok || f.Kind == fault.Internal {
		f = fault.Wrap(err, fault.Internal, api.CodeInternal, internalMessage)
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads this response.
		f = fault.Wrap(err, fault.Canceled, "client_closed_request", "client closed the request")
	}
	status := StatusOf(f.Kind)
	log := hlog.FromRequest(r)
	ev := log.Info()
	switch {
	case status >= 500:
		ev = log.Error()
	case warnRefusals && status != 499:
		ev = log.Warn()
	}
	// The body's message is error_message: "message" is the line's own.
	ev.Int("status", status).Str("error_code", f.Code).Str("error_message", f.Message).AnErr("cause", f.Err).
		Fields(f.Extra).Msg("request failed")
	if f.RetryAfter > 0 {
		// Whole seconds, rounded up: a client waiting the header's time
		// never comes back early.
		w.Header().Set("Retry-After", strconv.FormatInt(int64((f.RetryAfter+time.Second-1)/time.Second), 10))
	}
	body := api.Error{ErrorCode: f.Code, Message: f.Message, RequestID: reqid.From(r.Context())}
	if len(f.Extra) == 0 {
		WriteJSON(w, status, body)
		return
	}
	// Extra fields sit beside the standard ones in the same object.
	m := make(map[string]any, len(f.Extra)+3)
	for k, v := range f.Extra {
		m[k] = v
	}
	m["error_code"], m["message"] = body.ErrorCode, body.Message
	if body.RequestID != "" {
		m["request_id"] = body.RequestID
	}
	WriteJSON(w, status, m)
}

// WriteJSON writes v as the JSON body with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// DefaultMaxBody bounds JSON request bodies.
const DefaultMaxBody = 1 << 20

// Validator is implemented by request bodies that check their own fields.
// The error should name the field at fault.
type Validator interface {
	Validate() error
}

// DecodeJSON reads a JSON body of at most maxBytes into v, refusing unknown
// fields and trailing data, then runs v's Validate if it has one. Every
// failure is a 400 whose message names the field or position at fault.
func DecodeJSON(r *http.Request, v any, maxBytes int64) error {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBody
	}
	body := http.MaxBytesReader(nil, r.Body, maxBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, maxBytes)
	}
	if dec.More() {
		return fault.Invalidf(api.CodeInvalidBody, "request body has data after the JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return fault.Invalidf(api.CodeInvalidBody, "request body has data after the JSON value")
	}
	if val, ok := v.(Validator); ok {
		if err := val.Validate(); err != nil {
			if f, ok := fault.As(err); ok {
				return f
			}
			return fault.Invalidf(api.CodeInvalidField, "%s", err.Error())
		}
	}
	return nil
}

func decodeError(err error, maxBytes int64) error {
	var syntax *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		return fault.Invalidf(api.CodeInvalidBody, "request body is empty; expected a JSON object")
	case errors.As(err, &tooBig):
		return fault.New(fault.TooLarge, api.CodeBodyTooLarge, "request body is larger than %d bytes", maxBytes)
	case errors.As(err, &syntax):
		return fault.Invalidf(api.CodeInvalidBody, "request body is not valid JSON (at byte %d): %v", syntax.Offset, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fault.Invalidf(api.CodeInvalidBody, "request body is truncated JSON")
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return fault.Invalidf(api.CodeInvalidBody, "request body must be a JSON %s, not %s", typeName(typeErr), typeErr.Value)
		}
		return fault.Invalidf(api.CodeInvalidField, "field %q must be %s, not %s", field, typeName(typeErr), typeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fault.Invalidf(api.CodeInvalidField, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return fault.Invalidf(api.CodeInvalidBody, "request body could not be read: %v", err)
}

func typeName(e *json.UnmarshalTypeError) string {
	switch e.Type.Kind().String() {
	case "struct", "map":
		return "an object"
	case "slice", "array":
		return "an array"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "a number"
	}
	return e.Type.String()
}

// NewRouter returns a chi router with the standard middleware (request id,
// access log, panic recovery) and JSON 404/405 answers.
func NewRouter(log zerolog.Logger) chi.Router {
	r := chi.NewRouter()
	r.Use(hlog.NewHandler(log), RequestID, AccessLog, Recover)
	r.NotFound(NotFoundJSON)
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, r, fault.New(fault.MethodNotAllowed, api.CodeMethodNotAllowed,
			"method %s is not allowed on %s", r.Method, r.URL.Path))
	})
	return r
}

// NotFoundJSON is the JSON 404 of a path no route serves.
func NotFoundJSON(w http.ResponseWriter, r *http.Request) {
	WriteError(w, r, fault.NotFoundf(api.CodeNotFound, "no such route: %s %s", r.Method, r.URL.Path))
}

// RequestID adopts a valid incoming X-Request-Id (so ids follow a request
// from Nexus into sled agents) or makes a new one, and puts it in the
// context, the logger and the response.
func RequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(reqid.Header)
		if !reqid.Valid(id) {
			id = reqid.New()
		}
		ctx := reqid.With(r.Context(), id)
		log := zerolog.Ctx(ctx).With().Str("request_id", id).Logger()
		ctx = log.WithContext(ctx)
		w.Header().Set(reqid.Header, id)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// AccessLog logs one line per request.
var AccessLog = hlog.AccessHandler(func(r *http.Request, status, size int, d time.Duration) {
	lvl := zerolog.DebugLevel
	if r.URL.Path != "/healthz" && r.URL.Path != "/metrics" {
		lvl = zerolog.InfoLevel
	}
	hlog.FromRequest(r).WithLevel(lvl).Str("method", r.Method).Str("path", r.URL.Path).
		Int("status", status).Int("size", size).Float64("duration_ms", logging.Millis(d)).Msg("request")
})

// Recover turns a handler panic into a 500 and a logged stack trace.
func Recover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				hlog.FromRequest(r).Error().Str("panic", fmt.Sprint(v)).Bytes("stack", debug.Stack()).
					Msg("handler panicked")
				WriteError(w, r, fmt.Errorf("handler panicked: %v", v))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// Listener pairs a listener with the handler that serves it.
type Listener struct {
	Ln      net.Listener
	Handler http.Handler
}

// ServeAll serves every listener until ctx is done, shutting each down
// gracefully (see Serve), and returns once all have stopped.
func ServeAll(ctx context.Context, grace time.Duration, log zerolog.Logger, ls ...Listener) error {
	errs := make([]error, len(ls))
	var wg sync.WaitGroup
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = Serve(ctx, l.Ln, l.Handler, grace, log)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Serve serves h on ln until ctx is done, then shuts down gracefully,
// waiting up to grace for in-flight requests before closing them.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, grace time.Duration, log zerolog.Logger) error {
	srv := &http.Server{
		Handler: h,
		// The server's own complaints (a client's failed TLS handshake,
		// say) are the client's problem: debug level, with the logger's
		// fields, not lines on stderr.
		ErrorLog: stdlog.New(debugWriter{log}, "", 0),
		// A client gets 10 s to send its headers, at most MaxHeaderBytes
		// of them, and an idle keep-alive connection is closed after two
		// minutes. There is no whole-request deadline: uploads and
		// artifact transfers take as long as their bytes need; handlers
		// that read long bodies use IdleBody instead.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    MaxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return log.WithContext(context.WithoutCancel(ctx)) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn().Err(err).Str("addr", ln.Addr().String()).Msg("graceful shutdown timed out; closing connections")
		_ = srv.Close()
	}
	<-errc
	return nil
}

// MaxHeaderBytes bounds a request's header block (431 above it); bearer
// tokens, session cookies and request ids fit many times over.
const MaxHeaderBytes = 64 << 10

// IdleBody returns body with a read deadline that moves with progress:
// before every read the connection's deadline is set idle ahead, so a
// client that keeps sending is never cut off however long its body, and
// one that sends nothing for idle gets a read error that satisfies
// errors.Is(err, os.ErrDeadlineExceeded) (the handler then answers and
// cleans up). Behind a writer that cannot set deadlines the body is read
// without one.
func IdleBody(w http.ResponseWriter, body io.Reader, idle time.Duration) io.Reader {
	return &idleBody{r: body, rc: http.NewResponseController(w), idle: idle}
}

type idleBody struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	return b.r.Read(p)
}

// debugWriter logs each line written to it at debug level.
type debugWriter struct{ log zerolog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug().Str("source", "net/http").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

package httpx

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
)

// PathUUID parses the URL path parameter name as a UUID (400 if it is not).
func PathUUID(r *http.Request, name string) (uuid.UUID, error) {
	raw := chi.URLParam(r, name)
	id, err := uuid.Parse(raw)
	if err != nil {
		return uuid.Nil, fault.Invalidf(api.CodeInvalidParameter, "path parameter %s: %q is not a UUID", name, raw)
	}
	return id, nil
}

// QueryInt parses the optional query parameter name as an integer in
// [min, max], returning def when it is absent.
func QueryInt(r *http.Request, name string, def, min, max int) (int, error) {
	raw := r.URL.Query().Get(name)
	if raw == "" {
		return def, nil
	}
	v, err := strconv.Atoi(raw)
	if err != nil || v < min || v > max {
		return 0, fault.Invalidf(api.CodeInvalidParameter, "query parameter %s must be an integer from %d to %d, not %q",
			name, min, max, raw)
	}
	return v, nil
}

// Pagination is a parsed limit and page token.
type Pagination struct {
	Limit int
	Token string
}

// MaxPageLimit bounds page sizes.
const MaxPageLimit = 1000

// PageParams parses ?limit= (default 100) and ?page_token=.
func PageParams(r *http.Request) (Pagination, error) {
	limit, err := QueryInt(r, "limit", 100, 1, MaxPageLimit)
	if err != nil {
		return Pagination{}, err
	}
	return Pagination{Limit: limit, Token: r.URL.Query().Get("page_token")}, nil
}

// UUIDToken parses a page token that is a UUID (uuid.Nil when absent).
func (p Pagination) UUIDToken() (uuid.UUID, error) {
	if p.Token == "" {
		return uuid.Nil, nil
	}
	id, err := uuid.Parse(p.Token)
	if err != nil {
		return uuid.Nil, fault.Invalidf(api.CodeInvalidParameter, "page_token %q is not one this server issued", p.Token)
	}
	return id, nil
}

// BearerToken returns the token of an "Authorization: Bearer ..." header
// ("" when there is none).
func BearerToken(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// ParamRule words the answer to a parameter that the generated server
// wrappers (api/gen) could not bind, so that it reads as the handlers'
// own checks always have.
type ParamRule struct {
	// Code is the error code; invalid_parameter when empty.
	Code string
	// Missing is the message when the parameter is absent or empty.
	Missing string
	// Invalid is a format for a value that does not parse; its one verb
	// (%q) gets the value.
	Invalid string
}

// ParamRules maps parameter names to their rules.
type ParamRules map[string]ParamRule

// With returns the union of p and more (more wins).
func (p ParamRules) With(more ParamRules) ParamRules {
	out := ParamRules{}
	for k, v := range p {
		out[k] = v
	}
	for k, v := range more {
		out[k] = v
	}
	return out
}

// UUIDParam is the rule of a UUID path parameter, worded as PathUUID words
// it.
func UUIDParam(name string) ParamRule {
	return ParamRule{Invalid: "path parameter " + name + ": %q is not a UUID"}
}

// PageRules word limit and page_token as PageParams does.
var PageRules = ParamRules{
	"limit": {Invalid: "query parameter limit must be an integer from 1 to " + strconv.Itoa(MaxPageLimit) + ", not %q"},
}

// ParamErrorHandler returns the ErrorHandlerFunc for a generated wrapper
// (ChiServerOptions.ErrorHandlerFunc): every parameter error becomes a 400
// whose message names the parameter and where it was (path, query or
// header), worded by rules where a rule exists.
func ParamErrorHandler(rules ParamRules) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		name, missing := paramOf(err)
		if name == "" {
			WriteError(w, r, fault.Wrap(err, fault.Invalid, api.CodeInvalidParameter,
				"the request's parameters could not be read: %v", err))
			return
		}
		in, raw := paramValue(r, name)
		rule := rules[name]
		code := rule.Code
		if code == "" {
			code = api.CodeInvalidParameter
		}
		var msg string
		switch {
		case (missing || raw == "") && rule.Missing != "":
			msg = rule.Missing
		case missing || raw == "":
			msg = fmt.Sprintf("%s parameter %s is required", in, name)
		case rule.Invalid != "":
			msg = fmt.Sprintf(rule.Invalid, raw)
		default:
			msg = fmt.Sprintf("%s parameter %s: %q is not valid: %v", in, name, raw, errors.Unwrap(err))
		}
		WriteError(w, r, fault.Wrap(err, fault.Invalid, code, "%s", msg))
	}
}

// paramOf returns the parameter an error of the generated wrappers is
// about. Each generated package declares its own error types
// (RequiredParamError, InvalidParamFormatError, TooManyValuesForParamError,
// ...), all with a ParamName field, so they are read by shape rather than
// by type; only the Required* ones mean the parameter is missing.
func paramOf(err error) (name string, missing bool) {
	v := reflect.ValueOf(err)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return "", false
	}
	f := v.Elem().FieldByName("ParamName")
	if !f.IsValid() || f.Kind() != reflect.String {
		return "", false
	}
	return f.String(), strings.HasPrefix(v.Elem().Type().Name(), "Required")
}

// paramValue says where parameter name is in r and its raw value there.
func paramValue(r *http.Request, name string) (in, raw string) {
	if rctx := chi.RouteContext(r.Context()); rctx != nil {
		for i, k := range rctx.URLParams.Keys {
			if k == name {
				return "path", rctx.URLParams.Values[i]
			}
		}
	}
	if _, ok := r.Header[http.CanonicalHeaderKey(name)]; ok {
		return "header", r.Header.Get(name)
	}
	return "query", r.URL.Query().Get(name)
}

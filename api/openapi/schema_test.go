package openapi_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/openapi"
)

// goTypes are the Go types the documents' x-go-type extensions may name.
// Go cannot look a type up by name, so each one is listed here; a name
// missing from the table, or an entry no document uses, fails the test.
var goTypes = map[string]reflect.Type{
	"api.Error":                       reflect.TypeFor[api.Error](),
	"api.GenerationConflict":          reflect.TypeFor[api.GenerationConflict](),
	"api.Health":                      reflect.TypeFor[api.Health](),
	"api.BuildInfo":                   reflect.TypeFor[api.BuildInfo](),
	"api.Readiness":                   reflect.TypeFor[api.Readiness](),
	"api.ReadinessDetail":             reflect.TypeFor[api.ReadinessDetail](),
	"api.FailingTask":                 reflect.TypeFor[api.FailingTask](),
	"api.Baseboard":                   reflect.TypeFor[api.Baseboard](),
	"api.M2Device":                    reflect.TypeFor[api.M2Device](),
	"api.SledRegistration":            reflect.TypeFor[api.SledRegistration](),
	"api.Sled":                        reflect.TypeFor[api.Sled](),
	"api.SledHealth":                  reflect.TypeFor[api.SledHealth](),
	"api.Page[api.Sled]":              reflect.TypeFor[api.Page[api.Sled]](),
	"api.BackgroundTaskList":          reflect.TypeFor[api.BackgroundTaskList](),
	"api.BackgroundTask":              reflect.TypeFor[api.BackgroundTask](),
	"api.TaskCurrent":                 reflect.TypeFor[api.TaskCurrent](),
	"api.TaskActivation":              reflect.TypeFor[api.TaskActivation](),
	"api.NexusTaskHeartbeat":          reflect.TypeFor[api.NexusTaskHeartbeat](),
	"api.TaskSummary":                 reflect.TypeFor[api.TaskSummary](),
	"api.BackgroundTaskActivate":      reflect.TypeFor[api.BackgroundTaskActivate](),
	"api.BackgroundTaskActivated":     reflect.TypeFor[api.BackgroundTaskActivated](),
	"api.BackgroundTaskEnabled":       reflect.TypeFor[api.BackgroundTaskEnabled](),
	"api.TrustRoot":                   reflect.TypeFor[api.TrustRoot](),
	"api.Page[api.TrustRoot]":         reflect.TypeFor[api.Page[api.TrustRoot]](),
	"api.TrustRootDeleted":            reflect.TypeFor[api.TrustRootDeleted](),
	"api.TQMember":                    reflect.TypeFor[api.TQMember](),
	"api.TQEncryptedRackSecrets":      reflect.TypeFor[api.TQEncryptedRackSecrets](),
	"api.TQConfiguration":             reflect.TypeFor[api.TQConfiguration](),
	"api.TQReconfigureRequest":        reflect.TypeFor[api.TQReconfigureRequest](),
	"api.TQLrtqUpgradeRequest":        reflect.TypeFor[api.TQLrtqUpgradeRequest](),
	"api.TQCommitRequest":             reflect.TypeFor[api.TQCommitRequest](),
	"api.TQPrepareAndCommitRequest":   reflect.TypeFor[api.TQPrepareAndCommitRequest](),
	"api.TQDestinationRequest":        reflect.TypeFor[api.TQDestinationRequest](),
	"api.TQCommitResult":              reflect.TypeFor[api.TQCommitResult](),
	"api.TQStartSledAgentResult":      reflect.TypeFor[api.TQStartSledAgentResult](),
	"api.TQCoordinatorStatus":         reflect.TypeFor[api.TQCoordinatorStatus](),
	"api.TQAlarm":                     reflect.TypeFor[api.TQAlarm](),
	"api.TQPeer":                      reflect.TypeFor[api.TQPeer](),
	"api.TQProxied":                   reflect.TypeFor[api.TQProxied](),
	"api.TQLedgerDevice":              reflect.TypeFor[api.TQLedgerDevice](),
	"api.TQExpunged":                  reflect.TypeFor[api.TQExpunged](),
	"api.TQStatus":                    reflect.TypeFor[api.TQStatus](),
	"api.OperatorToken":               reflect.TypeFor[api.OperatorToken](),
	"api.Page[api.OperatorToken]":     reflect.TypeFor[api.Page[api.OperatorToken]](),
	"api.OperatorTokenCreate":         reflect.TypeFor[api.OperatorTokenCreate](),
	"api.OperatorTokenCreated":        reflect.TypeFor[api.OperatorTokenCreated](),
	"api.AuditEntry":                  reflect.TypeFor[api.AuditEntry](),
	"api.Page[api.AuditEntry]":        reflect.TypeFor[api.Page[api.AuditEntry]](),
	"api.TufRepo":                     reflect.TypeFor[api.TufRepo](),
	"api.Page[api.TufRepo]":           reflect.TypeFor[api.Page[api.TufRepo]](),
	"api.ArtifactReplication":         reflect.TypeFor[api.ArtifactReplication](),
	"api.TufRepoArtifact":             reflect.TypeFor[api.TufRepoArtifact](),
	"api.ArtifactPartOf":              reflect.TypeFor[api.ArtifactPartOf](),
	"api.TufRepoDetail":               reflect.TypeFor[api.TufRepoDetail](),
	"api.TufRepoUpload":               reflect.TypeFor[api.TufRepoUpload](),
	"api.TufRepoPrune":                reflect.TypeFor[api.TufRepoPrune](),
	"api.TufRepoKeep":                 reflect.TypeFor[api.TufRepoKeep](),
	"api.TufUpload":                   reflect.TypeFor[api.TufUpload](),
	"api.TufUploadList":               reflect.TypeFor[api.TufUploadList](),
	"api.ArtifactListItem":            reflect.TypeFor[api.ArtifactListItem](),
	"api.Page[api.ArtifactListItem]":  reflect.TypeFor[api.Page[api.ArtifactListItem]](),
	"api.ArtifactConfig":              reflect.TypeFor[api.ArtifactConfig](),
	"api.ArtifactList":                reflect.TypeFor[api.ArtifactList](),
	"api.M2Failure":                   reflect.TypeFor[api.M2Failure](),
	"api.ArtifactPutResult":           reflect.TypeFor[api.ArtifactPutResult](),
	"api.ArtifactCopyRequest":         reflect.TypeFor[api.ArtifactCopyRequest](),
	"api.ArtifactCopy":                reflect.TypeFor[api.ArtifactCopy](),
	"api.ArtifactCopyList":            reflect.TypeFor[api.ArtifactCopyList](),
	"api.ScrubFinding":                reflect.TypeFor[api.ScrubFinding](),
	"api.ScrubStatus":                 reflect.TypeFor[api.ScrubStatus](),
	"api.TrustQuorumMember":           reflect.TypeFor[api.TrustQuorumMember](),
	"api.TrustQuorumConfig":           reflect.TypeFor[api.TrustQuorumConfig](),
	"api.TrustQuorumNodeStatus":       reflect.TypeFor[api.TrustQuorumNodeStatus](),
	"api.TrustQuorumNode":             reflect.TypeFor[api.TrustQuorumNode](),
	"api.TrustQuorumStatus":           reflect.TypeFor[api.TrustQuorumStatus](),
	"api.TrustQuorumMembership":       reflect.TypeFor[api.TrustQuorumMembership](),
	"api.TrustQuorumAbort":            reflect.TypeFor[api.TrustQuorumAbort](),
	"api.UninitializedSled":           reflect.TypeFor[api.UninitializedSled](),
	"api.Page[api.UninitializedSled]": reflect.TypeFor[api.Page[api.UninitializedSled]](),
	"api.RackSetupHandoff":            reflect.TypeFor[api.RackSetupHandoff](),
	"api.TQLoadRackSecretResult":      reflect.TypeFor[api.TQLoadRackSecretResult](),
}

const apiImport = "github.com/rackplane/rackplane/api"

func load(t *testing.T, d openapi.Document) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(d.JSON)
	if err != nil {
		t.Fatalf("%s: %v", d.File, err)
	}
	return doc
}

// TestSchemasMatchGoTypes holds every component schema to the Go type its
// x-go-type names: the same JSON names both ways, the same JSON types
// (nested references naming the Go type the field has), and a property is
// required exactly when its field is always sent (no omitempty or
// omitzero).
func TestSchemasMatchGoTypes(t *testing.T) {
	used := map[string]bool{}
	for _, d := range openapi.Documents() {
		doc := load(t, d)
		if len(doc.Components.Schemas) == 0 {
			t.Fatalf("%s has no component schemas", d.File)
		}
		for name, ref := range doc.Components.Schemas {
			where := d.File + ": " + name
			goName, err := xGoType(ref.Value)
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			typ, ok := goTypes[goName]
			if !ok {
				t.Errorf("%s: x-go-type %q is not in this test's table of Go types", where, goName)
				continue
			}
			used[goName] = true
			for _, p := range compareObject(doc, ref.Value, typ) {
				t.Errorf("%s (%s): %s", where, goName, p)
			}
		}
	}
	for name := range goTypes {
		if !used[name] {
			t.Errorf("%s is in the table but no document names it", name)
		}
	}
}

// xGoType returns the Go type a component schema maps to, checking that it
// is imported from package api.
func xGoType(s *openapi3.Schema) (string, error) {
	name, ok := s.Extensions["x-go-type"].(string)
	if !ok || name == "" {
		return "", fmt.Errorf("no x-go-type: every component schema must map to a type in package api")
	}
	imp, _ := s.Extensions["x-go-type-import"].(map[string]any)
	if imp["path"] != apiImport {
		return "", fmt.Errorf("x-go-type-import is %v, want path %s", s.Extensions["x-go-type-import"], apiImport)
	}
	return name, nil
}

// jsonField is one field as encoding/json sees it.
type jsonField struct {
	name     string
	typ      reflect.Type
	optional bool // omitempty or omitzero
}

// jsonFields lists typ's JSON fields, with embedded structs' fields
// promoted as encoding/json promotes them.
func jsonFields(typ reflect.Type) []jsonField {
	var out []jsonField
	for f := range typ.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		optional := false
		for _, o := range strings.Split(opts, ",") {
			optional = optional || o == "omitempty" || o == "omitzero"
		}
		out = append(out, jsonField{name: name, typ: f.Type, optional: optional})
	}
	return out
}

var (
	timeType = reflect.TypeFor[time.Time]()
	uuidType = reflect.TypeFor[uuid.UUID]()
	rawType  = reflect.TypeFor[json.RawMessage]()
)

// compareObject lists every way schema s and struct type typ disagree.
func compareObject(doc *openapi3.T, s *openapi3.Schema, typ reflect.Type) []string {
	if typ.Kind() != reflect.Struct {
		return []string{fmt.Sprintf("Go type %s is not a struct", typ)}
	}
	if !s.Type.Is("object") {
		return []string{fmt.Sprintf("type is %v, want object", s.Type.Slice())}
	}
	var problems []string
	fields := map[string]jsonField{}
	for _, f := range jsonFields(typ) {
		fields[f.name] = f
	}
	for _, name := range sortedKeys(fields) {
		if _, ok := s.Properties[name]; !ok {
			problems = append(problems, fmt.Sprintf("Go field %q is not a property", name))
		}
	}
	for _, name := range sortedKeys(s.Properties) {
		f, ok := fields[name]
		if !ok {
			problems = append(problems, fmt.Sprintf("property %q is not a field of %s", name, typ))
			continue
		}
		required := slices.Contains(s.Required, name)
		switch {
		case required && f.optional:
			problems = append(problems, fmt.Sprintf("property %q is required but the field is omitempty/omitzero", name))
		case !required && !f.optional:
			problems = append(problems, fmt.Sprintf("property %q is optional but the field is always sent (no omitempty/omitzero)", name))
		}
		for _, p := range compareValue(doc, s.Properties[name], f.typ) {
			problems = append(problems, fmt.Sprintf("property %q: %s", name, p))
		}
	}
	for _, name := range s.Required {
		if _, ok := s.Properties[name]; !ok {
			problems = append(problems, fmt.Sprintf("required %q is not a property", name))
		}
	}
	return problems
}

var componentRef = regexp.MustCompile(`^#/components/schemas/([A-Za-z0-9]+)$`)

// compareValue lists every way the schema of one value and Go type typ
// disagree. A reference to a component must name typ's own Go type; the
// component itself is compared on its own.
func compareValue(doc *openapi3.T, ref *openapi3.SchemaRef, typ reflect.Type) []string {
	if ref.Ref != "" {
		m := componentRef.FindStringSubmatch(ref.Ref)
		if m == nil {
			return []string{fmt.Sprintf("$ref %q is not a component schema", ref.Ref)}
		}
		comp, ok := doc.Components.Schemas[m[1]]
		if !ok {
			return []string{fmt.Sprintf("$ref %q names no component", ref.Ref)}
		}
		goName, err := xGoType(comp.Value)
		if err != nil {
			return []string{fmt.Sprintf("$ref %q: %v", ref.Ref, err)}
		}
		if want := goTypes[goName]; want != deref(typ) {
			return []string{fmt.Sprintf("$ref %q is %s, the field is %s", ref.Ref, goName, typ)}
		}
		return nil
	}
	s := ref.Value
	if len(s.OneOf) > 0 {
		// The one nullable shape used: a reference or null, for a pointer
		// that is always sent.
		if len(s.OneOf) != 2 || !s.OneOf[1].Value.Type.Is("null") || s.OneOf[0].Ref == "" {
			return []string{"oneOf must be [a $ref, {type: null}]"}
		}
		if typ.Kind() != reflect.Pointer {
			return []string{fmt.Sprintf("nullable, but %s cannot be null", typ)}
		}
		return compareValue(doc, s.OneOf[0], typ)
	}
	typ = deref(typ)
	if typ == rawType {
		// Any JSON value: no type, or an object with no declared shape.
		if s.Type.IsEmpty() || (s.Type.Is("object") && len(s.Properties) == 0 && s.AdditionalProperties.Schema == nil) {
			return nil
		}
		return []string{fmt.Sprintf("json.RawMessage is any JSON value, but the schema says type %v", s.Type.Slice())}
	}
	want, format := jsonType(typ)
	if want == "" {
		return []string{fmt.Sprintf("Go type %s has no JSON mapping in this test", typ)}
	}
	if !s.Type.Is(want) {
		return []string{fmt.Sprintf("type is %v, want %s for Go %s", s.Type.Slice(), want, typ)}
	}
	if want == "object" && typ.Kind() == reflect.Struct {
		return []string{fmt.Sprintf("an inline object for struct %s: use a $ref to its component", typ)}
	}
	if s.Format != format && !(want == "string" && format == "" && s.Format == "uri") {
		return []string{fmt.Sprintf("format is %q, want %q for Go %s", s.Format, format, typ)}
	}
	switch typ.Kind() {
	case reflect.Slice:
		if typ.Elem().Kind() == reflect.Uint8 {
			return nil // a base64 string
		}
		if s.Items == nil {
			return []string{"an array without items"}
		}
		return prefix("items", compareValue(doc, s.Items, typ.Elem()))
	case reflect.Map:
		if typ.Key().Kind() != reflect.String {
			return []string{fmt.Sprintf("map key %s is not a string", typ.Key())}
		}
		if len(s.Properties) > 0 || s.AdditionalProperties.Schema == nil {
			return []string{"a Go map must be an object with additionalProperties and no properties"}
		}
		return prefix("values", compareValue(doc, s.AdditionalProperties.Schema, typ.Elem()))
	}
	return nil
}

// jsonType is the JSON type and format encoding/json gives typ.
func jsonType(typ reflect.Type) (string, string) {
	switch typ {
	case timeType:
		return "string", "date-time"
	case uuidType:
		return "string", "uuid"
	}
	switch typ.Kind() {
	case reflect.String:
		return "string", ""
	case reflect.Bool:
		return "boolean", ""
	case reflect.Int, reflect.Int32, reflect.Uint8:
		return "integer", ""
	case reflect.Int64:
		return "integer", "int64"
	case reflect.Uint64:
		return "integer", "uint64"
	case reflect.Float64:
		return "number", ""
	case reflect.Slice:
		if typ.Elem().Kind() == reflect.Uint8 {
			return "string", "byte" // encoding/json writes []byte as base64
		}
		return "array", ""
	case reflect.Map, reflect.Struct:
		return "object", ""
	}
	return "", ""
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func prefix(p string, problems []string) []string {
	for i := range problems {
		problems[i] = p + ": " + problems[i]
	}
	return problems
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// TestDocumentConventions checks what every operation must have: a
// snake_case operationId unique across the documents' generated packages,
// a summary, described parameters and bodies, and the Error body as its
// default answer (HEAD answers have no body).
func TestDocumentConventions(t *testing.T) {
	for _, d := range openapi.Documents() {
		doc := load(t, d)
		if doc.OpenAPI != "3.1.0" {
			t.Errorf("%s: openapi %q, want 3.1.0", d.File, doc.OpenAPI)
		}
		if doc.Info == nil || len(doc.Info.Description) < 100 {
			t.Errorf("%s: info.description should tell an operator what this API is", d.File)
		}
		ids := map[string]string{}
		for _, path := range doc.Paths.InMatchingOrder() {
			for method, op := range doc.Paths.Value(path).Operations() {
				where := fmt.Sprintf("%s: %s %s", d.File, method, path)
				if !snakeCase.MatchString(op.OperationID) {
					t.Errorf("%s: operationId %q is not snake_case", where, op.OperationID)
				}
				if prev, dup := ids[op.OperationID]; dup {
					t.Errorf("%s: operationId %q also names %s", where, op.OperationID, prev)
				}
				ids[op.OperationID] = where
				if op.Summary == "" {
					t.Errorf("%s: no summary", where)
				}
				for _, p := range op.Parameters {
					if p.Value.Description == "" {
						t.Errorf("%s: parameter %s has no description", where, p.Value.Name)
					}
				}
				def := op.Responses.Default()
				if def == nil {
					t.Errorf("%s: no default response", where)
					continue
				}
				if method == "HEAD" {
					continue
				}
				mt := def.Value.Content.Get("application/json")
				if mt == nil || mt.Schema == nil || mt.Schema.Ref != "#/components/schemas/Error" {
					t.Errorf("%s: the default response is not the Error body", where)
				}
				for code, r := range op.Responses.Map() {
					if r.Value.Description == nil || *r.Value.Description == "" {
						t.Errorf("%s: response %s has no description", where, code)
					}
				}
			}
		}
		if len(ids) == 0 {
			t.Errorf("%s: no operations", d.File)
		}
	}
}

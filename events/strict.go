package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// FieldError is a decoding or validation error at a path inside a document,
// such as "amounts.USD" or "options[1].label".
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return e.Path + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

// at prefixes err's path with name (a field name or "[i]").
func at(name string, err error) error {
	if err == nil {
		return nil
	}
	var fe *FieldError
	if errors.As(err, &fe) && fe.Path != "" {
		sep := "."
		if strings.HasPrefix(fe.Path, "[") {
			sep = ""
		}
		return &FieldError{Path: name + sep + fe.Path, Err: fe.Err}
	}
	if errors.As(err, &fe) {
		return &FieldError{Path: name, Err: fe.Err}
	}
	return &FieldError{Path: name, Err: err}
}

// fieldsOf maps JSON names to struct field indexes for a struct type.
var fieldCache sync.Map // reflect.Type → map[string]int

func fieldsOf(t reflect.Type) map[string]int {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]int)
	}
	m := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = i
	}
	fieldCache.Store(t, m)
	return m
}

// DecodeStrict decodes one JSON object into the struct dst points to:
// field names match exactly, unknown fields and null values are rejected,
// trailing data is rejected, and every error names its path.
func DecodeStrict(data []byte, dst any) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic("events: DecodeStrict needs a pointer to a struct")
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return &FieldError{Err: errors.New("empty document, expected a JSON object")}
	}
	if data[0] != '{' {
		return &FieldError{Err: fmt.Errorf("expected a JSON object, got %s", jsonKind(data))}
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return &FieldError{Err: fmt.Errorf("malformed JSON: %s", jsonSyntax(err))}
	}
	// data has no trailing white space, so anything after the object —
	// even a stray '}' or ']', which dec.More and dec.Token let through —
	// is trailing data.
	if dec.InputOffset() != int64(len(data)) {
		return &FieldError{Err: errors.New("trailing data after the JSON object")}
	}
	if countMembers(data) != len(raw) {
		if _, err := duplicateMember(data); err != nil {
			return err
		}
	}
	return decodeFields(raw, v.Elem())
}

// objectMembers splits one valid JSON object into its members. A name that
// appears twice is an error: decoders disagree on which one wins.
func objectMembers(b []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("malformed JSON: %s", jsonSyntax(err))
	}
	if countMembers(b) == len(m) {
		return m, nil
	}
	return duplicateMember(b)
}

// countMembers counts the members of one valid JSON object without
// allocating: the commas outside strings at depth 1, plus one if not empty.
func countMembers(b []byte) int {
	n, depth, inString, empty := 0, 0, false, true
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
			if depth == 1 {
				empty = false
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		case ',':
			if depth == 1 {
				n++
			}
		}
	}
	if empty {
		return 0
	}
	return n + 1
}

// duplicateMember finds the repeated name in an object countMembers found
// to have more members than distinct names.
func duplicateMember(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil { // '{'
		return nil, fmt.Errorf("malformed JSON: %s", jsonSyntax(err))
	}
	m := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("malformed JSON: %s", jsonSyntax(err))
		}
		name, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("malformed JSON: %s", jsonSyntax(err))
		}
		if _, dup := m[name]; dup {
			return nil, &FieldError{Path: name, Err: errors.New("duplicate field")}
		}
		m[name] = v
	}
	return m, nil
}

func decodeFields(raw map[string]json.RawMessage, sv reflect.Value) error {
	fields := fieldsOf(sv.Type())
	// Deterministic error order: report fields in byte order.
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	sortStrings(names)
	for _, name := range names {
		i, ok := fields[name]
		if !ok {
			return &FieldError{Path: name, Err: errors.New("unknown field")}
		}
		msg := raw[name]
		if string(msg) == "null" {
			return &FieldError{Path: name, Err: errors.New("null is not allowed; omit the field instead")}
		}
		fv := sv.Field(i)
		if err := decodeValue(msg, fv.Addr().Interface()); err != nil {
			return at(name, err)
		}
	}
	return nil
}

// decodeValue unmarshals one value with clear type errors. Maps with string
// keys, slices and pointers to them are decoded member by member, so errors
// name the key or index ("priority_floors.high", "alert_thresholds[1]") and
// a null member is rejected like a null field.
func decodeValue(msg json.RawMessage, dst any) error {
	if _, ok := dst.(json.Unmarshaler); !ok {
		switch v := reflect.ValueOf(dst).Elem(); {
		case v.Kind() == reflect.Pointer && collection(v.Type().Elem()):
			p := reflect.New(v.Type().Elem())
			if err := decodeValue(msg, p.Interface()); err != nil {
				return err
			}
			v.Set(p)
			return nil
		case collection(v.Type()):
			return decodeCollection(msg, v)
		}
	}
	err := json.Unmarshal(msg, dst)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		want := te.Type.String()
		switch te.Type.Kind() {
		case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64:
			want = "an integer"
		case reflect.String:
			want = "a string"
		case reflect.Bool:
			want = "a boolean"
		case reflect.Map, reflect.Struct:
			want = "an object"
		case reflect.Slice:
			want = "an array"
		}
		if te.Field != "" {
			return &FieldError{Path: te.Field, Err: fmt.Errorf("expected %s, got %s", want, describeJSON(te.Value, msg))}
		}
		return fmt.Errorf("expected %s, got %s", want, jsonKind(msg))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("malformed JSON: %s", se.Error())
	}
	return err
}

// collection reports whether decodeValue decodes t member by member.
func collection(t reflect.Type) bool {
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return false
	}
	switch t.Kind() {
	case reflect.Map:
		return t.Key().Kind() == reflect.String
	case reflect.Slice:
		return t.Elem().Kind() != reflect.Uint8
	}
	return false
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

func decodeCollection(msg json.RawMessage, v reflect.Value) error {
	member := func(path string, raw json.RawMessage) (reflect.Value, error) {
		e := reflect.New(v.Type().Elem())
		if string(raw) == "null" {
			return e, &FieldError{Path: path, Err: errors.New("null is not allowed")}
		}
		return e, at(path, decodeValue(raw, e.Interface()))
	}
	if v.Kind() == reflect.Map {
		raw, err := decodeObject(msg)
		if err != nil {
			return err
		}
		m := reflect.MakeMapWithSize(v.Type(), len(raw))
		for _, k := range sortedKeys(raw) {
			e, err := member(k, raw[k])
			if err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), e.Elem())
		}
		v.Set(m)
		return nil
	}
	raw, err := decodeArray(msg)
	if err != nil {
		return err
	}
	s := reflect.MakeSlice(v.Type(), len(raw), len(raw))
	for i, r := range raw {
		e, err := member("["+itoa(i)+"]", r)
		if err != nil {
			return err
		}
		s.Index(i).Set(e.Elem())
	}
	v.Set(s)
	return nil
}

func describeJSON(kind string, msg json.RawMessage) string {
	s := string(msg)
	if len(s) > 24 {
		s = s[:24] + "…"
	}
	if kind == "number" || strings.HasPrefix(kind, "number") {
		return "number " + s
	}
	return kind
}

func jsonKind(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "nothing"
	}
	switch c := b[0]; {
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || c >= '0' && c <= '9':
		s := string(b)
		if len(s) > 24 {
			s = s[:24] + "…"
		}
		return "number " + s
	}
	return "invalid JSON"
}

func jsonSyntax(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s (at byte %d)", se.Error(), se.Offset)
	}
	if errors.Is(err, ioEOF) {
		return "unexpected end of input"
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return "expected a JSON object"
	}
	return err.Error()
}

func unquote(b []byte) (string, error) {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return "", fmt.Errorf("malformed string: %w", err)
	}
	return s, nil
}

// decodeObject decodes a JSON object into map[string]json.RawMessage with
// clear errors; used by map types that need their keys in error paths.
func decodeObject(b []byte) (map[string]json.RawMessage, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return nil, fmt.Errorf("expected an object, got %s", jsonKind(b))
	}
	return objectMembers(b)
}

func decodeArray(b []byte) ([]json.RawMessage, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '[' {
		return nil, fmt.Errorf("expected an array, got %s", jsonKind(b))
	}
	var a []json.RawMessage
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("malformed JSON: %s", jsonSyntax(err))
	}
	return a, nil
}

// UnmarshalJSON decodes unit → amount, naming the unit in errors.
func (m *Amounts) UnmarshalJSON(b []byte) error {
	if out, ok := fastAmounts(b); ok {
		*m = out
		return nil
	}
	raw, err := decodeObject(b)
	if err != nil {
		return err
	}
	out := make(Amounts, len(raw))
	for _, unit := range sortedKeys(raw) {
		if err := ValidateUnit(unit); err != nil {
			return &FieldError{Path: unit, Err: err}
		}
		a, err := decodeAmountJSON(raw[unit], false, false)
		if err != nil {
			return &FieldError{Path: unit, Err: err}
		}
		out[unit] = a
	}
	*m = out
	return nil
}

func sortedKeys[K ~string, V any](m map[K]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, string(k))
	}
	sortStrings(keys)
	return keys
}

func itoa(i int) string { return strconv.Itoa(i) }

// decodeFieldsInto is decodeFields for a pointer to a struct.
func decodeFieldsInto(raw map[string]json.RawMessage, dst any) error {
	return decodeFields(raw, reflect.ValueOf(dst).Elem())
}

func asFieldError(err error, target **FieldError) bool { return errors.As(err, target) }

// Package wire decodes the JSON bodies that reach the service, over HTTP or
// Redis: one JSON object, no field given twice, no trailing data, the right
// types. HTTP bodies are read strictly (no unknown fields); messages from
// other services tolerantly (unknown fields ignored). Its errors name the
// field at fault.
package wire

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"iter"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// FieldError says which field of a body is wrong, and how.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + " " + e.Reason }

// Decode reads exactly one JSON object from data into v. A field given twice
// is refused rather than silently taking the last value, and so is null in
// place of the object, and so is a field v does not have. Names must be v's
// exactly, and the body valid UTF-8: encoding/json would match "SKU" to
// "sku" and read bad bytes as U+FFFD without a word.
func Decode(data []byte, v any) error { return decode(data, v, true) }

// DecodeTolerant is Decode ignoring the fields v does not have, for messages
// from other services: a sender may add fields without breaking this reader
// (a tolerant reader). Everything else is refused as by Decode, except that
// names are matched as encoding/json matches them.
func DecodeTolerant(data []byte, v any) error { return decode(data, v, false) }

func decode(data []byte, v any, strict bool) error {
	trimmed := bytes.TrimSpace(data)
	switch {
	case len(trimmed) == 0:
		return &FieldError{Field: "body", Reason: "is empty: want a JSON object"}
	case bytes.Equal(trimmed, []byte("null")) || trimmed[0] != '{':
		return &FieldError{Field: "body", Reason: "must be a JSON object"}
	}
	// json.Unmarshal decodes a good body without a Decoder's buffers (a
	// tenth of what an inbound message allocates), and what it lets
	// through is checked on the bytes after, in one walk of the keys; a
	// bad body is decoded again by the Decoder below, whose errors say more.
	if json.Unmarshal(trimmed, v) == nil {
		if !strict {
			return checkKeys(trimmed, nil)
		}
		if !utf8.Valid(trimmed) {
			if err := exactly(trimmed, v); err != nil {
				return err
			}
		}
		return checkKeys(trimmed, jsonFields(v))
	}
	if strict {
		if err := exactly(trimmed, v); err != nil {
			return err
		}
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return explain(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &FieldError{Field: "body", Reason: "has data after the JSON object"}
	}
	return checkKeys(trimmed, nil)
}

// exactly refuses what encoding/json lets through without a word: bytes
// that are not UTF-8, and field names that differ from v's only in case
// ("OrderID", "SKU"). It walks the body with a Decoder to name the field
// at fault; a well-formed body of valid UTF-8, the usual one, has its names
// checked by checkKeys instead. A body that is not a well-formed object
// passes unchecked: the Decoder after says what is wrong with it.
func exactly(obj []byte, v any) error {
	known := jsonFields(v)
	dec := json.NewDecoder(bytes.NewReader(obj))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	for dec.More() {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		name, _ := tok.(string)
		if !utf8.Valid(obj[start:dec.InputOffset()]) {
			return &FieldError{Field: "body", Reason: "has a field name that is not valid UTF-8"}
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil
		}
		if !slices.Contains(known, name) {
			return &FieldError{Field: name, Reason: "is not a known field (names are matched exactly)"}
		}
		if !utf8.Valid(value) {
			return &FieldError{Field: name, Reason: "is not valid UTF-8"}
		}
	}
	return nil
}

// fieldNames caches jsonFields by type: a request's body type is one of a
// few.
var fieldNames sync.Map // reflect.Type -> []string

// jsonFields returns the JSON names of the fields of the struct v points to.
func jsonFields(v any) []string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if names, ok := fieldNames.Load(t); ok {
		return names.([]string)
	}
	var names []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		if name != "-" && f.IsExported() {
			names = append(names, name)
		}
	}
	fieldNames.Store(t, names)
	return names
}

// checkKeys checks the top-level keys of obj, a JSON object the decoder
// accepted, in one walk: each is one of known, matched exactly, unless
// known is nil (a tolerant reader); and none is given twice, compared
// without case, as encoding/json matches them. An unknown name is reported
// before a repeated one.
func checkKeys(obj []byte, known []string) error {
	var keys []string
	var repeated error // the first key given twice, or that cannot be read
	for raw := range topLevelKeys(obj) {
		key, err := unquote(raw)
		if err != nil {
			repeated = cmp.Or(repeated, explain(err))
			continue
		}
		if known != nil && !slices.Contains(known, key) {
			return &FieldError{Field: key, Reason: "is not a known field (names are matched exactly)"}
		}
		for _, k := range keys {
			if repeated == nil && strings.EqualFold(k, key) {
				repeated = &FieldError{Field: key, Reason: "is given more than once"}
			}
		}
		keys = append(keys, key)
	}
	return repeated
}

// topLevelKeys yields the keys of the outer object obj as they are
// written, quotes included. It walks the bytes instead of decoding them:
// only the keys of the outer object matter, and a body has few.
func topLevelKeys(obj []byte) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		depth, expectKey := 0, false
		for i := 0; i < len(obj); i++ {
			switch obj[i] {
			case '{', '[':
				depth++
				expectKey = depth == 1
			case '}', ']':
				depth--
			case ',':
				expectKey = depth == 1
			case '"':
				end := closingQuote(obj, i)
				if expectKey {
					if !yield(obj[i : end+1]) {
						return
					}
					expectKey = false
				}
				i = end
			}
		}
	}
}

// unquote is the string a JSON string literal stands for; without escapes
// (and in valid UTF-8), the bytes between its quotes.
func unquote(raw []byte) (string, error) {
	if len(raw) >= 2 && bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

// closingQuote is the index of the quote that ends the string opening at
// data[open], escapes skipped.
func closingQuote(data []byte, open int) int {
	for i := open + 1; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return len(data) - 1
}

func explain(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return &FieldError{Field: "body", Reason: "is not valid JSON: " + err.Error()}
	case errors.As(err, &typ):
		if typ.Field == "" {
			return &FieldError{Field: "body", Reason: "must be a JSON object"}
		}
		return &FieldError{Field: typ.Field, Reason: "must be " + describe(typ.Type.String())}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &FieldError{Field: name, Reason: "is not a known field"}
	}
	return &FieldError{Field: "body", Reason: "cannot be decoded: " + err.Error()}
}

func describe(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "int":
		return "an integer"
	case "string":
		return "a string"
	}
	return "of type " + goType
}

// Required returns a FieldError for the first field whose value is missing.
// Fields are given as name, present pairs in the order of the body.
func Required(fields ...Field) error {
	for _, f := range fields {
		if !f.Present {
			return &FieldError{Field: f.Name, Reason: "is required"}
		}
	}
	return nil
}

// Field names a field and says whether the body had it.
type Field struct {
	Name    string
	Present bool
}

// Has is a shorthand for Field{name, p != nil}.
func Has[T any](name string, p *T) Field { return Field{Name: name, Present: p != nil} }

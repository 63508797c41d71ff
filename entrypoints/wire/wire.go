// Package wire decodes the JSON bodies that reach the service, over HTTP or
// Redis: one JSON object, no field given twice, no trailing data, the right
// types. HTTP bodies are read strictly (no unknown fields); messages from
// other services tolerantly (unknown fields ignored). Its errors name the
// field at fault.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
)

// FieldError says which field of a body is wrong, and how.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + " " + e.Reason }

// Decode reads exactly one JSON object from data into v. A field given twice
// is refused rather than silently taking the last value, and so is null in
// place of the object, and so is a field v does not have.
func Decode(data []byte, v any) error { return decode(data, v, true) }

// DecodeTolerant is Decode ignoring the fields v does not have, for messages
// from other services: a sender may add fields without breaking this reader
// (a tolerant reader). Everything else is refused as by Decode.
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
	// tenth of what an inbound message allocates); a bad one is decoded
	// again by the Decoder below, whose errors say more.
	if !strict && json.Unmarshal(trimmed, v) == nil {
		return noDuplicateFields(trimmed)
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
	return noDuplicateFields(trimmed)
}

// noDuplicateFields checks the top-level keys of obj, a JSON object the
// decoder accepted. Keys are compared without case, as encoding/json
// matches them. It walks the bytes instead of decoding them again: only
// the keys of the outer object matter, and a body has few.
func noDuplicateFields(obj []byte) error {
	var keys []string
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
				var key string
				if err := json.Unmarshal(obj[i:end+1], &key); err != nil {
					return explain(err)
				}
				for _, k := range keys {
					if strings.EqualFold(k, key) {
						return &FieldError{Field: key, Reason: "is given more than once"}
					}
				}
				keys = append(keys, key)
				expectKey = false
			}
			i = end
		}
	}
	return nil
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

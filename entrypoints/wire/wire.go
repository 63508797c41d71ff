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
	if err := noDuplicateFields(data); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return explain(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &FieldError{Field: "body", Reason: "has data after the JSON object"}
	}
	return nil
}

// noDuplicateFields checks the top-level keys of a JSON object. Keys are
// compared without case, as encoding/json matches them.
func noDuplicateFields(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // the opening brace
		return explain(err)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return explain(err)
		}
		key, _ := tok.(string)
		if seen[strings.ToLower(key)] {
			return &FieldError{Field: key, Reason: "is given more than once"}
		}
		seen[strings.ToLower(key)] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return explain(err)
		}
	}
	return nil
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

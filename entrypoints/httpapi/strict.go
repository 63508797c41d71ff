package httpapi

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"allocation/entrypoints/wire"
)

// exactly refuses what encoding/json lets through without a word: bytes
// that are not UTF-8, which it reads as U+FFFD before any check of ours can
// see them, and field names that differ from v's only in case ("OrderID",
// "SKU"), which it matches anyway. The contract (openapi.json) names each
// field exactly and allows no other. A body that is not a well-formed
// object passes unchecked: wire.Decode says what is wrong with it.
func exactly(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	known := jsonFields(v)
	for dec.More() {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		name, _ := tok.(string)
		if !utf8.Valid(body[start:dec.InputOffset()]) {
			return &wire.FieldError{Field: "body", Reason: "has a field name that is not valid UTF-8"}
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil
		}
		if !slices.Contains(known, name) {
			return &wire.FieldError{Field: name, Reason: "is not a known field (names are matched exactly)"}
		}
		if !utf8.Valid(value) {
			return &wire.FieldError{Field: name, Reason: "is not valid UTF-8"}
		}
	}
	return nil
}

// jsonFields returns the JSON names of the fields of the struct v points to.
func jsonFields(v any) []string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
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
	return names
}

// Package domain holds the allocation model: products, their batches of stock,
// the order lines allocated to them, and the commands and events about them.
// It is plain Go: no storage, no transport, no clock.
package domain

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits of what the model accepts; the schema stores no more than this.
const (
	MaxReferenceLength = 255
	MaxQuantity        = 1_000_000_000
	// An ETA outside these years is a typo, not a shipment.
	MinETAYear = 1900
	MaxETAYear = 9999
)

var (
	// ErrInvalidSKU: a line names a SKU the service holds no stock for.
	ErrInvalidSKU = errors.New("invalid sku")
	// ErrUnknownBatch: a batch reference that no product holds.
	ErrUnknownBatch = errors.New("unknown batch")
	// ErrBatchExists: a batch reference already stands for other values.
	ErrBatchExists = errors.New("batch already exists with other values")
	// ErrInvalid is wrapped by every ValidationError.
	ErrInvalid = errors.New("invalid value")
)

// IsRefusal reports whether err is the model refusing a request (an unknown
// SKU or batch, a conflicting batch, an invalid value): asking again with the
// same values gets the same answer.
func IsRefusal(err error) bool {
	return errors.Is(err, ErrInvalidSKU) || errors.Is(err, ErrUnknownBatch) || errors.Is(err, ErrBatchExists) || errors.Is(err, ErrInvalid)
}

// InvalidSKUError names the SKU that was not found. Its message is the one the
// book's API returns: "Invalid sku X".
type InvalidSKUError struct{ SKU string }

func (e *InvalidSKUError) Error() string { return "Invalid sku " + e.SKU }
func (e *InvalidSKUError) Unwrap() error { return ErrInvalidSKU }

// ValidationError says which field holds a value the model refuses, and why.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string { return fmt.Sprintf("%s %s", e.Field, e.Reason) }
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// CheckReference applies the rules every reference, SKU and id obeys: 1 to
// MaxReferenceLength bytes of UTF-8 text without NUL characters (which
// storage cannot keep).
func CheckReference(field, value string) error {
	switch {
	case value == "" || len(value) > MaxReferenceLength:
		return &ValidationError{Field: field, Reason: fmt.Sprintf("must be 1 to %d bytes", MaxReferenceLength)}
	case !utf8.ValidString(value) || strings.ContainsRune(value, 0):
		return &ValidationError{Field: field, Reason: "must be UTF-8 text without NUL characters"}
	}
	return nil
}

func validateReference(field, value string) error { return CheckReference(field, value) }

func validateQuantity(field string, qty, min int) error {
	if qty < min || qty > MaxQuantity {
		return &ValidationError{Field: field, Reason: fmt.Sprintf("must be between %d and %d", min, MaxQuantity)}
	}
	return nil
}

// Package domain holds the allocation model: products, their batches of stock,
// the order lines allocated to them, and the commands and events about them.
// It is plain Go: no storage, no transport, no clock.
package domain

import (
	"errors"
	"fmt"
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

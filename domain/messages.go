package domain

import "time"

// Message is anything the message bus carries. Name is stable: it is used in
// logs, in the event log and on the wire.
type Message interface {
	Name() string
}

// Command asks the service to do one thing; it has exactly one handler.
type Command interface {
	Message
	isCommand()
}

// Event says that something happened; it has any number of handlers.
type Event interface {
	Message
	// ProductSKU names the aggregate the event is about; events of one
	// product are handled in the order they happened.
	ProductSKU() string
	isEvent()
}

// CreateBatch adds a batch of stock. A zero ETA means it is in the warehouse.
type CreateBatch struct {
	Ref string
	SKU string
	Qty int
	ETA time.Time
}

// Allocate asks for an order line to be allocated to a batch.
type Allocate struct {
	OrderID string
	SKU     string
	Qty     int
}

// ChangeBatchQuantity corrects the purchased quantity of a batch.
type ChangeBatchQuantity struct {
	Ref string
	Qty int
}

func (CreateBatch) Name() string         { return "create_batch" }
func (Allocate) Name() string            { return "allocate" }
func (ChangeBatchQuantity) Name() string { return "change_batch_quantity" }
func (CreateBatch) isCommand()           {}
func (Allocate) isCommand()              {}
func (ChangeBatchQuantity) isCommand()   {}

// Allocated: a line was allocated to a batch.
type Allocated struct {
	OrderID  string
	SKU      string
	Qty      int
	BatchRef string
}

// Deallocated: a line lost its batch and needs allocating again. BatchRef
// is the batch it left.
type Deallocated struct {
	OrderID  string
	SKU      string
	Qty      int
	BatchRef string
}

// OutOfStock: no batch could take a line of this SKU.
type OutOfStock struct {
	SKU string
}

// BatchCreated: a batch of stock was added. It is on record only (the
// event log is the history of stock); nothing handles it.
type BatchCreated struct {
	Ref string
	SKU string
	Qty int
	ETA time.Time // zero: in the warehouse
}

// BatchQuantityChanged: the purchased quantity of a batch was corrected from
// OldQty to Qty. On record only, like BatchCreated; the lines it deallocates
// follow as Deallocated events.
type BatchQuantityChanged struct {
	Ref    string
	SKU    string
	OldQty int
	Qty    int
}

func (Allocated) Name() string                    { return "allocated" }
func (Deallocated) Name() string                  { return "deallocated" }
func (OutOfStock) Name() string                   { return "out_of_stock" }
func (e Allocated) ProductSKU() string            { return e.SKU }
func (e Deallocated) ProductSKU() string          { return e.SKU }
func (e OutOfStock) ProductSKU() string           { return e.SKU }
func (BatchCreated) Name() string                 { return "batch_created" }
func (BatchQuantityChanged) Name() string         { return "batch_quantity_changed" }
func (e BatchCreated) ProductSKU() string         { return e.SKU }
func (e BatchQuantityChanged) ProductSKU() string { return e.SKU }
func (BatchCreated) isEvent()                     {}
func (BatchQuantityChanged) isEvent()             {}
func (Allocated) isEvent()                        {}
func (Deallocated) isEvent()                      {}
func (OutOfStock) isEvent()                       {}

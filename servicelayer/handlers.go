package servicelayer

import (
	"context"
	"fmt"

	"allocation/domain"
)

// StockDesk is who hears about products running out of stock.
const StockDesk = "stock@made.com"

type handlers struct {
	publisher Publisher
	notifier  Notifier
}

func (h handlers) createBatch(ctx context.Context, uow commandUnit, cmd domain.CreateBatch) (Result, []Delivery, error) {
	batch, err := domain.NewBatch(cmd.Ref, cmd.SKU, cmd.Qty, cmd.ETA)
	if err != nil {
		return Result{}, nil, err
	}
	queued, err := uow.Do(ctx, func(tx Tx) error {
		owner, err := tx.Products().GetByBatchRef(ctx, cmd.Ref)
		if err != nil {
			return err
		}
		if owner != nil && owner.SKU() != cmd.SKU {
			return fmt.Errorf("batch %s belongs to %s: %w", cmd.Ref, owner.SKU(), domain.ErrBatchExists)
		}
		product := owner
		if product == nil {
			if product, err = tx.Products().GetBatches(ctx, cmd.SKU); err != nil {
				return err
			}
		}
		if product == nil {
			if product, err = domain.NewProduct(cmd.SKU); err != nil {
				return err
			}
			if err := tx.Products().Add(ctx, product); err != nil {
				return err
			}
		}
		return product.AddBatch(batch)
	})
	return Result{}, queued, err
}

func (h handlers) allocate(ctx context.Context, uow commandUnit, cmd domain.Allocate) (Result, []Delivery, error) {
	line, err := domain.NewOrderLine(cmd.OrderID, cmd.SKU, cmd.Qty)
	if err != nil {
		return Result{}, nil, err
	}
	var ref string
	queued, err := uow.Do(ctx, func(tx Tx) error {
		ref, err = allocate(ctx, tx, line)
		return err
	})
	return Result{BatchRef: ref}, queued, err
}

func allocate(ctx context.Context, tx Tx, line domain.OrderLine) (string, error) {
	product, err := tx.Products().GetForLine(ctx, line)
	if err != nil {
		return "", err
	}
	if product == nil {
		return "", &domain.InvalidSKUError{SKU: line.SKU}
	}
	return product.Allocate(line)
}

func (h handlers) changeBatchQuantity(ctx context.Context, uow commandUnit, cmd domain.ChangeBatchQuantity) (Result, []Delivery, error) {
	queued, err := uow.Do(ctx, func(tx Tx) error {
		product, err := tx.Products().GetForQuantityChange(ctx, cmd.Ref, cmd.Qty)
		if err != nil {
			return err
		}
		if product == nil {
			return fmt.Errorf("batch %s: %w", cmd.Ref, domain.ErrUnknownBatch)
		}
		return product.ChangeBatchQuantity(cmd.Ref, cmd.Qty)
	})
	return Result{}, queued, err
}

// reallocate gives a deallocated line a new batch, as if it were ordered
// again. A redelivery finds the line allocated already and changes nothing.
// A line the domain refuses (its product is gone) is refused every time: that
// is a permanent failure, parked for an operator.
func (h handlers) reallocate(ctx context.Context, tx Tx, ev domain.Deallocated, _ Envelope) error {
	_, err := allocate(ctx, tx, domain.OrderLine{OrderID: ev.OrderID, SKU: ev.SKU, Qty: ev.Qty})
	if domain.IsRefusal(err) {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	return err
}

// publishEvent keeps the event's message id, so that a receiver can
// recognise a redelivery.
func (h handlers) publishEvent(ctx context.Context, _ Tx, env Envelope) error {
	return h.publisher.Publish(ctx, env)
}

// publishEvents publishes a backlog of one product in order, at once.
func (h handlers) publishEvents(ctx context.Context, envs []Envelope) error {
	return h.publisher.PublishBatch(ctx, envs)
}

func (h handlers) sendOutOfStockNotification(ctx context.Context, _ Tx, ev domain.OutOfStock, _ Envelope) error {
	return h.notifier.Send(ctx, StockDesk, "Out of stock for "+ev.SKU)
}

// ViewChange is how an event moves one line in the allocations view (the
// read side): to BatchRef, or out of the view when BatchRef is "".
type ViewChange struct {
	Line     domain.OrderLine
	BatchRef string
}

// AllocationsViewChange says how ev changes the allocations view; ok is
// false for an event that does not. Every store applies it to the events of
// a unit of work in the same commit, so that no handler can forget the view.
func AllocationsViewChange(ev domain.Event) (change ViewChange, ok bool) {
	switch e := ev.(type) {
	case domain.Allocated:
		return ViewChange{Line: domain.OrderLine{OrderID: e.OrderID, SKU: e.SKU, Qty: e.Qty}, BatchRef: e.BatchRef}, true
	case domain.Deallocated:
		return ViewChange{Line: domain.OrderLine{OrderID: e.OrderID, SKU: e.SKU, Qty: e.Qty}}, true
	}
	return ViewChange{}, false
}

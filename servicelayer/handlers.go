package servicelayer

import (
	"context"
	"fmt"

	"allocation/domain"
)

// StockDesk is who hears about products running out of stock.
const StockDesk = "stock@made.com"

type handlers struct {
	uow       UnitOfWork
	publisher Publisher
	notifier  Notifier
}

func (h handlers) createBatch(ctx context.Context, cmd domain.CreateBatch) (Result, []domain.Event, error) {
	batch, err := domain.NewBatch(cmd.Ref, cmd.SKU, cmd.Qty, cmd.ETA)
	if err != nil {
		return Result{}, nil, err
	}
	events, err := h.uow.Do(ctx, func(tx Tx) error {
		owner, err := tx.Products().GetByBatchRef(ctx, cmd.Ref)
		if err != nil {
			return err
		}
		if owner != nil && owner.SKU() != cmd.SKU {
			return fmt.Errorf("batch %s belongs to %s: %w", cmd.Ref, owner.SKU(), domain.ErrBatchExists)
		}
		product := owner
		if product == nil {
			if product, err = tx.Products().Get(ctx, cmd.SKU); err != nil {
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
	return Result{}, events, err
}

func (h handlers) allocate(ctx context.Context, cmd domain.Allocate) (Result, []domain.Event, error) {
	line, err := domain.NewOrderLine(cmd.OrderID, cmd.SKU, cmd.Qty)
	if err != nil {
		return Result{}, nil, err
	}
	var ref string
	events, err := h.uow.Do(ctx, func(tx Tx) error {
		product, err := tx.Products().Get(ctx, line.SKU)
		if err != nil {
			return err
		}
		if product == nil {
			return &domain.InvalidSKUError{SKU: line.SKU}
		}
		ref, err = product.Allocate(line)
		return err
	})
	return Result{BatchRef: ref}, events, err
}

func (h handlers) changeBatchQuantity(ctx context.Context, cmd domain.ChangeBatchQuantity) (Result, []domain.Event, error) {
	events, err := h.uow.Do(ctx, func(tx Tx) error {
		product, err := tx.Products().GetByBatchRef(ctx, cmd.Ref)
		if err != nil {
			return err
		}
		if product == nil {
			return fmt.Errorf("batch %s: %w", cmd.Ref, domain.ErrUnknownBatch)
		}
		return product.ChangeBatchQuantity(cmd.Ref, cmd.Qty)
	})
	return Result{}, events, err
}

// reallocate gives a deallocated line a new batch, as if it were ordered again.
func (h handlers) reallocate(ctx context.Context, ev domain.Deallocated, _ Envelope) ([]domain.Event, error) {
	_, events, err := h.allocate(ctx, domain.Allocate{OrderID: ev.OrderID, SKU: ev.SKU, Qty: ev.Qty})
	return events, err
}

func (h handlers) addAllocationToReadModel(ctx context.Context, ev domain.Allocated, _ Envelope) ([]domain.Event, error) {
	line := domain.OrderLine{OrderID: ev.OrderID, SKU: ev.SKU, Qty: ev.Qty}
	return h.uow.Do(ctx, func(tx Tx) error {
		return tx.Allocations().Add(ctx, line, ev.BatchRef)
	})
}

func (h handlers) removeAllocationFromReadModel(ctx context.Context, ev domain.Deallocated, _ Envelope) ([]domain.Event, error) {
	line := domain.OrderLine{OrderID: ev.OrderID, SKU: ev.SKU, Qty: ev.Qty}
	return h.uow.Do(ctx, func(tx Tx) error {
		return tx.Allocations().Remove(ctx, line)
	})
}

func (h handlers) publishAllocatedEvent(ctx context.Context, _ domain.Allocated, env Envelope) ([]domain.Event, error) {
	return nil, h.publisher.Publish(ctx, env)
}

func (h handlers) sendOutOfStockNotification(ctx context.Context, ev domain.OutOfStock, _ Envelope) ([]domain.Event, error) {
	return nil, h.notifier.Send(ctx, StockDesk, "Out of stock for "+ev.SKU)
}

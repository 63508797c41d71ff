package storetest

import (
	"context"
	"testing"
	"time"

	"allocation/domain"
	"allocation/servicelayer"
)

// AddStock commits a new product sku with one batch.
func AddStock(t *testing.T, s Store, sku, ref string, qty int, eta time.Time) {
	t.Helper()
	ctx := context.Background()
	_, err := s.Do(ctx, func(tx servicelayer.Tx) error {
		p, err := domain.NewProduct(sku)
		if err != nil {
			return err
		}
		if err := tx.Products().Add(ctx, p); err != nil {
			return err
		}
		b, err := domain.NewBatch(ref, sku, qty, eta)
		if err != nil {
			return err
		}
		return p.AddBatch(b)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Allocate commits line's allocation and returns the deliveries queued.
func Allocate(t *testing.T, s Store, line domain.OrderLine) []servicelayer.Delivery {
	t.Helper()
	queued, err := allocateQueued(s, line)
	if err != nil {
		t.Fatal(err)
	}
	return queued
}

func allocate(s Store, line domain.OrderLine) error {
	_, err := allocateQueued(s, line)
	return err
}

func allocateQueued(s Store, line domain.OrderLine) ([]servicelayer.Delivery, error) {
	ctx := context.Background()
	return s.Do(ctx, func(tx servicelayer.Tx) error {
		p, err := tx.Products().GetForLine(ctx, line)
		if err != nil {
			return err
		}
		_, err = p.Allocate(line)
		return err
	})
}

// allocateInOneWrite allocates a line of one unit of sku to each order in
// one unit of work, and returns the deliveries it queued: one publication
// for each, in order, first in line.
func allocateInOneWrite(t *testing.T, s Store, sku string, orders ...string) []servicelayer.Delivery {
	t.Helper()
	ctx := context.Background()
	queued, err := s.Do(ctx, func(tx servicelayer.Tx) error {
		p, err := tx.Products().Get(ctx, sku)
		if err != nil {
			return err
		}
		for _, id := range orders {
			if _, err := p.Allocate(domain.OrderLine{OrderID: id, SKU: sku, Qty: 1}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return queued
}

// deliver completes d as the dispatcher would (not in turn: claimed first),
// with a handler that changes nothing.
func deliver(s Store, d servicelayer.Delivery) error {
	_, err := s.Deliver(context.Background(), servicelayer.Delivery{Envelope: d.Envelope, Handler: d.Handler},
		func(servicelayer.Tx) error { return nil })
	return err
}

// product reads the committed product of sku with every line, or nil.
func product(t *testing.T, s Store, sku string) *domain.Product {
	t.Helper()
	var p *domain.Product
	_, err := s.Do(context.Background(), func(tx servicelayer.Tx) error {
		var err error
		p, err = tx.Products().Get(context.Background(), sku)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// twins opens a store and a second one on its data, or skips, saying why,
// for an implementation that lives in one process only.
func twins(t *testing.T, setup Setup) (Store, Store) {
	t.Helper()
	if setup.Twin == nil {
		t.Skip("this store lives in one process: no other writer can move a product underneath it")
	}
	s := setup.New(t)
	return s, setup.Twin(t, s)
}

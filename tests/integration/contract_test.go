package integration_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"allocation/adapters/memory"
	"allocation/domain"
	"allocation/servicelayer"
)

// store is one implementation of the service layer's storage ports.
type store interface {
	servicelayer.UnitOfWork
	// Do and Deliver are pieces of work of their own.
	Do(ctx context.Context, fn func(tx servicelayer.Tx) error) ([]servicelayer.Delivery, error)
	Deliver(ctx context.Context, d servicelayer.Delivery, fn func(tx servicelayer.Tx) error) ([]servicelayer.Delivery, error)
	servicelayer.EventLog
	servicelayer.History
	Allocations(ctx context.Context, orderID string) ([]servicelayer.Allocation, error)
}

// stores are every implementation the contract runs against.
func stores(t *testing.T) map[string]func(t *testing.T) store {
	return map[string]func(t *testing.T) store{
		"memory":   func(t *testing.T) store { return memory.NewStore() },
		"postgres": func(t *testing.T) store { return newOutbox(t, freshPG).uow },
		"sqlite":   func(t *testing.T) store { return newOutbox(t, freshSQLite).uow },
	}
}

// One table of cases, run against every store, so that the in-memory fake
// the unit tests use can never drift from the real thing.
func TestContractOfTheStorageAdapters(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		run  func(t *testing.T, s store)
	}{
		{"an unknown product is nil, not an error", func(t *testing.T, s store) {
			_, err := s.Do(ctx, func(tx servicelayer.Tx) error {
				for _, get := range []func() (*domain.Product, error){
					func() (*domain.Product, error) { return tx.Products().Get(ctx, "nope") },
					func() (*domain.Product, error) { return tx.Products().GetByBatchRef(ctx, "nope") },
					func() (*domain.Product, error) {
						return tx.Products().GetForLine(ctx, domain.OrderLine{OrderID: "o", SKU: "nope", Qty: 1})
					},
				} {
					if p, err := get(); p != nil || err != nil {
						t.Errorf("got %v, %v", p, err)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}},
		{"a committed product comes back with its batches and lines", func(t *testing.T, s store) {
			addStock(t, s, "LAMP", "b1", 10, time.Date(2031, 2, 3, 0, 0, 0, 0, time.UTC))
			allocate(t, s, domain.OrderLine{OrderID: "o1", SKU: "LAMP", Qty: 3})
			_, err := s.Do(ctx, func(tx servicelayer.Tx) error {
				p, err := tx.Products().GetByBatchRef(ctx, "b1")
				if err != nil {
					return err
				}
				b := p.Batch("b1")
				if !b.ETA().Equal(time.Date(2031, 2, 3, 0, 0, 0, 0, time.UTC)) || b.AvailableQty() != 7 ||
					!slices.Equal(b.Lines(), []domain.OrderLine{{OrderID: "o1", SKU: "LAMP", Qty: 3}}) || p.Version() != 2 {
					t.Errorf("batch %s: eta %v, available %d, lines %v, version %d", b.Ref(), b.ETA(), b.AvailableQty(), b.Lines(), p.Version())
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}},
		{"a failed unit of work leaves nothing behind and logs no event", func(t *testing.T, s store) {
			boom := errors.New("boom")
			events, err := s.Do(ctx, func(tx servicelayer.Tx) error {
				p, _ := domain.NewProduct("GONE")
				if err := tx.Products().Add(ctx, p); err != nil {
					return err
				}
				b, _ := domain.NewBatch("g1", "GONE", 5, time.Time{})
				_ = p.AddBatch(b)
				_, _ = p.Allocate(domain.OrderLine{OrderID: "o", SKU: "GONE", Qty: 1})
				return boom
			})
			if !errors.Is(err, boom) || len(events) != 0 {
				t.Fatalf("got %v, %v", events, err)
			}
			if due, _ := s.Due(ctx, 10); len(due) != 0 {
				t.Fatalf("events of a rolled back change are due: %v", due)
			}
			_, _ = s.Do(ctx, func(tx servicelayer.Tx) error {
				if p, _ := tx.Products().Get(ctx, "GONE"); p != nil {
					t.Error("the product of a rolled back change exists")
				}
				return nil
			})
		}},
		{"events come back sealed with their ids and place in the log; the store projects the view", func(t *testing.T, s store) {
			addStock(t, s, "DESK", "d1", 10, time.Time{})
			events := allocate(t, s, domain.OrderLine{OrderID: "o1", SKU: "DESK", Qty: 2})
			if len(events) != 1 || events[0].MessageID == "" || events[0].LogID == 0 || events[0].OccurredAt.IsZero() {
				t.Fatalf("events %+v", events)
			}
			want := []servicelayer.Allocation{{SKU: "DESK", BatchRef: "d1"}}
			if rows, _ := s.Allocations(ctx, "o1"); !slices.Equal(rows, want) {
				t.Fatalf("view %v, want %v in the same commit", rows, want)
			}
		}},
		{"a delivery is done once, and waits for earlier events of its product", func(t *testing.T, s store) {
			addStock(t, s, "CHAIR", "c1", 10, time.Time{})
			first := allocate(t, s, domain.OrderLine{OrderID: "o1", SKU: "CHAIR", Qty: 1})[0]
			second := allocate(t, s, domain.OrderLine{OrderID: "o2", SKU: "CHAIR", Qty: 1})[0]
			publish := func(d servicelayer.Delivery) error {
				_, err := s.Deliver(ctx, servicelayer.Delivery{Envelope: d.Envelope, Handler: d.Handler}, func(servicelayer.Tx) error { return nil })
				return err
			}
			if err := publish(second); !errors.Is(err, servicelayer.ErrNotDelivered) {
				t.Fatalf("second before first: %v", err)
			}
			if err := publish(first); err != nil {
				t.Fatalf("first: %v", err)
			}
			if err := publish(first); !errors.Is(err, servicelayer.ErrNotDelivered) {
				t.Fatalf("first again: %v", err)
			}
			if err := publish(second); err != nil {
				t.Fatalf("second after first: %v", err)
			}
		}},
		{"a failed delivery falls due again later", func(t *testing.T, s store) {
			addStock(t, s, "FORK", "f1", 10, time.Time{})
			env := allocate(t, s, domain.OrderLine{OrderID: "o1", SKU: "FORK", Qty: 1})[0]
			d := servicelayer.Delivery{Envelope: env.Envelope, Handler: env.Handler}
			boom := errors.New("redis down")
			if _, err := s.Deliver(ctx, d, func(servicelayer.Tx) error { return boom }); !errors.Is(err, boom) {
				t.Fatalf("got %v", err)
			}
			next, err := s.NextDue(ctx)
			if err != nil || next.IsZero() {
				t.Fatalf("next due %v, %v", next, err)
			}
		}},
		{"an inbound message id is taken once", func(t *testing.T, s store) {
			for i, want := range []error{nil, servicelayer.ErrDuplicateMessage} {
				w := s.Begin()
				_, err := w.Do(ctx, "m-1", func(servicelayer.Tx) error { return nil })
				w.End()
				if !errors.Is(err, want) && !(want == nil && err == nil) {
					t.Fatalf("attempt %d: %v, want %v", i, err, want)
				}
			}
		}},
		{"the history holds every event, filtered and paged alike", func(t *testing.T, s store) {
			addStock(t, s, "SHELF", "s1", 10, time.Time{})
			addStock(t, s, "TABLE", "t1", 10, time.Time{})
			allocate(t, s, domain.OrderLine{OrderID: "o1", SKU: "SHELF", Qty: 3})
			allocate(t, s, domain.OrderLine{OrderID: "o1", SKU: "TABLE", Qty: 3})
			allocate(t, s, domain.OrderLine{OrderID: "o2", SKU: "SHELF", Qty: 30})
			for _, c := range []struct {
				q    servicelayer.EventQuery
				want []string
			}{
				{servicelayer.EventQuery{}, []string{"batch_created", "batch_created", "allocated", "allocated", "out_of_stock"}},
				{servicelayer.EventQuery{SKU: "SHELF"}, []string{"batch_created", "allocated", "out_of_stock"}},
				{servicelayer.EventQuery{OrderID: "o1", Limit: 1}, []string{"allocated"}},
				{servicelayer.EventQuery{BatchRef: "t1"}, []string{"batch_created", "allocated"}},
				{servicelayer.EventQuery{Type: "allocated", SKU: "TABLE"}, []string{"allocated"}},
				{servicelayer.EventQuery{OrderID: "o2"}, nil}, // out of stock names no order
			} {
				found, err := s.Events(ctx, c.q)
				var got []string
				for _, env := range found {
					got = append(got, env.Event.Name())
				}
				if err != nil || !slices.Equal(got, c.want) {
					t.Errorf("%+v: %v, %v; want %v", c.q, got, err, c.want)
				}
				if len(found) > 0 {
					rest, err := s.Events(ctx, servicelayer.EventQuery{SKU: c.q.SKU, OrderID: c.q.OrderID, BatchRef: c.q.BatchRef, Type: c.q.Type, After: found[0].LogID})
					if err != nil || len(rest) != len(c.want)-1 && c.q.Limit == 0 {
						t.Errorf("%+v after the first: %d events, %v; want %d", c.q, len(rest), err, len(c.want)-1)
					}
				}
			}
		}},
	}
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) { c.run(t, open(t)) })
			}
		})
	}
}

func addStock(t *testing.T, s store, sku, ref string, qty int, eta time.Time) {
	t.Helper()
	ctx := context.Background()
	_, err := s.Do(ctx, func(tx servicelayer.Tx) error {
		p, _ := domain.NewProduct(sku)
		if err := tx.Products().Add(ctx, p); err != nil {
			return err
		}
		b, _ := domain.NewBatch(ref, sku, qty, eta)
		return p.AddBatch(b)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func allocate(t *testing.T, s store, line domain.OrderLine) []servicelayer.Delivery {
	t.Helper()
	ctx := context.Background()
	events, err := s.Do(ctx, func(tx servicelayer.Tx) error {
		p, err := tx.Products().GetForLine(ctx, line)
		if err != nil {
			return err
		}
		_, err = p.Allocate(line)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return events
}

package integration_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"allocation/adapters/memory"
	"allocation/adapters/sqlstore"
	"allocation/domain"
	"allocation/servicelayer"
)

// A sequence is a few random commands on two products of its own.
type sequence struct {
	id       int
	skus     []string
	refs     []string
	commands []domain.Command
}

func randomSequence(id int, rng *rand.Rand) sequence {
	s := sequence{id: id}
	for i := range 2 {
		s.skus = append(s.skus, fmt.Sprintf("p%d-sku%d", id, i))
	}
	for i := range 4 {
		s.refs = append(s.refs, fmt.Sprintf("p%d-b%d", id, i))
	}
	orders := []string{"o0", "o1", "o2", "o3", "o4", "o5"}
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 4 + rng.IntN(10) {
		switch rng.IntN(10) {
		case 0, 1, 2:
			var eta time.Time
			if rng.IntN(2) == 0 {
				eta = base.AddDate(0, 0, rng.IntN(5))
			}
			s.commands = append(s.commands, domain.CreateBatch{
				Ref: s.refs[rng.IntN(len(s.refs))], SKU: s.skus[rng.IntN(len(s.skus))], Qty: rng.IntN(21), ETA: eta})
		case 3, 4, 5, 6, 7:
			sku := s.skus[rng.IntN(len(s.skus))]
			if rng.IntN(10) == 0 {
				sku = fmt.Sprintf("p%d-unknown", id)
			}
			s.commands = append(s.commands, domain.Allocate{OrderID: orders[rng.IntN(len(orders))], SKU: sku, Qty: 1 + rng.IntN(8)})
		default:
			s.commands = append(s.commands, domain.ChangeBatchQuantity{Ref: s.refs[rng.IntN(len(s.refs))], Qty: rng.IntN(21)})
		}
	}
	return s
}

// checkInvariants fails unless no batch is over-allocated, every line sits in
// at most one batch, and allocated quantities add up to the lines.
func checkInvariants(p *domain.Product) error {
	seen := map[domain.OrderLine]string{}
	for _, b := range p.Batches() {
		sum := 0
		for _, l := range b.Lines() {
			if other, ok := seen[l]; ok {
				return fmt.Errorf("line %+v in %s and %s", l, other, b.Ref())
			}
			seen[l] = b.Ref()
			sum += l.Qty
		}
		if sum != b.AllocatedQty() || b.AvailableQty() < 0 || b.AvailableQty() != b.PurchasedQty()-sum {
			return fmt.Errorf("batch %s: purchased %d, allocated %d, lines %d, available %d",
				b.Ref(), b.PurchasedQty(), b.AllocatedQty(), sum, b.AvailableQty())
		}
	}
	return nil
}

func describe(p *domain.Product) string {
	if p == nil {
		return "none"
	}
	out := ""
	for _, b := range p.Batches() {
		lines := b.Lines()
		slices.SortFunc(lines, func(a, b domain.OrderLine) int {
			return cmpLine(a, b)
		})
		out += fmt.Sprintf("[%s %s %d %s %v]", b.Ref(), b.SKU(), b.PurchasedQty(), b.ETA().Format("2006-01-02"), lines)
	}
	return out
}

func cmpLine(a, b domain.OrderLine) int {
	if a.OrderID != b.OrderID {
		if a.OrderID < b.OrderID {
			return -1
		}
		return 1
	}
	return a.Qty - b.Qty
}

// Thousands of random command sequences: after every step the invariants
// hold, and the service on each SQL database ends in the same state as the
// in-memory model, answering every command the same way.
func TestPropertyServiceAndInMemoryModelAgree(t *testing.T) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("PROPERTY_SEQUENCES")); err == nil {
		n = v
	}
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("PROPERTY_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("%d sequences, PROPERTY_SEED=%d", n, seed)
	onEveryEngine(t, func(t *testing.T, open opener) {
		db := open(t)
		uow := db.store
		sqlBus := servicelayer.NewBus(servicelayer.Dependencies{UoW: uow, Publisher: &recordingPublisher{}, Notifier: nopNotifier{}})
		ctx := context.Background()

		work := make(chan int)
		var wg sync.WaitGroup
		for range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for id := range work {
					rng := rand.New(rand.NewPCG(seed, uint64(id)))
					if err := runSequence(ctx, randomSequence(id, rng), sqlBus, uow); err != nil {
						t.Errorf("sequence %d (PROPERTY_SEED=%d): %v", id, seed, err)
					}
				}
			}()
		}
		for id := range n {
			if t.Failed() {
				break
			}
			work <- id
		}
		close(work)
		wg.Wait()
	})
}

func runSequence(ctx context.Context, s sequence, sqlBus *servicelayer.Bus, uow *sqlstore.Store) error {
	store := memory.NewStore()
	memBus := servicelayer.NewBus(servicelayer.Dependencies{UoW: store, Publisher: &recordingPublisher{}, Notifier: nopNotifier{}})
	for step, cmd := range s.commands {
		memRes, memErr := memBus.Handle(ctx, cmd)
		sqlRes, sqlErr := sqlBus.Handle(ctx, cmd)
		if (memErr == nil) != (sqlErr == nil) || memRes != sqlRes {
			return fmt.Errorf("step %d %+v: memory %+v, %v; sql %+v, %v (commands %+v)", step, cmd, memRes, memErr, sqlRes, sqlErr, s.commands)
		}
		for _, sku := range s.skus {
			if p := store.Product(sku); p != nil {
				if err := checkInvariants(p); err != nil {
					return fmt.Errorf("after step %d %+v: %w", step, cmd, err)
				}
			}
		}
	}
	for _, sku := range s.skus {
		var stored *domain.Product
		if _, err := uow.Do(ctx, func(tx servicelayer.Tx) error {
			var err error
			stored, err = tx.Products().Get(ctx, sku)
			return err
		}); err != nil {
			return err
		}
		if got, want := describe(stored), describe(store.Product(sku)); got != want {
			return fmt.Errorf("%s differs after %v:\nsql    %s\nmemory %s", sku, s.commands, got, want)
		}
		if stored != nil {
			if err := checkInvariants(stored); err != nil {
				return fmt.Errorf("sql %s: %w", sku, err)
			}
		}
	}
	return nil
}

package unit_test

import (
	"fmt"
	"testing"
	"time"

	"allocation/domain"
)

// The domain's hot path (`make bench-go`): deciding an allocation on a
// product as storage restores it for one (batches with their totals, no
// lines), and correcting a batch whose lines all give way.

func restoredProduct(b *testing.B, batches int) *domain.Product {
	b.Helper()
	var restored []*domain.Batch
	for i := range batches {
		eta := time.Time{}
		if i > 0 {
			eta = time.Date(2030, 1, i, 0, 0, 0, 0, time.UTC)
		}
		restored = append(restored, domain.RestoreBatch(fmt.Sprintf("b%d", i), "BENCH", domain.MaxQuantity, 0, eta, nil))
	}
	return domain.RestoreProduct("BENCH", 1, restored)
}

func BenchmarkProductAllocate(b *testing.B) {
	for _, batches := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("batches=%d", batches), func(b *testing.B) {
			lines := make([]domain.OrderLine, 1000)
			for i := range lines {
				lines[i] = domain.OrderLine{OrderID: fmt.Sprintf("o%d", i), SKU: "BENCH", Qty: 1}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				p := restoredProduct(b, batches)
				if _, err := p.Allocate(lines[i%len(lines)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func BenchmarkProductChangeBatchQuantity(b *testing.B) {
	for _, lines := range []int{10, 1000} {
		b.Run(fmt.Sprintf("lines=%d", lines), func(b *testing.B) {
			allocated := make([]domain.OrderLine, lines)
			for i := range allocated {
				allocated[i] = domain.OrderLine{OrderID: fmt.Sprintf("o%d", i), SKU: "BENCH", Qty: 1}
			}
			b.ReportAllocs()
			for b.Loop() {
				batch := domain.RestoreBatch("b0", "BENCH", lines, lines, time.Time{}, append([]domain.OrderLine(nil), allocated...))
				p := domain.RestoreProduct("BENCH", 1, []*domain.Batch{batch})
				if err := p.ChangeBatchQuantity("b0", 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package postgres

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"

	"allocation/domain"
	"allocation/servicelayer"
)

// readModel keeps allocations_view in step, inside the handler's transaction.
type readModel tx

// Add records that line is in batchRef; a redelivery rewrites the same row.
func (m *readModel) Add(ctx context.Context, line domain.OrderLine, batchRef string) error {
	if _, err := m.sql.ExecContext(ctx, `
		INSERT INTO allocations_view (orderid, sku, qty, batchref) VALUES ($1, $2, $3, $4)
		ON CONFLICT (orderid, sku, qty) DO UPDATE SET batchref = EXCLUDED.batchref`,
		line.OrderID, line.SKU, line.Qty, batchRef); err != nil {
		return fmt.Errorf("add %s/%s to allocations view: %w", line.OrderID, line.SKU, err)
	}
	return nil
}

// Remove forgets line; removing it twice is harmless.
func (m *readModel) Remove(ctx context.Context, line domain.OrderLine) error {
	if _, err := m.sql.ExecContext(ctx,
		`DELETE FROM allocations_view WHERE orderid = $1 AND sku = $2 AND qty = $3`,
		line.OrderID, line.SKU, line.Qty); err != nil {
		return fmt.Errorf("remove %s/%s from allocations view: %w", line.OrderID, line.SKU, err)
	}
	return nil
}

// Views answers queries from the read model, outside any unit of work.
type Views struct{ db *sqlx.DB }

func NewViews(db *sqlx.DB) *Views { return &Views{db: db} }

// Allocations lists where each line of an order went, in allocation order.
func (v *Views) Allocations(ctx context.Context, orderID string) ([]servicelayer.Allocation, error) {
	rows := []struct {
		SKU      string `db:"sku"`
		BatchRef string `db:"batchref"`
	}{}
	if err := v.db.SelectContext(ctx, &rows,
		`SELECT sku, batchref FROM allocations_view WHERE orderid = $1 ORDER BY id`, orderID); err != nil {
		return nil, unavailable(fmt.Errorf("query allocations of %s: %w", orderID, err))
	}
	out := make([]servicelayer.Allocation, len(rows))
	for i, r := range rows {
		out[i] = servicelayer.Allocation{SKU: r.SKU, BatchRef: r.BatchRef}
	}
	return out, nil
}

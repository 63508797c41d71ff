package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"allocation/servicelayer"
)

// Allocations answers the allocations view for one order, in allocation
// order, outside any unit of work.
func (s *Store) Allocations(ctx context.Context, orderID string) ([]servicelayer.Allocation, error) {
	rows := []struct {
		SKU      string `db:"sku"`
		BatchRef string `db:"batchref"`
	}{}
	st, err := s.stmts.Get(ctx, s.queries.allocations)
	if err != nil {
		return nil, err
	}
	if err := st.SelectContext(ctx, &rows, orderID); err != nil {
		return nil, s.dialect.Classify(fmt.Errorf("query allocations of %s: %w", orderID, err))
	}
	out := make([]servicelayer.Allocation, len(rows))
	for i, r := range rows {
		out[i] = servicelayer.Allocation{SKU: r.SKU, BatchRef: r.BatchRef}
	}
	return out, nil
}

// ProductOfBatch says which product batch ref belongs to. A batch never
// changes product, so what was found once is remembered.
func (s *Store) ProductOfBatch(ctx context.Context, ref string) (sku string, found bool, err error) {
	if sku, ok := s.owners.Get(ref); ok {
		return sku, true, nil
	}
	st, err := s.stmts.Get(ctx, s.queries.skuOfBatch)
	if err != nil {
		return "", false, err
	}
	err = st.GetContext(ctx, &sku, ref)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, s.dialect.Classify(fmt.Errorf("find batch %s: %w", ref, err))
	}
	s.owners.Put(ref, sku)
	return sku, true, nil
}

package sqlstore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"allocation/servicelayer"
)

// ClaimRun implements servicelayer.EventLog: head and the pending
// deliveries of its product and handler after it, found in one statement,
// taken for claimLease in a second and read in a third.
func (s *Store) ClaimRun(ctx context.Context, head servicelayer.Delivery, limit int) ([]servicelayer.Delivery, error) {
	sku := head.Event.ProductSKU()
	if len(s.marks.Of(sku)) > 0 {
		// What this process delivered of the product must be marked done
		// first, or the claim finds it still first in line.
		if err := s.marks.Flush(ctx); err != nil {
			return nil, err
		}
	}
	var open []int64
	if err := s.db.SelectContext(ctx, &open, s.queries.runIDs, sku, head.Handler, limit); err != nil {
		return nil, s.dialect.Classify(fmt.Errorf("read deliveries of %s/%s: %w", sku, head.Handler, err))
	}
	if len(open) == 0 || open[0] != head.LogID {
		return nil, servicelayer.ErrNotDelivered // done, or not first in line
	}
	now := time.Now().UTC()
	until := now.Add(s.claimLease)
	var claimed []int64
	if err := s.db.SelectContext(ctx, &claimed, s.queries.claimRange, until, until, now, sku, head.Handler,
		open[0], open[len(open)-1], now); err != nil {
		return nil, s.dialect.Classify(fmt.Errorf("claim deliveries of %s/%s: %w", sku, head.Handler, err))
	}
	slices.Sort(claimed)
	if len(claimed) == 0 || claimed[0] != head.LogID {
		if len(claimed) > 0 {
			_ = s.release(ctx, sku, head.Handler, claimed[0], claimed[len(claimed)-1], now)
		}
		return nil, servicelayer.ErrNotDelivered // dead, or taken by another dispatcher
	}
	run, err := s.runRows(ctx, sku, head.Handler, claimed)
	if err != nil {
		_ = s.release(ctx, sku, head.Handler, claimed[0], claimed[len(claimed)-1], now)
		return nil, err
	}
	return run, nil
}

// runRows reads the claimed deliveries and keeps those in a row from the
// first: one held by someone else splits the run, and what comes after it
// is given back.
func (s *Store) runRows(ctx context.Context, sku, handler string, claimed []int64) ([]servicelayer.Delivery, error) {
	first, last := claimed[0], claimed[len(claimed)-1]
	var rows []deliveryRow
	if err := s.db.SelectContext(ctx, &rows, s.queries.runRows, sku, handler, first, last); err != nil {
		return nil, s.dialect.Classify(fmt.Errorf("read deliveries of %s/%s: %w", sku, handler, err))
	}
	run := make([]servicelayer.Delivery, 0, len(claimed))
	for i, r := range rows {
		if i >= len(claimed) || r.EventID != claimed[i] {
			if err := s.release(ctx, sku, handler, r.EventID, last, time.Now().UTC()); err != nil {
				return nil, err
			}
			break
		}
		d, err := r.delivery()
		if err != nil {
			return nil, err
		}
		run = append(run, d)
	}
	return run, nil
}

// CompleteRun implements servicelayer.EventLog: the run is marked done in
// one write. The dispatcher that made it looks for more itself.
func (s *Store) CompleteRun(ctx context.Context, run []servicelayer.Delivery) error {
	if len(run) == 0 {
		return nil
	}
	head := run[0]
	if _, err := s.db.ExecContext(ctx, s.queries.completeRun, time.Now().UTC(), head.Event.ProductSKU(), head.Handler,
		head.LogID, run[len(run)-1].LogID); err != nil {
		return s.dialect.Classify(fmt.Errorf("mark %d deliveries done: %w", len(run), err))
	}
	return nil
}

// ReleaseRun implements servicelayer.EventLog.
func (s *Store) ReleaseRun(ctx context.Context, run []servicelayer.Delivery, cause error) error {
	if len(run) == 0 {
		return nil
	}
	head := run[0]
	now := time.Now().UTC()
	err := s.release(ctx, head.Event.ProductSKU(), head.Handler, head.LogID, run[len(run)-1].LogID, now)
	if err != nil || cause == nil {
		return err
	}
	var attempts int
	if err := s.db.GetContext(ctx, &attempts, s.queries.attempts, head.LogID, head.Handler); err != nil {
		return s.dialect.Classify(fmt.Errorf("read attempts of delivery %d/%s: %w", head.LogID, head.Handler, err))
	}
	return s.recordFailure(ctx, head, attempts+1, cause)
}

// release gives back the claims on deliveries first..last of a product and
// handler, due at now.
func (s *Store) release(ctx context.Context, sku, handler string, first, last int64, now time.Time) error {
	if _, err := s.db.ExecContext(ctx, s.queries.releaseRun, now, sku, handler, first, last); err != nil {
		return s.dialect.Classify(fmt.Errorf("release deliveries of %s/%s: %w", sku, handler, err))
	}
	return nil
}

// Skip marks the dead deliveries of event id done without making them, so
// that the deliveries waiting behind them go on, and wakes the dispatchers.
// It returns how many it skipped.
func (s *Store) Skip(ctx context.Context, eventID int64) (int, error) {
	res, err := s.db.ExecContext(ctx, s.queries.skip, time.Now().UTC(), eventID)
	if err != nil {
		return 0, s.dialect.Classify(fmt.Errorf("skip event %d: %w", eventID, err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("skip event %d: %w", eventID, err)
	}
	return int(n), s.dialect.Notify(ctx)
}

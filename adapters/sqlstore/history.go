package sqlstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"

	"allocation/servicelayer"
)

// Events implements servicelayer.History. Each filter has an index that
// ends with id (migration event_history), so a page is a range scan from
// the cursor on, whatever the size of the log.
func (s *Store) Events(ctx context.Context, q servicelayer.EventQuery) ([]servicelayer.Envelope, error) {
	where, args := []string{"id > ?"}, []any{q.After}
	for _, f := range []struct{ column, value string }{
		{"aggregate", q.SKU}, {"orderid", q.OrderID}, {"batchref", q.BatchRef}, {"name", q.Type},
	} {
		if f.value != "" {
			where, args = append(where, f.column+" = ?"), append(args, f.value)
		}
	}
	limit := q.Limit
	switch {
	case limit <= 0:
		limit = servicelayer.DefaultEventsPage
	case limit > servicelayer.MaxEventsPage+1:
		limit = servicelayer.MaxEventsPage + 1
	}
	query := s.rebind(`SELECT id AS event_id, message_id, name, payload, occurred_at, causation_id, correlation_id
		FROM event_log WHERE ` + strings.Join(where, " AND ") + ` ORDER BY id LIMIT ?`)
	var rows []deliveryRow
	if err := s.db.SelectContext(ctx, &rows, query, append(args, limit)...); err != nil {
		return nil, s.dialect.Classify(fmt.Errorf("read the event log: %w", err))
	}
	out := make([]servicelayer.Envelope, 0, len(rows))
	for _, r := range rows {
		d, err := r.delivery()
		if err != nil {
			return nil, err
		}
		out = append(out, d.Envelope)
	}
	return out, nil
}

// rebind puts query's ? placeholders in the dialect's style.
func (s *Store) rebind(query string) string {
	return sqlx.Rebind(s.dialect.BindType(), query)
}

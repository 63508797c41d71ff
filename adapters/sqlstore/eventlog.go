package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"allocation/servicelayer"
)

type deliveryRow struct {
	EventID       int64     `db:"event_id"`
	Handler       string    `db:"handler"`
	MessageID     string    `db:"message_id"`
	Name          string    `db:"name"`
	Payload       []byte    `db:"payload"`
	OccurredAt    Timestamp `db:"occurred_at"`
	CausationID   string    `db:"causation_id"`
	CorrelationID string    `db:"correlation_id"`
	TraceParent   string    `db:"traceparent"`
	TraceState    string    `db:"tracestate"`
}

func (r deliveryRow) delivery() (servicelayer.Delivery, error) {
	ev, err := decodeEvent(r.Name, r.Payload)
	if err != nil {
		return servicelayer.Delivery{}, fmt.Errorf("event %d: %w", r.EventID, err)
	}
	return servicelayer.Delivery{
		Envelope: servicelayer.Envelope{LogID: r.EventID, MessageID: r.MessageID, OccurredAt: r.OccurredAt.UTC(),
			CausationID: r.CausationID, CorrelationID: r.CorrelationID, TraceParent: r.TraceParent, TraceState: r.TraceState, Event: ev},
		Handler: r.Handler,
	}, nil
}

// Due implements servicelayer.EventLog: for every product and handler, the
// oldest pending delivery, when its time has come.
func (s *Store) Due(ctx context.Context, limit int) ([]servicelayer.Delivery, error) {
	var rows []deliveryRow
	if err := s.db.SelectContext(ctx, &rows, s.queries.due, time.Now().UTC(), limit); err != nil {
		return nil, s.dialect.Classify(fmt.Errorf("read due deliveries: %w", err))
	}
	out := make([]servicelayer.Delivery, 0, len(rows))
	for _, r := range rows {
		d, err := r.delivery()
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// NextDue implements servicelayer.EventLog.
func (s *Store) NextDue(ctx context.Context) (time.Time, error) {
	var next Timestamp
	if err := s.db.GetContext(ctx, &next, s.queries.nextDue); err != nil {
		return time.Time{}, s.dialect.Classify(fmt.Errorf("read next due delivery: %w", err))
	}
	return next.Time, nil
}

// Wake implements servicelayer.EventLog.
func (s *Store) Wake() <-chan struct{} { return s.dialect.Wake() }

// DeadDelivery is a delivery parked after its last attempt.
type DeadDelivery struct {
	servicelayer.Delivery
	Attempts  int
	LastError string
	ParkedAt  time.Time
}

// Dead lists the parked deliveries, oldest event first.
func (s *Store) Dead(ctx context.Context) ([]DeadDelivery, error) {
	var rows []struct {
		deliveryRow
		Attempts  int            `db:"attempts"`
		LastError sql.NullString `db:"last_error"`
		UpdatedAt Timestamp      `db:"updated_at"`
	}
	if err := s.db.SelectContext(ctx, &rows, s.queries.dead); err != nil {
		return nil, s.dialect.Classify(fmt.Errorf("read dead deliveries: %w", err))
	}
	out := make([]DeadDelivery, 0, len(rows))
	for _, r := range rows {
		d, err := r.delivery()
		if err != nil {
			return nil, err
		}
		out = append(out, DeadDelivery{Delivery: d, Attempts: r.Attempts, LastError: r.LastError.String, ParkedAt: r.UpdatedAt.Time})
	}
	return out, nil
}

// Replay puts the dead deliveries of event id back in line, with fresh
// attempts, and wakes the dispatchers. It returns how many it revived.
func (s *Store) Replay(ctx context.Context, eventID int64) (int, error) {
	now := time.Now().UTC()
	res, err := s.db.ExecContext(ctx, s.queries.replay, now, now, eventID)
	if err != nil {
		return 0, s.dialect.Classify(fmt.Errorf("replay event %d: %w", eventID, err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("replay event %d: %w", eventID, err)
	}
	return int(n), s.dialect.Notify(ctx)
}

// Backlog is what the event log holds that is not done.
type Backlog struct {
	Pending, Dead int
	// Blocked are pending deliveries behind a dead one of their product.
	Blocked int
	// Oldest is when the oldest event with a pending delivery occurred;
	// zero when none.
	Oldest time.Time
}

// Backlog counts the deliveries not done, parked as dead, and blocked
// behind a dead one.
func (s *Store) Backlog(ctx context.Context) (Backlog, error) {
	var row struct {
		Pending int       `db:"pending"`
		Dead    int       `db:"dead"`
		Blocked int       `db:"blocked"`
		Oldest  Timestamp `db:"oldest"`
	}
	if err := s.db.GetContext(ctx, &row, s.queries.backlog); err != nil {
		return Backlog{}, s.dialect.Classify(fmt.Errorf("read event log backlog: %w", err))
	}
	return Backlog{Pending: row.Pending, Dead: row.Dead, Blocked: row.Blocked, Oldest: row.Oldest.Time}, nil
}

package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"allocation/servicelayer"
)

// EventLog is the dispatcher's view of the event log: what is due, when the
// next delivery falls due, and a wake-up through LISTEN/NOTIFY when another
// process (or this one) records a failure or a replay.
type EventLog struct {
	db       *sqlx.DB
	log      *slog.Logger
	listener *pq.Listener
	wake     chan struct{}
	done     chan struct{}
}

// NewEventLog reads the event log on db; url is the same database's URL, for
// the LISTEN connection. Close stops listening.
func NewEventLog(db *sqlx.DB, url string, log *slog.Logger) (*EventLog, error) {
	if log == nil {
		log = slog.Default()
	}
	l := &EventLog{db: db, log: log, wake: make(chan struct{}, 1), done: make(chan struct{})}
	l.listener = pq.NewListener(url, 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventReconnected:
			// Notifications sent while we were away are lost: look again.
			l.signal()
		case pq.ListenerEventConnectionAttemptFailed, pq.ListenerEventDisconnected:
			log.Warn("event log listener lost its connection", "error", err)
		}
	})
	if err := l.listener.Listen(notifyChannel); err != nil {
		l.listener.Close()
		return nil, fmt.Errorf("listen on %s: %w", notifyChannel, err)
	}
	go l.forward()
	return l, nil
}

func (l *EventLog) forward() {
	for {
		select {
		case <-l.done:
			return
		case _, ok := <-l.listener.Notify:
			if !ok {
				return
			}
			l.signal()
		}
	}
}

func (l *EventLog) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Wake implements servicelayer.EventLog.
func (l *EventLog) Wake() <-chan struct{} { return l.wake }

// Close stops listening.
func (l *EventLog) Close() error {
	close(l.done)
	return l.listener.Close()
}

type deliveryRow struct {
	EventID       int64     `db:"event_id"`
	Handler       string    `db:"handler"`
	MessageID     string    `db:"message_id"`
	Name          string    `db:"name"`
	Payload       []byte    `db:"payload"`
	OccurredAt    time.Time `db:"occurred_at"`
	CausationID   string    `db:"causation_id"`
	CorrelationID string    `db:"correlation_id"`
}

func (r deliveryRow) delivery() (servicelayer.Delivery, error) {
	ev, err := decodeEvent(r.Name, r.Payload)
	if err != nil {
		return servicelayer.Delivery{}, fmt.Errorf("event %d: %w", r.EventID, err)
	}
	return servicelayer.Delivery{
		Envelope: servicelayer.Envelope{LogID: r.EventID, MessageID: r.MessageID, OccurredAt: r.OccurredAt.UTC(),
			CausationID: r.CausationID, CorrelationID: r.CorrelationID, Event: ev},
		Handler: r.Handler,
	}, nil
}

// Due implements servicelayer.EventLog: for every product and handler, the
// oldest pending delivery, when its time has come.
func (l *EventLog) Due(ctx context.Context, limit int) ([]servicelayer.Delivery, error) {
	var rows []deliveryRow
	if err := l.db.SelectContext(ctx, &rows, `
		SELECT e.id AS event_id, p.handler, e.message_id, e.name, e.payload, e.occurred_at, e.causation_id, e.correlation_id
		FROM (
			SELECT DISTINCT ON (aggregate, handler) event_id, handler, next_attempt_at
			FROM event_deliveries WHERE status = 'pending'
			ORDER BY aggregate, handler, event_id
		) p JOIN event_log e ON e.id = p.event_id
		WHERE p.next_attempt_at <= now()
		ORDER BY e.id LIMIT $1`, limit); err != nil {
		return nil, fmt.Errorf("read due deliveries: %w", err)
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
func (l *EventLog) NextDue(ctx context.Context) (time.Time, error) {
	var next *time.Time
	if err := l.db.GetContext(ctx, &next, `SELECT min(next_attempt_at) FROM event_deliveries WHERE status = 'pending'`); err != nil {
		return time.Time{}, fmt.Errorf("read next due delivery: %w", err)
	}
	if next == nil {
		return time.Time{}, nil
	}
	return *next, nil
}

// DeadDelivery is a delivery parked after its last attempt.
type DeadDelivery struct {
	servicelayer.Delivery
	Attempts  int
	LastError string
	ParkedAt  time.Time
}

// Dead lists the parked deliveries, oldest event first.
func (l *EventLog) Dead(ctx context.Context) ([]DeadDelivery, error) {
	var rows []struct {
		deliveryRow
		Attempts  int       `db:"attempts"`
		LastError *string   `db:"last_error"`
		UpdatedAt time.Time `db:"updated_at"`
	}
	if err := l.db.SelectContext(ctx, &rows, `
		SELECT e.id AS event_id, d.handler, e.message_id, e.name, e.payload, e.occurred_at,
		       e.causation_id, e.correlation_id, d.attempts, d.last_error, d.updated_at
		FROM event_deliveries d JOIN event_log e ON e.id = d.event_id
		WHERE d.status = 'dead' ORDER BY e.id, d.handler`); err != nil {
		return nil, fmt.Errorf("read dead deliveries: %w", err)
	}
	out := make([]DeadDelivery, 0, len(rows))
	for _, r := range rows {
		d, err := r.delivery()
		if err != nil {
			return nil, err
		}
		dead := DeadDelivery{Delivery: d, Attempts: r.Attempts, ParkedAt: r.UpdatedAt}
		if r.LastError != nil {
			dead.LastError = *r.LastError
		}
		out = append(out, dead)
	}
	return out, nil
}

// Replay puts the dead deliveries of event id back in line, with fresh
// attempts, and wakes the dispatchers. It returns how many it revived.
func (l *EventLog) Replay(ctx context.Context, eventID int64) (int, error) {
	var n int
	if err := l.db.GetContext(ctx, &n, `
		WITH revived AS (
			UPDATE event_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now()
			WHERE event_id = $1 AND status = 'dead' RETURNING 1),
		counted AS (SELECT count(*) AS n FROM revived)
		SELECT n FROM counted, LATERAL (SELECT pg_notify($2, '')) AS notified`, eventID, notifyChannel); err != nil {
		return 0, fmt.Errorf("replay event %d: %w", eventID, err)
	}
	return n, nil
}

// Backlog counts the deliveries not done and parked as dead, and says when
// the oldest event with a pending delivery occurred (zero when none).
func (l *EventLog) Backlog(ctx context.Context) (pending, dead int, oldest time.Time, err error) {
	var row struct {
		Pending int        `db:"pending"`
		Dead    int        `db:"dead"`
		Oldest  *time.Time `db:"oldest"`
	}
	if err := l.db.GetContext(ctx, &row, `
		SELECT count(*) FILTER (WHERE d.status = 'pending') AS pending,
		       count(*) FILTER (WHERE d.status = 'dead') AS dead,
		       min(e.occurred_at) FILTER (WHERE d.status = 'pending') AS oldest
		FROM event_deliveries d JOIN event_log e ON e.id = d.event_id
		WHERE d.status <> 'done'`); err != nil {
		return 0, 0, time.Time{}, fmt.Errorf("read event log backlog: %w", err)
	}
	if row.Oldest != nil {
		oldest = *row.Oldest
	}
	return row.Pending, row.Dead, oldest, nil
}

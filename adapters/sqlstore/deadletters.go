package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"allocation/servicelayer"
)

// deadLetterWriteTimeout bounds one write of dead letters, whoever waits
// for it.
const deadLetterWriteTimeout = 5 * time.Second

// maxDeadLetterBatch caps the dead letters written in one transaction.
const maxDeadLetterBatch = 256

const deadLetterColumns = `id, channel, payload, reason, stream_id, message_id, received_at, recorded_at, retried_at`

type deadLetterQueries struct {
	insert, list, get, markRetried string
}

func rebindDeadLetterQueries(bind int) deadLetterQueries {
	r := func(q string) string { return sqlx.Rebind(bind, q) }
	return deadLetterQueries{
		insert: r(`INSERT INTO dead_letters (channel, payload, reason, stream_id, message_id, received_at, recorded_at)
			VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`),
		list:        r(`SELECT ` + deadLetterColumns + ` FROM dead_letters WHERE id > ? ORDER BY id LIMIT ?`),
		get:         r(`SELECT ` + deadLetterColumns + ` FROM dead_letters WHERE id = ?`),
		markRetried: r(`UPDATE dead_letters SET retried_at = ? WHERE id = ?`),
	}
}

type deadLetterRow struct {
	ID         int64          `db:"id"`
	Channel    string         `db:"channel"`
	Payload    []byte         `db:"payload"`
	Reason     string         `db:"reason"`
	StreamID   sql.NullString `db:"stream_id"`
	MessageID  sql.NullString `db:"message_id"`
	ReceivedAt Timestamp      `db:"received_at"`
	RecordedAt Timestamp      `db:"recorded_at"`
	RetriedAt  Timestamp      `db:"retried_at"`
}

func (r deadLetterRow) letter() servicelayer.DeadLetter {
	l := servicelayer.DeadLetter{
		ID: r.ID, Channel: r.Channel, Payload: r.Payload, Reason: r.Reason,
		StreamID: r.StreamID.String, MessageID: r.MessageID.String,
		ReceivedAt: r.ReceivedAt.UTC(), RecordedAt: r.RecordedAt.UTC(),
	}
	if !r.RetriedAt.IsZero() {
		l.RetriedAt = r.RetriedAt.UTC()
	}
	return l
}

// deadLetterQueue gathers the dead letters recorded concurrently, so that
// a flood of refused messages costs one commit per batch, not one each.
// Whoever finds nobody writing writes what is queued, itself included;
// when more came meanwhile it hands the next batch to the first of them.
type deadLetterQueue struct {
	mu      sync.Mutex
	pending []*deadLetterWrite
	writing bool
}

// deadLetterWrite is one dead letter waiting to be written. turn is closed
// when it was written (written is set) or when its caller is to write the
// next batch.
type deadLetterWrite struct {
	letter  servicelayer.DeadLetter
	id      int64
	err     error
	written bool
	turn    chan struct{}
}

// RecordDeadLetter implements servicelayer.DeadLetterRecorder. The dead
// letter is committed, with those recorded at the same time, before it
// returns.
func (s *Store) RecordDeadLetter(ctx context.Context, l servicelayer.DeadLetter) (int64, error) {
	if l.Channel == "" {
		return 0, errors.New("record dead letter: no channel")
	}
	w := &deadLetterWrite{letter: l, turn: make(chan struct{})}
	q := &s.deadLetters
	q.mu.Lock()
	q.pending = append(q.pending, w)
	lead := !q.writing
	q.writing = true
	q.mu.Unlock()
	if !lead {
		// The writer is bounded by deadLetterWriteTimeout; leaving early
		// would leave the batch it may hand over without a writer.
		<-w.turn
		if w.written {
			return w.id, w.err
		}
	}
	q.mu.Lock()
	n := min(len(q.pending), maxDeadLetterBatch)
	batch := q.pending[:n:n]
	q.pending = q.pending[n:]
	q.mu.Unlock()

	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deadLetterWriteTimeout)
	err := s.writeDeadLetters(wctx, batch)
	cancel()

	q.mu.Lock()
	if len(q.pending) > 0 {
		close(q.pending[0].turn) // its caller writes the next batch
	} else {
		q.writing = false
	}
	q.mu.Unlock()
	for _, x := range batch {
		if err != nil {
			x.id, x.err = 0, err
		}
		if x != w {
			x.written = true
			close(x.turn)
		}
	}
	return w.id, w.err
}

// writeDeadLetters inserts batch in one transaction and sets each one's id.
func (s *Store) writeDeadLetters(ctx context.Context, batch []*deadLetterWrite) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return s.dialect.Classify(fmt.Errorf("record %d dead letters: %w", len(batch), err))
	}
	defer func() { _ = tx.Rollback() }() // after Commit it does nothing
	now := time.Now().UTC()
	for _, w := range batch {
		l := w.letter
		received := l.ReceivedAt
		if received.IsZero() {
			received = now
		}
		payload := l.Payload
		if payload == nil {
			payload = []byte{} // an empty message, not a missing one
		}
		err := tx.QueryRowxContext(ctx, s.dlQueries.insert,
			text(l.Channel), payload, text(l.Reason), nullText(l.StreamID), nullText(l.MessageID), received.UTC(), now,
		).Scan(&w.id)
		if err != nil {
			return s.dialect.Classify(fmt.Errorf("record dead letter from %s: %w", l.Channel, err))
		}
	}
	if err := tx.Commit(); err != nil {
		return s.dialect.Classify(fmt.Errorf("record %d dead letters: %w", len(batch), err))
	}
	return nil
}

// DeadLetters implements servicelayer.DeadLetterArchive.
func (s *Store) DeadLetters(ctx context.Context, after int64, limit int) ([]servicelayer.DeadLetter, error) {
	var rows []deadLetterRow
	if err := s.db.SelectContext(ctx, &rows, s.dlQueries.list, after, limit); err != nil {
		return nil, s.dialect.Classify(fmt.Errorf("read dead letters: %w", err))
	}
	out := make([]servicelayer.DeadLetter, len(rows))
	for i, r := range rows {
		out[i] = r.letter()
	}
	return out, nil
}

// DeadLetter implements servicelayer.DeadLetterArchive.
func (s *Store) DeadLetter(ctx context.Context, id int64) (servicelayer.DeadLetter, error) {
	var r deadLetterRow
	err := s.db.GetContext(ctx, &r, s.dlQueries.get, id)
	if errors.Is(err, sql.ErrNoRows) {
		return servicelayer.DeadLetter{}, fmt.Errorf("dead letter %d: %w", id, servicelayer.ErrUnknownDeadLetter)
	}
	if err != nil {
		return servicelayer.DeadLetter{}, s.dialect.Classify(fmt.Errorf("read dead letter %d: %w", id, err))
	}
	return r.letter(), nil
}

// MarkDeadLetterRetried implements servicelayer.DeadLetterArchive.
func (s *Store) MarkDeadLetterRetried(ctx context.Context, id int64, at time.Time) error {
	res, err := s.db.ExecContext(ctx, s.dlQueries.markRetried, at.UTC(), id)
	if err != nil {
		return s.dialect.Classify(fmt.Errorf("mark dead letter %d retried: %w", id, err))
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("dead letter %d: %w", id, servicelayer.ErrUnknownDeadLetter)
	}
	return nil
}

// text makes s storable in a text column of any database: PostgreSQL
// refuses invalid UTF-8 and NUL. A reason may quote what a sender sent.
func text(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

func nullText(s string) any {
	if s == "" {
		return nil
	}
	return text(s)
}

package servicelayer

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DeadLetter is an inbound message the service refused (malformed, asking
// for something the domain refuses, or a stream entry delivered too often),
// kept with the reason so that an operator can see it and re-drive it.
type DeadLetter struct {
	// ID is given when the dead letter is recorded; ids grow with time.
	ID int64
	// Channel is the unprefixed channel or stream it came on.
	Channel string
	// Payload is the message body exactly as received.
	Payload []byte
	Reason  string
	// StreamID is the entry's id when it came on a stream; empty for pub/sub.
	StreamID string
	// MessageID is the sender's message_id when one could be read.
	MessageID string
	// ReceivedAt is when it arrived; RecordedAt when it was recorded.
	ReceivedAt time.Time
	RecordedAt time.Time
	// RetriedAt is when an operator last re-drove it; zero if never.
	RetriedAt time.Time
}

// FromStream says whether the dead letter came on a stream (and goes back
// on it when retried) rather than on pub/sub.
func (l DeadLetter) FromStream() bool { return l.StreamID != "" }

// DeadLetterRecorder keeps refused inbound messages durably. A message is
// acknowledged (or forgotten, on pub/sub) only once Record returned nil.
type DeadLetterRecorder interface {
	// RecordDeadLetter stores l and returns its id. While the database is
	// down it fails with ErrUnavailable.
	RecordDeadLetter(ctx context.Context, l DeadLetter) (int64, error)
}

// DeadLetterArchive is what operators read and repair.
type DeadLetterArchive interface {
	DeadLetterRecorder
	// DeadLetters returns up to limit dead letters with an id above after,
	// oldest first.
	DeadLetters(ctx context.Context, after int64, limit int) ([]DeadLetter, error)
	// DeadLetter returns the dead letter id; ErrUnknownDeadLetter when
	// there is none.
	DeadLetter(ctx context.Context, id int64) (DeadLetter, error)
	// MarkDeadLetterRetried records that dead letter id was re-driven at.
	MarkDeadLetterRetried(ctx context.Context, id int64, at time.Time) error
}

// Redriver puts a dead letter back where it came from: on its stream (a new
// entry) or on its pub/sub channel.
type Redriver interface {
	Redrive(ctx context.Context, l DeadLetter) error
}

// ErrUnknownDeadLetter: no dead letter has that id.
var ErrUnknownDeadLetter = errors.New("no such dead letter")

// ErrRetriedAlready: the dead letter was re-driven before; its retry, if it
// failed again, is a dead letter of its own.
var ErrRetriedAlready = errors.New("dead letter retried already")

// RetryDeadLetter re-drives dead letter id and marks it retried at now. A
// dead letter retried before is refused with ErrRetriedAlready unless
// again is set. It is re-driven first and marked after: should the mark
// fail, the error says the message went out all the same. A retry that is
// refused again becomes a new dead letter.
func RetryDeadLetter(ctx context.Context, archive DeadLetterArchive, to Redriver, id int64, again bool, now time.Time) (DeadLetter, error) {
	l, err := archive.DeadLetter(ctx, id)
	if err != nil {
		return DeadLetter{}, err
	}
	if !l.RetriedAt.IsZero() && !again {
		return l, fmt.Errorf("dead letter %d: %w at %s", id, ErrRetriedAlready, l.RetriedAt.UTC().Format(time.RFC3339))
	}
	if err := to.Redrive(ctx, l); err != nil {
		return l, fmt.Errorf("re-drive dead letter %d on %s: %w", id, l.Channel, err)
	}
	if err := archive.MarkDeadLetterRetried(ctx, id, now); err != nil {
		return l, fmt.Errorf("dead letter %d was re-driven on %s but could not be marked retried: %w", id, l.Channel, err)
	}
	l.RetriedAt = now
	return l, nil
}

package servicelayer

import (
	"time"

	"github.com/google/uuid"

	"allocation/domain"
)

// Envelope is an event with the identity it keeps wherever it travels: a
// receiver uses MessageID to recognise a redelivery.
type Envelope struct {
	MessageID  string
	OccurredAt time.Time
	Event      domain.Event
}

func seal(events []domain.Event, now time.Time) []Envelope {
	out := make([]Envelope, len(events))
	for i, ev := range events {
		out[i] = Envelope{MessageID: uuid.NewString(), OccurredAt: now, Event: ev}
	}
	return out
}

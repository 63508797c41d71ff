package memory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"allocation/servicelayer"
)

// RecordDeadLetter implements servicelayer.DeadLetterRecorder.
func (s *Store) RecordDeadLetter(_ context.Context, l servicelayer.DeadLetter) (int64, error) {
	if l.Channel == "" {
		return 0, errors.New("record dead letter: no channel")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l.ID = int64(len(s.dead)) + 1
	l.Payload = slices.Clone(l.Payload)
	l.RecordedAt = s.now().UTC()
	if l.ReceivedAt.IsZero() {
		l.ReceivedAt = l.RecordedAt
	}
	l.RetriedAt = time.Time{}
	s.dead = append(s.dead, l)
	return l.ID, nil
}

// DeadLetters implements servicelayer.DeadLetterArchive.
func (s *Store) DeadLetters(_ context.Context, after int64, limit int) ([]servicelayer.DeadLetter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := min(max(after, 0), int64(len(s.dead)))
	end := min(start+int64(max(limit, 0)), int64(len(s.dead)))
	return slices.Clone(s.dead[start:end]), nil
}

// DeadLetter implements servicelayer.DeadLetterArchive.
func (s *Store) DeadLetter(_ context.Context, id int64) (servicelayer.DeadLetter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id < 1 || id > int64(len(s.dead)) {
		return servicelayer.DeadLetter{}, fmt.Errorf("dead letter %d: %w", id, servicelayer.ErrUnknownDeadLetter)
	}
	return s.dead[id-1], nil
}

// MarkDeadLetterRetried implements servicelayer.DeadLetterArchive.
func (s *Store) MarkDeadLetterRetried(_ context.Context, id int64, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id < 1 || id > int64(len(s.dead)) {
		return fmt.Errorf("dead letter %d: %w", id, servicelayer.ErrUnknownDeadLetter)
	}
	s.dead[id-1].RetriedAt = at.UTC()
	return nil
}

// Package consumer turns messages from other services into commands for the
// bus. A message that cannot be applied is logged with its reason and set
// aside as a dead letter; the consumer always goes on with the next one.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/cenkalti/backoff/v4"

	"allocation/domain"
	"allocation/servicelayer"
)

// HandleTimeout bounds the handling of one message, so that a stuck
// dependency cannot stall the consumer forever.
const HandleTimeout = 30 * time.Second

// deadLetterTimeout bounds setting a message aside, even at shutdown.
const deadLetterTimeout = 5 * time.Second

// Bus handles commands.
type Bus interface {
	Handle(ctx context.Context, cmd domain.Command) (servicelayer.Result, error)
}

// Source delivers messages, one at a time, and keeps the ones that could not
// be applied. *redis.Subscriber is one.
type Source interface {
	Run(ctx context.Context, channels []string, handle func(ctx context.Context, channel string, payload []byte)) error
	DeadLetter(ctx context.Context, channel string, payload []byte, reason string) error
}

// StreamSource delivers stream entries that stay pending until settled.
// *redis.StreamReader is one.
type StreamSource interface {
	Run(ctx context.Context, streams []string, handle func(ctx context.Context, stream, id string, payload []byte) (settled bool)) error
}

// Consumer feeds the bus from a Source.
type Consumer struct {
	bus     Bus
	source  Source
	log     *slog.Logger
	observe func(channel, outcome string)
}

// Observe has fn told what became of every message: handled, duplicate,
// dead_lettered or unsettled (left pending on its stream).
func (c *Consumer) Observe(fn func(channel, outcome string)) { c.observe = fn }

// New builds a consumer that feeds bus from source, logging to log.
func New(bus Bus, source Source, log *slog.Logger) *Consumer {
	if log == nil {
		log = slog.Default()
	}
	return &Consumer{bus: bus, source: source, log: log, observe: func(string, string) {}}
}

// Run consumes the change_batch_quantity and allocate channels until ctx
// ends. A message in hand when ctx ends is still finished (within
// HandleTimeout): a half-handled message would be lost.
func (c *Consumer) Run(ctx context.Context) error {
	return c.source.Run(ctx, []string{ChangeBatchQuantity, Allocate}, c.handle)
}

// RunStreams consumes the change_batch_quantity and allocate streams until
// ctx ends. An entry is acknowledged only once its command committed or it
// was set aside; while the database is down it stays pending and comes back.
func (c *Consumer) RunStreams(ctx context.Context, streams StreamSource) error {
	return streams.Run(ctx, []string{ChangeBatchQuantity, Allocate}, c.settle)
}

// handle applies a pub/sub message; one that cannot be applied is set aside,
// since pub/sub will not bring it back.
func (c *Consumer) handle(ctx context.Context, channel string, payload []byte) {
	err := c.process(ctx, channel, payload, "")
	switch {
	case err == nil:
		c.observe(channel, "handled")
	case errors.Is(err, errDuplicate):
		c.observe(channel, "duplicate")
	default:
		c.setAside(ctx, channel, payload, err)
	}
}

// settle applies a stream entry and says whether it may be acknowledged. An
// entry without a message_id is known by its stream id, so a redelivery of
// an entry that was applied but not acknowledged is skipped by the inbox.
func (c *Consumer) settle(ctx context.Context, stream, id string, payload []byte) bool {
	err := c.process(ctx, stream, payload, "stream:"+stream+":"+id)
	switch {
	case err == nil:
		c.observe(stream, "handled")
		return true
	case errors.Is(err, errDuplicate):
		c.observe(stream, "duplicate")
		return true
	case errors.Is(err, servicelayer.ErrUnavailable):
		c.observe(stream, "unsettled")
		return false
	}
	return c.setAside(ctx, stream, payload, err)
}

// process applies one message. While the database is down the message waits
// for it (up to HandleTimeout) rather than being set aside: it is a good
// message. A message in hand when ctx ends is still finished.
func (c *Consumer) process(ctx context.Context, channel string, payload []byte, fallbackID string) error {
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), HandleTimeout)
	defer cancel()
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 50 * time.Millisecond
	bo.MaxInterval = 2 * time.Second
	bo.MaxElapsedTime = 0
	return backoff.Retry(func() error {
		err := c.apply(hctx, channel, payload, fallbackID)
		if errors.Is(err, servicelayer.ErrUnavailable) {
			c.log.WarnContext(ctx, "database unavailable, retrying message", "channel", channel, "error", err)
			return err
		}
		return backoff.Permanent(err)
	}, backoff.WithContext(bo, hctx))
}

// setAside logs a message that cannot be applied and keeps it as a dead
// letter; it reports whether the dead letter was kept.
func (c *Consumer) setAside(ctx context.Context, channel string, payload []byte, err error) bool {
	level := slog.LevelError // the service failed, not the sender
	if rejected(err) {
		level = slog.LevelWarn
	}
	c.log.Log(ctx, level, "message set aside", "channel", channel, "payload", string(payload), "reason", err.Error())
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deadLetterTimeout)
	defer cancel()
	if dlErr := c.source.DeadLetter(dctx, channel, payload, err.Error()); dlErr != nil {
		c.log.ErrorContext(ctx, "dead letter lost", "channel", channel, "payload", string(payload), "error", dlErr)
		c.observe(channel, "unsettled")
		return false
	}
	c.observe(channel, "dead_lettered")
	return true
}

// apply decodes and handles one message. A panic becomes its error, so that
// one bad message cannot stop the consumer.
func (c *Consumer) apply(ctx context.Context, channel string, payload []byte, fallbackID string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.ErrorContext(ctx, "panic while handling a message", "channel", channel, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic while handling: %v", p)
		}
	}()
	msg, err := Decode(channel, payload)
	if err != nil {
		return &decodeError{err}
	}
	if msg.ID == "" {
		msg.ID = fallbackID
	}
	if msg.ID != "" {
		ctx = servicelayer.WithMessageID(ctx, msg.ID)
		ctx = servicelayer.WithCause(ctx, servicelayer.Cause{CausationID: msg.ID, CorrelationID: msg.ID})
	}
	_, err = c.bus.Handle(ctx, msg.Command)
	if errors.Is(err, servicelayer.ErrDuplicateMessage) {
		// Processed before: acknowledging it again is all there is to do.
		c.log.InfoContext(ctx, "duplicate message skipped", "channel", channel, "message_id", msg.ID)
		return errDuplicate
	}
	if err != nil {
		return err
	}
	c.log.DebugContext(ctx, "message handled", "channel", channel, "command", msg.Command.Name(), "message_id", msg.ID)
	return nil
}

// errDuplicate: the message was processed before and is skipped.
var errDuplicate = errors.New("duplicate message")

// decodeError marks a message that is not what its channel carries.
type decodeError struct{ err error }

func (e *decodeError) Error() string { return e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// rejected says whether err is the message's fault (malformed, or refused by
// the domain) rather than the service's.
func rejected(err error) bool {
	var d *decodeError
	return errors.As(err, &d) ||
		errors.Is(err, domain.ErrInvalid) ||
		errors.Is(err, domain.ErrInvalidSKU) ||
		errors.Is(err, domain.ErrUnknownBatch) ||
		errors.Is(err, domain.ErrBatchExists)
}

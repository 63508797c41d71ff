// Package consumer turns messages from other services into commands for the
// bus. A message that cannot be applied is logged with its reason and set
// aside as a dead letter; the consumer always goes on with the next one.
//
// Messages are handled concurrently, keyed by the product they are about:
// those about one product one after another in arrival order, those about
// different products side by side (see OrderedPool).
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
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

// DefaultConcurrency is how many messages are handled at once when Config
// leaves it out: enough to keep a connection pool of about 20 busy.
const DefaultConcurrency = 16

// inFlightPerWorker sizes the backpressure bound: with this many messages
// per worker queued or running, every worker finds the next one ready, and
// a burst costs a few hundred messages of memory at most.
const inFlightPerWorker = 8

// Bus handles commands.
type Bus interface {
	Handle(ctx context.Context, cmd domain.Command) (servicelayer.Result, error)
}

// Owners says which product a batch belongs to. change_batch_quantity names
// a batch only, yet it must stay in order with the other messages about the
// batch's product.
type Owners interface {
	ProductOfBatch(ctx context.Context, ref string) (sku string, found bool, err error)
}

// Source delivers pub/sub messages, one call of handle at a time in arrival
// order, and keeps the ones that could not be applied. handle may block: the
// source then reads no further (backpressure). *redis.Subscriber is one.
type Source interface {
	Run(ctx context.Context, channels []string, handle func(ctx context.Context, channel string, payload []byte)) error
	DeadLetter(ctx context.Context, channel string, payload []byte, reason string) error
}

// StreamSource delivers stream entries that stay pending until settled.
// *redis.StreamReader is one. It calls handle one entry at a time in stream
// order, with the entry's "data" field as payload and its other fields as
// fields; handle may block (backpressure) and calls settle exactly once, later
// and from another goroutine, saying whether the entry is settled (applied,
// or set aside) and may be acknowledged. Run returns only once every entry
// it handed over has been settled.
type StreamSource interface {
	Run(ctx context.Context, streams []string, handle func(ctx context.Context, stream, id string, payload []byte, fields map[string]string, settle func(settled bool))) error
}

// Config is what a Consumer needs.
type Config struct {
	Bus    Bus
	Owners Owners
	// Source is the pub/sub source, and keeps dead letters for streams too.
	Source Source
	Log    *slog.Logger
	// Concurrency is how many messages are handled at once, each about a
	// different product (DefaultConcurrency when 0).
	Concurrency int
	// MaxInFlight bounds the messages read and not yet handled, running
	// ones included (8 per worker when 0): the sources stop reading there.
	MaxInFlight int
	// Observe, when set, is told what became of every message: handled,
	// duplicate, dead_lettered or unsettled (left pending on its stream).
	Observe func(channel, outcome string)
}

// Consumer feeds the bus from a Source and a StreamSource. Messages about
// one product are handled one after another in arrival order; messages about
// different products are handled concurrently.
type Consumer struct {
	bus     Bus
	owners  Owners
	source  Source
	log     *slog.Logger
	observe func(channel, outcome string)
	// pool is shared by pub/sub and streams, so that Concurrency bounds the
	// consumer's share of the database connections as a whole.
	pool *OrderedPool
}

// New builds a consumer from cfg.
func New(cfg Config) (*Consumer, error) {
	if cfg.Bus == nil || cfg.Owners == nil || cfg.Source == nil {
		return nil, errors.New("consumer: Bus, Owners and Source are required")
	}
	if cfg.Concurrency < 0 || cfg.MaxInFlight < 0 {
		return nil, fmt.Errorf("consumer: concurrency %d, at most %d in flight: want positive numbers", cfg.Concurrency, cfg.MaxInFlight)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = cfg.Concurrency * inFlightPerWorker
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Observe == nil {
		cfg.Observe = func(string, string) {}
	}
	return &Consumer{
		bus:     cfg.Bus,
		owners:  cfg.Owners,
		source:  cfg.Source,
		log:     cfg.Log,
		observe: cfg.Observe,
		pool:    NewOrderedPool(cfg.Concurrency, cfg.MaxInFlight),
	}, nil
}

// Run consumes the change_batch_quantity and allocate channels until ctx
// ends. Messages in hand when ctx ends are still finished (each within
// HandleTimeout) before Run returns: a half-handled message would be lost.
func (c *Consumer) Run(ctx context.Context) error {
	var inHand sync.WaitGroup
	defer inHand.Wait()
	return c.source.Run(ctx, []string{ChangeBatchQuantity, Allocate}, func(ctx context.Context, channel string, payload []byte) {
		m := c.prepare(ctx, channel, payload, nil, "")
		inHand.Add(1)
		c.pool.Submit(m.key, func() {
			defer inHand.Done()
			c.handle(ctx, m)
		})
	})
}

// RunStreams consumes the change_batch_quantity and allocate streams until
// ctx ends. An entry is acknowledged only once its command committed or it
// was set aside; while the database is down it stays pending and comes back.
// Entries in hand when ctx ends are finished before RunStreams returns.
func (c *Consumer) RunStreams(ctx context.Context, streams StreamSource) error {
	var inHand sync.WaitGroup
	defer inHand.Wait()
	return streams.Run(ctx, []string{ChangeBatchQuantity, Allocate}, func(ctx context.Context, stream, id string, payload []byte, fields map[string]string, settle func(bool)) {
		// An entry without a message_id is known by its stream id, so a
		// redelivery of an entry applied but not acknowledged is skipped by
		// the inbox.
		m := c.prepare(ctx, stream, payload, fields, "stream:"+stream+":"+id)
		inHand.Add(1)
		c.pool.Submit(m.key, func() {
			defer inHand.Done()
			settle(c.settle(ctx, m))
		})
	})
}

// inbound is a message between its arrival and its handling.
type inbound struct {
	channel string
	payload []byte
	msg     Message
	// err, when set, is why the message cannot be applied, known on arrival:
	// it is malformed, or its batch's product could not be looked up.
	err error
	// key orders the message: messages with one key are handled in arrival
	// order, one at a time.
	key string
}

// prepare decodes a message and finds its key. It runs in arrival order on
// the reading goroutine, since the key decides what the message waits for.
// fields are a stream entry's fields beside its body (nil for pub/sub);
// fallbackID names a message that carries no message_id.
func (c *Consumer) prepare(ctx context.Context, channel string, payload []byte, fields map[string]string, fallbackID string) *inbound {
	m := &inbound{channel: channel, payload: payload}
	m.msg, m.err = decode(channel, payload, fields)
	if m.err != nil {
		// Any key will do: it is only set aside.
		m.key = "malformed:" + channel
		return m
	}
	if m.msg.ID == "" {
		m.msg.ID = fallbackID
	}
	switch cmd := m.msg.Command.(type) {
	case domain.Allocate:
		m.key = cmd.SKU
	case domain.ChangeBatchQuantity:
		m.key, m.err = c.productOfBatch(ctx, cmd.Ref)
	default:
		m.key = channel
	}
	return m
}

// decode is Decode with a panic turned into its error, so that one bad
// message cannot stop the consumer.
func decode(channel string, payload []byte, fields map[string]string) (msg Message, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &decodeError{fmt.Errorf("panic while decoding: %v", p)}
		}
	}()
	msg, err = DecodeEntry(channel, payload, fields)
	if err != nil {
		return Message{}, &decodeError{err}
	}
	return msg, nil
}

// productOfBatch keys a change_batch_quantity message by the product of its
// batch. An unknown batch gets a key of its own ("batch:"+ref): its handling
// fails and sets it aside anyway. While the database is down the lookup
// waits for it, like process does (within HandleTimeout): keying the message
// by its batch instead would let it overtake, or be overtaken by, messages
// about its product. When the lookup gives up, that error is the message's.
func (c *Consumer) productOfBatch(ctx context.Context, ref string) (string, error) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), HandleTimeout)
	defer cancel()
	var sku string
	var found bool
	err := retryWhileUnavailable(lctx, func() error {
		var err error
		sku, found, err = c.owners.ProductOfBatch(lctx, ref)
		if errors.Is(err, servicelayer.ErrUnavailable) {
			c.log.WarnContext(ctx, "database unavailable, retrying the lookup of a batch's product", "batchref", ref, "error", err)
		}
		return err
	})
	if err != nil {
		return "batch:" + ref, fmt.Errorf("find the product of batch %s: %w", ref, err)
	}
	if !found {
		return "batch:" + ref, nil
	}
	return sku, nil
}

// retryWhileUnavailable calls fn until it succeeds, fails with anything but
// servicelayer.ErrUnavailable, or ctx ends.
func retryWhileUnavailable(ctx context.Context, fn func() error) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 50 * time.Millisecond
	bo.MaxInterval = 2 * time.Second
	bo.MaxElapsedTime = 0
	return backoff.Retry(func() error {
		err := fn()
		if err == nil || errors.Is(err, servicelayer.ErrUnavailable) {
			return err
		}
		return backoff.Permanent(err)
	}, backoff.WithContext(bo, ctx))
}

// handle applies a pub/sub message; one that cannot be applied is set aside,
// since pub/sub will not bring it back.
func (c *Consumer) handle(ctx context.Context, m *inbound) {
	err := c.process(ctx, m)
	switch {
	case err == nil:
		c.observe(m.channel, "handled")
	case errors.Is(err, errDuplicate):
		c.observe(m.channel, "duplicate")
	default:
		c.setAside(ctx, m.channel, m.payload, err)
	}
}

// settle applies a stream entry and says whether it may be acknowledged.
func (c *Consumer) settle(ctx context.Context, m *inbound) bool {
	err := c.process(ctx, m)
	switch {
	case err == nil:
		c.observe(m.channel, "handled")
		return true
	case errors.Is(err, errDuplicate):
		c.observe(m.channel, "duplicate")
		return true
	case errors.Is(err, servicelayer.ErrUnavailable):
		c.observe(m.channel, "unsettled")
		return false
	}
	return c.setAside(ctx, m.channel, m.payload, err)
}

// process applies one message. While the database is down the message waits
// for it (up to HandleTimeout) rather than being set aside: it is a good
// message. A message in hand when ctx ends is still finished.
func (c *Consumer) process(ctx context.Context, m *inbound) error {
	if m.err != nil {
		return m.err
	}
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), HandleTimeout)
	defer cancel()
	return retryWhileUnavailable(hctx, func() error {
		err := c.apply(hctx, m)
		if errors.Is(err, servicelayer.ErrUnavailable) {
			c.log.WarnContext(ctx, "database unavailable, retrying message", "channel", m.channel, "error", err)
		}
		return err
	})
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

// apply handles one decoded message. A panic becomes its error, so that one
// bad message cannot stop the consumer.
func (c *Consumer) apply(ctx context.Context, m *inbound) (err error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.ErrorContext(ctx, "panic while handling a message", "channel", m.channel, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic while handling: %v", p)
		}
	}()
	msg := m.msg
	if msg.ID != "" {
		ctx = servicelayer.WithMessageID(ctx, msg.ID)
	}
	if cause := causeOf(msg); cause != (servicelayer.Cause{}) {
		ctx = servicelayer.WithCause(ctx, cause)
	}
	_, err = c.bus.Handle(ctx, msg.Command)
	if errors.Is(err, servicelayer.ErrDuplicateMessage) {
		// Processed before: acknowledging it again is all there is to do.
		c.log.InfoContext(ctx, "duplicate message skipped", "channel", m.channel, "message_id", msg.ID)
		return errDuplicate
	}
	if err != nil {
		return err
	}
	c.log.DebugContext(ctx, "message handled", "channel", m.channel, "command", msg.Command.Name(), "message_id", msg.ID)
	return nil
}

// causeOf is the cause of the work a message asks for, which the events it
// raises carry: caused by the message itself (its id), or, when it has none,
// by what the sender says caused it; in the chain the sender names, or else
// in the chain the message starts.
func causeOf(msg Message) servicelayer.Cause {
	c := servicelayer.Cause{CausationID: msg.ID, CorrelationID: msg.CorrelationID}
	if c.CausationID == "" {
		c.CausationID = msg.CausationID
	}
	if c.CorrelationID == "" {
		c.CorrelationID = c.CausationID
	}
	return c
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

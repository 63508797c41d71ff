// Package consumer turns messages from other services into commands for the
// bus. A message that cannot be applied is logged with its reason and set
// aside as a dead letter, recorded durably in the database; the consumer
// always goes on with the next one.
//
// Messages are handled concurrently, keyed by the product they are about:
// those about one product one after another in arrival order, those about
// different products side by side (see OrderedPool).
package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"allocation/domain"
	"allocation/servicelayer"
)

// HandleTimeout bounds the handling of one message, so that a stuck
// dependency cannot stall the consumer forever.
const HandleTimeout = 30 * time.Second

// deadLetterTimeout bounds setting a stream entry aside, even at shutdown:
// an entry whose dead letter could not be recorded stays pending and comes
// back. A pub/sub message does not come back, so recording its dead letter
// is retried for up to HandleTimeout while the database is down.
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
	HandleMessage(ctx context.Context, messageID string, cmd domain.Command) (servicelayer.Result, error)
}

// Owners says which product a batch belongs to. change_batch_quantity names
// a batch only, yet it must stay in order with the other messages about the
// batch's product.
type Owners interface {
	ProductOfBatch(ctx context.Context, ref string) (sku string, found bool, err error)
}

// Source delivers pub/sub messages, one call of handle at a time in arrival
// order, and keeps the newest of the ones that could not be applied where
// an operator looks first (the Redis list dead_letter): a convenience, the
// database keeps them all. handle may block: the source then reads no
// further (backpressure). *redis.Subscriber is one.
type Source interface {
	Run(ctx context.Context, channels []string, handle func(ctx context.Context, channel string, payload []byte)) error
	DeadLetter(ctx context.Context, channel string, payload []byte, reason string) error
}

// StreamSource delivers stream entries that stay pending until settled.
// *redis.StreamReader is one. It calls handle one entry of a stream at a
// time in stream order (entries of different streams may come at the same
// time, from different goroutines: handle must allow that), with the entry's
// "data" field as payload and its other fields as fields; handle may block
// (backpressure) and calls settle exactly once, later
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
	// Source is the pub/sub source, and keeps the newest dead letters for
	// streams too.
	Source Source
	// DeadLetters records every message set aside, durably: a stream entry
	// is acknowledged only once its dead letter is committed.
	DeadLetters servicelayer.DeadLetterRecorder
	Log         *slog.Logger
	// Concurrency is how many messages are handled at once, each about a
	// different product (DefaultConcurrency when 0).
	Concurrency int
	// MaxInFlight bounds the messages read and not yet handled, running
	// ones included (8 per worker when 0): the sources stop reading there.
	MaxInFlight int
	// Observe, when set, is told what became of every message: handled,
	// duplicate, dead_lettered or unsettled (left pending on its stream).
	Observe func(channel, outcome string)
	// TracerProvider makes the span of each message, the child of the
	// traceparent it carries; the global provider (a no-op unless set)
	// when nil.
	TracerProvider trace.TracerProvider
}

// Consumer feeds the bus from a Source and a StreamSource. Messages about
// one product are handled one after another in arrival order; messages about
// different products are handled concurrently.
type Consumer struct {
	bus     Bus
	owners  Owners
	source  Source
	dead    servicelayer.DeadLetterRecorder
	log     *slog.Logger
	observe func(channel, outcome string)
	// pool is shared by pub/sub and streams, so that Concurrency bounds the
	// consumer's share of the database connections as a whole.
	pool *OrderedPool
	// malformed numbers malformed messages, for their keys.
	malformed atomic.Uint64
	tracer    trace.Tracer
}

// New builds a consumer from cfg.
func New(cfg Config) (*Consumer, error) {
	if cfg.Bus == nil || cfg.Owners == nil || cfg.Source == nil || cfg.DeadLetters == nil {
		return nil, errors.New("consumer: Bus, Owners, Source and DeadLetters are required")
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
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	return &Consumer{
		bus:     cfg.Bus,
		owners:  cfg.Owners,
		source:  cfg.Source,
		dead:    cfg.DeadLetters,
		log:     cfg.Log,
		observe: cfg.Observe,
		pool:    NewOrderedPool(cfg.Concurrency, cfg.MaxInFlight),
		tracer:  cfg.TracerProvider.Tracer(servicelayer.TracerName),
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
		m.received = time.Now()
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
		m.streamID, m.received = id, time.Now()
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
	// streamID is the entry's id when it came on a stream.
	streamID string
	received time.Time
}

// prepare decodes a message and finds its key. It runs in arrival order on
// the reading goroutine, since the key decides what the message waits for.
// fields are a stream entry's fields beside its body (nil for pub/sub);
// fallbackID names a message that carries no message_id.
func (c *Consumer) prepare(ctx context.Context, channel string, payload []byte, fields map[string]string, fallbackID string) *inbound {
	m := &inbound{channel: channel, payload: payload}
	m.msg, m.err = decode(channel, payload, fields)
	if m.err != nil {
		// Any key will do: it is only set aside. A key of its own lets a
		// flood of them be set aside side by side, their dead letters
		// written together.
		m.key = "malformed:" + strconv.FormatUint(c.malformed.Add(1), 10)
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
		c.setAside(ctx, m, err)
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
	return c.setAside(ctx, m, err)
}

// process applies one message. While the database is down the message waits
// for it (up to HandleTimeout) rather than being set aside: it is a good
// message. A message in hand when ctx ends is still finished.
func (c *Consumer) process(ctx context.Context, m *inbound) (err error) {
	if m.err != nil {
		return m.err
	}
	ctx, span := c.startSpan(ctx, m)
	defer func() {
		if err != nil && !errors.Is(err, errDuplicate) {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
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

// startSpan starts the span of handling m, the child of the trace context
// the sender gave: the events m raises join the sender's trace. Without
// one, m starts a trace.
func (c *Consumer) startSpan(ctx context.Context, m *inbound) (context.Context, trace.Span) {
	ctx = servicelayer.WithTraceContext(ctx, m.msg.TraceParent, m.msg.TraceState)
	ctx, span := c.tracer.Start(ctx, "process "+m.channel, trace.WithSpanKind(trace.SpanKindConsumer))
	if !span.IsRecording() {
		return ctx, span // tracing off: the attributes would only be allocated
	}
	span.SetAttributes(
		attribute.String("messaging.system", "redis"),
		attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.destination.name", m.channel),
		attribute.String("messaging.message.id", m.msg.ID),
	)
	if m.streamID != "" {
		span.SetAttributes(attribute.String("allocation.stream_id", m.streamID))
	}
	return ctx, span
}

// setAside logs a message that cannot be applied and records it as a dead
// letter; it reports whether the dead letter was recorded, so that a stream
// entry may be acknowledged.
func (c *Consumer) setAside(ctx context.Context, m *inbound, err error) bool {
	level := slog.LevelError // the service failed, not the sender
	if rejected(err) {
		level = slog.LevelWarn
	}
	c.log.Log(ctx, level, "message set aside", "channel", m.channel, "stream_id", m.streamID, "payload", string(m.payload), "reason", err.Error())
	l := servicelayer.DeadLetter{
		Channel: m.channel, Payload: m.payload, Reason: err.Error(),
		StreamID: m.streamID, MessageID: m.senderID(), ReceivedAt: m.received,
	}
	return c.keep(ctx, l) == nil
}

// SetAsideEntry records a stream entry the stream reader refuses itself
// (it has no body, or was delivered too often) as a dead letter. The entry
// may be acknowledged once it returns nil; until then it stays pending.
func (c *Consumer) SetAsideEntry(ctx context.Context, stream, id string, payload []byte, reason string) error {
	if _, err := decode(stream, payload, nil); err != nil && len(payload) > 0 {
		// Why it never settled, most likely: its earlier dead letters
		// could not be recorded.
		reason += "; " + err.Error()
	}
	c.log.WarnContext(ctx, "stream entry set aside", "channel", stream, "stream_id", id, "payload", string(payload), "reason", reason)
	return c.keep(ctx, servicelayer.DeadLetter{
		Channel: stream, Payload: payload, Reason: reason,
		StreamID: id, MessageID: senderID(payload), ReceivedAt: time.Now(),
	})
}

// keep records l in the database, then in the source's list of the newest
// dead letters. The database is what counts: when it cannot be written the
// message is not settled (a stream entry stays pending and comes back); the
// list is a convenience, and failing to write it is only logged.
func (c *Consumer) keep(ctx context.Context, l servicelayer.DeadLetter) error {
	timeout := HandleTimeout // pub/sub will not bring the message back
	if l.FromStream() {
		timeout = deadLetterTimeout // Redis keeps the entry meanwhile
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	err := retryWhileUnavailable(dctx, func() error {
		var err error
		l.ID, err = c.dead.RecordDeadLetter(dctx, l)
		return err
	})
	if err != nil {
		if l.FromStream() {
			c.log.ErrorContext(ctx, "dead letter not recorded: the entry stays pending and comes back",
				"channel", l.Channel, "stream_id", l.StreamID, "error", err)
		} else {
			c.log.ErrorContext(ctx, "dead letter not recorded in the database: only the Redis list keeps it",
				"channel", l.Channel, "payload", string(l.Payload), "error", err)
			c.keepInList(ctx, l)
		}
		c.observe(l.Channel, "unsettled")
		return err
	}
	c.keepInList(ctx, l)
	c.observe(l.Channel, "dead_lettered")
	return nil
}

// keepInList adds l to the source's list of the newest dead letters.
func (c *Consumer) keepInList(ctx context.Context, l servicelayer.DeadLetter) {
	reason := l.Reason
	var where []string
	if l.StreamID != "" {
		where = append(where, "stream entry "+l.StreamID)
	}
	if l.ID != 0 {
		where = append(where, "dead letter "+strconv.FormatInt(l.ID, 10))
	}
	if len(where) > 0 {
		reason += " (" + strings.Join(where, ", ") + ")"
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deadLetterTimeout)
	defer cancel()
	if err := c.source.DeadLetter(lctx, l.Channel, l.Payload, reason); err != nil {
		c.log.WarnContext(ctx, "dead letter not added to the Redis list", "channel", l.Channel, "dead_letter_id", l.ID, "error", err)
	}
}

// senderID is the message_id the sender gave, or empty: the decoded one,
// not the stream id a message without one is known by.
func (m *inbound) senderID() string {
	if m.err == nil && m.msg.ID != "" && m.msg.ID != "stream:"+m.channel+":"+m.streamID {
		return m.msg.ID
	}
	return senderID(m.payload)
}

// senderID reads a message_id from a payload that may not decode as its
// channel's message; empty when there is none.
func senderID(payload []byte) string {
	var body struct {
		MessageID any `json:"message_id"`
	}
	if json.Unmarshal(payload, &body) != nil {
		return ""
	}
	id, _ := body.MessageID.(string)
	return id
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
	if cause := causeOf(msg); cause != (servicelayer.Cause{}) {
		ctx = servicelayer.WithCause(ctx, cause)
	}
	_, err = c.bus.HandleMessage(ctx, msg.ID, msg.Command)
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

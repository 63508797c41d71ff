// Package consumer turns messages from other services into commands for the
// bus. A message that cannot be applied is logged with its reason and set
// aside as a dead letter; the consumer always goes on with the next one.
package consumer

import (
	"context"
	"fmt"
	"log/slog"

	"allocation/domain"
	"allocation/servicelayer"
)

// Bus handles commands.
type Bus interface {
	Handle(ctx context.Context, cmd domain.Command) (servicelayer.Result, error)
}

// Source delivers messages and keeps the ones that could not be applied.
type Source interface {
	Run(ctx context.Context, channels []string, handle func(ctx context.Context, channel string, payload []byte)) error
	DeadLetter(ctx context.Context, channel string, payload []byte, reason string) error
}

// Consumer feeds the bus from a Source.
type Consumer struct {
	bus    Bus
	source Source
	log    *slog.Logger
}

func New(bus Bus, source Source, log *slog.Logger) *Consumer {
	return &Consumer{bus: bus, source: source, log: log}
}

// Run consumes until ctx ends.
func (c *Consumer) Run(ctx context.Context) error {
	return c.source.Run(ctx, []string{ChangeBatchQuantity, Allocate}, c.handle)
}

func (c *Consumer) handle(ctx context.Context, channel string, payload []byte) {
	if err := c.apply(ctx, channel, payload); err != nil {
		c.log.WarnContext(ctx, "message set aside", "channel", channel, "payload", string(payload), "reason", err.Error())
		if dlErr := c.source.DeadLetter(ctx, channel, payload, err.Error()); dlErr != nil {
			c.log.ErrorContext(ctx, "dead letter lost", "channel", channel, "payload", string(payload), "error", dlErr)
		}
	}
}

// apply decodes and handles one message; a panic becomes its error, so that
// one bad message cannot stop the consumer.
func (c *Consumer) apply(ctx context.Context, channel string, payload []byte) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic while handling: %v", p)
		}
	}()
	cmd, err := Decode(channel, payload)
	if err != nil {
		return err
	}
	if _, err := c.bus.Handle(ctx, cmd); err != nil {
		return err
	}
	c.log.DebugContext(ctx, "message handled", "channel", channel, "command", cmd.Name())
	return nil
}

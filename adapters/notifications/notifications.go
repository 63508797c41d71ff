// Package notifications tells people about things that need them, such as a
// product running out of stock: by email when a mail server is configured,
// in the log otherwise.
package notifications

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/smtp"
	"strings"
	"time"
)

// DefaultFrom is the sender of the service's mail.
const DefaultFrom = "allocations@example.com"

// sendTimeout bounds one mail when the caller's context has no deadline, so a
// mail server that stops answering cannot stall the bus.
const sendTimeout = 10 * time.Second

// SMTP sends notifications as mail through a server that needs no auth.
type SMTP struct {
	addr string
	from string
}

// NewSMTP sends through addr (host:port) as from (DefaultFrom when empty).
func NewSMTP(addr, from string) *SMTP {
	if from == "" {
		from = DefaultFrom
	}
	return &SMTP{addr: addr, from: from}
}

// Send mails message to destination. It gives up when ctx ends, or after
// sendTimeout when ctx has no deadline.
func (s *SMTP) Send(ctx context.Context, destination, message string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, sendTimeout)
		defer cancel()
	}
	if err := s.send(ctx, destination, message); err != nil {
		return fmt.Errorf("mail %s via %s: %w", destination, s.addr, err)
	}
	return nil
}

func (s *SMTP) send(ctx context.Context, to, message string) error {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The conversation itself must end with ctx too: a server that accepts
	// the connection and then says nothing would hang net/smtp.
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	host, _, _ := net.SplitHostPort(s.addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail(s.from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(mail(s.from, to, message)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func mail(from, to, body string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\n", from)
	fmt.Fprintf(&b, "To: %s\r\n", to)
	fmt.Fprintf(&b, "Subject: allocation service notification\r\n")
	fmt.Fprintf(&b, "Date: %s\r\n", time.Now().UTC().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8\r\n\r\n")
	// SMTP lines end in CRLF whatever the message used.
	body = strings.ReplaceAll(body, "\r\n", "\n")
	b.WriteString(strings.ReplaceAll(body, "\n", "\r\n"))
	b.WriteString("\r\n")
	return []byte(b.String())
}

// Log writes notifications to the service log, for when no mail server is set.
type Log struct{ log *slog.Logger }

func NewLog(log *slog.Logger) *Log {
	if log == nil {
		log = slog.Default()
	}
	return &Log{log: log}
}

// Send logs one line with the destination and the message.
func (l *Log) Send(ctx context.Context, destination, message string) error {
	l.log.InfoContext(ctx, "notification", "destination", destination, "message", message)
	return nil
}

package integration_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/mail"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"time"

	"allocation/adapters/memory"
	"allocation/adapters/notifications"
	"allocation/domain"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// sentMail is one mail as an SMTP server received it.
type sentMail struct {
	from string   // MAIL FROM
	to   []string // RCPT TO
	data string   // after DATA, dot-unstuffed, line ends as sent
}

// smtpSink is a mail server that speaks just enough SMTP to accept mail,
// listening on a free port of 127.0.0.1 until the test ends.
func smtpSink(t *testing.T) (addr string, mails <-chan sentMail) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	out := make(chan sentMail, 10)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go serveSMTP(conn, out)
		}
	}()
	return ln.Addr().String(), out
}

func serveSMTP(conn net.Conn, out chan<- sentMail) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(waitTimeout))
	tp := textproto.NewConn(conn)
	reply := func(code int, msg string) bool { return tp.PrintfLine("%d %s", code, msg) == nil }
	if !reply(220, "sink ready") {
		return
	}
	var m sentMail
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO", "HELO":
			reply(250, "sink")
		case "MAIL":
			m = sentMail{from: address(arg)}
			reply(250, "ok")
		case "RCPT":
			m.to = append(m.to, address(arg))
			reply(250, "ok")
		case "DATA":
			reply(354, "end with <CRLF>.<CRLF>")
			data, err := readData(tp.R)
			if err != nil {
				return
			}
			m.data = data
			out <- m
			reply(250, "queued")
		case "QUIT":
			reply(221, "bye")
			return
		default:
			reply(250, "ok")
		}
	}
}

// readData reads a DATA section up to the lone dot, as sent: line ends are
// kept as they came (so bare LFs show) and only dot-stuffing is undone.
func readData(r *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if line == ".\r\n" {
			return b.String(), nil
		}
		b.WriteString(strings.TrimPrefix(line, "."))
	}
}

// silentServer accepts connections and never says a word.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 10)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- conn
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		for {
			select {
			case c := <-conns:
				_ = c.Close()
			default:
				return
			}
		}
	})
	return ln.Addr().String()
}

// address takes the mailbox out of "FROM:<a@b>" or "TO:<a@b>".
func address(arg string) string {
	_, rest, _ := strings.Cut(arg, ":")
	rest, _, _ = strings.Cut(rest, " ")
	return strings.Trim(rest, "<>")
}

func awaitMail(t *testing.T, mails <-chan sentMail) sentMail {
	t.Helper()
	select {
	case m := <-mails:
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("no mail within %s", waitTimeout)
		return sentMail{}
	}
}

type discardPublisher struct{}

func (discardPublisher) Publish(context.Context, servicelayer.Envelope) error        { return nil }
func (discardPublisher) PublishBatch(context.Context, []servicelayer.Envelope) error { return nil }

// The book's test_out_of_stock_email.
func TestSMTPOutOfStockEmailGoesToTheStockDesk(t *testing.T) {
	t.Parallel()
	addr, mails := smtpSink(t)
	log, _ := testLogger(t)
	bus := servicelayer.NewBus(servicelayer.Dependencies{
		UoW:       memory.NewStore(),
		Publisher: discardPublisher{},
		Notifier:  notifications.NewSMTP(addr, ""),
		Log:       log,
	})
	sku := testenv.RandomName("sku-")
	ctx := context.Background()
	if _, err := bus.Handle(ctx, domain.CreateBatch{Ref: testenv.RandomName("batch-"), SKU: sku, Qty: 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Handle(ctx, domain.Allocate{OrderID: testenv.RandomName("order-"), SKU: sku, Qty: 10}); err != nil {
		t.Fatal(err)
	}

	m := awaitMail(t, mails)
	if m.from != "allocations@example.com" || !slices.Equal(m.to, []string{"stock@made.com"}) {
		t.Errorf("envelope from %q to %v, want allocations@example.com to [stock@made.com]", m.from, m.to)
	}
	msg, err := mail.ReadMessage(strings.NewReader(m.data))
	if err != nil {
		t.Fatalf("mail is not a valid message: %v\n%s", err, m.data)
	}
	for header, want := range map[string]string{
		"From":    "allocations@example.com",
		"To":      "stock@made.com",
		"Subject": "allocation service notification",
	} {
		if got := msg.Header.Get(header); got != want {
			t.Errorf("%s: %q, want %q", header, got, want)
		}
	}
	if _, err := msg.Header.Date(); err != nil {
		t.Errorf("Date header: %v", err)
	}
	if !strings.Contains(m.data, "Out of stock for "+sku) {
		t.Errorf("body does not say %q:\n%s", "Out of stock for "+sku, m.data)
	}
	select {
	case extra := <-mails:
		t.Errorf("a second mail was sent: %+v", extra)
	default:
	}
}

func TestSMTPSendFailsWithinTheDeadlineWhenTheServerCannotBeReached(t *testing.T) {
	t.Parallel()
	// A port nobody listens on.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	_ = closed.Close()
	silent := silentServer(t)

	for name, addr := range map[string]string{"refused": refused, "silent": silent} {
		t.Run(name, func(t *testing.T) {
			const deadline = 300 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			err := notifications.NewSMTP(addr, "").Send(ctx, "stock@made.com", "Out of stock for LAMP")
			if err == nil {
				t.Fatal("Send succeeded without a mail server")
			}
			if took := time.Since(start); took > deadline+time.Second {
				t.Errorf("Send took %s, want it to give up at the %s deadline", took, deadline)
			}
			if !strings.Contains(err.Error(), addr) {
				t.Errorf("error %q does not name the server %s", err, addr)
			}
		})
	}
}

// stallingServer greets and answers EHLO, then never answers MAIL FROM. It
// reports each MAIL FROM it receives, so a test knows the client is waiting
// mid-conversation (past the dial).
func stallingServer(t *testing.T) (addr string, stalled <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	out := make(chan struct{}, 10)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(2 * waitTimeout))
				tp := textproto.NewConn(conn)
				_ = tp.PrintfLine("220 slow")
				for {
					line, err := tp.ReadLine()
					if err != nil {
						return
					}
					if strings.HasPrefix(strings.ToUpper(line), "MAIL") {
						out <- struct{}{}
						_, _ = tp.ReadLine() // until the client hangs up
						return
					}
					_ = tp.PrintfLine("250 ok")
				}
			}()
		}
	}()
	return ln.Addr().String(), out
}

func TestSMTPSendGivesUpWhenItsContextIsCancelled(t *testing.T) {
	t.Parallel()
	addr, stalled := stallingServer(t)
	ctx, cancel := context.WithCancel(context.Background()) // no deadline
	done := make(chan error, 1)
	go func() { done <- notifications.NewSMTP(addr, "").Send(ctx, "stock@made.com", "hi") }()
	select {
	case <-stalled:
	case <-time.After(waitTimeout):
		t.Fatal("Send never got to MAIL FROM")
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Send succeeded against a server that never answered")
		}
	case <-time.After(waitTimeout):
		t.Fatal("Send still waiting on a stalled server after its context was cancelled")
	}
}

func TestSMTPMailUsesCRLFAndTheConfiguredSender(t *testing.T) {
	t.Parallel()
	addr, mails := smtpSink(t)
	if err := notifications.NewSMTP(addr, "ops@example.org").Send(context.Background(), "desk@example.org", "line one\nline two\r\n.line three"); err != nil {
		t.Fatalf("Send: %v", err)
	}
	m := awaitMail(t, mails)
	if m.from != "ops@example.org" {
		t.Errorf("MAIL FROM %q, want ops@example.org", m.from)
	}
	if bare := strings.Count(m.data, "\n") - strings.Count(m.data, "\r\n"); bare != 0 {
		t.Errorf("%d lines end in a bare LF:\n%q", bare, m.data)
	}
	_, body, ok := strings.Cut(m.data, "\r\n\r\n")
	if !ok || body != "line one\r\nline two\r\n.line three\r\n" {
		t.Errorf("body = %q, want the message with CRLF line ends and its dot kept", body)
	}
}

func TestLogNotifierWritesOneLineWithDestinationAndMessage(t *testing.T) {
	t.Parallel()
	buf := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(buf, nil))
	if err := notifications.NewLog(log).Send(context.Background(), "stock@made.com", "Out of stock for LAMP"); err != nil {
		t.Fatalf("Send: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("logged %d lines, want one: %q", len(lines), lines)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["destination"] != "stock@made.com" || rec["message"] != "Out of stock for LAMP" {
		t.Errorf("logged %v, want the destination and the message as fields", rec)
	}
}

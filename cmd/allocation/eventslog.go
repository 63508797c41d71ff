package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"allocation/domain"
	"allocation/entrypoints/wire"
	"allocation/servicelayer"
)

const eventsLogHelp = `Usage: allocation events log [-sku SKU] [-order ID] [-batch REF] [-type TYPE] [-after CURSOR] [-limit N] [-json]

Prints the event log, oldest first: every batch created, batch quantity
changed, line allocated, deallocated or out of stock, as GET /events shows
it. Filters combine. Without -limit it prints every matching event, page by
page (an export: allocation events log -json > history.jsonl); with -limit
it prints that many and, on stderr, "more: -after C" when more follow. At the
end it prints "next: -after C" on stderr: pass C as -after to go on later
from there (a periodic export). -json prints one JSON object a line, the
fields of GET /events.
`

// eventsLog prints the history the event log holds.
func eventsLog(ctx context.Context, history servicelayer.History, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("events log", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var q servicelayer.EventQuery
	fs.StringVar(&q.SKU, "sku", "", "only events of this product")
	fs.StringVar(&q.OrderID, "order", "", "only events of this order")
	fs.StringVar(&q.BatchRef, "batch", "", "only events of this batch")
	fs.StringVar(&q.Type, "type", "", "only events of this type (batch_created, batch_quantity_changed, allocated, deallocated, out_of_stock)")
	after := fs.String("after", "", "start after this cursor (the next of an earlier page)")
	limit := fs.Int("limit", 0, fmt.Sprintf("print at most this many events (1 to %d); 0: every one", servicelayer.MaxEventsPage))
	asJSON := fs.Bool("json", false, "print JSON lines instead of a table")
	fs.Usage = func() {
		fmt.Fprint(stderr, eventsLogHelp)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("events log: unexpected arguments %q", fs.Args())
	}
	if err := checkEventQuery(q, *limit); err != nil {
		return fmt.Errorf("events log: %w", err)
	}
	if *after != "" {
		id, err := wire.ParseCursor(*after)
		if err != nil {
			return fmt.Errorf("events log: %w", err)
		}
		q.After = id
	}
	return printEvents(ctx, history, q, *limit, newEventPrinter(stdout, *asJSON), stderr)
}

// printEvents prints the events q selects, page by page: limit of them, or
// every one when limit is 0. It tells on stderr where to go on from.
func printEvents(ctx context.Context, history servicelayer.History, q servicelayer.EventQuery, limit int, out *eventPrinter, stderr io.Writer) error {
	q.Limit = servicelayer.MaxEventsPage
	if limit > 0 {
		q.Limit = limit + 1 // one more: is there a next page?
	}
	for printed := 0; ; {
		found, err := history.Events(ctx, q)
		if err != nil {
			return err
		}
		for _, env := range found {
			if limit > 0 && printed == limit {
				fmt.Fprintf(stderr, "more: -after %s\n", wire.Cursor(q.After))
				return out.flush()
			}
			if err := out.print(wire.NewHistoryEvent(env)); err != nil {
				return err
			}
			printed++
			q.After = env.LogID
		}
		if len(found) < q.Limit {
			if printed > 0 {
				// Where an export that runs again later goes on from.
				fmt.Fprintf(stderr, "next: -after %s\n", wire.Cursor(q.After))
			}
			return out.flush()
		}
	}
}

// checkEventQuery refuses what GET /events would refuse.
func checkEventQuery(q servicelayer.EventQuery, limit int) error {
	for name, v := range map[string]string{"-sku": q.SKU, "-order": q.OrderID, "-batch": q.BatchRef} {
		if v != "" {
			if err := domain.CheckReference(name, v); err != nil {
				return err
			}
		}
	}
	if q.Type != "" && !slices.Contains(servicelayer.EventTypes, q.Type) {
		return fmt.Errorf("-type %q: want one of %v", q.Type, servicelayer.EventTypes)
	}
	if limit < 0 || limit > servicelayer.MaxEventsPage {
		return fmt.Errorf("-limit %d: want 1 to %d, or 0 for every event", limit, servicelayer.MaxEventsPage)
	}
	return nil
}

// eventPrinter writes events as a table or as JSON lines.
type eventPrinter struct {
	table *tabwriter.Writer // nil: JSON lines
	json  *json.Encoder
	rows  int
}

func newEventPrinter(w io.Writer, asJSON bool) *eventPrinter {
	if asJSON {
		return &eventPrinter{json: json.NewEncoder(w)}
	}
	return &eventPrinter{table: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
}

func (p *eventPrinter) print(e wire.HistoryEvent) error {
	if p.json != nil {
		return p.json.Encode(e)
	}
	if p.rows == 0 {
		fmt.Fprintln(p.table, "ID\tOCCURRED AT\tTYPE\tSKU\tORDER\tBATCH\tQTY\tOLD QTY\tETA\tMESSAGE ID\tCAUSATION ID")
	}
	p.rows++
	_, err := fmt.Fprintf(p.table, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.OccurredAt, e.Type, e.SKU,
		orDash(e.OrderID), orDash(e.BatchRef), intOrDash(e.Qty), intOrDash(e.OldQty), strOrDash(e.ETA), e.MessageID, orDash(e.CausationID))
	return err
}

func (p *eventPrinter) flush() error {
	if p.table == nil {
		return nil
	}
	return p.table.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func intOrDash(n *int) string {
	if n == nil {
		return "-"
	}
	return fmt.Sprint(*n)
}

func strOrDash(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

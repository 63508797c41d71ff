// Package cli holds the operators' subcommands of the allocation binary
// that work on the service's ports: their command lines are parsed here,
// before any configuration is read or connection opened, so that a wrong
// command line fails at once and -h touches nothing.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"allocation/servicelayer"
)

// DeadLettersUsage explains `allocation dead-letters`.
const DeadLettersUsage = `Usage: allocation dead-letters list [-limit N] [-after ID] [-json]
       allocation dead-letters retry [-again] ID

Dead letters are the inbound Redis messages the service refused (malformed,
refused by the domain, or stream entries delivered too often), kept in the
database with the reason: every one of them, however many.

list      prints them oldest first: id, channel, stream entry id (empty for
          pub/sub), message_id, when received and retried, reason, payload.
retry ID  puts dead letter ID back where it came from: a new entry on the
          inbound stream it came from, or a message on its pub/sub channel
          (which fails, and marks nothing, when no consumer listens), and
          marks it retried. A retry that is refused again is a new dead
          letter. A dead letter retried before is refused unless -again.

Both read the database the service uses (DATABASE_URL, or the SQLite file in
DATA_DIR); retry also needs its Redis (REDIS_URL, or the running service's
embedded Redis at EMBEDDED_REDIS_ADDR) and REDIS_PREFIX.
`

// DefaultDeadLetterLimit is how many dead letters list prints unless told.
const DefaultDeadLetterLimit = 100

// MaxDeadLetterLimit bounds -limit: page on with -after.
const MaxDeadLetterLimit = 10_000

// DeadLetters is a parsed `allocation dead-letters` command line.
type DeadLetters struct {
	// Retry is set for `retry ID`, and ID is the dead letter's id; list
	// otherwise.
	Retry bool
	ID    int64
	Again bool
	// Limit, After and JSON shape list's output.
	Limit int
	After int64
	JSON  bool
}

// ParseDeadLetters reads the arguments after `dead-letters`. -h anywhere
// prints the usage on out and returns flag.ErrHelp; a wrong command line
// returns an error that says what is wrong and what is wanted.
func ParseDeadLetters(args []string, out io.Writer) (DeadLetters, error) {
	if len(args) == 0 {
		return DeadLetters{}, errors.New("dead-letters: want `list` or `retry ID` (see allocation dead-letters -h)")
	}
	if isHelp(args[0]) {
		fmt.Fprint(out, DeadLettersUsage)
		return DeadLetters{}, flag.ErrHelp
	}
	var d DeadLetters
	fs := flag.NewFlagSet("dead-letters "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned; -h prints the usage below
	switch args[0] {
	case "list":
		fs.IntVar(&d.Limit, "limit", DefaultDeadLetterLimit, "how many to print")
		fs.Int64Var(&d.After, "after", 0, "print those with an id above this")
		fs.BoolVar(&d.JSON, "json", false, "print a JSON array")
	case "retry":
		d.Retry = true
		fs.BoolVar(&d.Again, "again", false, "re-drive a dead letter retried before")
	default:
		return DeadLetters{}, fmt.Errorf("dead-letters: unknown subcommand %q: want `list` or `retry ID`", args[0])
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(out, DeadLettersUsage)
			return DeadLetters{}, flag.ErrHelp
		}
		return DeadLetters{}, fmt.Errorf("dead-letters %s: %w", args[0], err)
	}
	rest := fs.Args()
	if d.Retry {
		if len(rest) != 1 {
			return DeadLetters{}, fmt.Errorf("dead-letters retry: want one dead letter id, got %d arguments", len(rest))
		}
		id, err := strconv.ParseInt(rest[0], 10, 64)
		if err != nil || id < 1 {
			return DeadLetters{}, fmt.Errorf("dead-letters retry: %q is not a dead letter id (a positive integer, as list prints)", rest[0])
		}
		d.ID = id
		return d, nil
	}
	if len(rest) != 0 {
		return DeadLetters{}, fmt.Errorf("dead-letters list: unexpected arguments %q", rest)
	}
	if d.Limit < 1 || d.Limit > MaxDeadLetterLimit {
		return DeadLetters{}, fmt.Errorf("dead-letters list: -limit %d: want 1 to %d (page on with -after)", d.Limit, MaxDeadLetterLimit)
	}
	if d.After < 0 {
		return DeadLetters{}, fmt.Errorf("dead-letters list: -after %d: want an id, 0 or more", d.After)
	}
	return d, nil
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// Run lists or retries dead letters; redriver is needed for retry only.
func (d DeadLetters) Run(ctx context.Context, archive servicelayer.DeadLetterArchive, redriver servicelayer.Redriver, out io.Writer) error {
	if d.Retry {
		l, err := servicelayer.RetryDeadLetter(ctx, archive, redriver, d.ID, d.Again, time.Now())
		if err != nil {
			return err
		}
		where := "channel"
		if l.FromStream() {
			where = "stream"
		}
		fmt.Fprintf(out, "dead letter %d re-driven on %s %s\n", l.ID, where, l.Channel)
		return nil
	}
	letters, err := archive.DeadLetters(ctx, d.After, d.Limit)
	if err != nil {
		return err
	}
	if d.JSON {
		return printJSON(out, letters)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tCHANNEL\tSTREAM ID\tMESSAGE ID\tRECEIVED AT\tRETRIED AT\tREASON\tPAYLOAD")
	for _, l := range letters {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.ID, l.Channel, orDash(l.StreamID), orDash(l.MessageID),
			formatTime(l.ReceivedAt), formatTime(l.RetriedAt), oneLine(l.Reason), strconv.Quote(string(l.Payload)))
	}
	return w.Flush()
}

// deadLetterJSON is a dead letter as list -json prints it.
type deadLetterJSON struct {
	ID        int64  `json:"id"`
	Channel   string `json:"channel"`
	StreamID  string `json:"stream_id,omitempty"`
	MessageID string `json:"message_id,omitempty"`
	Reason    string `json:"reason"`
	// Payload is the body as text (bytes that are not UTF-8 become U+FFFD).
	Payload    string `json:"payload"`
	ReceivedAt string `json:"received_at"`
	RecordedAt string `json:"recorded_at"`
	RetriedAt  string `json:"retried_at,omitempty"`
}

func printJSON(out io.Writer, letters []servicelayer.DeadLetter) error {
	rows := make([]deadLetterJSON, len(letters))
	for i, l := range letters {
		rows[i] = deadLetterJSON{
			ID: l.ID, Channel: l.Channel, StreamID: l.StreamID, MessageID: l.MessageID, Reason: l.Reason,
			Payload: string(l.Payload), ReceivedAt: rfc3339(l.ReceivedAt), RecordedAt: rfc3339(l.RecordedAt), RetriedAt: rfc3339(l.RetriedAt),
		}
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

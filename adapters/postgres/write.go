package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lib/pq"

	"allocation/adapters/sqlstore"
	"allocation/servicelayer"
)

// Write implements sqlstore.Dialect: the steps of the write's plan are
// composed into one statement, one round trip and one commit. The statement
// has only the parts the plan needs, so an allocation and a batch correction
// each have their own, prepared once.
//
// The checks come first (guard): its conditions are the checks of the
// plan's steps. When one fails, allocation_refuse aborts the statement and
// with it everything it did; every other part runs only once the guard
// passed.
func (d *Dialect) Write(ctx context.Context, c *sqlstore.Changes) ([]sqlstore.Queued, error) {
	query, args := buildWrite(sqlstore.PlanWrite(c))
	st, err := d.stmts.Get(ctx, query)
	if err != nil {
		return nil, err
	}
	var rows []struct {
		MessageID   sql.NullString `db:"message_id"`
		EventID     sql.NullInt64  `db:"event_id"`
		Handler     sql.NullString `db:"handler"`
		FirstInLine sql.NullBool   `db:"in_turn"`
		Notified    sql.NullBool   `db:"notified"`
	}
	if err := st.SelectContext(ctx, &rows, args...); err != nil {
		return nil, d.Classify(fmt.Errorf("write unit of work: %w", err))
	}
	var queued []sqlstore.Queued
	for _, r := range rows {
		if r.EventID.Valid {
			queued = append(queued, sqlstore.Queued{MessageID: r.MessageID.String, LogID: r.EventID.Int64, Handler: r.Handler.String, FirstInLine: r.FirstInLine.Bool})
		}
	}
	return queued, nil
}

// statement builds one SQL statement: its parts (WITH queries) and the
// arguments they take, numbered in the order they are added.
type statement struct {
	parts  []string
	checks []string // WHEN … THEN allocation_refuse(…) of the guard
	args   []any
	plan   sqlstore.Plan
	now    string // the placeholder of the plan's Now, once a part uses it
	ok     string // the condition of the writes after the checks, once set
	has    map[sqlstore.StepName]bool
}

// time is the placeholder of the write's time.
func (s *statement) time() string {
	if s.now == "" {
		s.now = s.arg(s.plan.Now, "timestamptz")
	}
	return s.now
}

// arg adds an argument and returns its placeholder, cast to typ.
func (s *statement) arg(v any, typ string) string {
	s.args = append(s.args, v)
	return fmt.Sprintf("$%d::%s", len(s.args), typ)
}

func (s *statement) part(name, body string) {
	s.parts = append(s.parts, name+" AS (\n"+body+")")
}

// buildWrite composes the steps of p into one statement: the checked steps
// as parts the guard counts (or, for a step that must find nothing, as a
// condition of the guard), then the guard, then the writes it gates.
func buildWrite(p sqlstore.Plan) (string, []any) {
	s := &statement{plan: p, has: map[sqlstore.StepName]bool{}}
	for _, st := range p.Steps {
		if st.Check.Kind == sqlstore.NoCheck {
			s.guard()
		} else if s.ok != "" {
			panic(fmt.Sprintf("postgres: %s is checked after writes the guard gates", st.Name))
		}
		s.step(st)
		s.has[st.Name] = true
	}
	s.guard()
	return s.result(), s.args
}

// step adds the part of st, and its check to the guard.
func (s *statement) step(st sqlstore.Step) {
	name, cols := partName[st.Name], s.columns(st.Rows)
	body := stepText[st.Name](s, st, cols)
	switch st.Check.Kind {
	case sqlstore.EveryRow:
		s.part(name, body)
		s.checks = append(s.checks, fmt.Sprintf("WHEN (SELECT count(*) FROM %s) <> cardinality(%s) THEN %s", name, cols[0], refusal(st.Check)))
	case sqlstore.NoRow:
		s.checks = append(s.checks, fmt.Sprintf("WHEN EXISTS (%s) THEN %s", body, refusal(st.Check)))
	default:
		s.part(name, body)
	}
}

// refusal is the call that aborts the statement when check fails, with
// the code Classify maps back to the check's error.
func refusal(check sqlstore.Check) string {
	code := "40001" // serialization_failure: ErrConflict
	switch {
	case errors.Is(check.Refusal, servicelayer.ErrDuplicateMessage):
		code = "AL001"
	case errors.Is(check.Refusal, servicelayer.ErrNotDelivered):
		code = "AL002"
	}
	return fmt.Sprintf("allocation_refuse('%s', '%s')", code, check.Message)
}

// guard adds the part that runs the checks, once, before the first write;
// the writes carry s.ok.
func (s *statement) guard() {
	if s.ok != "" {
		return
	}
	s.ok = "true"
	if len(s.checks) > 0 {
		s.part("guard", "SELECT CASE\n\t"+strings.Join(s.checks, "\n\t")+"\n\tELSE true END AS ok")
		s.ok = "(SELECT ok FROM guard)"
	}
}

// columns adds each column as an array argument and returns their
// placeholders.
func (s *statement) columns(cols []sqlstore.Column) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		switch c.Type {
		case sqlstore.IntColumn:
			out[i] = s.arg(pq.Array(c.Values), "int[]")
		case sqlstore.IDColumn:
			out[i] = s.arg(pq.Array(c.Values), "bigint[]")
		case sqlstore.DateColumn:
			out[i] = s.arg(pq.Array(c.Values), "date[]")
		case sqlstore.TimeColumn:
			times := c.Values.([]time.Time)
			text := make([]string, len(times))
			for j, t := range times {
				text[j] = t.UTC().Format(time.RFC3339Nano)
			}
			out[i] = s.arg(pq.Array(text), "text[]")
		default:
			out[i] = s.arg(pq.Array(c.Values), "text[]")
		}
	}
	return out
}

// result finishes the statement with what comes back: the deliveries
// queued, and whether the dispatchers were woken for deliveries waiting for
// one done here. A delivery not in turn wakes nobody: it waits for an
// earlier one, and whoever completes that one wakes the dispatchers
// (MarkDone, or the write that completes it). Waking them on every such
// write would have them scan the event log once per request while Redis is
// down.
func (s *statement) result() string {
	wake := "false"
	if s.has[sqlstore.StepWakeFollowers] {
		wake += " OR EXISTS (SELECT FROM followers)"
	}
	from := "(SELECT true AS ok) g"
	if len(s.checks) > 0 {
		from = "guard g"
	}
	queue := "(SELECT NULL::uuid AS message_id, NULL::bigint AS event_id, NULL::text AS handler, NULL::boolean AS in_turn WHERE false)"
	if s.has[sqlstore.StepQueueDeliveries] {
		queue = "queue"
	}
	query := "WITH\n" + strings.Join(s.parts, ",\n") + fmt.Sprintf(`
SELECT q.message_id::text AS message_id, q.event_id, q.handler, q.in_turn,
       CASE WHEN %s THEN pg_notify('%s', '') END IS NOT NULL AS notified
FROM %s LEFT JOIN %s q ON g.ok
ORDER BY q.event_id, q.handler`, wake, notifyChannel, from, queue)
	if len(s.parts) == 0 {
		query = strings.TrimPrefix(query, "WITH\n")
	}
	return query
}

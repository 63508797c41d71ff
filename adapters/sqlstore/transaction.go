package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// StepTexts is how a dialect that runs a plan statement by statement (an
// embedded database, where a statement costs no round trip) says each step:
// one set-based statement per step, the same text whatever the number of
// rows. A step's arguments are numbered ?1, ?2… in this order: its rows,
// its Done rows, the rows of the step it joins (each as JSON text: an array
// of rows, each an array of values), the plan's Now, its FirstAttempt; each
// only when the step has it. A query (a SELECT, or a write with a
// RETURNING clause) counts the rows it returns, a write without one the
// rows it changed: RETURNING costs SQLite a temporary table, so a write
// returns rows only where a later step reads them. The deliveries step
// returns message_id, event_id, handler, in_turn.
type StepTexts struct {
	SQL map[StepName]string
	// TimeLayout is how the driver writes a time.Time: times in JSON rows
	// are written the same way.
	TimeLayout string
}

// RunPlan writes plan in one transaction on db, one statement per step,
// refusing the write with a step's error when its check fails. It returns
// the deliveries queued and whether any must wake the dispatchers.
//
// Its statements are kept prepared in stmts (on db): on an embedded
// database parsing one costs about as much as running it (a tenth of the
// embedded mode's CPU went to it). A statement is prepared after the first
// transaction that ran it, not within: a pool of one connection (SQLite's)
// has none to spare while the transaction holds it.
func RunPlan(ctx context.Context, db *sqlx.DB, stmts *Statements, texts StepTexts, plan Plan) (queued []Queued, wake bool, err error) {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, false, fmt.Errorf("begin transaction: %w", err)
	}
	w := &writer{tx: tx, stmts: stmts, ctx: ctx}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the error that matters is the one that made us roll back
		}
		w.prepareMissed()
	}()
	returned := map[StepName][][]any{}
	for _, st := range plan.Steps {
		rows, n, err := w.run(texts.SQL[st.Name], texts.args(plan, st, returned))
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", st.Name, err)
		}
		if !st.Check.Passes(n, RowCount(st.Rows)) {
			return nil, false, st.Check.Err()
		}
		returned[st.Name] = rows
	}
	if queued, err = queuedFrom(returned[StepQueueDeliveries]); err != nil {
		return nil, false, err
	}
	if err = tx.Commit(); err != nil {
		return nil, false, fmt.Errorf("commit: %w", err)
	}
	return queued, len(returned[StepWakeFollowers]) > 0, nil
}

// args are the arguments of st, in the order StepTexts says.
func (t StepTexts) args(plan Plan, st Step, returned map[StepName][][]any) []any {
	var args []any
	for _, columns := range [][]Column{st.Rows, st.Done} {
		if columns != nil {
			args = append(args, t.rowsJSON(RowCount(columns), func(i, j int) (any, bool) {
				if j == len(columns) {
					return nil, false
				}
				return columns[j].At(i), true
			}))
		}
	}
	if st.Joins != 0 {
		rows := returned[st.Joins]
		args = append(args, t.rowsJSON(len(rows), func(i, j int) (any, bool) {
			if j == len(rows[i]) {
				return nil, false
			}
			return rows[i][j], true
		}))
	}
	if st.UsesNow {
		args = append(args, plan.Now)
	}
	if st.UsesFirstAttempt {
		args = append(args, plan.FirstAttempt)
	}
	return args
}

// rowsJSON is n rows as one JSON array of rows; value(i, j) is column j of
// row i, false past the last column.
func (t StepTexts) rowsJSON(n int, value func(i, j int) (any, bool)) string {
	b := []byte{'['}
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		for j := 0; ; j++ {
			v, ok := value(i, j)
			if !ok {
				break
			}
			if j > 0 {
				b = append(b, ',')
			}
			b = t.appendJSON(b, v)
		}
		b = append(b, ']')
	}
	return string(append(b, ']'))
}

// appendJSON appends v (a value of Column.At, or of a row a step returned)
// as JSON.
func (t StepTexts) appendJSON(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case int64:
		return strconv.AppendInt(b, v, 10)
	case time.Time:
		return appendJSONString(b, v.UTC().Format(t.TimeLayout))
	case string:
		return appendJSONString(b, v)
	}
	encoded, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("sqlstore: no JSON for a %T: %v", v, err))
	}
	return append(b, encoded...)
}

// appendJSONString appends s as a JSON string: by hand when it is ASCII
// (ids, SKUs, a payload), through encoding/json otherwise, which also
// mends invalid UTF-8.
func appendJSONString(b []byte, s string) []byte {
	start := len(b)
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x80:
			quoted, _ := json.Marshal(s) // a string always encodes
			return append(b[:start], quoted...)
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// queuedFrom reads the rows the deliveries step returned (message_id,
// event_id, handler, in_turn), in the order of their event and handler.
func queuedFrom(rows [][]any) ([]Queued, error) {
	queued := make([]Queued, 0, len(rows))
	for _, r := range rows {
		msg, okMsg := r[0].(string)
		id, okID := r[1].(int64)
		handler, okHandler := r[2].(string)
		inTurn, okTurn := r[3].(int64)
		if !okMsg || !okID || !okHandler || !okTurn {
			return nil, fmt.Errorf("queued delivery: unexpected row %v", r)
		}
		queued = append(queued, Queued{MessageID: msg, LogID: id, Handler: handler, FirstInLine: inTurn != 0})
	}
	slices.SortFunc(queued, func(a, b Queued) int {
		return cmp.Or(cmp.Compare(a.LogID, b.LogID), cmp.Compare(a.Handler, b.Handler))
	})
	return queued, nil
}

// writer runs the statements of one transaction, prepared where stmts has
// them.
type writer struct {
	ctx    context.Context
	tx     *sqlx.Tx
	stmts  *Statements
	missed []string // queries run unprepared, to prepare once tx is over
}

// stmt is query prepared within tx, or nil when it is not prepared yet.
func (w *writer) stmt(query string) *sqlx.Stmt {
	if st, ok := w.stmts.prepared(query); ok {
		return w.tx.StmtxContext(w.ctx, st)
	}
	w.missed = append(w.missed, query)
	return nil
}

// prepareMissed prepares what the transaction ran unprepared; call it once
// the transaction is over. A statement that cannot be prepared stays
// unprepared: it is run as text, and fails there if it must.
func (w *writer) prepareMissed() {
	for _, q := range w.missed {
		w.stmts.prepareUnlocked(context.WithoutCancel(w.ctx), q)
	}
}

// run runs query and returns the rows it returns, if it is a SELECT or has
// a RETURNING clause, and how many rows it returned or changed.
func (w *writer) run(query string, args []any) ([][]any, int, error) {
	if strings.HasPrefix(query, "SELECT") || strings.Contains(query, "RETURNING") {
		rows, err := w.query(query, args)
		return rows, len(rows), err
	}
	var res sql.Result
	var err error
	if st := w.stmt(query); st != nil {
		res, err = st.ExecContext(w.ctx, args...)
	} else {
		res, err = w.tx.ExecContext(w.ctx, query, args...)
	}
	if err != nil {
		return nil, 0, err
	}
	n, err := res.RowsAffected()
	return nil, int(n), err
}

// query runs query and returns its rows, each a slice of its values.
func (w *writer) query(query string, args []any) ([][]any, error) {
	var rows *sqlx.Rows
	var err error
	if st := w.stmt(query); st != nil {
		rows, err = st.QueryxContext(w.ctx, args...)
	} else {
		rows, err = w.tx.QueryxContext(w.ctx, query, args...)
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var all [][]any
	for rows.Next() {
		r, err := rows.SliceScan()
		if err != nil {
			return nil, err
		}
		all = append(all, r)
	}
	return all, rows.Err()
}

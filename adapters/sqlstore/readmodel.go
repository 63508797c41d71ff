package sqlstore

import (
	"context"

	"allocation/domain"
)

// readModel collects the allocations view changes of one session; they are
// written with the rest of its changes.
type readModel session

// Add records that line is in batchRef; a redelivery rewrites the same row.
func (m *readModel) Add(_ context.Context, line domain.OrderLine, batchRef string) error {
	m.view.set(line, batchRef, true)
	return nil
}

// Remove forgets line; removing it twice is harmless.
func (m *readModel) Remove(_ context.Context, line domain.OrderLine) error {
	m.view.set(line, "", false)
	return nil
}

// viewChanges keeps the last change asked for each line, in the order the
// lines were first touched: one write per line, whatever happened to it.
type viewChanges struct {
	order []domain.OrderLine
	last  map[domain.OrderLine]viewChange
}

type viewChange struct {
	batchRef string
	present  bool
}

func (v *viewChanges) set(line domain.OrderLine, batchRef string, present bool) {
	if v.last == nil {
		v.last = map[domain.OrderLine]viewChange{}
	}
	if _, ok := v.last[line]; !ok {
		v.order = append(v.order, line)
	}
	v.last[line] = viewChange{batchRef: batchRef, present: present}
}

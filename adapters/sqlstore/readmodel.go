package sqlstore

import "allocation/domain"

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

// set records that line is in batchRef now, or out of the view when
// batchRef is "".
func (v *viewChanges) set(line domain.OrderLine, batchRef string) {
	if v.last == nil {
		v.last = map[domain.OrderLine]viewChange{}
	}
	if _, ok := v.last[line]; !ok {
		v.order = append(v.order, line)
	}
	v.last[line] = viewChange{batchRef: batchRef, present: batchRef != ""}
}

// rows are the rows to write and the lines to remove.
func (v *viewChanges) rows() (put []ViewRow, removed []domain.OrderLine) {
	for _, line := range v.order {
		if ch := v.last[line]; ch.present {
			put = append(put, ViewRow{Line: line, BatchRef: ch.batchRef})
		} else {
			removed = append(removed, line)
		}
	}
	return put, removed
}

package sqlstore

import (
	"fmt"
	"time"
)

// Timestamp scans a date or time whatever the driver makes of it: a
// time.Time, or text in one of the layouts SQL databases write. Null or
// missing is the zero time.
type Timestamp struct{ time.Time }

var timestampLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999-07:00",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	time.DateOnly,
}

// Scan implements sql.Scanner.
func (t *Timestamp) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		t.Time = time.Time{}
		return nil
	case time.Time:
		t.Time = v
		return nil
	case []byte:
		return t.parse(string(v))
	case string:
		return t.parse(v)
	case int64: // Unix milliseconds
		t.Time = time.UnixMilli(v).UTC()
		return nil
	}
	return fmt.Errorf("cannot read %T as a time", v)
}

func (t *Timestamp) parse(s string) error {
	for _, layout := range timestampLayouts {
		if parsed, err := time.Parse(layout, s); err == nil {
			t.Time = parsed
			return nil
		}
	}
	return fmt.Errorf("cannot read %q as a time", s)
}

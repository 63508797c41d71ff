package httpapi

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"allocation/domain"
	"allocation/entrypoints/wire"
	"allocation/servicelayer"
)

// eventsPage is the answer of GET /events: Next is the cursor of the next
// page, nil when this one is the last.
type eventsPage struct {
	Events []wire.HistoryEvent `json:"events"`
	Next   *string             `json:"next"`
}

// eventFilters are the query parameters of GET /events that filter, with
// where each goes in the query.
var eventFilters = map[string]func(q *servicelayer.EventQuery) *string{
	"sku":      func(q *servicelayer.EventQuery) *string { return &q.SKU },
	"orderid":  func(q *servicelayer.EventQuery) *string { return &q.OrderID },
	"batchref": func(q *servicelayer.EventQuery) *string { return &q.BatchRef },
	"type":     func(q *servicelayer.EventQuery) *string { return &q.Type },
}

// events answers GET /events: a page of the event log, oldest first.
func (h handlers) events(c echo.Context) error {
	q, err := parseEventQuery(c.Request().URL.Query())
	if err != nil {
		return err
	}
	limit := q.Limit
	q.Limit++ // one more than the page: is there a next one?
	found, err := h.views.Events(c.Request().Context(), q)
	if err != nil {
		return err
	}
	page := eventsPage{Events: make([]wire.HistoryEvent, 0, min(len(found), limit))}
	for i, env := range found {
		if i == limit {
			next := wire.Cursor(found[limit-1].LogID)
			page.Next = &next
			break
		}
		page.Events = append(page.Events, wire.NewHistoryEvent(env))
	}
	return c.JSON(http.StatusOK, page)
}

// parseEventQuery reads the parameters of GET /events strictly: an unknown
// or repeated parameter, an empty filter, an unknown type, a cursor this
// service did not make and a limit out of range are refused, each naming
// the parameter.
func parseEventQuery(params url.Values) (servicelayer.EventQuery, error) {
	q := servicelayer.EventQuery{Limit: servicelayer.DefaultEventsPage}
	for name, values := range params {
		if len(values) > 1 {
			return q, &wire.FieldError{Field: name, Reason: "is given more than once"}
		}
		v := values[0]
		switch field, filter := eventFilters[name]; {
		case filter:
			if err := domain.CheckReference(name, v); err != nil {
				return q, err
			}
			*field(&q) = v
		case name == "after":
			id, err := wire.ParseCursor(v)
			if err != nil {
				return q, err
			}
			q.After = id
		case name == "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > servicelayer.MaxEventsPage {
				return q, &wire.FieldError{Field: "limit", Reason: "must be a whole number from 1 to " + strconv.Itoa(servicelayer.MaxEventsPage)}
			}
			q.Limit = n
		default:
			return q, &wire.FieldError{Field: name, Reason: "is not a parameter of GET /events (want sku, orderid, batchref, type, after, limit)"}
		}
	}
	if q.Type != "" && !slices.Contains(servicelayer.EventTypes, q.Type) {
		return q, &wire.FieldError{Field: "type", Reason: "must be one of " + strings.Join(servicelayer.EventTypes, ", ")}
	}
	return q, nil
}

// orderHistory answers GET /allocations/{orderid}/history: every event of
// the order, oldest first. An order with allocations but no events left
// (retention deleted them) has an empty history; one never seen is 404.
func (h handlers) orderHistory(c echo.Context) error {
	orderID, err := pathParam(c, "orderid")
	if err != nil {
		return err
	}
	if err := domain.CheckReference("orderid", orderID); err != nil {
		return err
	}
	ctx := c.Request().Context()
	q := servicelayer.EventQuery{OrderID: orderID, Limit: servicelayer.MaxEventsPage}
	events := []wire.HistoryEvent{}
	for {
		found, err := h.views.Events(ctx, q)
		if err != nil {
			return err
		}
		for _, env := range found {
			events = append(events, wire.NewHistoryEvent(env))
		}
		if len(found) < q.Limit {
			break
		}
		q.After = found[len(found)-1].LogID
	}
	if len(events) == 0 {
		rows, err := h.views.Allocations(ctx, orderID)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return echo.NewHTTPError(http.StatusNotFound, "no history for order "+orderID)
		}
	}
	return c.JSON(http.StatusOK, map[string][]wire.HistoryEvent{"events": events})
}

package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"time"

	"github.com/labstack/echo/v4"

	"allocation/domain"
	"allocation/entrypoints/wire"
)

type handlers struct {
	bus          Bus
	views        Views
	checks       []Check
	readyTimeout time.Duration
}

type addBatchBody struct {
	Ref *string `json:"ref"`
	SKU *string `json:"sku"`
	Qty *int    `json:"qty"`
	// ETA is "YYYY-MM-DD", or null (or left out) for stock already in the
	// warehouse.
	ETA json.RawMessage `json:"eta"`
}

type allocateBody struct {
	OrderID *string `json:"orderid"`
	SKU     *string `json:"sku"`
	Qty     *int    `json:"qty"`
}

type message struct {
	Message string `json:"message"`
}

func (h handlers) addBatch(c echo.Context) error {
	var b addBatchBody
	if err := decode(c, &b); err != nil {
		return err
	}
	if err := wire.Required(wire.Has("ref", b.Ref), wire.Has("sku", b.SKU), wire.Has("qty", b.Qty)); err != nil {
		return err
	}
	eta, err := parseETA(b.ETA)
	if err != nil {
		return err
	}
	cmd := domain.CreateBatch{Ref: *b.Ref, SKU: *b.SKU, Qty: *b.Qty, ETA: eta}
	if _, err := h.bus.Handle(c.Request().Context(), cmd); err != nil {
		return err
	}
	// The same body again answers 201 again: a retried request does no harm.
	return c.JSON(http.StatusCreated, message{Message: "batch " + cmd.Ref + " added"})
}

// parseETA reads an eta given as "YYYY-MM-DD" or null (the zero time).
func parseETA(raw json.RawMessage) (time.Time, error) {
	if raw == nil || string(raw) == "null" {
		return time.Time{}, nil
	}
	var text string
	if err := json.Unmarshal(raw, &text); err == nil {
		// Year 1 would read as "no ETA" in the model: the range check is here.
		if eta, err := time.Parse(time.DateOnly, text); err == nil && eta.Year() >= domain.MinETAYear && eta.Year() <= domain.MaxETAYear {
			return eta, nil
		}
	}
	return time.Time{}, &wire.FieldError{Field: "eta", Reason: fmt.Sprintf("must be a date as YYYY-MM-DD from year %d to %d, or null", domain.MinETAYear, domain.MaxETAYear)}
}

func (h handlers) allocate(c echo.Context) error {
	var b allocateBody
	if err := decode(c, &b); err != nil {
		return err
	}
	if err := wire.Required(wire.Has("orderid", b.OrderID), wire.Has("sku", b.SKU), wire.Has("qty", b.Qty)); err != nil {
		return err
	}
	res, err := h.bus.Handle(c.Request().Context(), domain.Allocate{OrderID: *b.OrderID, SKU: *b.SKU, Qty: *b.Qty})
	if err != nil {
		return err
	}
	return c.JSONBlob(http.StatusAccepted, allocatedBody(res.BatchRef))
}

// allocatedBody is the answer to an allocation, {"batchref": ...}, with
// null when out of stock: the bytes c.JSON writes, without its reflection
// over a struct (3 % of the service's CPU under load).
func allocatedBody(batchRef string) []byte {
	if batchRef == "" {
		return []byte("{\"batchref\":null}\n")
	}
	ref, _ := json.Marshal(batchRef) // a string always encodes
	return append(append([]byte(`{"batchref":`), ref...), "}\n"...)
}

func (h handlers) allocations(c echo.Context) error {
	orderID, err := pathParam(c, "orderid")
	if err != nil {
		return err
	}
	if err := domain.CheckReference("orderid", orderID); err != nil {
		return err
	}
	rows, err := h.views.Allocations(c.Request().Context(), orderID)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return echo.NewHTTPError(http.StatusNotFound, "no allocations for order "+orderID)
	}
	type row struct {
		SKU      string `json:"sku"`
		BatchRef string `json:"batchref"`
	}
	out := make([]row, len(rows))
	for i, r := range rows {
		out[i] = row{SKU: r.SKU, BatchRef: r.BatchRef}
	}
	return c.JSON(http.StatusOK, out)
}

// pathParam returns the decoded value of a path parameter. Echo routes on the
// raw path when the request has one (when it escapes a "/" as %2F, say) and
// then hands out the parameter still escaped; order ids may hold any text.
func pathParam(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v, nil
	}
	u, err := url.PathUnescape(v)
	if err != nil {
		return "", &wire.FieldError{Field: name, Reason: "is not a valid escaped path segment"}
	}
	return u, nil
}

// healthz answers GET and HEAD (without the body) alike, as readyz does:
// load balancers and uptime probes often ask with HEAD.
func (h handlers) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz pings every dependency at once and names the ones that fail. A
// check that ignores its context still cannot hold the answer past
// readyTimeout: it is reported as not answering.
func (h handlers) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), h.readyTimeout)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	// Buffered, so that a late check never blocks on a reader that left.
	results := make(chan result, len(h.checks))
	for _, check := range h.checks {
		go func() { results <- result{check.Name, check.Ping(ctx)} }()
	}
	answered := map[string]bool{}
	failed := map[string]string{}
wait:
	for range h.checks {
		select {
		case r := <-results:
			answered[r.name] = true
			if r.err != nil {
				failed[r.name] = r.err.Error()
			}
		case <-ctx.Done():
			break wait
		}
	}
	for _, check := range h.checks {
		if !answered[check.Name] {
			failed[check.Name] = "did not answer in time"
		}
	}
	if len(failed) > 0 {
		return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "checks": failed})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// decode reads a JSON request body strictly into v, by wire.Decode's rules.
func decode(c echo.Context, v any) error {
	// A body that says it is something else is refused; one that says
	// nothing is read as the JSON it has to be.
	if ct := c.Request().Header.Get(echo.HeaderContentType); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != echo.MIMEApplicationJSON {
			return echo.NewHTTPError(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		}
	}
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return err // the body limit's 413 comes through here
	}
	return wire.Decode(body, v)
}

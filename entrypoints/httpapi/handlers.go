package httpapi

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"allocation/domain"
	"allocation/entrypoints/wire"
)

const readyTimeout = 2 * time.Second

type handlers struct {
	bus    Bus
	views  Views
	checks []Check
}

type addBatchBody struct {
	Ref *string `json:"ref"`
	SKU *string `json:"sku"`
	Qty *int    `json:"qty"`
	// ETA is "YYYY-MM-DD", or null for stock already in the warehouse.
	ETA *string `json:"eta"`
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
	var eta time.Time
	if b.ETA != nil {
		var err error
		// Year 1 would read as "no ETA" in the model: the range check is here.
		if eta, err = time.Parse(time.DateOnly, *b.ETA); err != nil || eta.Year() < domain.MinETAYear || eta.Year() > domain.MaxETAYear {
			return &wire.FieldError{Field: "eta", Reason: fmt.Sprintf("must be a date as YYYY-MM-DD from year %d to %d, or null", domain.MinETAYear, domain.MaxETAYear)}
		}
	}
	cmd := domain.CreateBatch{Ref: *b.Ref, SKU: *b.SKU, Qty: *b.Qty, ETA: eta}
	if _, err := h.bus.Handle(c.Request().Context(), cmd); err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, message{Message: "batch " + cmd.Ref + " added"})
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
	var ref *string // null when out of stock
	if res.BatchRef != "" {
		ref = &res.BatchRef
	}
	return c.JSON(http.StatusAccepted, struct {
		BatchRef *string `json:"batchref"`
	}{ref})
}

func (h handlers) allocations(c echo.Context) error {
	orderID := c.Param("orderid")
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

func (h handlers) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz pings every dependency at once and names the ones that fail.
func (h handlers) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), readyTimeout)
	defer cancel()
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		failed = map[string]string{}
	)
	for _, check := range h.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := check.Ping(ctx); err != nil {
				mu.Lock()
				failed[check.Name] = err.Error()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "checks": failed})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// decode reads a JSON request body strictly into v.
func decode(c echo.Context, v any) error {
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

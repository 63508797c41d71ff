package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"allocation/domain"
	"allocation/entrypoints/wire"
	"allocation/servicelayer"
)

// errorHandler turns every error a handler returns into one JSON answer.
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		status, msg := classify(err)
		if status >= http.StatusInternalServerError {
			log.ErrorContext(c.Request().Context(), "request failed",
				"method", c.Request().Method, "path", c.Request().URL.Path,
				"request_id", c.Response().Header().Get(echo.HeaderXRequestID), "error", err)
		}
		if c.Request().Method == http.MethodHead {
			err = c.NoContent(status)
		} else {
			err = c.JSON(status, message{Message: msg})
		}
		if err != nil {
			log.WarnContext(c.Request().Context(), "writing error response", "error", err)
		}
	}
}

func classify(err error) (int, string) {
	var (
		invalidSKU *domain.InvalidSKUError
		validation *domain.ValidationError
		field      *wire.FieldError
		httpErr    *echo.HTTPError
	)
	switch {
	case errors.As(err, &invalidSKU):
		return http.StatusBadRequest, invalidSKU.Error()
	case errors.As(err, &validation):
		return http.StatusBadRequest, validation.Error()
	case errors.As(err, &field):
		return http.StatusBadRequest, field.Error()
	case errors.Is(err, domain.ErrUnknownBatch):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, domain.ErrBatchExists):
		return http.StatusConflict, err.Error()
	case errors.Is(err, servicelayer.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "a dependency is unavailable, try again later"
	case errors.As(err, &httpErr):
		if m, ok := httpErr.Message.(string); ok {
			return httpErr.Code, m
		}
		return httpErr.Code, http.StatusText(httpErr.Code)
	}
	// Internal details stay in the log.
	return http.StatusInternalServerError, "internal error"
}

package httpapi

import (
	_ "embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

// openAPIDocument describes the API as it behaves; tests/unit/openapi_test.go
// fails when its operations and the routes of New disagree.
//
//go:embed openapi.json
var openAPIDocument []byte

// serveOpenAPI answers GET /openapi.json with the embedded document.
func serveOpenAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, openAPIDocument)
}

// asyncAPIDocument describes the Redis messages the service reads and
// publishes (AsyncAPI 3, JSON Schema draft-07); tests/unit/asyncapi_test.go
// fails when its schemas and what the consumer accepts or the publisher
// emits disagree.
//
//go:embed asyncapi.json
var asyncAPIDocument []byte

// serveAsyncAPI answers GET /asyncapi.json with the embedded document.
func serveAsyncAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, asyncAPIDocument)
}

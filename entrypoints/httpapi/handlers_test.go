package httpapi

import (
	"bytes"
	"encoding/json"
	"testing"
)

// The answer to an allocation is written by hand: it must be the bytes
// encoding/json writes, escapes included.
func TestTheAllocationAnswerIsWhatEncodingJSONWrites(t *testing.T) {
	for _, ref := range []string{"", "b1", "a<b>&\"\\\u2028é\x01"} {
		var r *string
		if ref != "" {
			r = &ref
		}
		var buf bytes.Buffer
		json.NewEncoder(&buf).Encode(struct {
			BatchRef *string `json:"batchref"`
		}{r})
		if got := allocatedBody(ref); !bytes.Equal(got, buf.Bytes()) {
			t.Errorf("%q: %q, want %q", ref, got, buf.Bytes())
		}
	}
}

package unit_test

import (
	"strings"
	"testing"

	"allocation/bootstrap"
)

func TestConsumerConcurrencyComesFromTheEnvironmentWithinBounds(t *testing.T) {
	t.Parallel()
	cases := []struct {
		value string
		want  int    // when valid
		err   string // part of the error when not
	}{
		{"", bootstrap.DefaultConsumerConcurrency, ""},
		{"1", 1, ""},
		{"64", 64, ""},
		{"256", 256, ""},
		{"0", 0, "CONSUMER_CONCURRENCY"},
		{"-3", 0, "CONSUMER_CONCURRENCY"},
		{"many", 0, "CONSUMER_CONCURRENCY"},
		{"257", 0, "CONSUMER_CONCURRENCY 257: want 1 to 256"},
	}
	for _, c := range cases {
		t.Run("CONSUMER_CONCURRENCY="+c.value, func(t *testing.T) {
			t.Parallel()
			cfg, err := bootstrap.FromEnv(func(name string) string {
				if name == "CONSUMER_CONCURRENCY" {
					return c.value
				}
				return ""
			})
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("FromEnv: %v", err)
			case c.err == "" && cfg.ConsumerConcurrency != c.want:
				t.Fatalf("ConsumerConcurrency = %d, want %d", cfg.ConsumerConcurrency, c.want)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("FromEnv error = %v, want one naming %q", err, c.err)
			}
		})
	}
}

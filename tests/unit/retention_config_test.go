package unit_test

import (
	"strings"
	"testing"
	"time"

	"allocation/bootstrap"
)

func TestConfigRetentionDefaultsAndZeroKeepsForever(t *testing.T) {
	t.Parallel()
	cfg, err := bootstrap.FromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EventRetention != 720*time.Hour || cfg.InboxRetention != 168*time.Hour || cfg.PruneInterval != time.Minute {
		t.Fatalf("retention %s, inbox %s, interval %s; want 720h, 168h, 1m", cfg.EventRetention, cfg.InboxRetention, cfg.PruneInterval)
	}
	cfg, err = bootstrap.FromEnv(env(map[string]string{"EVENT_RETENTION": "0", "INBOX_RETENTION": "0"}))
	if err != nil || cfg.EventRetention != 0 || cfg.InboxRetention != 0 {
		t.Fatalf("0 (keep forever): %+v, %v", cfg, err)
	}
}

// The inbox must remember a message id as long as the stream consumer may
// bring the message back: STREAM_MAX_DELIVERIES × 2 × STREAM_CLAIM_IDLE,
// 5 × 2 × 30s by default.
func TestConfigRefusesAnInboxRetentionShorterThanTheLongestRedelivery(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		vars map[string]string
		ok   bool
	}{
		{map[string]string{"INBOX_RETENTION": "5m"}, true},
		{map[string]string{"INBOX_RETENTION": "4m59s"}, false},
		{map[string]string{"INBOX_RETENTION": "3s"}, false},
		{map[string]string{"INBOX_RETENTION": "3s", "STREAM_CLAIM_IDLE": "300ms", "STREAM_MAX_DELIVERIES": "5"}, true},
		{map[string]string{"INBOX_RETENTION": "3s", "STREAM_CLAIM_IDLE": "300ms", "STREAM_MAX_DELIVERIES": "6"}, false},
		{map[string]string{"EVENT_RETENTION": "-1h"}, false},
		{map[string]string{"EVENT_RETENTION": "a month"}, false},
		{map[string]string{"PRUNE_INTERVAL": "0"}, false},
	} {
		_, err := bootstrap.FromEnv(env(c.vars))
		if c.ok != (err == nil) {
			t.Errorf("%v: got %v, want ok=%v", c.vars, err, c.ok)
		}
		var name string
		for k := range c.vars {
			if !strings.HasPrefix(k, "STREAM_") {
				name = k
			}
		}
		if err != nil && !strings.Contains(err.Error(), name) {
			t.Errorf("%v: %v does not name %s", c.vars, err, name)
		}
	}
}

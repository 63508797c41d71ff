package unit_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"allocation/bootstrap"
)

// env is a getenv over a map.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// attrs turns StartupAttrs into a map.
func attrs(cfg bootstrap.Config) map[string]string {
	a := cfg.StartupAttrs()
	out := map[string]string{}
	for i := 0; i+1 < len(a); i += 2 {
		out[a[i].(string)] = fmt.Sprint(a[i+1])
	}
	return out
}

func TestConfigWithNothingSetRunsOnAnSQLiteFileAndAnEmbeddedRedis(t *testing.T) {
	t.Parallel()
	cfg, err := bootstrap.FromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.EmbeddedDatabase() || !cfg.EmbeddedRedis() || cfg.Mode() != "embedded" {
		t.Fatalf("mode %s (database embedded %v, redis embedded %v), want embedded", cfg.Mode(), cfg.EmbeddedDatabase(), cfg.EmbeddedRedis())
	}
	if cfg.SQLitePath() != filepath.Join("data", "allocation.db") || cfg.EmbeddedRedisAddr != "127.0.0.1:6380" {
		t.Fatalf("file %s, redis %s; want data/allocation.db and 127.0.0.1:6380", cfg.SQLitePath(), cfg.EmbeddedRedisAddr)
	}
	a := attrs(cfg)
	wantFile, _ := filepath.Abs(filepath.Join("data", "allocation.db"))
	if a["mode"] != "embedded" || a["data_file"] != wantFile || a["redis_addr"] != "127.0.0.1:6380" {
		t.Fatalf("start-up line %v; want the mode, the absolute data file %s and the redis address", a, wantFile)
	}
}

func TestConfigEachURLSwitchesItsOwnPart(t *testing.T) {
	t.Parallel()
	const pg, rd = "postgres://u:secret@db:5432/allocation?sslmode=disable", "redis://cache:6379/0"
	cases := []struct {
		vars map[string]string
		mode string
	}{
		{map[string]string{"DATABASE_URL": pg}, "postgres+embedded-redis"},
		{map[string]string{"REDIS_URL": rd}, "sqlite+redis"},
		{map[string]string{"DATABASE_URL": pg, "REDIS_URL": rd}, "postgres+redis"},
		{map[string]string{"DATA_DIR": "/var/lib/allocation", "EMBEDDED_REDIS_ADDR": "0.0.0.0:7000"}, "embedded"},
	}
	for _, c := range cases {
		cfg, err := bootstrap.FromEnv(env(c.vars))
		if err != nil {
			t.Fatalf("%v: %v", c.vars, err)
		}
		if cfg.Mode() != c.mode {
			t.Errorf("%v: mode %s, want %s", c.vars, cfg.Mode(), c.mode)
		}
		line := fmt.Sprint(cfg.StartupAttrs())
		if strings.Contains(line, "secret") {
			t.Errorf("the start-up line shows the password: %s", line)
		}
	}
	cfg, _ := bootstrap.FromEnv(env(cases[3].vars))
	if cfg.SQLitePath() != "/var/lib/allocation/allocation.db" || cfg.EmbeddedRedisAddr != "0.0.0.0:7000" {
		t.Errorf("file %s, redis %s", cfg.SQLitePath(), cfg.EmbeddedRedisAddr)
	}
}

func TestConfigRefusesSettingsThatCannotWork(t *testing.T) {
	t.Parallel()
	cases := []struct {
		vars map[string]string
		want string // the error names the setting
	}{
		{map[string]string{"DATABASE_URL": "mysql://u@db/allocation"}, "DATABASE_URL"},
		{map[string]string{"REDIS_URL": "http://cache:6379"}, "REDIS_URL"},
		{map[string]string{"EMBEDDED_REDIS_ADDR": "6380"}, "EMBEDDED_REDIS_ADDR"},
		{map[string]string{"DATA_DIR": "data?mode=memory"}, "DATA_DIR"},
		{map[string]string{"ADMIN_ADDR": "6060"}, "ADMIN_ADDR"},
		// TLS files without TLS, or half a client certificate.
		{map[string]string{"REDIS_URL": "redis://cache:6379/0", "REDIS_TLS_CA_FILE": "ca.crt"}, "rediss://"},
		{map[string]string{"REDIS_TLS_CA_FILE": "ca.crt"}, "rediss://"},
		{map[string]string{"REDIS_URL": "rediss://cache:6379/0", "REDIS_TLS_CERT_FILE": "client.crt"}, "REDIS_TLS_KEY_FILE"},
	}
	for _, c := range cases {
		if _, err := bootstrap.FromEnv(env(c.vars)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error naming %s", c.vars, err, c.want)
		}
	}
	// A setting of the part that is not embedded does not matter.
	if _, err := bootstrap.FromEnv(env(map[string]string{"REDIS_URL": "redis://cache:6379/0", "EMBEDDED_REDIS_ADDR": "6380"})); err != nil {
		t.Errorf("EMBEDDED_REDIS_ADDR refused while REDIS_URL is set: %v", err)
	}
}

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

func TestConfigReadsTheRedisTLSFilesAndTheAdminAddress(t *testing.T) {
	t.Parallel()
	cfg, err := bootstrap.FromEnv(env(map[string]string{
		"REDIS_URL":           "rediss://allocation:secret@cache:6380/0",
		"REDIS_TLS_CA_FILE":   "/etc/allocation/ca.crt",
		"REDIS_TLS_CERT_FILE": "/etc/allocation/client.crt",
		"REDIS_TLS_KEY_FILE":  "/etc/allocation/client.key",
		"ADMIN_ADDR":          "127.0.0.1:6060",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := bootstrap.TLSFiles{CAFile: "/etc/allocation/ca.crt", CertFile: "/etc/allocation/client.crt", KeyFile: "/etc/allocation/client.key"}
	if cfg.RedisTLS != want || cfg.AdminAddr != "127.0.0.1:6060" {
		t.Fatalf("got %+v and ADMIN_ADDR %q, want %+v and 127.0.0.1:6060", cfg.RedisTLS, cfg.AdminAddr, want)
	}
	if a := attrs(cfg); strings.Contains(a["redis_url"], "secret") {
		t.Fatalf("the start-up line shows the Redis password: %s", a["redis_url"])
	}
}

func TestPublishedIDTTLComesFromTheEnvironmentAndIsAtLeastAMinute(t *testing.T) {
	t.Parallel()
	cases := []struct {
		value string
		want  time.Duration // when valid
		err   string        // part of the error when not
	}{
		{"", 15 * time.Minute, ""},
		{"1m", time.Minute, ""},
		{"2h", 2 * time.Hour, ""},
		{"59s", 0, "PUBLISHED_ID_TTL 59s: want at least 1m0s"},
		{"0", 0, "PUBLISHED_ID_TTL"},
		{"-5m", 0, "PUBLISHED_ID_TTL"},
		{"fifteen minutes", 0, "PUBLISHED_ID_TTL"},
	}
	for _, c := range cases {
		t.Run("PUBLISHED_ID_TTL="+c.value, func(t *testing.T) {
			t.Parallel()
			cfg, err := bootstrap.FromEnv(env(map[string]string{"PUBLISHED_ID_TTL": c.value}))
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("FromEnv: %v", err)
			case c.err == "" && cfg.PublishedIDTTL != c.want:
				t.Fatalf("PublishedIDTTL = %s, want %s", cfg.PublishedIDTTL, c.want)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("FromEnv error = %v, want one naming %q", err, c.err)
			}
		})
	}
}

func TestConfigReachesARedisClusterOrSentinelWithoutTheEmbeddedRedis(t *testing.T) {
	t.Parallel()
	cluster, err := bootstrap.FromEnv(env(map[string]string{
		"REDIS_CLUSTER_ADDRS": "10.0.0.1:7000, 10.0.0.2:7000,10.0.0.3:7000",
		"REDIS_USERNAME":      "allocation",
		"REDIS_PASSWORD":      "secret",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cluster.EmbeddedRedis() || cluster.Mode() != "sqlite+redis" {
		t.Fatalf("a Cluster runs mode %s, embedded Redis %v", cluster.Mode(), cluster.EmbeddedRedis())
	}
	opts := bootstrap.UniversalOptions(cluster)
	if opts == nil || !opts.IsClusterMode || len(opts.Addrs) != 3 || opts.Addrs[1] != "10.0.0.2:7000" || opts.MasterName != "" {
		t.Fatalf("cluster options %+v, want cluster mode on the three nodes", opts)
	}
	if opts.Username != "allocation" || opts.Password != "secret" || opts.MaxRetries != 1 {
		t.Fatalf("cluster options: user %q, password %q, retries %d; want allocation, secret, 1", opts.Username, opts.Password, opts.MaxRetries)
	}
	if a := attrs(cluster); a["redis"] != "cluster" || a["redis_cluster_addrs"] != "10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000" || strings.Contains(fmt.Sprint(a), "secret") {
		t.Fatalf("start-up line %v; want the cluster's nodes and no password", a)
	}

	sentinel, err := bootstrap.FromEnv(env(map[string]string{
		"DATABASE_URL":            "postgres://u@db:5432/allocation",
		"REDIS_SENTINEL_MASTER":   "mymaster",
		"REDIS_SENTINEL_ADDRS":    "s1:26379,s2:26379",
		"REDIS_SENTINEL_PASSWORD": "sentinel-secret",
		"REDIS_PASSWORD":          "secret",
	}))
	if err != nil {
		t.Fatal(err)
	}
	opts = bootstrap.UniversalOptions(sentinel)
	if sentinel.EmbeddedRedis() || sentinel.Mode() != "postgres+redis" || opts == nil || opts.MasterName != "mymaster" ||
		len(opts.Addrs) != 2 || opts.SentinelPassword != "sentinel-secret" || opts.Password != "secret" || opts.IsClusterMode {
		t.Fatalf("sentinel: mode %s, options %+v", sentinel.Mode(), opts)
	}
	if a := attrs(sentinel); a["redis"] != "sentinel" || a["redis_sentinel_master"] != "mymaster" || strings.Contains(fmt.Sprint(a), "secret") {
		t.Fatalf("start-up line %v; want the master's name and no password", a)
	}
	single, _ := bootstrap.FromEnv(env(map[string]string{"REDIS_URL": "redis://cache:6379/0"}))
	if bootstrap.UniversalOptions(single) != nil {
		t.Fatal("REDIS_URL alone gave universal options; it is a single server")
	}
}

func TestConfigRefusesRedisSettingsThatContradictEachOther(t *testing.T) {
	t.Parallel()
	const nodes = "127.0.0.1:7000,127.0.0.1:7001"
	cases := []struct {
		vars map[string]string
		want string // part of the error
	}{
		{map[string]string{"REDIS_CLUSTER_ADDRS": nodes, "REDIS_SENTINEL_MASTER": "m", "REDIS_SENTINEL_ADDRS": "s:26379"}, "REDIS_CLUSTER_ADDRS and REDIS_SENTINEL_MASTER"},
		{map[string]string{"REDIS_URL": "redis://cache:6379/0", "REDIS_CLUSTER_ADDRS": nodes}, "REDIS_URL and REDIS_CLUSTER_ADDRS: set one"},
		{map[string]string{"REDIS_URL": "redis://cache:6379/0", "REDIS_SENTINEL_MASTER": "m", "REDIS_SENTINEL_ADDRS": "s:26379"}, "REDIS_URL and REDIS_SENTINEL_MASTER"},
		{map[string]string{"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_MASTER and REDIS_SENTINEL_ADDRS: set both"},
		{map[string]string{"REDIS_SENTINEL_ADDRS": "s:26379"}, "REDIS_SENTINEL_MASTER and REDIS_SENTINEL_ADDRS: set both"},
		{map[string]string{"REDIS_CLUSTER_ADDRS": "127.0.0.1"}, `REDIS_CLUSTER_ADDRS: "127.0.0.1" is not host:port`},
		{map[string]string{"REDIS_SENTINEL_MASTER": "m", "REDIS_SENTINEL_ADDRS": "s:26379,:"}, `REDIS_SENTINEL_ADDRS: ":" is not host:port`},
		{map[string]string{"REDIS_URL": "redis://cache:6379/0", "REDIS_PASSWORD": "secret"}, "REDIS_USERNAME and REDIS_PASSWORD are for"},
		{map[string]string{"REDIS_PASSWORD": "secret"}, "REDIS_USERNAME and REDIS_PASSWORD are for"},
		{map[string]string{"REDIS_CLUSTER_ADDRS": nodes, "REDIS_TLS_CA_FILE": "ca.crt"}, "TLS to a Redis Cluster or through Sentinel is not supported"},
	}
	for _, c := range cases {
		_, err := bootstrap.FromEnv(env(c.vars))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error saying %q", c.vars, err, c.want)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("%v: the error shows the password: %v", c.vars, err)
		}
	}
}

// PUBLISHED_ID_LIMIT bounds the ids of a generation on the embedded Redis:
// 100,000 unless set, and a positive count when set.
func TestPublishedIDLimitComesFromTheEnvironment(t *testing.T) {
	t.Parallel()
	cases := []struct {
		value string
		want  int64  // when valid
		err   string // part of the error when not
	}{
		{"", 100_000, ""},
		{"5000", 5000, ""},
		{"0", 0, "PUBLISHED_ID_LIMIT"},
		{"-1", 0, "PUBLISHED_ID_LIMIT"},
		{"lots", 0, "PUBLISHED_ID_LIMIT"},
	}
	for _, c := range cases {
		t.Run("PUBLISHED_ID_LIMIT="+c.value, func(t *testing.T) {
			t.Parallel()
			cfg, err := bootstrap.FromEnv(env(map[string]string{"PUBLISHED_ID_LIMIT": c.value}))
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("FromEnv: %v", err)
			case c.err == "" && cfg.PublishedIDLimit != c.want:
				t.Fatalf("PublishedIDLimit = %d, want %d", cfg.PublishedIDLimit, c.want)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("FromEnv error = %v, want one naming %q", err, c.err)
			}
		})
	}
}

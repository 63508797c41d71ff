package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"allocation/bootstrap"
	"allocation/tests/testenv"
)

// The service reaches PostgreSQL with sslmode=verify-full and a CA of its
// own, and Redis over rediss:// with a CA, a client certificate and an ACL
// user, becomes ready and allocates; neither password ever shows in its
// log.
func TestServiceRunsOnPostgreSQLAndRedisOverTLSWithPasswords(t *testing.T) {
	const pgPassword, redisUser, redisPassword = "pg-Secret-4711", "allocation", "redis-Secret-0815"
	ca := testenv.NewCA(t)
	dbURL := testenv.StartTLSPostgres(t, ca, pgPassword)
	rd := testenv.StartTLSRedis(t, ca, redisUser, redisPassword)
	httpAddr := freeLoopbackAddr(t)
	env := map[string]string{
		"DATABASE_URL":        dbURL,
		"REDIS_URL":           rd.URL,
		"REDIS_TLS_CA_FILE":   ca.CertFile,
		"REDIS_TLS_CERT_FILE": rd.ClientCertFile,
		"REDIS_TLS_KEY_FILE":  rd.ClientKeyFile,
		"REDIS_PREFIX":        testenv.Prefix(),
		"HTTP_ADDR":           httpAddr,
		"LOG_LEVEL":           "debug",
	}
	cfg, err := bootstrap.FromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		for _, secret := range []string{pgPassword, redisPassword} {
			if strings.Contains(logs.String(), secret) {
				t.Errorf("the log shows the password %q:\n%s", secret, logs.String())
			}
		}
		if t.Failed() {
			t.Logf("service log:\n%s", logs.String())
		}
	})

	// As `allocation serve` does: say what it runs on, migrate, serve.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log.Info("allocation starting", cfg.StartupAttrs()...)
	if err := bootstrap.Migrate(ctx, cfg); err != nil {
		t.Fatalf("migrate over TLS: %v", err)
	}
	app, err := bootstrap.New(ctx, cfg, log)
	if err != nil {
		t.Fatalf("bootstrap over TLS: %v", err)
	}
	t.Cleanup(app.Close)
	ran := make(chan error, 1)
	go func() { ran <- app.Run(ctx, bootstrap.Parts{HTTP: true, Consumer: true, Dispatcher: true}) }()

	base := "http://" + httpAddr
	testenv.Eventually(t, 20*time.Second, func() error {
		status, body := httpCall(t, http.MethodGet, base+"/readyz", nil)
		if status != http.StatusOK {
			return fmt.Errorf("/readyz answered %d: %s", status, body)
		}
		return nil
	})
	sku, order := testenv.RandomName("TLS-LAMP-"), testenv.RandomName("order-")
	if status, body := httpCall(t, http.MethodPost, base+"/add_batch", map[string]any{"ref": "b-" + sku, "sku": sku, "qty": 10, "eta": nil}); status != http.StatusCreated {
		t.Fatalf("add_batch answered %d: %s", status, body)
	}
	status, body := httpCall(t, http.MethodPost, base+"/allocate", map[string]any{"orderid": order, "sku": sku, "qty": 3})
	if status != http.StatusAccepted || !strings.Contains(body, `"b-`+sku+`"`) {
		t.Fatalf("allocate answered %d: %s, want 202 with batchref b-%s", status, body, sku)
	}
	if status, body := httpCall(t, http.MethodGet, base+"/allocations/"+order, nil); status != http.StatusOK || !strings.Contains(body, "b-"+sku) {
		t.Fatalf("allocations answered %d: %s", status, body)
	}

	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(bootstrap.ShutdownTimeout + 5*time.Second):
		t.Fatal("the service did not stop after its context ended")
	}
}

// Verification is on: without the CA, neither server is trusted, and a
// wrong password is refused without being repeated in the error.
func TestTLSConnectionsAreRefusedWithoutTheCAOrWithAWrongPassword(t *testing.T) {
	const pgPassword, redisUser, redisPassword = "pg-Secret-1234", "allocation", "redis-Secret-5678"
	ca := testenv.NewCA(t)
	dbURL := testenv.StartTLSPostgres(t, ca, pgPassword)
	rd := testenv.StartTLSRedis(t, ca, redisUser, redisPassword)
	ctx := context.Background()
	base := bootstrap.Config{DatabaseURL: dbURL, RedisURL: rd.URL, HTTPAddr: ":0", ConsumerConcurrency: 1, PruneInterval: time.Minute, PublishedIDTTL: 15 * time.Minute,
		RedisTLS: bootstrap.TLSFiles{CAFile: ca.CertFile, CertFile: rd.ClientCertFile, KeyFile: rd.ClientKeyFile}}

	t.Run("postgres without the CA", func(t *testing.T) {
		cfg := base
		cfg.DatabaseURL = strings.Replace(dbURL, "sslrootcert=", "ignored=", 1)
		if err := bootstrap.Migrate(ctx, cfg); err == nil {
			t.Fatal("connected to PostgreSQL whose certificate no trusted CA signed")
		}
	})
	t.Run("postgres with a wrong password", func(t *testing.T) {
		cfg := base
		cfg.DatabaseURL = strings.Replace(dbURL, pgPassword, "wrong-Password-99", 1)
		err := bootstrap.Migrate(ctx, cfg)
		if err == nil {
			t.Fatal("connected with a wrong password")
		}
		if strings.Contains(err.Error(), "wrong-Password-99") {
			t.Fatalf("the error shows the password: %v", err)
		}
	})
	for name, change := range map[string]func(*bootstrap.Config){
		"redis without the CA":                 func(c *bootstrap.Config) { c.RedisTLS.CAFile = "" },
		"redis without the client certificate": func(c *bootstrap.Config) { c.RedisTLS.CertFile, c.RedisTLS.KeyFile = "", "" },
		"redis with a wrong password": func(c *bootstrap.Config) {
			c.RedisURL = strings.Replace(rd.URL, redisPassword, "wrong-Password-77", 1)
		},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := base
			change(&cfg)
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			app, err := bootstrap.New(ctx, cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer app.Close()
			rec := httptest.NewRecorder()
			app.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "redis") {
				t.Fatalf("/readyz answered %d: %s, want 503 naming redis", rec.Code, rec.Body.String())
			}
			if strings.Contains(rec.Body.String(), "wrong-Password-77") {
				t.Fatalf("/readyz shows the password: %s", rec.Body.String())
			}
		})
	}
}

func httpCall(t *testing.T, method, url string, body any) (int, string) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// lockedBuffer is a log destination that goroutines share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A TLS file that cannot be used stops the start with the setting named,
// rather than a connection that fails later for a reason hard to trace.
func TestUnusableRedisTLSFilesStopTheStartNamingTheSetting(t *testing.T) {
	t.Parallel()
	ca := testenv.NewCA(t)
	cert, key := ca.Issue(t, t.TempDir(), "client", false)
	notPEM := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		files bootstrap.TLSFiles
		want  string
	}{
		{bootstrap.TLSFiles{CAFile: filepath.Join(t.TempDir(), "missing.crt")}, "REDIS_TLS_CA_FILE"},
		{bootstrap.TLSFiles{CAFile: notPEM}, "REDIS_TLS_CA_FILE"},
		{bootstrap.TLSFiles{CAFile: ca.CertFile, CertFile: cert, KeyFile: cert}, "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE"},
		{bootstrap.TLSFiles{CertFile: key, KeyFile: key}, "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE"},
	} {
		// The embedded SQLite file; Redis is never dialled.
		cfg := bootstrap.Config{DataDir: t.TempDir(), RedisURL: "rediss://allocation:pw@127.0.0.1:1/0", HTTPAddr: ":0", ConsumerConcurrency: 1, RedisTLS: c.files}
		app, err := bootstrap.New(context.Background(), cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)))
		if err == nil {
			app.Close()
			t.Errorf("%+v: started, want an error naming %s", c.files, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want it to name %s", c.files, err, c.want)
		}
	}
}

package e2e_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"allocation/tests/testenv"
)

// postgresServer is a PostgreSQL cluster of the test's own, on a free port,
// that the test can stop and start again without disturbing anyone else.
type postgresServer struct {
	t       *testing.T
	bin     string
	dataDir string
	port    string
}

func startPostgresServer(t *testing.T) *postgresServer {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	if len(dirs) == 0 {
		t.Fatal("PostgreSQL server binaries not found under /usr/lib/postgresql: run `make services`, which installs them on Debian")
	}
	sort.Strings(dirs)
	root, err := os.MkdirTemp("", "allocation-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	_, port, _ := net.SplitHostPort(freeAddr(t))
	p := &postgresServer{t: t, bin: dirs[len(dirs)-1], dataDir: filepath.Join(root, "data"), port: port}
	// initdb refuses to run as root: as root, the cluster belongs to postgres.
	if os.Geteuid() == 0 {
		if err := os.Chmod(root, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	p.run("initdb", "-D", p.dataDir, "-A", "trust", "-U", "postgres", "--no-sync")
	p.start()
	t.Cleanup(func() { _ = p.command("pg_ctl", "-D", p.dataDir, "stop", "-m", "immediate").Run() })
	return p
}

func (p *postgresServer) url() string {
	return "postgres://postgres@127.0.0.1:" + p.port + "/postgres?sslmode=disable"
}

func (p *postgresServer) start() {
	p.t.Helper()
	p.ctl("start", "-w", "-l", filepath.Join(filepath.Dir(p.dataDir), "log"),
		"-o", fmt.Sprintf("-p %s -c listen_addresses=127.0.0.1 -k %s -c fsync=off", p.port, filepath.Dir(p.dataDir)))
}

func (p *postgresServer) stop() {
	p.t.Helper()
	p.ctl("stop", "-w", "-m", "immediate")
}

func (p *postgresServer) ctl(args ...string) {
	p.t.Helper()
	p.run("pg_ctl", append([]string{"-D", p.dataDir}, args...)...)
}

func (p *postgresServer) command(name string, args ...string) *exec.Cmd {
	bin := filepath.Join(p.bin, name)
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", bin}, args...)...)
	}
	return exec.Command(bin, args...)
}

func (p *postgresServer) run(name string, args ...string) {
	p.t.Helper()
	if out, err := p.command(name, args...).CombinedOutput(); err != nil {
		p.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// With PostgreSQL stopped the API answers 503 quickly, /readyz names it, and
// once it is back the service works again without a restart.
func TestPostgresOutageIs503AndTheServiceRecoversByItself(t *testing.T) {
	t.Parallel()
	pg := startPostgresServer(t)
	s := newService(t, testenv.RedisURL())
	s.dbURL = pg.url()
	s.start()
	sku, ref := testenv.RandomName("sku-"), testenv.RandomName("batch-")
	s.addBatch(ref, sku, 10, nil)

	pg.stop()
	start := time.Now()
	status, body := s.post("/allocate", map[string]any{"orderid": "during", "sku": sku, "qty": 1})
	if elapsed := time.Since(start); status != http.StatusServiceUnavailable || body["message"] == "" || elapsed > 5*time.Second {
		t.Fatalf("during the outage: %d %v after %s; want 503 with a message within 5s", status, body, elapsed)
	}
	if status, _ := s.allocations("anything"); status != http.StatusServiceUnavailable {
		t.Fatalf("GET allocations during the outage: %d, want 503", status)
	}
	resp, err := http.Get(s.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	ready, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(ready), `"postgres"`) {
		t.Fatalf("/readyz during the outage: %d %s", resp.StatusCode, ready)
	}

	pg.start()
	testenv.Eventually(t, 30*time.Second, func() error {
		status, body := s.post("/allocate", map[string]any{"orderid": "after", "sku": sku, "qty": 1})
		if status != http.StatusAccepted || body["batchref"] != ref {
			return fmt.Errorf("after the outage: %d %v", status, body)
		}
		return nil
	})
}
